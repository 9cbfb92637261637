"""Package one day of the tree: backup/YYYYMMDD/{<partition>.tar.gz..., manifest.json, manifest.json.sha256}.

How a package comes to exist (and why a crash never leaves half of one in place):
1. every file of the day (layout.inventory) is read once: SHA-256 and record count (complete lines)
   are computed while the bytes stream into a tar archive per partition;
2. the tar stream is cut into blocks compressed in parallel (zlib releases the GIL) as consecutive
   gzip members - a multi-member gzip file is a plain .tar.gz for `tar xzf`, gzip -t and Python;
3. manifest.json (+ manifest.json.sha256) is written, then every archive is re-read from disk and
   checked against the manifest (archive SHA-256 and size; every member's size, SHA-256 and record
   count; nothing missing, nothing extra);
4. only then is the temporary directory renamed into place. A build killed at any point leaves a
   `.YYYYMMDD.tmp-<pid>` directory, swept by the next run; backup/YYYYMMDD is never partial.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import os
import socket
import stat
import tarfile
import time
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import orjson

from observer import __version__
from observer.core import notify
from observer.core.clock import NS, Clock, yyyymmdd
from observer.core.config import section
from observer.core.logging import get_logger
from observer.lifecycle import layout
from observer.store import fs, paths
from observer.store.reader import read_file

log = get_logger(__name__)

RECORD_SCHEMA_VERSION = 1  # the "v" every record carries (schemas/records/*.json)
READ_CHUNK = 1 << 20
PACKAGE_DIR_MODE = 0o2770   # setgid: a receipt written by the SFTP backup user keeps the group
PACKAGE_FILE_MODE = 0o640


class BackupError(Exception):
    pass


class BackupBusy(BackupError):
    pass


@dataclass(frozen=True)
class BackupOptions:
    level: int = 6                # gzip level; 6 = what `tar czf` / gzip use by default
    workers: int = 0              # compression threads; 0 = one per CPU
    block_bytes: int = 4 << 20    # uncompressed bytes per gzip member
    limit_mb_s: float = 0.0       # read rate limit (0 = none), so a day-time run never starves a collector

    @classmethod
    def from_config(cls, cfg: dict) -> BackupOptions:
        b = section(cfg, "backup")
        return cls(b["level"], b["workers"], b["block_mb"] << 20, b["limit_mb_s"])

    @property
    def threads(self) -> int:
        return self.workers or os.cpu_count() or 1


@dataclass
class Result:
    day: date
    action: str                   # built | rebuilt | noop | empty
    path: Path | None = None
    manifest: dict | None = None
    seconds: float = 0.0
    reason: str = ""
    problems: list[str] = field(default_factory=list)


# -- helpers -------------------------------------------------------------------------------------
def manifest_hash_line(digest: str) -> str:
    return f"{digest}  {layout.MANIFEST}\n"


parse_manifest_hash = layout.parse_manifest_hash


class _Throttle:
    def __init__(self, mb_s: float):
        self.rate = mb_s * 1e6
        self.t0 = time.monotonic()
        self.n = 0

    def __call__(self, nbytes: int) -> None:
        if self.rate <= 0:
            return
        self.n += nbytes
        ahead = self.n / self.rate - (time.monotonic() - self.t0)
        if ahead > 0:
            time.sleep(ahead)


# -- writing ---------------------------------------------------------------------------------------
class ParallelGzipWriter:
    """A file-like sink: bytes written are cut into blocks, each compressed (in the pool) into one
    gzip member; members are written in order. The output's size and SHA-256 are kept as it goes."""

    def __init__(self, path: Path, pool: ThreadPoolExecutor, level: int, block: int, inflight: int):
        self.f = fs.open_new(path, PACKAGE_FILE_MODE)
        self.pool = pool
        self.level = level
        self.block = block
        self.inflight = max(2, inflight)
        self.pieces: list[bytes] = []
        self.pending_len = 0
        self.q: deque[Future] = deque()
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.pieces.append(data)
        self.pending_len += len(data)
        if self.pending_len >= self.block:
            self._submit()

    def _submit(self) -> None:
        if not self.pieces:
            return
        blob = self.pieces[0] if len(self.pieces) == 1 else b"".join(self.pieces)
        self.pieces, self.pending_len = [], 0
        self.q.append(self.pool.submit(zlib.compress, blob, self.level, 31))  # wbits 31 = gzip member
        while len(self.q) > self.inflight:
            self._drain_one()

    def _drain_one(self) -> None:
        out = self.q.popleft().result()
        self.f.write(out)
        notify.progress()  # a compressed block written: real progress for the unit's watchdog
        self.sha.update(out)
        self.size += len(out)

    def close(self) -> None:
        self._submit()
        while self.q:
            self._drain_one()
        fs.close_durable(self.f)

    def abort(self) -> None:
        for fut in self.q:
            fut.cancel()
        self.f.close()


