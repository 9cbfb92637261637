"""The one JSONL writer of the project.

Append-only files; a record counts as *acknowledged* only once it is durable (written and fsync'd).
Two modes:
- exclusive (data partitions): the file is locked with flock for the writer's lifetime, records
  are buffered, written to the file in 1 MiB chunks as they accumulate, and made durable (fsync)
  every `interval_ms` or `max_records`, whichever comes first; only that fsync acknowledges them.
  A flush takes the buffer and writes/fsyncs it outside the append lock, so appends go on into a
  new buffer while the disk is slow; under a Store with a flusher thread, appends do no I/O at all;
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
from time import monotonic as _monotonic

import orjson

from observer.core.config import section
from observer.core.contracts import check
from observer.core.logging import get_logger
from observer.store.fs import FILE_MODE, ensure_dir
from observer.store.fs import fsync_dir as _fsync_dir

log = get_logger(__name__)

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
    # events the disk refused, kept in memory until it accepts writes again (EventLog); past
    # either bound they are only counted
    event_backlog_records: int = 10_000
    event_backlog_bytes: int = 4 * 1024 * 1024

    @classmethod
    def from_config(cls, cfg: dict) -> Durability:
        s = section(cfg, "store")
        return cls(s["fsync_interval_ms"], s["fsync_max_records"], s["max_buffer_bytes"])


DEFAULT_DURABILITY = Durability()


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
                 on_event: EventSink | None = None, fsync: Callable[[int], None] = os.fsync):
        self.path = Path(path)
        self.durability = durability
        self.shared = shared
        self.partition = partition
        self.validate = validate
        self._on_event = on_event
        self._fsync = fsync  # injectable so a test can make a real flush stall or fail
        # _lock guards the buffer and the counters and is never held across I/O, so appends go on
        # into a fresh buffer while a flush writes and fsyncs the one it took; _flush_lock allows one
        # flush (write/fsync) per file at a time: a second flusher waits for it or leaves its records
        # to the next round
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._flushed = threading.Condition(self._lock)  # notified when a flush ends
        # accepted records not yet durable (_pending) are, in file order: written but not fsync'd
        # (_unsynced), taken by the flush in progress (_flight_bytes), in _buf. Records are durable
        # in order, so record k (1-based, since open) is durable once acked >= k.
        self._buf = bytearray()
        self._buf_t0 = 0.0        # when the first record in _buf arrived
        self._flight_bytes = 0
        self._unsynced = 0
        self._pending = 0
        self._due_at = 0.0        # when the oldest pending record must be durable (interval_ms)
        self._interval_s = durability.interval_ms / 1000
        self._max_records = durability.max_records
        self._max_buf = durability.max_buffer_bytes
        self._in_flight = False
        self._failing_since: float | None = None
        self._slow = False        # closed, failing or a flush in flight: appends check the bound
        self._next_retry = 0.0
        self._wake: Callable[[], None] | None = None
        self.acked = 0          # records durable on disk
        self.rejected = 0       # records refused by their contract (reported, not written)
        self.closed = False
        self._last_fsync_s = 0.0
        self._fsync_started = 0.0  # monotonic start of the fsync in progress, 0 when none
        self._fd = _open_append(self.path)
        self._fd_open = True
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

    def set_event_sink(self, on_event: EventSink | None) -> None:
        self._on_event = on_event

    def flush_in_background(self, wake: Callable[[], None]) -> None:
        """From now on appends do no I/O: when a flush is due they call `wake()` and a flusher thread
        (Store.start_flusher) calls maybe_flush(). Without it the appending thread flushes itself."""
        self._wake = wake

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
        instead of one per record); on StoreFull none of them is accepted. Shared files: returns
        once the line is durable (or buffered because the disk refuses it)."""
        if self.shared:
            self._append_shared(line, count)
            return
        with self._lock:
            if self._slow:
                self._admit(len(line), count)
            now = _monotonic()
            if not self._buf:
                self._buf_t0 = now
                if not self._pending:
                    self._due_at = now + self._interval_s
            self._buf += line
            self._pending += count
            if self._failing_since is not None:
                if now < self._next_retry:
                    return
                sync = True
            elif self._pending >= self._max_records or now >= self._due_at:
                sync = True
            elif len(self._buf) >= WRITE_CHUNK:
                # hand full chunks to the kernel between fsyncs: memory stays bounded by the chunk,
                # not by rate x fsync window; they are acknowledged only by the fsync that follows
                sync = False
            else:
                return
        if self._wake is not None:
            self._wake()
        elif self._flush_lock.acquire(blocking=False):  # else a flush is in flight; the next one takes these
            try:
                self._flush_held(sync=sync, force=False)
            finally:
                self._flush_lock.release()

    def _admit(self, nbytes: int, count: int) -> None:
        """Under _lock: may `nbytes` more be buffered? Raises when closed, StoreFull when the disk
        refuses and the buffer is at its bound; waits while a slow (not failing) flush holds it."""
        while True:
            if self.closed:
                raise StoreError(f"{self.path}: writer is closed")
            held = len(self._buf) + self._flight_bytes
            if held + nbytes <= self._max_buf or not held:
                return
            if self._failing_since is not None:
                # refuse the newest append, keep everything accepted before it
                raise StoreFull(f"{self.path}: disk refuses writes and {held} bytes are buffered; "
                                f"{count} record(s) not accepted")
            if not self._in_flight:
                return  # nothing to wait for: accept it, the next flush takes the buffer
            # the disk is slow, not failing: wait for the flush rather than grow without bound
            self._flushed.wait(0.5)

    def _append_shared(self, line: bytes, count: int) -> None:
        with self._lock:
            if self._slow:
                self._admit(len(line), count)
            self._buf += line
            self._pending += count
            target = self.acked + self._pending
        with self._flush_lock:  # a flush in flight may take this line too (then nothing is left to do)
            if self.acked < target:
                self._flush_held(sync=True, force=False)

    @property
    def last_fsync_s(self) -> float:
        """Duration of the latest fsync, or of the one in progress if that is longer already
        (mitigation reads it while the collector's loop goes on during a stall)."""
        started = self._fsync_started
        return max(self._last_fsync_s, time.monotonic() - started if started else 0.0)

    @property
    def pending(self) -> int:
        """Records accepted but not yet durable."""
        return self._pending

    def maybe_flush(self) -> None:
        """Called by the store's flusher thread: write full chunks, make durable what is due."""
        with self._lock:
            if self.closed or not self._pending:
                return
            now = time.monotonic()
            if self._failing_since is not None:
                action = "sync" if now >= self._next_retry else None
            elif self.shared or self._pending >= self._max_records or now >= self._due_at:
                action = "sync"
            elif len(self._buf) >= WRITE_CHUNK:
                action = "write"
            else:
                action = None
        if action is not None and self._flush_lock.acquire(blocking=False):
            try:
                self._flush_held(sync=action == "sync", force=False)
            finally:
                self._flush_lock.release()

    def sync(self) -> int:
        """Make everything appended so far durable now (waiting for a flush in flight); returns
        the acknowledged count.

        Raises StoreError if the disk refuses (records stay buffered for the next try)."""
        with self._lock:
            target = self.acked + self._pending
        with self._flush_lock:
            if self.acked < target and self._fd_open:
                self._flush_held(sync=True, force=True)
        if self.acked < target:
            raise StoreError(f"{self.path}: {self.pending} record(s) not yet durable (disk error)")
        return self.acked

    def write_now(self, data: bytes, count: int) -> None:
        """Shared files: append `data` (`count` complete lines) durably now, after anything buffered,
        or raise StoreError keeping nothing of it: the caller holds on to what the disk refused
        (the events log defers such events itself, marked as deferred). `acked` counts appended
        records only."""
        if not self.shared:
            raise StoreError(f"{self.path}: write_now is for shared files")
        with self._flush_lock:
            if self.closed:
                raise StoreError(f"{self.path}: writer is closed")
            if not self._flush_held(sync=True, force=True, extra=data, extra_n=count):
                raise StoreError(f"{self.path}: disk refuses writes")

    def _flush_held(self, sync: bool, force: bool, extra: bytes = b"", extra_n: int = 0) -> bool:
        """One flush; the caller holds _flush_lock. Takes the buffer (appends go on into a new one),
        writes it and `extra` outside _lock, fsyncs if `sync`. Returns True when all of it (and all
        written before) is durable, or, for a plain write, handed to the kernel."""
        with self._lock:
            if not self._fd_open:
                return False
            now = time.monotonic()
            if self._failing_since is not None and not force and now < self._next_retry:
                return False
            data, n = self._buf, self._pending - self._unsynced
            if not data and not extra and not (sync and self._unsynced):
                return True
            self._buf = bytearray()
            self._flight_bytes = len(data)
            self._in_flight = self._slow = True
        if self.shared:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        ok = False
        try:
            if self.shared:
                self._repair()
                self._written_size = os.fstat(self._fd).st_size
            err = self._write(data) if data else None
            if err is None:
                with self._lock:
                    self._unsynced += n
                    self._flight_bytes = 0
                    data = None
                if extra:
                    err = self._write(extra)
            if err is None and sync:
                try:
                    self._fsync_started = t0 = time.monotonic()
                    try:
                        self._fsync(self._fd)
                    finally:
                        self._fsync_started = 0.0
                    self._last_fsync_s = time.monotonic() - t0
                except OSError as e:
                    err = e
                    if extra:  # the caller keeps `extra` and writes it again: it must not stay here too
                        self._written_size -= len(extra)
                        _truncate(self._fd, self._written_size)
            if err is not None:
                self._write_failed(err, now, data)
                return False
            ok = True
            if sync:
                self._synced(now, extra_n)
            return True
        finally:
            if self.shared:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            if not ok or not sync:
                with self._lock:
                    self._in_flight = False
                    self._slow = self.closed or self._failing_since is not None
                    self._flushed.notify_all()

    def _write(self, data: bytes | bytearray) -> OSError | None:
        """Write all of `data` to the file (not fsync'd); on a disk error cut the file back to its
        last complete write (a partial line would be a torn record) and return the error."""
        view = memoryview(data)
        written = 0
        try:
            while written < len(view):
                written += os.write(self._fd, view[written:])
        except OSError as e:
            _truncate(self._fd, self._written_size)
            return e
        finally:
            view.release()
        self._written_size += written
        return None

    def _synced(self, now: float, extra_n: int = 0) -> None:
        with self._lock:
            done = self._unsynced
            self.acked += done
            self._pending -= done
            self._unsynced = 0
            self._due_at = self._buf_t0 + self._interval_s
            since, self._failing_since = self._failing_since, None
            self._in_flight = False
            self._slow = self.closed
            self._flushed.notify_all()
        if since is not None:
            self._event("store_recovered", "INFO", file=str(self.path),
                        outage_s=round(now - since, 3), records_written=done + extra_n)

    def _write_failed(self, e: OSError, now: float, data: bytearray | None) -> None:
        """Records not written go back in front of the buffer (order kept); written ones stay
        unsynced for the next fsync. One store_error per outage."""
        with self._lock:
            if data:
                data += self._buf
                self._buf = data
                self._buf_t0 = self._due_at - self._interval_s  # the oldest not durable
                self._flight_bytes = 0
            self._next_retry = now + self.durability.retry_ms / 1000
            first = self._failing_since is None
            if first:
                self._failing_since = now
            records, nbytes = self.pending, len(self._buf)
        if first:
            name = errno.errorcode.get(e.errno or 0, str(e.errno))
            self._event("store_error", "CRITICAL", file=str(self.path), errno=name, error=e.strerror or str(e),
                        buffered_records=records, buffered_bytes=nbytes)

    @property
    def failing(self) -> bool:
        return self._failing_since is not None

    def close(self) -> None:
        """Sync and close (waiting for a flush in flight). If the disk still refuses, the buffered
        records are reported as lost."""
        with self._flush_lock:
            with self._lock:
                if self.closed:
                    return
                self.closed = self._slow = True  # no more appends; waiters wake and see it
                self._flushed.notify_all()
            try:
                self._flush_held(sync=True, force=True)
            finally:
                if self.pending:
                    self._event("store_error", "CRITICAL", file=str(self.path), errno="UNFLUSHED",
                                error="closed with records not durable", buffered_records=self.pending,
                                buffered_bytes=len(self._buf))
                self._fd_open = False
                os.close(self._fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _truncate(fd: int, size: int) -> None:
    try:
        os.ftruncate(fd, size)
    except OSError:
        pass
