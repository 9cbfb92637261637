"""What a day is made of in the tree, and the names inside a backup package.

Paths come from observer.store.paths (backup_dir, reports_dir, classify); this module only adds the
file names *inside* a package directory and the sibling names used while one is being built:

    backup/YYYYMMDD/                     the package (present = built and verified)
        manifest.json                    what the archives hold (see backup.py)
        manifest.json.sha256             "<hex>  manifest.json" (sha256sum -c format)
        <partition>.tar.gz               one per partition the day has
        pulled.json                      the PC's receipt (written by observer-backup-pull)
    backup/.YYYYMMDD.tmp-<pid>/          a package being built (never counts; swept on the next run)
    backup/.YYYYMMDD.old-<pid>/          the previous package while a rebuild swaps in

Besides the day partitions, two kinds of per-day files are not market data and are never packaged;
retention deletes them without a receipt (ungated_inventory):

    metrics/YYYYMMDD.jsonl               METRICS: kept retention.metrics_keep_days
    state/gapfill/<provider>_YYYYMMDD.json  GAPFILL_STATE: kept while the day's data is on the server
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from observer.core.clock import parse_yyyymmdd, yyyymmdd
from observer.store import paths
from observer.store.reader import iter_jsonl

MANIFEST = "manifest.json"
MANIFEST_SHA = "manifest.json.sha256"
RECEIPT = "pulled.json"
ARCHIVE_SUFFIX = ".tar.gz"
MANIFEST_VERSION = 1

_TMP_RE = re.compile(r"^\.(?P<day>\d{8})\.(?P<what>tmp|old)-(?P<pid>\d+)$")
_DAY_RE = re.compile(r"^\d{8}$")
_CHECKPOINT_RE = re.compile(r"^(?P<provider>[a-z][a-z0-9_]*)_(?P<day>\d{8})\.json$")

# pseudo-partitions of the per-day files retention deletes without a receipt (not market data, not packaged)
METRICS = "metrics"
GAPFILL_STATE = "gapfill-state"
UNGATED = (METRICS, GAPFILL_STATE)


def archive_name(partition: str) -> str:
    return f"{partition}{ARCHIVE_SUFFIX}"


def backup_root(root: Path) -> Path:
    """The directory that holds every package (parent of paths.backup_dir)."""
    return paths.backup_root(Path(root))


def temp_package_dir(root: Path, day: date, what: str = "tmp") -> Path:
    final = paths.backup_dir(Path(root), day)
    return final.with_name(f".{final.name}.{what}-{os.getpid()}")


def leftover_dirs(root: Path, day: date | None = None) -> list[tuple[str, Path]]:
    """('tmp'|'old', path) of build/swap leftovers (of one day, if given)."""
    broot = backup_root(root)
    out = []
    if broot.is_dir():
        for e in sorted(os.listdir(broot)):
            m = _TMP_RE.match(e)
            if m and (day is None or m.group("day") == yyyymmdd(day)):
                out.append((m.group("what"), broot / e))
    return out


def package_days(root: Path) -> list[date]:
    broot = backup_root(root)
    if not broot.is_dir():
        return []
    return sorted(parse_yyyymmdd(e) for e in os.listdir(broot) if _DAY_RE.match(e) and (broot / e).is_dir())


def partition_of(rel: str) -> str:
    return rel.split("/", 1)[0]


@dataclass
class DayFiles:
    """The files of one day, by partition: relative path -> os.stat_result."""

    day: date
    parts: dict[str, dict[str, os.stat_result]] = field(default_factory=dict)

    def bytes(self, partition: str | None = None) -> int:
        ps = [partition] if partition else list(self.parts)
        return sum(st.st_size for p in ps for st in self.parts.get(p, {}).values())

    def files(self) -> int:
        return sum(len(v) for v in self.parts.values())


def _add(inv: dict[date, DayFiles], root: Path, rel: str, day: date) -> None:
    part = partition_of(rel)
    if part not in paths.DAY_PARTITIONS:
        return
    try:
        st = os.stat(root / rel)
    except FileNotFoundError:
        return
    inv.setdefault(day, DayFiles(day)).parts.setdefault(part, {})[rel] = st


def inventory(root: Path, only: date | None = None) -> dict[date, DayFiles]:
    """Every file of every day in the day partitions (paths.DAY_PARTITIONS): JSONL files the layout
    knows (paths.classify) and everything under reports/YYYYMMDD/. One walk of the tree."""
    root = Path(root)
    inv: dict[date, DayFiles] = {}
    want = yyyymmdd(only) if only else None
    for rel in iter_jsonl(root):
        c = paths.classify(rel)
        if c is None or (want and c[1] != want):
            continue
        try:
            day = parse_yyyymmdd(c[1])
        except ValueError:
            continue  # eight digits but no date (20261399): no day owns it; one stray name must not stop the run
        _add(inv, root, rel, day)
    rep_parent = paths.reports_dir(root, date(2000, 1, 1)).parent
    if rep_parent.is_dir():
        for e in sorted(os.listdir(rep_parent)):
            if not _DAY_RE.match(e) or (want and e != want):
                continue
            d = parse_yyyymmdd(e)
            base = paths.reports_dir(root, d)
            for dirpath, dirnames, filenames in os.walk(base):
                dirnames.sort()
                for f in sorted(filenames):
                    _add(inv, root, os.path.relpath(os.path.join(dirpath, f), root), d)
    return inv


def ungated_inventory(root: Path) -> dict[date, DayFiles]:
    """The per-day files that are not packaged (METRICS, GAPFILL_STATE), by day. Two directory
    listings, no walk: both live flat in their directory (the writers' temp files are skipped)."""
    root = Path(root)
    inv: dict[date, DayFiles] = {}

    def add(kind: str, path: Path, ymd: str) -> None:
        try:
            day = parse_yyyymmdd(ymd)
            st = os.stat(path)
        except (ValueError, FileNotFoundError):
            return  # not a real date (a stray name), or gone meanwhile
        inv.setdefault(day, DayFiles(day)).parts.setdefault(kind, {})[str(path.relative_to(root))] = st

    mdir = paths.metrics_file(root, date(2000, 1, 1)).parent
    cdir = paths.gapfill_checkpoint_file(root, "x", date(2000, 1, 1)).parent
    for kind, d in ((METRICS, mdir), (GAPFILL_STATE, cdir)):
        try:
            names = sorted(os.listdir(d))
        except FileNotFoundError:
            continue
        for name in names:
            if kind == METRICS:
                c = paths.classify(str((d / name).relative_to(root)))
                if c is not None and c[0] == "metrics":
                    add(kind, d / name, c[1])
            else:
                m = _CHECKPOINT_RE.match(name)
                if m:
                    add(kind, d / name, m.group("day"))
    return inv