def _tar_header(rel: str, st: os.stat_result, size: int) -> bytes:
    ti = tarfile.TarInfo(rel)
    ti.size = size
    ti.mtime = int(st.st_mtime)
    ti.mode = st.st_mode & 0o7777
    ti.type = tarfile.REGTYPE
    ti.uid, ti.gid, ti.uname, ti.gname = st.st_uid, st.st_gid, "", ""
    return ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _open_regular(path: Path):
    """Open a file of the tree for packaging: never through a symlink, never blocking on a FIFO (the
    inventory took regular files only; this holds if one was swapped in since)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BackupError(f"{path}: {layout.file_kind(st.st_mode)}, not a regular file; not packaged")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def write_archive(root: Path, rels: list[str], out: Path, pool: ThreadPoolExecutor, opts: BackupOptions,
                  throttle: _Throttle) -> tuple[dict, list[dict]]:
    """One partition's .tar.gz. Returns (archive entry, file entries) for the manifest."""
    w = ParallelGzipWriter(out, pool, opts.level, opts.block_bytes, 2 * opts.threads + 2)
    entries = []
    total = 0
    try:
        for rel in rels:
            with _open_regular(root / rel) as f:
                st = os.fstat(f.fileno())
                size = st.st_size  # the bytes packaged: a file still being appended stops here
                w.write(_tar_header(rel, st, size))
                h = hashlib.sha256()
                lines = 0
                left = size
                last = b""
                while left:
                    b = f.read(min(READ_CHUNK, left))
                    if not b:
                        raise BackupError(f"{rel}: shrank while being packaged ({size - left} of {size} bytes read)")
                    h.update(b)
                    lines += b.count(b"\n")
                    left -= len(b)
                    last = b
                    w.write(b)
                    throttle(len(b))
                if size % tarfile.BLOCKSIZE:
                    w.write(tarfile.NUL * (tarfile.BLOCKSIZE - size % tarfile.BLOCKSIZE))
            e = {"path": rel, "bytes": size, "sha256": h.hexdigest(), "records": lines, "mtime_ns": st.st_mtime_ns}
            if size and not last.endswith(b"\n") and rel.endswith(".jsonl"):
                e["torn_tail"] = True  # a last line without newline: not counted as a record
            entries.append(e)
            total += size
        end = tarfile.NUL * (2 * tarfile.BLOCKSIZE)
        w.write(end)
        w.close()
    except BaseException:
        w.abort()
        raise
    arch = {"bytes": w.size, "sha256": w.sha.hexdigest(), "files": len(entries), "data_bytes": total,
            "records": sum(e["records"] for e in entries)}
    return arch, entries


# -- verifying -------------------------------------------------------------------------------------
class _HashingReader(io.RawIOBase):
    def __init__(self, f):
        self.f = f
        self.sha = hashlib.sha256()
        self.n = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = self.f.readinto(b)
        if n:
            self.sha.update(memoryview(b)[:n])
            self.n += n
        return n


