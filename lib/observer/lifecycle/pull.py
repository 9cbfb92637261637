"""observer-backup-pull: the PC fetches verified packages over SFTP, checks them, and writes a receipt back.

Trust: key authentication only (no agent, no password), and the server's host key must already be
in the given known_hosts file - an unknown or changed key is refused with its fingerprint; nothing
is ever auto-accepted.

Per package backup/YYYYMMDD on the server:
1. manifest.json is fetched and checked against manifest.json.sha256;
2. every archive is fetched into LOCAL/YYYYMMDD/<name>.<sha16>.part - resumed from the part's
   size after an interruption (the part is named after the expected hash, so a part of another
   version of the package is never resumed) - and its SHA-256 and size are checked; a good file is
   renamed to LOCAL/YYYYMMDD/<name>; a local copy that already matches is not fetched again;
3. a mismatch: the bad file goes to LOCAL/quarantine/YYYYMMDD/<utc time>/, no receipt, exit 1;
4. all good: manifest, its .sha256 and receipt.json are kept locally, and pulled.json is written
   on the server (upload to a temporary name, then an atomic rename).

Nothing the server says is trusted: the manifest must pass layout.parse_manifest (schema, plain
archive names of the form observer-backup writes, its own day), every file is lstat'ed on the server
and refused unless it is a regular file of a bounded size, and locally nothing is opened through a
symlink (O_NOFOLLOW, lstat). A day that fails any of this is `invalid`: reported, not pulled, no
receipt; the other days go on.

Local retention: a package is deleted when its receipt's pulled_at is more than max(keep_days,
min_keep_days) days old - never in the run that pulled it; quarantined files after quarantine_keep_days.

Transfer speed: paramiko's own prefetch and its channel buffer (an array with a memmove per
read) cap it far below OpenSSH's sftp on a fast link; we keep up to `concurrency` read requests
of `request_kb` in flight ourselves and give the channel a chunked buffer (see _ChunkBuffer).
"""

from __future__ import annotations

import base64
import collections
import hashlib
import io
import os
import queue
import re
import shutil
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import paramiko
from paramiko.sftp import CMD_DATA, CMD_READ, int64

from observer import __version__
from observer.core import notify
from observer.core.logging import get_logger
from observer.lifecycle import layout
from observer.lifecycle.backup import manifest_hash_line
from observer.lifecycle.layout import InvalidFile, parse_manifest_hash

log = get_logger(__name__)

RECEIPT_LOCAL = "receipt.json"
QUARANTINE = "quarantine"
_DAY_RE = re.compile(r"^\d{8}$")


class PullError(Exception):
    """Could not talk to the server as required (exit 3)."""


class HostKeyError(PullError):
    pass


class VerifyError(Exception):
    """A file did not match its manifest (exit 1)."""


@dataclass(frozen=True)
class PullConfig:
    host: str
    user: str
    key_file: str
    known_hosts: str
    local_dir: str
    remote_dir: str = "/backup"
    port: int = 22
    pc_id: str = ""
    keep_days: int = 30
    min_keep_days: int = 7
    quarantine_keep_days: int = 30
    concurrency: int = 32
    request_kb: int = 255
    window_mb: int = 32
    limit_mb_s: float = 0.0
    connect_timeout_s: float = 20.0

    @classmethod
    def from_config(cls, cfg: dict, **over) -> PullConfig:
        p = dict(cfg.get("pull", {}))
        p.update({k: v for k, v in over.items() if v is not None})
        missing = [k for k in ("host", "user", "key_file", "known_hosts", "local_dir") if not p.get(k)]
        if missing:
            raise ValueError(f"[pull] needs {', '.join(missing)}")
        return cls(**{k: p[k] for k in cls.__dataclass_fields__ if k in p})

    @property
    def id(self) -> str:
        return self.pc_id or socket.gethostname()


def fingerprint(key: paramiko.PKey) -> str:
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


# -- a faster channel buffer ------------------------------------------------------------------------
class _Bytes:
    __slots__ = ("b",)

    def __init__(self, b: bytes):
        self.b = b

    def tobytes(self) -> bytes:
        return self.b


