"""The one JSONL writer of the project.

Append-only files; a record counts as *acknowledged* only once it is durable (written and fsync'd).
Two modes:
- exclusive (data partitions): the file is locked with flock for the writer's lifetime, records
  are buffered, written to the file in 1 MiB chunks as they accumulate, and made durable (fsync)
  every `interval_ms` or `max_records`, whichever comes first; only that fsync acknowledges them;
- shared (events, alerts, metrics: several programs append to one file): every append takes the
  lock, checks the tail, writes, fsyncs and releases.

Crash safety: a kill -9 mid-write leaves at most one torn last line; it is cut off on the next
open and reported (store_repaired), never silently kept or dropped with complete lines.
Disk errors (ENOSPC, EIO): the partial write is truncated away, the records stay buffered (not
acknowledged), a store_error is reported once per outage and writing resumes when space returns.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

from observer.core.contracts import check
from observer.core.logging import get_logger

log = get_logger(__name__)

FILE_MODE = 0o640
DIR_MODE = 0o750
_DUMPS_OPTS = orjson.OPT_APPEND_NEWLINE
WRITE_CHUNK = 1 << 20  # bytes buffered before they are written (not fsync'd) between fsync windows

# on_event(event, severity, **fields): how a writer reports store_repaired / store_error upward
EventSink = Callable[..., None]


class StoreError(Exception):
    pass


class WriterBusy(StoreError):
    """Another process (or writer) already writes this file."""


class StoreFull(StoreError):
    """The disk refuses writes and the in-memory buffer reached its bound: the record was NOT accepted."""


@dataclass(frozen=True)
class Durability:
    interval_ms: int = 1000
    max_records: int = 50_000
    max_buffer_bytes: int = 64 * 1024 * 1024
    retry_ms: int = 1000  # how often a failing disk is retried

    @classmethod
    def from_config(cls, cfg: dict) -> Durability:
        s = cfg.get("store", {})
        return cls(s.get("fsync_interval_ms", 1000), s.get("fsync_max_records", 50_000),
                   s.get("max_buffer_bytes", 64 * 1024 * 1024))


DEFAULT_DURABILITY = Durability()


def ensure_dir(path: Path) -> None:
    """mkdir -p with 0750 dirs; fsync the parent of each new dir so the entry survives a crash."""
    if path.is_dir():
        return
    ensure_dir(path.parent)
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        return
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _open_append(path: Path) -> int:
    ensure_dir(path.parent)
    created = not path.exists()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, FILE_MODE)
    if created:
        _fsync_dir(path.parent)
    return fd


def repair_tail(fd: int) -> tuple[int, bytes]:
    """Cut a torn last line (no trailing newline). Returns (bytes removed, a preview of them)."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return 0, b""
    pos = size
    chunk = 64 * 1024
    cut_at = 0
    while pos > 0:
        start = max(0, pos - chunk)
        data = os.pread(fd, pos - start, start)
        i = data.rfind(b"\n")
        if i >= 0:
            cut_at = start + i + 1
            break
        pos = start
    preview = os.pread(fd, min(80, size - cut_at), cut_at)
    os.ftruncate(fd, cut_at)
    os.fsync(fd)
    return size - cut_at, preview