def verify_archive(path: Path, arch: dict, files: list[dict]) -> list[str]:
    """Re-read one archive: its own size/SHA-256 and every member against the manifest entries."""
    problems: list[str] = []
    want = {e["path"]: e for e in files}
    seen: set[str] = set()
    name = path.name
    try:
        with open(path, "rb", buffering=0) as raw:
            hr = _HashingReader(raw)
            buffered = io.BufferedReader(hr, 1 << 20)
            gz = gzip.GzipFile(fileobj=buffered, mode="rb")
            with tarfile.open(fileobj=gz, mode="r|", bufsize=1 << 20) as tf:
                for m in tf:
                    e = want.get(m.name)
                    if e is None:
                        problems.append(f"{name}: member {m.name} is not in the manifest")
                        continue
                    seen.add(m.name)
                    h = hashlib.sha256()
                    lines = 0
                    n = 0
                    fo = tf.extractfile(m)
                    while b := fo.read(READ_CHUNK):
                        h.update(b)
                        lines += b.count(b"\n")
                        n += len(b)
                        notify.progress()  # verification read a chunk
                    if n != e["bytes"] or h.hexdigest() != e["sha256"] or lines != e["records"]:
                        problems.append(f"{name}: {m.name}: content differs from the manifest "
                                        f"(bytes {n}/{e['bytes']}, records {lines}/{e['records']})")
            while gz.read(READ_CHUNK):
                pass
            while buffered.read(READ_CHUNK):
                pass
            if hr.n != arch["bytes"] or hr.sha.hexdigest() != arch["sha256"]:
                problems.append(f"{name}: archive bytes/SHA-256 differ from the manifest "
                                f"({hr.n} bytes, sha256 {hr.sha.hexdigest()[:16]}...)")
    except (OSError, EOFError, tarfile.TarError, zlib.error) as e:
        problems.append(f"{name}: unreadable: {type(e).__name__}: {e}")
    for missing in sorted(set(want) - seen):
        problems.append(f"{name}: {missing} is in the manifest but not in the archive")
    return problems


def load_manifest(pkg: Path) -> tuple[dict, str]:
    """(manifest, its sha256) after checking manifest.json against manifest.json.sha256 and the
    manifest against its schema and name patterns (layout.load_manifest_file). Raises
    layout.InvalidFile (a ValueError) for a manifest that is not what this module writes."""
    return layout.load_manifest_file(pkg)


def verify_package(pkg: Path, threads: int = 2, manifest: dict | None = None) -> list[str]:
    """Every archive of a package against its manifest (parallel over archives)."""
    try:
        m, _ = load_manifest(pkg)
    except (OSError, ValueError, BackupError) as e:
        return [str(e)]
    if manifest is not None and m != manifest:
        return ["manifest on disk differs from the one just built"]
    by_arch: dict[str, list[dict]] = {}
    for e in m["files"]:
        by_arch.setdefault(e["archive"], []).append(e)
    with ThreadPoolExecutor(max(1, threads)) as ex:
        futs = [ex.submit(verify_archive, pkg / name, a, by_arch.get(name, [])) for name, a in m["archives"].items()]
        problems = [p for f in futs for p in f.result()]
    extra = sorted(set(os.listdir(pkg)) - set(m["archives"]) - {layout.MANIFEST, layout.MANIFEST_SHA, layout.RECEIPT})
    problems += [f"unexpected file {x} in the package" for x in extra]
    return problems