class _ChunkBuffer:
    """Drop-in for the array.array inside paramiko's BufferedPipe (len, frombytes, [:n].tobytes(),
    del [:n]) that keeps received packets as a deque of chunks: taking n bytes off the front costs
    O(n), not a memmove of everything buffered behind them."""

    def __init__(self):
        self._chunks: collections.deque[bytes] = collections.deque()
        self._head = 0
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def frombytes(self, data) -> None:
        if data:
            self._chunks.append(bytes(data))
            self._len += len(data)

    def tobytes(self) -> bytes:
        return self[:None].tobytes()

    def __getitem__(self, s: slice) -> _Bytes:
        n = self._len if s.stop is None else min(s.stop, self._len)
        out = []
        head = self._head
        for c in self._chunks:
            if n <= 0:
                break
            piece = c[head:head + n] if head or len(c) - head > n else c
            out.append(piece)
            n -= len(piece)
            head = 0
        return _Bytes(out[0] if len(out) == 1 else b"".join(out))

    def __delitem__(self, s: slice) -> None:
        n = self._len if s.stop is None else min(s.stop, self._len)
        self._len -= n
        while n:
            avail = len(self._chunks[0]) - self._head
            if avail <= n:
                self._chunks.popleft()
                self._head = 0
                n -= avail
            else:
                self._head += n
                n = 0


def _speed_up_channel(sftp: paramiko.SFTPClient) -> None:
    pipe = sftp.sock.in_buffer
    if not hasattr(pipe, "_buffer"):
        return  # a paramiko whose pipe has changed: keep its own (slower, still correct)
    with pipe._lock:
        nb = _ChunkBuffer()
        nb.frombytes(pipe._buffer.tobytes())
        pipe._buffer = nb


# -- connecting -------------------------------------------------------------------------------------
def _known_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def connect(cfg: PullConfig) -> tuple[paramiko.Transport, paramiko.SFTPClient]:
    kh_path = Path(cfg.known_hosts).expanduser()
    if not kh_path.is_file():
        raise HostKeyError(f"known_hosts file {kh_path} does not exist; add the server's key first "
                           f"(see docs/backup.md: ssh-keyscan, then compare the fingerprint out of band)")
    known = paramiko.HostKeys(str(kh_path))
    name = _known_name(cfg.host, cfg.port)
    entry = known.lookup(name)
    try:
        sock = socket.create_connection((cfg.host, cfg.port), timeout=cfg.connect_timeout_s)
    except OSError as e:
        raise PullError(f"cannot connect to {cfg.host}:{cfg.port}: {e}") from None
    win = cfg.window_mb << 20
    t = paramiko.Transport(sock, default_window_size=win, default_max_packet_size=256 << 10)
    try:
        if entry:
            # offer only the key types we know for this host, so the check below compares like with like
            prefs = [k for k in t.get_security_options().key_types if k in entry.keys()]
            if prefs:
                t.get_security_options().key_types = prefs
        t.start_client(timeout=cfg.connect_timeout_s)
        key = t.get_remote_server_key()
        fp = fingerprint(key)
        if not entry:
            raise HostKeyError(f"host key of {name} is unknown ({key.get_name()} {fp}); refusing. "
                               f"Check that fingerprint out of band, then add the key to {kh_path}")
        expected = entry.get(key.get_name())
        if expected is None or expected != key:
            known_fps = ", ".join(f"{k} {fingerprint(v)}" for k, v in entry.items())
            raise HostKeyError(f"host key of {name} CHANGED: the server offers {key.get_name()} {fp}, "
                               f"{kh_path} has {known_fps}; refusing (possible man-in-the-middle; if the "
                               f"server was really replaced, verify the new fingerprint and update known_hosts)")
        try:
            pkey = paramiko.PKey.from_path(str(Path(cfg.key_file).expanduser()))
        except (OSError, paramiko.SSHException) as e:
            raise PullError(f"cannot load the private key {cfg.key_file}: {type(e).__name__}") from None
        try:
            t.auth_publickey(cfg.user, pkey)
        except paramiko.AuthenticationException:
            raise PullError(f"{cfg.user}@{name} refused the key {cfg.key_file} "
                            f"({pkey.get_name()} {fingerprint(pkey)})") from None
        sftp = paramiko.SFTPClient.from_transport(t, window_size=win, max_packet_size=256 << 10)
        if sftp is None:
            raise PullError(f"{name}: the SFTP subsystem could not be started")
        _speed_up_channel(sftp)
        return t, sftp
    except paramiko.SSHException as e:
        t.close()
        raise PullError(f"SSH with {name} failed: {e}") from None
    except BaseException:
        t.close()
        raise


# -- transferring -----------------------------------------------------------------------------------
class _Sink:
    def __init__(self):
        self.got: dict[int, tuple] = {}

    def _async_response(self, t, msg, num):
        self.got[num] = (t, msg)