class JsonlWriter:
    def __init__(self, path: str | os.PathLike, *, durability: Durability = DEFAULT_DURABILITY,
                 shared: bool = False, partition: str | None = None, validate: bool = True,
                 on_event: EventSink | None = None):
        self.path = Path(path)
        self.durability = durability
        self.shared = shared
        self.partition = partition
        self.validate = validate
        self._on_event = on_event
        self._lock = threading.RLock()
        self._buf = bytearray()
        self._pending = 0
        self._first_pending = 0.0
        self._failing_since: float | None = None
        self._next_retry = 0.0
        self.acked = 0          # records durable on disk
        self.rejected = 0       # records refused by their contract (reported, not written)
        self.closed = False
        self.last_fsync_s = 0.0  # duration of the latest fsync (mitigation reads it)
        self._fd = _open_append(self.path)
        try:
            if not shared:
                try:
                    fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise WriterBusy(f"{self.path}: another writer holds this file (one writer per file)") from None
                self._repair()
            self._written_size = os.fstat(self._fd).st_size  # complete lines handed to the kernel
        except BaseException:
            os.close(self._fd)
            raise

    # -- reporting -------------------------------------------------------------------------
    def _event(self, event: str, severity: str, **fields) -> None:
        if self._on_event is not None:
            try:
                self._on_event(event, severity, **fields)
            except Exception:  # reporting must never break writing
                log.exception("event sink failed", extra={"event": event})
        else:
            log.log(40 if severity in ("ERROR", "CRITICAL") else 30, event, extra=fields)

    def _repair(self) -> None:
        cut, preview = repair_tail(self._fd)
        if cut:
            self._event("store_repaired", "WARNING", file=str(self.path), bytes=cut,
                        fragment_preview=preview.decode("utf-8", "replace"))

    # -- appending -------------------------------------------------------------------------
    def append(self, record: dict) -> None:
        """Validate and append one record (durable later; see acked)."""
        if self.validate:
            check(record, self.partition)
        self.append_line(orjson.dumps(record, option=_DUMPS_OPTS))

    def append_line(self, line: bytes, count: int = 1) -> None:
        """Append pre-serialised, already validated JSON line(s), each ending in '\\n'.

        `count` is how many records `line` holds (a batch joined by the caller costs one lock
        instead of one per record); on StoreFull none of them is accepted."""
        with self._lock:
            if self.closed:
                raise StoreError(f"{self.path}: writer is closed")
            if self.shared:
                self._buf += line
                self._pending += count
                self._flush_locked()
                if self._buf:
                    self._bound_buffer(len(line), count)
                return
            if not self._pending:
                self._first_pending = time.monotonic()
            self._buf += line
            self._pending += count
            if self._pending >= self.durability.max_records or \
                    (time.monotonic() - self._first_pending) * 1000 >= self.durability.interval_ms:
                self._flush_locked()
            elif len(self._buf) >= WRITE_CHUNK and self._failing_since is None:
                # hand full chunks to the kernel between fsyncs: memory stays bounded by the chunk,
                # not by rate x fsync window; they are acknowledged only by the fsync that follows
                self._write_out(time.monotonic())
            if self._failing_since is not None:
                self._bound_buffer(len(line), count)

    def _bound_buffer(self, nbytes: int, count: int) -> None:
        if len(self._buf) > self.durability.max_buffer_bytes:
            # refuse the newest append, keep everything accepted before it
            del self._buf[len(self._buf) - nbytes:]
            self._pending -= count
            raise StoreFull(f"{self.path}: disk refuses writes and {len(self._buf)} bytes are buffered; "
                            f"{count} record(s) not accepted")

    @property
    def pending(self) -> int:
        return self._pending

    def maybe_flush(self) -> None:
        """Called by the store's flusher thread: make durable what has waited long enough."""
        with self._lock:
            if self._pending and not self.closed and \
                    (time.monotonic() - self._first_pending) * 1000 >= self.durability.interval_ms:
                self._flush_locked()

    def sync(self) -> int:
        """Make everything appended so far durable now; returns the acknowledged count.

        Raises StoreError if the disk refuses (records stay buffered for the next try)."""
        with self._lock:
            self._flush_locked(force=True)
            if self._pending:
                raise StoreError(f"{self.path}: {self._pending} record(s) not yet durable (disk error)")
            return self.acked

    def _write_out(self, now: float) -> bool:
        """Write the buffer to the file (not fsync'd). On a disk error the file is cut back to its
        last complete write, the buffer is kept and False is returned."""
        view = memoryview(self._buf)
        written = 0
        try:
            while written < len(view):
                written += os.write(self._fd, view[written:])
        except OSError as e:
            view.release()
            self._write_failed(e, now)
            return False
        view.release()
        self._written_size += written
        self._buf.clear()
        return True

    def _flush_locked(self, force: bool = False) -> None:
        if not self._pending or self.closed:
            return
        now = time.monotonic()
        if self._failing_since is not None and not force and now < self._next_retry:
            return
        if self.shared:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            if self.shared:
                self._repair()
                self._written_size = os.fstat(self._fd).st_size
            if self._buf and not self._write_out(now):
                return
            try:
                t0 = time.monotonic()
                os.fsync(self._fd)
                self.last_fsync_s = time.monotonic() - t0
            except OSError as e:
                self._write_failed(e, now)  # written lines stay (cut-back is to the last complete write)
                return
            self.acked += self._pending
            if self._failing_since is not None:
                self._event("store_recovered", "INFO", file=str(self.path),
                            outage_s=round(now - self._failing_since, 3), records_written=self._pending)
                self._failing_since = None
            self._pending = 0
        finally:
            if self.shared:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _write_failed(self, e: OSError, now: float) -> None:
        # a partial line on disk would be a torn record: cut the file back to its last complete write
        try:
            os.ftruncate(self._fd, self._written_size)
        except OSError:
            pass
        self._next_retry = now + self.durability.retry_ms / 1000
        if self._failing_since is None:
            self._failing_since = now
            name = errno.errorcode.get(e.errno or 0, str(e.errno))
            self._event("store_error", "CRITICAL", file=str(self.path), errno=name, error=e.strerror or str(e),
                        buffered_records=self._pending, buffered_bytes=len(self._buf))

    @property
    def failing(self) -> bool:
        return self._failing_since is not None

    def close(self) -> None:
        """Sync and close. If the disk still refuses, the buffered records are reported as lost."""
        with self._lock:
            if self.closed:
                return
            try:
                self._flush_locked(force=True)
            finally:
                if self._pending:
                    self._event("store_error", "CRITICAL", file=str(self.path), errno="UNFLUSHED",
                                error="closed with records not durable", buffered_records=self._pending,
                                buffered_bytes=len(self._buf))
                self.closed = True
                os.close(self._fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