# -- day facts -------------------------------------------------------------------------------------
def day_facts(root: Path, day: date, inv: layout.DayFiles) -> dict:
    """Gap summary (gap_marker events by recoverable) and anomaly-day markers of a day."""
    gaps = {"total": 0, "recoverable": 0, "unrecoverable": 0}
    sources = []
    for rel in sorted(inv.parts.get("system", {})):
        if paths.classify(rel) is None or paths.classify(rel)[0] != "events":
            continue
        for rec in read_file(root / rel):
            if not isinstance(rec, dict):
                continue  # a line that is not an object is no marker (observer-verify reports it)
            if rec.get("event") == "gap_marker":
                gaps["total"] += 1
                gaps["recoverable" if rec.get("recoverable") else "unrecoverable"] += 1
            if rec.get("anomaly_day") is True and rel not in sources:
                sources.append(rel)
    q = paths.quality_json_file(root, day)
    try:
        if orjson.loads(layout.read_small(q, layout.MANIFEST_MAX_BYTES)).get("anomaly_day") is True:
            sources.append(str(q.relative_to(root)))
    except (OSError, ValueError, AttributeError):
        pass  # absent, unreadable, not a small regular file, not an object: no anomaly marker from it
    return {"gaps": gaps, "anomaly_day": bool(sources), "anomaly_sources": sources}


# -- the package -----------------------------------------------------------------------------------
def changed_since(manifest: dict, inv: layout.DayFiles) -> list[str]:
    """Files of the day that are new or differ (size/mtime) from the manifest. Files that are gone
    (retention deleted them) do not count."""
    known = {e["path"]: e for e in manifest.get("files", [])}
    out = []
    for part in inv.parts.values():
        for rel, st in part.items():
            e = known.get(rel)
            if e is None:
                out.append(f"new {rel}")
            elif e["bytes"] != st.st_size or e["mtime_ns"] != st.st_mtime_ns:
                out.append(f"changed {rel}")
    return sorted(out)


def lock_backup_root(root: Path) -> fs.Lock:
    """The lock of backup/ (held by the caller until it calls close()); BackupBusy if another holds it."""
    broot = layout.backup_root(root)
    fs.ensure_dir(broot)  # 0750 like the rest of the tree
    lock = fs.Lock(broot)
    if not lock.acquire(wait_s=0):
        lock.close()
        raise BackupBusy(f"{broot}: another observer-backup is running")
    return lock


def sweep_leftovers(root: Path, day: date | None = None) -> list[str]:
    """Remove half-built packages; put back a package whose rebuild died mid-swap. Call under the lock."""
    done = []
    for what, p in layout.leftover_dirs(root, day):
        final = p.parent / p.name[1:9]
        if what == "old" and not final.exists():
            fs.rename_dir(p, final)
            done.append(f"restored {final.name} from an interrupted rebuild")
        else:
            fs.remove_tree(p)
            done.append(f"removed leftover {p.name}")
    return done