class _Throttle:
    def __init__(self, mb_s: float):
        self.rate = mb_s * 1e6
        self.t0 = time.monotonic()
        self.n = 0

    def __call__(self, n: int) -> None:
        if self.rate > 0:
            self.n += n
            ahead = self.n / self.rate - (time.monotonic() - self.t0)
            if ahead > 0:
                time.sleep(ahead)


Progress = Callable[[str, int, int], None]


class _DiskWriter:
    """Appends, hashes and periodically fsyncs a part file in its own thread: file writes and SHA-256
    release the GIL, so they overlap the SFTP pipeline (paramiko's packet handling is Python and holds
    it) instead of adding to it. Bounded: at most `depth` chunks wait."""

    def __init__(self, part: Path, h, depth: int = 64):
        self.h = h
        self.q: queue.Queue = queue.Queue(depth)
        self.error: BaseException | None = None
        # never through a symlink: the part is ours, named after the manifest's (checked) archive name
        self.out = os.fdopen(os.open(part, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                                     0o600), "ab")
        self.t = threading.Thread(target=self._run, name="pull-disk", daemon=True)
        self.t.start()

    def _run(self) -> None:
        last_sync = time.monotonic()
        try:
            while (data := self.q.get()) is not None:
                self.out.write(data)
                self.h.update(data)
                if time.monotonic() - last_sync > 1.0:
                    self.out.flush()
                    os.fsync(self.out.fileno())
                    last_sync = time.monotonic()
            self.out.flush()
            os.fsync(self.out.fileno())
        except BaseException as e:  # handed to the SFTP side, which raises it
            self.error = e
            while self.q.get() is not None:  # drain so put() never blocks forever
                pass
        finally:
            self.out.close()

    def put(self, data: bytes) -> None:
        if self.error is not None:
            raise self.error
        self.q.put(data)

    def finish(self) -> None:
        """Wait until everything put is written, hashed and fsync'd (raises what the thread hit)."""
        self.q.put(None)
        self.t.join()
        if self.error is not None:
            raise self.error


def fetch(sftp: paramiko.SFTPClient, remote: str, part: Path, size: int, *, concurrency: int = 32,
          request: int = 255 << 10, limit_mb_s: float = 0.0, progress: Progress | None = None) -> str:
    """Append remote[offset:size] to `part` (offset = its current size), keeping `concurrency` reads
    in flight; returns the SHA-256 of the whole part. Data is fsync'd so a resume never trusts
    bytes the disk did not keep."""
    h = hashlib.sha256()
    pst = _local_regular(part)
    offset = pst.st_size if pst else 0
    if offset > size:
        return "oversize"
    if offset:
        with _open_local(part) as f:
            while b := f.read(1 << 20):
                h.update(b)
    throttle = _Throttle(limit_mb_s)
    rf = sftp.open(remote, "rb")
    disk = None
    sink = _Sink()
    pending: collections.deque = collections.deque()
    try:
        handle = rf.handle
        nxt = offset
        disk = _DiskWriter(part, h)
        while pending or nxt < size:
            while len(pending) < concurrency and nxt < size:
                n = min(request, size - nxt)
                # paramiko's request/response API (what its own prefetch uses), one thread
                num = sftp._async_request(sink, CMD_READ, handle, int64(nxt), int(n))
                pending.append((num, nxt, n))
                nxt += n
            num, off, n = pending.popleft()
            r = sink.got.pop(num, None)
            if r is None:
                try:
                    r = sftp._read_response(num)
                except EOFError:
                    raise VerifyError(f"{remote}: ends before {size} bytes (at {off})") from None
            t, msg = r
            if t != CMD_DATA:
                raise PullError(f"{remote}: unexpected SFTP reply {t} at offset {off}")
            data = msg.get_string()
            if len(data) < n:  # a short read is legal: fetch the rest of this range now
                while len(data) < n:
                    t2, m2 = sftp._request(CMD_READ, handle, int64(off + len(data)), int(n - len(data)))
                    more = m2.get_string()
                    if not more:
                        raise VerifyError(f"{remote}: ends before {size} bytes")
                    data += more
            disk.put(data)
            notify.progress()  # bytes received: a hung SFTP stops this and the unit's watchdog kills it
            throttle(len(data))
            if progress:
                progress(remote, off + n, size)
        d, disk = disk, None
        d.finish()
    finally:
        if disk is not None:  # failed mid-way: what was received is still written (resume continues)
            try:
                disk.finish()
            except Exception:
                pass
        for num, _, _ in list(pending):
            sink.got.pop(num, None)
        rf.close()
    return h.hexdigest()


