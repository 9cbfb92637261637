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
        _add(inv, root, rel, parse_yyyymmdd(c[1]))
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
