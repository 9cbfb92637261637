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

Nothing read from a package is trusted (the package directory is writable by the SFTP backup user, and
the PC's puller gets every name from the server): ARCHIVE_NAME_RE and MEMBER_PATH_RE are the one
definition of the names observer-backup writes, and parse_manifest / parse_receipt check a file against
its schema (schemas/backup/) and those patterns before any of it becomes a path. The tree walkers take
regular files only (lstat) and report anything else; read_small never follows a symlink nor blocks on
a FIFO.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from functools import cache
from importlib import resources
from pathlib import Path

import fastjsonschema
import orjson

from observer.core.clock import parse_yyyymmdd, yyyymmdd
from observer.store import paths
from observer.store.reader import file_kind, walk

MANIFEST = "manifest.json"
MANIFEST_SHA = "manifest.json.sha256"
RECEIPT = "pulled.json"
ARCHIVE_SUFFIX = ".tar.gz"
MANIFEST_VERSION = 1

# the partitions a package holds, one archive each: the day partitions and the day's universe snapshot
# (universe/YYYYMMDD_*: the audit and the gap-filler read it with the day's data, so it travels and goes
# with the day)
UNIVERSE = "universe"
PACKAGED_PARTITIONS = tuple(paths.DAY_PARTITIONS) + (UNIVERSE,)

# The one definition of the names observer-backup writes (archive_name, inventory) and the only names
# retention and the puller accept from a manifest or a server: a plain archive name, and a relative
# member path whose every segment is a plain name (no '', '.', '..', hidden or temp file, NUL, '/').
_SEGMENT = r"[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,199}"
_PARTS = "|".join(map(re.escape, PACKAGED_PARTITIONS))
ARCHIVE_NAME_RE = re.compile(rf"(?:{_PARTS})\.tar\.gz")
MEMBER_PATH_RE = re.compile(rf"(?:{_PARTS})(?:/{_SEGMENT}){{1,8}}")

# upper bounds on what is read from a package (a hostile file must not balloon the reader)
MANIFEST_MAX_BYTES = 64 << 20
SHA_FILE_MAX_BYTES = 4096
RECEIPT_MAX_BYTES = 1 << 20

_TMP_RE = re.compile(r"^\.(?P<day>\d{8})\.(?P<what>tmp|old)-(?P<pid>\d+)$")
_DAY_RE = re.compile(r"^\d{8}$")
_CHECKPOINT_RE = re.compile(r"^(?P<provider>[a-z][a-z0-9_]*)_(?P<day>\d{8})\.json$")
_UNIVERSE_FILE_RE = re.compile(r"^(?P<day>\d{8})_[A-Za-z0-9_.@+-]+$")
# a writer's temporary file (store/state.py, the token cache, the audit's html, a receipt upload): swept
# by retention once older than retention.tmp_max_age_hours, never packaged
TEMP_FILE_RE = re.compile(r"^.+\.tmp(?:-\d+)?$")

# pseudo-partitions of the per-day files retention deletes without a receipt (not market data, not packaged)
METRICS = "metrics"
GAPFILL_STATE = "gapfill-state"
UNGATED = (METRICS, GAPFILL_STATE)


class InvalidFile(ValueError):
    """A manifest, hash file or receipt that is not what observer-backup / observer-backup-pull write."""


def archive_name(partition: str) -> str:
    name = f"{partition}{ARCHIVE_SUFFIX}"
    assert ARCHIVE_NAME_RE.fullmatch(name), name  # only partitions the readers accept are ever written
    return name


def is_archive_name(name) -> bool:
    return isinstance(name, str) and ARCHIVE_NAME_RE.fullmatch(name) is not None


def is_member_path(rel) -> bool:
    return isinstance(rel, str) and MEMBER_PATH_RE.fullmatch(rel) is not None


def backup_root(root: Path) -> Path:
    """The directory that holds every package (parent of paths.backup_dir)."""
    return paths.backup_root(Path(root))


def temp_package_dir(root: Path, day: date, what: str = "tmp") -> Path:
    final = paths.backup_dir(Path(root), day)
    return final.with_name(f".{final.name}.{what}-{os.getpid()}")


def leftover_dirs(root: Path, day: date | None = None) -> list[tuple[str, Path]]:
    """('tmp'|'old', path) of build/swap leftovers (of one day, if given). Real directories only."""
    broot = backup_root(root)
    out = []
    if broot.is_dir():
        for e in sorted(os.listdir(broot)):
            m = _TMP_RE.match(e)
            if m and (day is None or m.group("day") == yyyymmdd(day)) and is_real_dir(broot / e):
                out.append((m.group("what"), broot / e))
    return out


def is_real_dir(p: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(p).st_mode)
    except OSError:
        return False


def package_days(root: Path) -> list[date]:
    """Days with a package directory (a real one: a symlink named like a day is not a package)."""
    broot = backup_root(root)
    if not broot.is_dir():
        return []
    out = []
    for e in os.listdir(broot):
        if _DAY_RE.match(e) and is_real_dir(broot / e):
            try:
                out.append(parse_yyyymmdd(e))
            except ValueError:
                continue  # eight digits but no date: not a package observer-backup made
    return sorted(out)


def partition_of(rel: str) -> str:
    return rel.split("/", 1)[0]


# -- reading package files without trusting them ---------------------------------------------------
def read_small(path: Path, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most max_bytes. Never follows a symlink (O_NOFOLLOW), never
    blocks on a FIFO (O_NONBLOCK, then fstat), never reads more than max_bytes + 1. Raises
    FileNotFoundError if absent, InvalidFile if it is not a small regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise InvalidFile(f"{path.name} is a symlink; not followed") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidFile(f"{path.name} is not a regular file ({file_kind(st.st_mode)})")
        if st.st_size > max_bytes:
            raise InvalidFile(f"{path.name} is {st.st_size} bytes, more than the {max_bytes} allowed")
        chunks, n = [], 0
        while n <= max_bytes:
            b = os.read(fd, min(1 << 20, max_bytes + 1 - n))
            if not b:
                break
            chunks.append(b)
            n += len(b)
        if n > max_bytes:
            raise InvalidFile(f"{path.name} grew past the {max_bytes} bytes allowed")
        return b"".join(chunks)
    finally:
        os.close(fd)


@cache
def _schema(name: str):
    s = json.loads((resources.files("observer") / "schemas" / "backup" / f"{name}.json").read_text())
    # the name patterns live here, once; the schema files leave them to be filled in
    s["$defs"]["archive_name"]["pattern"] = f"^{ARCHIVE_NAME_RE.pattern}$"
    if "member_path" in s["$defs"]:
        s["$defs"]["member_path"]["pattern"] = f"^{MEMBER_PATH_RE.pattern}$"
    return fastjsonschema.compile(s)


def _loads(data: bytes, what: str):
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise InvalidFile(f"{what} is not JSON: {e}") from None


def parse_manifest_hash(text) -> str:
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    parts = text.split()
    if len(parts) != 2 or parts[1] != MANIFEST or not re.fullmatch(r"[0-9a-fA-F]{64}", parts[0]):
        raise InvalidFile(f"{MANIFEST_SHA}: want '<sha256>  {MANIFEST}', got {text[:100]!r}")
    return parts[0].lower()


def parse_manifest(data: bytes, day: str | None = None) -> dict:
    """A manifest's bytes -> the manifest, only if it is what observer-backup writes: its schema
    (schemas/backup/manifest.json with the name patterns above), its date (= the package's day, if
    given), and every file entry pointing at an archive of its own partition."""
    m = _loads(data, MANIFEST)
    try:
        _schema("manifest")(m)
    except fastjsonschema.JsonSchemaValueException as e:
        raise InvalidFile(f"{MANIFEST}: {e.message}"[:500]) from None
    if day is not None and m["date"] != day:
        raise InvalidFile(f"{MANIFEST}: date {m['date']} is not the package's day {day}")
    for name, a in m["archives"].items():
        if archive_name(a["partition"]) != name:
            raise InvalidFile(f"{MANIFEST}: archive {name} says partition {a['partition']}")
    for e in m["files"]:
        if e["archive"] not in m["archives"] or archive_name(e["partition"]) != e["archive"] \
                or partition_of(e["path"]) != e["partition"]:
            raise InvalidFile(f"{MANIFEST}: file {e['path']} does not belong to archive {e['archive']}")
    return m


def load_manifest_file(pkg: Path) -> tuple[dict, str]:
    """(manifest, its sha256) of a package directory: manifest.json against manifest.json.sha256, then
    parse_manifest. Raises FileNotFoundError (no manifest), InvalidFile, OSError."""
    day = pkg.name if _DAY_RE.match(pkg.name) else None
    data = read_small(pkg / MANIFEST, MANIFEST_MAX_BYTES)
    want = parse_manifest_hash(read_small(pkg / MANIFEST_SHA, SHA_FILE_MAX_BYTES))
    got = hashlib.sha256(data).hexdigest()
    if got != want:
        raise InvalidFile(f"{MANIFEST}: sha256 {got} does not match {MANIFEST_SHA} ({want})")
    return parse_manifest(data, day), got


def parse_receipt(data: bytes, day: str | None = None) -> dict:
    """pulled.json / receipt.json -> the receipt, only if it is what observer-backup-pull writes."""
    r = _loads(data, RECEIPT)
    try:
        _schema("receipt")(r)
    except fastjsonschema.JsonSchemaValueException as e:
        raise InvalidFile(f"{RECEIPT}: {e.message}"[:500]) from None
    if day is not None and r["date"] != day:
        raise InvalidFile(f"{RECEIPT}: date {r['date']} is not the package's day {day}")
    return r


# -- the tree --------------------------------------------------------------------------------------
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


def _add(inv: dict[date, DayFiles], rel: str, st: os.stat_result, day: date) -> None:
    inv.setdefault(day, DayFiles(day)).parts.setdefault(partition_of(rel), {})[rel] = st


def _scan(root: Path, top: str, problems: list[str] | None, want: str | None) -> Iterator[tuple[str, os.stat_result]]:
    """(relative path, lstat) of every regular file below root/top (store.reader.walk). Symlinks and
    special files are reported to `problems`, never followed or returned; with `want` (YYYYMMDD),
    directories named after another day are not entered."""

    def odd(rel: str, mode: int | None, error: str | None) -> None:
        if problems is None:
            return
        if mode is None:
            problems.append(f"{rel}: cannot list: {error}")
        elif want is None or want in rel:
            problems.append(f"{rel}: {file_kind(mode)}, not a regular file; not packaged, not deleted")

    def enter(name: str) -> bool:
        return want is None or not _DAY_RE.match(name) or name == want

    return walk(root, top, odd=odd, enter=enter, lstat=True)


def _listdir_real(root: Path, rel: str, problems: list[str] | None) -> list[str]:
    """Sorted names in root/rel if every component of rel below root is a real directory (listing a
    symlinked directory would hand out files of its target); else [] (a symlink is reported)."""
    p = root
    for seg in rel.split("/"):
        p = p / seg
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            return []
        if not stat.S_ISDIR(st.st_mode):
            if problems is not None and stat.S_ISLNK(st.st_mode):
                problems.append(f"{p.relative_to(root)}: symlink, not a directory; not followed")
            return []
    try:
        return sorted(os.listdir(p))
    except OSError:
        return []


def _owned(rel: str, st: os.stat_result, problems: list[str] | None) -> bool:
    """A regular file whose name is one the manifest may carry; a temp file is skipped silently (the
    tmp sweep owns it), any other odd name is reported."""
    if is_member_path(rel):
        return True
    if problems is not None and not TEMP_FILE_RE.match(rel.rsplit("/", 1)[-1]):
        problems.append(f"{rel}: a name backup does not package (hidden, or characters outside "
                        "[A-Za-z0-9_.@+-]); not packaged, not deleted")
    return False


def inventory(root: Path, only: date | None = None, problems: list[str] | None = None) -> dict[date, DayFiles]:
    """Every regular file of every day in the packaged partitions (PACKAGED_PARTITIONS): the JSONL
    files the layout knows (paths.classify), everything under reports/YYYYMMDD/, and the day's universe
    files (universe/YYYYMMDD_* and universe/YYYYMMDD/). A symlink, FIFO, socket or device is never
    taken (nor followed): it is appended to `problems`."""
    root = Path(root)
    inv: dict[date, DayFiles] = {}
    want = yyyymmdd(only) if only else None

    def day_of(ymd: str) -> date | None:
        if want and ymd != want:
            return None
        try:
            return parse_yyyymmdd(ymd)
        except ValueError:
            return None  # eight digits but no date (20261399): no day owns it; one stray name must not stop the run

    for part in PACKAGED_PARTITIONS:
        if part in ("reports", UNIVERSE):
            continue
        for rel, st in _scan(root, part, problems, want):
            if not rel.endswith(".jsonl"):
                continue
            c = paths.classify(rel)
            if c is None:
                continue
            d = day_of(c[1])
            if d is not None and _owned(rel, st, problems):
                _add(inv, rel, st, d)
    for part, name_re in (("reports", _DAY_RE), (UNIVERSE, _UNIVERSE_FILE_RE)):
        names = _listdir_real(root, part, problems)
        for e in names:
            m = name_re.match(e) or (_DAY_RE.match(e) if part == UNIVERSE else None)
            if not m:
                continue
            d = day_of(e[:8])
            if d is None:
                continue
            for rel, st in _scan(root, f"{part}/{e}", problems, want):
                if _owned(rel, st, problems):
                    _add(inv, rel, st, d)
    return inv


def ungated_inventory(root: Path) -> dict[date, DayFiles]:
    """The per-day files that are not packaged (METRICS, GAPFILL_STATE), by day. Two directory
    listings, no walk: both live flat in their directory (the writers' temp files are skipped).
    Regular files only (lstat): a symlink named like one is not a day's file."""
    root = Path(root)
    inv: dict[date, DayFiles] = {}

    def add(kind: str, path: Path, ymd: str) -> None:
        try:
            day = parse_yyyymmdd(ymd)
            st = os.lstat(path)
        except (ValueError, FileNotFoundError):
            return  # not a real date (a stray name), or gone meanwhile
        if stat.S_ISREG(st.st_mode):
            inv.setdefault(day, DayFiles(day)).parts.setdefault(kind, {})[str(path.relative_to(root))] = st

    mdir = paths.metrics_file(root, date(2000, 1, 1)).parent
    cdir = paths.gapfill_checkpoint_file(root, "x", date(2000, 1, 1)).parent
    for kind, d in ((METRICS, mdir), (GAPFILL_STATE, cdir)):
        for name in _listdir_real(root, str(d.relative_to(root)), None):
            if kind == METRICS:
                c = paths.classify(str((d / name).relative_to(root)))
                if c is not None and c[0] == "metrics":
                    add(kind, d / name, c[1])
            else:
                m = _CHECKPOINT_RE.match(name)
                if m:
                    add(kind, d / name, m.group("day"))
    return inv


@dataclass(frozen=True)
class TempFile:
    rel: str
    bytes: int
    mtime_ns: int


def stale_temp_files(root: Path, now_ns: int, max_age_s: float) -> list[TempFile]:
    """Writers' temporary files (TEMP_FILE_RE, regular files only) not modified for max_age_s: what a
    crash between write and rename leaves behind. The build directories of backup/ are not files
    (backup's sweep_leftovers owns them)."""
    out = []
    for rel, st in walk(Path(root), lstat=True):
        if TEMP_FILE_RE.match(rel.rsplit("/", 1)[-1]) and now_ns - st.st_mtime_ns > max_age_s * 1e9:
            out.append(TempFile(rel, st.st_size, st.st_mtime_ns))
    return out