# -- the job ----------------------------------------------------------------------------------------
@dataclass
class DayResult:
    day: str
    status: str                    # pulled | already | mismatch | invalid | skipped
    fetched_bytes: int = 0
    reused: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)


def _local_regular(p: Path) -> os.stat_result | None:
    """lstat of a local file: None if absent; InvalidFile if it is anything but a regular file (a
    symlink is never followed)."""
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        raise InvalidFile(f"local {p} is a {layout.file_kind(st.st_mode)}, not a regular file; not followed")
    return st


def _open_local(p: Path):
    return os.fdopen(os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC), "rb")


def _sha256_file(p: Path) -> str:
    h = hashlib.sha256()
    with _open_local(p) as f:
        while b := f.read(1 << 20):
            h.update(b)
            notify.progress()  # re-hashing a local archive before reusing it
    return h.hexdigest()


def _write_local(p: Path, data: bytes) -> None:
    """Replace p with data: a new temp file (O_EXCL, never through a symlink) renamed over it, so a
    symlink at p is replaced, not written through."""
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)


def _rjoin(*parts: str) -> str:
    return "/".join(p.rstrip("/") for p in parts)


def _remote_regular(sftp: paramiko.SFTPClient, path: str) -> paramiko.SFTPAttributes:
    """lstat on the server: a regular file, or InvalidFile (a symlink is refused, never followed)."""
    a = sftp.lstat(path)
    if not stat.S_ISREG(a.st_mode or 0):
        raise InvalidFile(f"{path} on the server is a {layout.file_kind(a.st_mode or 0)}, not a regular file; refused")
    return a


def _read_remote(sftp: paramiko.SFTPClient, path: str, max_bytes: int) -> bytes:
    """A small regular file of the server (lstat first; at most max_bytes)."""
    a = _remote_regular(sftp, path)
    if (a.st_size or 0) > max_bytes:
        raise InvalidFile(f"{path} on the server is {a.st_size} bytes, more than the {max_bytes} allowed")
    with sftp.open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise InvalidFile(f"{path} on the server grew past the {max_bytes} bytes allowed")
    return data


def remote_days(sftp: paramiko.SFTPClient, cfg: PullConfig) -> list[str]:
    """Entries of the server's backup directory named like a package (YYYYMMDD). Whether each is a
    real directory is pull_day's check (lstat): a symlink is refused there, and reported."""
    return sorted(a.filename for a in sftp.listdir_attr(cfg.remote_dir) if _DAY_RE.match(a.filename))


def _quarantine(local: Path, day: str, f: Path, now: datetime) -> Path:
    q = local / QUARANTINE / day / now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    q.mkdir(parents=True, exist_ok=True)
    dest = q / f.name
    os.replace(f, dest)
    return dest