def package_day(root: Path, day: date, *, opts: BackupOptions = BackupOptions(), force: bool = False,
                host: str | None = None, clock: Clock | None = None, only_if_packaged: bool = False) -> Result:
    """Build (or confirm) the package of `day`. Raises BackupError on failure; never leaves a
    partial package in place."""
    root = Path(root)
    clock = clock or Clock()
    t0 = time.monotonic()
    lock = lock_backup_root(root)
    try:
        for msg in sweep_leftovers(root, day):
            log.warning(msg, extra={"date": yyyymmdd(day)})
        final = paths.backup_dir(root, day)
        problems: list[str] = []
        inv = layout.inventory(root, day, problems).get(day, layout.DayFiles(day))
        action = "built"
        reason = ""
        if final.exists():
            try:
                old, _ = load_manifest(final)
            except (OSError, ValueError, BackupError) as e:
                old, reason = None, f"existing package unreadable ({e})"
            if old is not None:
                changes = changed_since(old, inv)
                missing = [e["path"] for e in old["files"] if not (root / e["path"]).exists()]
                if not force and not changes:
                    return Result(day, "noop", final, old, time.monotonic() - t0, "already packaged and unchanged",
                                  problems)
                if not force and missing:
                    # retention has started deleting this day: the PC holds the full package; rebuilding
                    # would drop the deleted files from the server's copy. Leave it.
                    return Result(day, "noop", final, old, time.monotonic() - t0,
                                  f"{len(changes)} change(s) since packaging but {len(missing)} file(s) already "
                                  "deleted by retention; not rebuilt", problems)
                reason = "forced" if force else f"{len(changes)} file(s) new or changed since packaging: " + \
                    ", ".join(changes[:5]) + (" ..." if len(changes) > 5 else "")
            action = "rebuilt"
        elif only_if_packaged:
            return Result(day, "noop", None, None, 0.0, "not packaged")
        if not inv.files():
            return Result(day, "empty", None, None, time.monotonic() - t0, "no files for this day", problems)

        tmp = layout.temp_package_dir(root, day)
        fs.create_dir(tmp, PACKAGE_DIR_MODE)
        try:
            manifest = _build(root, day, inv, tmp, opts, host or socket.gethostname(), clock)
            bad = verify_package(tmp, opts.threads, manifest)
            if bad:
                raise BackupError(f"verification of the new package failed: {'; '.join(bad[:5])}")
            for f in os.listdir(tmp):
                fs.fsync_file(tmp / f)
            fs.fsync_dir(tmp)
            old_dir = None
            if final.exists():
                old_dir = layout.temp_package_dir(root, day, "old")
                fs.rename_dir(final, old_dir)
            fs.rename_dir(tmp, final)
            if old_dir is not None:
                fs.remove_tree(old_dir)
        except BaseException:
            fs.remove_tree(tmp, ignore_errors=True)
            raise
        return Result(day, action, final, manifest, time.monotonic() - t0, reason, problems)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise BackupError(f"disk full while packaging {yyyymmdd(day)}: {e}") from e
        raise BackupError(f"packaging {yyyymmdd(day)} failed: {e}") from e
    finally:
        lock.close()


def _build(root: Path, day: date, inv: layout.DayFiles, tmp: Path, opts: BackupOptions, host: str,
           clock: Clock) -> dict:
    facts = day_facts(root, day, inv)
    throttle = _Throttle(opts.limit_mb_s)
    archives: dict[str, dict] = {}
    files: list[dict] = []
    with ThreadPoolExecutor(opts.threads) as pool:
        for part in layout.PACKAGED_PARTITIONS:
            rels = sorted(inv.parts.get(part, {}))
            if not rels:
                continue
            name = layout.archive_name(part)
            arch, entries = write_archive(root, rels, tmp / name, pool, opts, throttle)
            archives[name] = {"partition": part, **arch}
            for e in entries:
                files.append({"archive": name, "partition": part, **e})
    now = clock.now_ns()
    manifest = {
        "manifest_version": layout.MANIFEST_VERSION,
        "schema_version": RECORD_SCHEMA_VERSION,
        "date": yyyymmdd(day),
        "host": host,
        "created_at": datetime.fromtimestamp(now / NS, tz=UTC).isoformat(timespec="seconds"),
        "created_ns": now,
        "program": "observer-backup",
        "observer_version": __version__,
        "compression": {"format": "tar (pax), gzip members of block_bytes each", "level": opts.level,
                        "block_bytes": opts.block_bytes},
        "gaps": facts["gaps"],
        "anomaly_day": facts["anomaly_day"],
        "anomaly_sources": facts["anomaly_sources"],
        "totals": {"archives": len(archives), "files": len(files),
                   "data_bytes": sum(a["data_bytes"] for a in archives.values()),
                   "archive_bytes": sum(a["bytes"] for a in archives.values()),
                   "records": sum(a["records"] for a in archives.values())},
        "archives": archives,
        "files": files,
    }
    data = orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    fs.write_new(tmp / layout.MANIFEST, data, PACKAGE_FILE_MODE)
    fs.write_new(tmp / layout.MANIFEST_SHA, manifest_hash_line(hashlib.sha256(data).hexdigest()).encode(),
                 PACKAGE_FILE_MODE)
    return manifest