def build_receipt(day: str, pc_id: str, now: datetime, manifest_sha256: str, archives: dict[str, str]) -> bytes:
    """pulled.json: who verified which manifest (by its SHA-256) and every archive's SHA-256."""
    receipt = {"receipt_version": 1, "date": day, "pc_id": pc_id, "pulled_at": now.isoformat(timespec="seconds"),
               "manifest_sha256": manifest_sha256, "archives": archives, "verified": True,
               "program": "observer-backup-pull", "observer_version": __version__}
    return orjson.dumps(receipt, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


def pull_day(sftp: paramiko.SFTPClient, cfg: PullConfig, day: str, *, force: bool = False,
             progress: Progress | None = None, now: datetime | None = None) -> DayResult:
    """One package: fetch, verify, keep, receipt. Whatever the server holds, the result is a DayResult
    (InvalidFile becomes status `invalid`); connection errors propagate."""
    try:
        return _pull_day(sftp, cfg, day, force=force, progress=progress, now=now)
    except InvalidFile as e:
        return DayResult(day, "invalid", problems=[f"{day}: {e}"])


def _pull_day(sftp: paramiko.SFTPClient, cfg: PullConfig, day: str, *, force: bool,
              progress: Progress | None, now: datetime | None) -> DayResult:
    if not _DAY_RE.match(day):
        raise InvalidFile(f"{day!r} is not a package name (YYYYMMDD)")
    now = now or datetime.now(UTC)
    res = DayResult(day, "pulled")
    rdir = _rjoin(cfg.remote_dir, day)
    local = Path(cfg.local_dir).expanduser()
    ldir = local / day
    if os.path.lexists(ldir) and not layout.is_real_dir(ldir):
        raise InvalidFile(f"local {ldir} is not a directory (a symlink or a file); not followed")
    try:
        rst = sftp.lstat(rdir)  # SFTP lstat: a symlinked package directory is seen as one, not followed
    except FileNotFoundError:
        return DayResult(day, "skipped", problems=["no such package on the server"])
    if not stat.S_ISDIR(rst.st_mode or 0):
        raise InvalidFile(f"{day} on the server is a {layout.file_kind(rst.st_mode or 0)}, not a package "
                          "directory; refused")
    try:
        mdata = _read_remote(sftp, _rjoin(rdir, layout.MANIFEST), layout.MANIFEST_MAX_BYTES)
        mwant = parse_manifest_hash(_read_remote(sftp, _rjoin(rdir, layout.MANIFEST_SHA), layout.SHA_FILE_MAX_BYTES))
    except FileNotFoundError:
        return DayResult(day, "skipped", problems=["no manifest (not a finished package)"])
    msha = hashlib.sha256(mdata).hexdigest()
    if msha != mwant:
        ldir.mkdir(parents=True, exist_ok=True)
        bad = ldir / f"{layout.MANIFEST}.bad"
        _write_local(bad, mdata)
        res.quarantined.append(str(_quarantine(local, day, bad, now)))
        res.status = "mismatch"
        res.problems.append(f"{day}/{layout.MANIFEST}: sha256 {msha} != {layout.MANIFEST_SHA} {mwant}")
        return res
    manifest = layout.parse_manifest(mdata, day)
    if not force:
        try:
            r = layout.parse_receipt(_read_remote(sftp, _rjoin(rdir, layout.RECEIPT), layout.RECEIPT_MAX_BYTES), day)
            if r["manifest_sha256"] == msha:
                return DayResult(day, "already")
        except (FileNotFoundError, InvalidFile):
            pass  # no receipt, or one that is not ours: pull (a new receipt replaces it)
    # every archive is a regular file on the server, of the manifest's size, before anything is fetched
    for name, a in manifest["archives"].items():
        size = _remote_regular(sftp, _rjoin(rdir, name)).st_size
        if size != a["bytes"]:
            res.status = "mismatch"
            res.problems.append(f"{day}/{name}: {size} bytes on the server, the manifest says {a['bytes']}")
    if res.status == "mismatch":
        return res
    ldir.mkdir(parents=True, exist_ok=True)
    verified: dict[str, str] = {}
    for name, a in manifest["archives"].items():
        dest = ldir / name
        dst = _local_regular(dest)
        if dst is not None and dst.st_size == a["bytes"] and _sha256_file(dest) == a["sha256"]:
            verified[name] = a["sha256"]
            res.reused.append(name)
            continue
        part = ldir / f"{name}.{a['sha256'][:16]}.part"
        for stale in ldir.glob(f"{name}.*.part"):
            if stale != part:
                stale.unlink()
        pst = _local_regular(part)
        before = pst.st_size if pst else 0
        try:
            got = fetch(sftp, _rjoin(rdir, name), part, a["bytes"], concurrency=cfg.concurrency,
                        request=cfg.request_kb << 10, limit_mb_s=cfg.limit_mb_s, progress=progress)
        except VerifyError as e:
            got = f"short: {e}"
        pst = _local_regular(part)
        have = pst.st_size if pst else 0
        res.fetched_bytes += have - before
        if got != a["sha256"] or have != a["bytes"]:
            res.status = "mismatch"
            res.problems.append(f"{day}/{name}: sha256 {got[:64]} != manifest {a['sha256']} "
                                f"({have} of {a['bytes']} bytes)")
            if pst is not None:
                res.quarantined.append(str(_quarantine(local, day, part, now)))
            continue
        os.replace(part, dest)
        verified[name] = got
    if res.status == "mismatch":
        return res
    _write_local(ldir / layout.MANIFEST, mdata)
    _write_local(ldir / layout.MANIFEST_SHA, manifest_hash_line(msha).encode())
    data = build_receipt(day, cfg.id, now, msha, verified)
    tmp = _rjoin(rdir, f".{layout.RECEIPT}.tmp-{os.getpid()}")
    sftp.putfo(io.BytesIO(data), tmp, file_size=len(data), confirm=True)
    try:
        sftp.posix_rename(tmp, _rjoin(rdir, layout.RECEIPT))
    except OSError:
        try:
            sftp.remove(_rjoin(rdir, layout.RECEIPT))
        except FileNotFoundError:
            pass
        sftp.rename(tmp, _rjoin(rdir, layout.RECEIPT))
    if _read_remote(sftp, _rjoin(rdir, layout.RECEIPT), layout.RECEIPT_MAX_BYTES) != data:
        raise PullError(f"{rdir}/{layout.RECEIPT}: read back differs from what was written")
    _write_local(ldir / RECEIPT_LOCAL, data)
    return res


def _pulled_at(ldir: Path) -> datetime:
    """When the local package was pulled: its receipt's pulled_at (InvalidFile if that is unusable)."""
    r = layout.parse_receipt(layout.read_small(ldir / RECEIPT_LOCAL, layout.RECEIPT_MAX_BYTES), ldir.name)
    try:
        t = datetime.fromisoformat(r["pulled_at"])
    except ValueError:
        raise InvalidFile(f"{RECEIPT_LOCAL}: pulled_at {r['pulled_at']!r} is not a time") from None
    if t.tzinfo is None:
        raise InvalidFile(f"{RECEIPT_LOCAL}: pulled_at {r['pulled_at']!r} has no time zone")
    return t


@dataclass
class LocalCleanup:
    removed: list[str] = field(default_factory=list)        # YYYYMMDD packages deleted
    quarantine_removed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)       # packages kept because their receipt is unusable


def local_retention(cfg: PullConfig, now: datetime, pulled: set[str] | frozenset[str] = frozenset()) -> LocalCleanup:
    """Delete local packages pulled more than max(keep_days, min_keep_days) days ago (the receipt's
    pulled_at, not the day's date: a day pulled late is kept as long as any other), never one in
    `pulled` (this run's), never one without a usable receipt; and quarantined files older than
    quarantine_keep_days. Real directories only (a symlink is never followed)."""
    out = LocalCleanup()
    local = Path(cfg.local_dir).expanduser()
    if not layout.is_real_dir(local):
        return out
    keep = timedelta(days=max(cfg.keep_days, cfg.min_keep_days))
    for e in sorted(os.listdir(local)):
        if not _DAY_RE.match(e) or e in pulled or not layout.is_real_dir(local / e):
            continue
        if not os.path.lexists(local / e / RECEIPT_LOCAL):
            continue  # an incomplete pull: never deleted here (the next pull completes it)
        try:
            age = now - _pulled_at(local / e)
        except (OSError, ValueError) as err:
            out.problems.append(f"{e}: kept: {err}")
            continue
        if age > keep:
            shutil.rmtree(local / e)
            out.removed.append(e)
    qroot = local / QUARANTINE
    if layout.is_real_dir(qroot):
        qkeep = timedelta(days=cfg.quarantine_keep_days)
        for d in sorted(os.listdir(qroot)):
            if not _DAY_RE.match(d) or not layout.is_real_dir(qroot / d):
                continue
            for stamp in sorted(os.listdir(qroot / d)):
                q = qroot / d / stamp
                if not layout.is_real_dir(q):
                    continue
                try:
                    when = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
                except ValueError:
                    when = datetime.fromtimestamp(os.lstat(q).st_mtime, UTC)  # not a name we made: its mtime
                if now - when > qkeep:
                    shutil.rmtree(q)
                    out.quarantine_removed.append(f"{d}/{stamp}")
            try:
                os.rmdir(qroot / d)
            except OSError:
                pass  # not empty
    return out


class TermProgress:
    """A one-line progress bar on a terminal (stderr)."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.t0 = time.monotonic()
        self.last = 0.0
        self.cur = ""
        self.start_done = 0

    def __call__(self, remote: str, done: int, size: int) -> None:
        now = time.monotonic()
        if remote != self.cur:
            self.cur, self.t0, self.start_done = remote, now, done
        if now - self.last < 0.2 and done < size:
            return
        self.last = now
        rate = (done - self.start_done) / max(now - self.t0, 1e-6) / 1e6
        pct = 100.0 * done / size if size else 100.0
        bar = "#" * int(pct / 5)
        self.stream.write(f"\r{'/'.join(remote.split('/')[-2:]):<32} [{bar:<20}] {pct:5.1f}% "
                          f"{done / 1e6:8.1f} MB {rate:6.1f} MB/s")
        if done >= size:
            self.stream.write("\n")
        self.stream.flush()
