"""The data tree as programs see it: rotating partition writers, the events log, one flusher thread."""

from __future__ import annotations

import errno
import functools
import itertools
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import orjson

from observer.core.clock import NS, Clock
from observer.core.contracts import check
from observer.core.logging import get_logger
from observer.core.redact import redact_obj
from observer.store import paths
from observer.store.heap import pin_mmap_threshold
from observer.store.writer import DEFAULT_DURABILITY, Durability, JsonlWriter, StoreError

log = get_logger(__name__)

_DRAIN_BATCH = 1000  # deferred events written per write/fsync when space returns
_SEVERITY_LEVEL = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}


class Store:
    """Owns every writer a program opens in the tree. One per process."""

    def __init__(self, root: str | os.PathLike, *, durability: Durability = DEFAULT_DURABILITY,
                 clock: Clock | None = None, program: str = "observer", provider: str = "system",
                 host: str | None = None, fsync: Callable[[int], None] = os.fsync):
        self.root = Path(root)
        self.durability = durability
        self.clock = clock or Clock()
        self.program = program
        self.provider = provider
        self.host = host or socket.gethostname()
        self.fsync = fsync  # injectable: a test makes a real flush stall
        self._writers: dict[Path, JsonlWriter] = {}
        self._closing: dict[Path, JsonlWriter] = {}  # rotated out, closed by the flusher thread
        self._lock = threading.Lock()
        self._events: dict[str, EventLog] = {}
        self._events_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._flusher: threading.Thread | None = None
        # set by a program that raises alerts: called with a store_error's fields, so a full disk pages
        # (observer.telemetry.alerts sends from memory when its outbox cannot be written either)
        self.on_store_error = None

    # -- writers ---------------------------------------------------------------------------
    def writer(self, path: Path, partition: str | None = None, shared: bool = False) -> JsonlWriter:
        opened: list = []  # events of the opening (a repaired tail), told once the lock is free

        def held(*a, **k):
            opened.append((a, k))

        while True:
            with self._lock:
                w = self._writers.get(path)
                if w is not None and not w.closed:
                    return w
                old = self._closing.pop(path, None)
                if old is None:
                    w = JsonlWriter(path, durability=self.durability, shared=shared, partition=partition,
                                    on_event=held, fsync=self.fsync)
                    if partition == "events":
                        # the events file's own trouble is told by its events log (deferred), not by emit()
                        sink = functools.partial(self._events_file_event, path.parent.name)
                    else:
                        sink = self._writer_event
                    w.set_event_sink(sink)
                    if self._flusher is not None and not shared:
                        w.flush_in_background(self._wake_flusher)
                    self._writers[path] = w
                    break
            old.close()  # its final flush first (outside the lock: it may emit): one writer per file
        for a, k in opened:
            sink(*a, **k)
        return w

    def release(self, w: JsonlWriter, wait: bool = True) -> None:
        """Sync and close one writer. wait=False (rotation): with a flusher thread running, it does
        the final flush and close, so a slow disk does not stall the caller; sync_all/close wait for it."""
        with self._lock:
            if self._writers.get(w.path) is w:
                del self._writers[w.path]
            if not wait and self._flusher is not None and not self._stop.is_set():
                self._closing[w.path] = w
                self._wake.set()
                return
        w.close()

    def _writer_event(self, event: str, severity: str, **fields) -> None:
        if event == "store_error" and self.on_store_error is not None:
            try:
                self.on_store_error(fields)
            except Exception:  # the hook must never break the writer
                log.exception("store_error hook failed")
        self.events(self.provider).emit(event, severity, **fields)

    def _events_file_event(self, provider: str, event: str, severity: str, **fields) -> None:
        self.events(provider).own_event(event, severity, **fields)

    def events(self, provider: str | None = None) -> EventLog:
        provider = provider or self.provider
        with self._events_lock:
            ev = self._events.get(provider)
            if ev is None:
                ev = self._events[provider] = EventLog(self, provider)
            return ev

    def partition(self, name: str, provider: str, market: str | None = None,
                  rotation_minutes: int | None = None) -> PartitionWriter:
        return PartitionWriter(self, name, provider, market, rotation_minutes)

    # -- durability ------------------------------------------------------------------------
    def start_flusher(self, period_s: float = 0.05) -> None:
        """Background thread that makes records durable within the policy's interval even
        when no further appends arrive.

        Data writers then do no I/O in append: a due flush wakes this thread, which writes and
        fsyncs while the appending thread goes on (a slow fsync never stalls a collector's loop)."""
        if self._flusher is not None:
            return
        # buffers now pile up behind flushes (MBs during a slow fsync): keep them out of the heap
        pin_mmap_threshold()

        def run():
            while not self._stop.is_set():
                self._wake.wait(period_s)
                self._wake.clear()
                with self._lock:
                    closing = list(self._closing.values())
                for w in closing:
                    try:
                        w.close()
                    except Exception:
                        log.exception("close failed", extra={"file": str(w.path)})
                    with self._lock:
                        if self._closing.get(w.path) is w:
                            del self._closing[w.path]
                for w in list(self._writers.values()):
                    try:
                        w.maybe_flush()
                    except Exception:
                        log.exception("flush failed", extra={"file": str(w.path)})
                for ev in list(self._events.values()):
                    try:
                        ev.retry()
                    except Exception:
                        log.exception("deferred events not written", extra={"provider": ev.provider})

        self._flusher = threading.Thread(target=run, name="store-flusher", daemon=True)
        with self._lock:
            for w in self._writers.values():
                if not w.shared:
                    w.flush_in_background(self._wake_flusher)
            self._flusher.start()

    def _wake_flusher(self) -> None:
        if not self._wake.is_set():
            self._wake.set()

    def _all_writers(self) -> list[JsonlWriter]:
        with self._lock:
            return [*self._closing.values(), *self._writers.values()]

    @property
    def acked(self) -> int:
        return sum(w.acked for w in self._all_writers())

    @property
    def last_fsync_s(self) -> float:
        return max((w.last_fsync_s for w in self._all_writers()), default=0.0)

    def sync_all(self) -> None:
        errors = []
        with self._lock:
            closing = list(self._closing.values())
        for w in closing:
            w.close()  # waits for a close in progress; reports what it could not write
            if w.pending:
                errors.append(f"{w.path}: {w.pending} record(s) not durable at close")
        for w in list(self._writers.values()):
            try:
                w.sync()
            except StoreError as e:
                errors.append(str(e))
        for ev in list(self._events.values()):
            ev.retry(force=True)
        if errors:
            raise StoreError("; ".join(errors))

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._flusher is not None:
            self._flusher.join(timeout=2)
        # data first (closing may report an event), then what events wait, then the event files
        for events in (False, True):
            if events:
                for ev in list(self._events.values()):
                    ev.retry(force=True)  # events the disk refused: a last try
            for w in self._all_writers():
                if (w.partition == "events") is events:
                    try:
                        w.close()
                    except Exception:
                        log.exception("close failed", extra={"file": str(w.path)})
        for ev in list(self._events.values()):
            ev.report_unwritten()
        with self._lock:
            self._writers.clear()
            self._closing.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class PartitionWriter:
    """Appends to swing/, scalp/, raw/ or recovered/, opening the right file for each record's time.

    Files follow arrival: a record older than the open file's window (a late frame) goes to the
    open file rather than reopening an older one, so every file stays append-only and in order.
    """

    def __init__(self, store: Store, name: str, provider: str, market: str | None, rotation_minutes: int | None):
        if name not in ("swing", "scalp", "raw"):
            raise ValueError(f"rotating partitions are swing, scalp, raw (got {name!r}); "
                             "recovered files are opened with Store.writer(paths.recovered_file(...))")
        if name != "raw" and not market:
            raise ValueError(f"{name} needs a market")
        self.store = store
        self.name = name
        self.provider = provider
        self.market = market
        self.minutes = rotation_minutes or (10 if name == "scalp" else 60)
        self._w: JsonlWriter | None = None
        self._start = 0
        self._end = 0

    def set_rotation(self, minutes: int) -> None:
        """Change the file length (scalp: 10/30/60 min by mitigation level); takes effect from the open file."""
        if minutes == self.minutes:
            return
        self.minutes = minutes
        if self._w is not None:
            span = minutes * 60 * NS
            self._end = paths.window_start_ns(self._start, minutes) + span

    def _file_for(self, start: int) -> Path:
        if self.name == "swing":
            return paths.swing_file(self.store.root, self.provider, self.market, start)
        if self.name == "scalp":
            return paths.scalp_file(self.store.root, self.provider, self.market, start)
        return paths.raw_file(self.store.root, self.provider, start)

    def _rotate(self, ts: int) -> JsonlWriter:
        if self._w is not None:
            self.store.release(self._w, wait=False)
        start = paths.window_start_ns(ts, self.minutes)
        self._start, self._end = start, start + self.minutes * 60 * NS
        self._w = self.store.writer(self._file_for(start), self.name)
        return self._w

    def writer_for(self, ts_ns: int) -> JsonlWriter:
        w = self._w
        if w is None or ts_ns >= self._end:
            w = self._rotate(ts_ns)
        return w

    def append(self, record: dict, ts_ns: int) -> None:
        self.writer_for(ts_ns).append(record)

    def append_lines(self, lines: list[bytes], ts_ns: list[int]) -> None:
        """Append pre-serialised lines whose record times are `ts_ns` (in arrival order), one joined
        block per file: the hot path's way to pay the writer's lock once per batch, not per record."""
        i, n = 0, len(lines)
        while i < n:
            w = self.writer_for(ts_ns[i])
            end = self._end
            j = i + 1
            while j < n and ts_ns[j] < end:
                j += 1
            w.append_line(lines[i] if j - i == 1 else b"".join(lines[i:j]), j - i)
            i = j

    @property
    def current_path(self) -> Path | None:
        return self._w.path if self._w else None

    def close(self) -> None:
        if self._w is not None:
            self.store.release(self._w)
            self._w = None


class EventLog:
    """system/events/{provider}/YYYYMMDD.jsonl — emit(kind, severity, **fields).

    Every event is durable when emit returns (shared writer, fsync per event) and is also logged
    to stderr, so journald has it even when the disk is full. While the disk refuses, events wait in
    a bounded backlog (Durability.event_backlog_records / event_backlog_bytes; past that they are
    counted, not kept) and once it accepts writes again they are written first, in order, with their
    own times and `"deferred": true`; what the bound dropped is told by one `events_dropped` event.
    Emitting never raises into a caller because of the disk; an event that breaks its contract does
    raise (a programming error)."""

    def __init__(self, store: Store, provider: str):
        self.store = store
        self.provider = provider
        self._lock = threading.RLock()
        self._backlog: deque[tuple[int, bytes]] = deque()  # (ts_ns, line marked deferred), oldest first
        self._backlog_bytes = 0
        self._dropped: dict | None = None  # what the bound refused: count, bytes, times, per event kind
        # the events file's own store_error / store_recovered / store_repaired, reported by its writer
        # in the middle of a write: handled after it (no lock: the writer may call from any thread)
        self._own: deque[dict] = deque()
        self._next_retry = 0.0
        self._open_failing = False
        self._kept = 0  # deferred events written since the outage began
        self.deferred_written = 0  # totals, for tests and metrics
        self.dropped_total = 0

    def _record(self, event: str, severity: str, fields: dict, ts_ns: int | None = None) -> dict:
        rec = {"v": 1, "kind": "event", "ts_ns": self.store.clock.now_ns() if ts_ns is None else ts_ns,
               "event": event, "severity": severity, "provider": self.provider, "program": self.store.program,
               "host": self.store.host}
        rec.update(redact_obj(fields))
        check(rec)
        log.log(_SEVERITY_LEVEL.get(severity, 20), event, extra={"event_fields": fields and redact_obj(fields)})
        return rec

    def emit(self, event: str, severity: str = "INFO", **fields) -> dict:
        with self._lock:
            if self._backlog or self._dropped or self._own:
                self._drain(force=False)  # what waits goes first; the new event's time is after it
                self._deliver_own()
            rec = self._record(event, severity, fields)
            self._deliver(rec)
            self._deliver_own()
        return rec

    def own_event(self, event: str, severity: str, **fields) -> None:
        """An event about the events file itself (from its writer): written after the write in progress."""
        self._own.append(self._record(event, severity, fields))

    def retry(self, force: bool = False) -> None:
        """Write what the disk refused, if its retry is due (the store's flusher calls this)."""
        if not (self._backlog or self._dropped or self._own):
            return
        if not self._lock.acquire(blocking=force):
            return  # an emit is writing: it drains first anyway
        try:
            self._drain(force)
            self._deliver_own()
        finally:
            self._lock.release()

    def report_unwritten(self) -> None:
        """At close: say (in the journal, which has each of them) what never reached the tree."""
        if self._backlog or self._dropped:
            log.error("events not written to the tree: the disk refused them until the end",
                      extra={"provider": self.provider, "kept": len(self._backlog),
                             "dropped": self._dropped["dropped"] if self._dropped else 0})

    # -- under _lock ---------------------------------------------------------------------------
    def _deliver(self, rec: dict) -> None:
        if self._backlog or self._dropped:
            self._drain(force=False)
        if not self._backlog and not self._dropped and \
                self._write([(rec["ts_ns"], orjson.dumps(rec, option=orjson.OPT_APPEND_NEWLINE))]) == 1:
            return
        self._defer(rec)

    def _deliver_own(self) -> None:
        for _ in range(64):  # each round writes or defers; a failing disk reports once per outage
            if not self._own:
                return
            self._deliver(self._own.popleft())

    def _defer(self, rec: dict) -> None:
        line = orjson.dumps({**rec, "deferred": True}, option=orjson.OPT_APPEND_NEWLINE)
        d = self.store.durability
        if self._dropped is None and len(self._backlog) < d.event_backlog_records and \
                self._backlog_bytes + len(line) <= d.event_backlog_bytes:
            self._backlog.append((rec["ts_ns"], line))
            self._backlog_bytes += len(line)
            return
        # the bound keeps the oldest (the outage's start); once one is dropped, later ones are too,
        # so what is written stays one unbroken run followed by the count of what was not
        dr = self._dropped
        if dr is None:
            dr = self._dropped = {"dropped": 0, "dropped_bytes": 0, "first_ts_ns": rec["ts_ns"],
                                  "last_ts_ns": rec["ts_ns"], "by_event": {}}
        dr["dropped"] += 1
        dr["dropped_bytes"] += len(line)
        dr["last_ts_ns"] = rec["ts_ns"]
        dr["by_event"][rec["event"]] = dr["by_event"].get(rec["event"], 0) + 1
        self.dropped_total += 1

    def _drain(self, force: bool) -> None:
        now = time.monotonic()
        if not force and now < self._next_retry:
            return
        while self._backlog:
            run = list(itertools.islice(self._backlog, _DRAIN_BATCH))
            n = self._write(run)
            for _ in range(n):
                self._backlog_bytes -= len(self._backlog.popleft()[1])
            self._kept += n
            self.deferred_written += n
            if n < len(run):
                return
        if self._dropped is not None:
            # stamped with the last dropped event's time: it stands where they would have been
            d = self.store.durability
            rec = self._record("events_dropped", "ERROR", {
                **self._dropped, "kept": self._kept, "deferred": True,
                "reason": f"the disk refused writes and the backlog was full "
                          f"({d.event_backlog_records} events / {d.event_backlog_bytes} bytes)"},
                ts_ns=self._dropped["last_ts_ns"])
            if self._write([(rec["ts_ns"], orjson.dumps(rec, option=orjson.OPT_APPEND_NEWLINE))]) == 0:
                return
            self._dropped = None
        self._kept = 0

    def _write(self, lines: list[tuple[int, bytes]]) -> int:
        """Write (ts_ns, line) pairs in order, each to its day's file; returns how many are durable
        (all, or those before the run of the file the disk refused: nothing of that run stays)."""
        i = 0
        try:
            while i < len(lines):
                path = paths.events_file(self.store.root, self.provider, paths.day_of(lines[i][0]))
                j = i + 1
                while j < len(lines) and paths.events_file(self.store.root, self.provider,
                                                           paths.day_of(lines[j][0])) == path:
                    j += 1
                w = self.store.writer(path, "events", shared=True)
                w.write_now(b"".join(ln for _, ln in lines[i:j]), j - i)
                i = j
        except (StoreError, OSError) as e:
            self._next_retry = time.monotonic() + self.store.durability.retry_ms / 1000
            if isinstance(e, OSError) and not self._open_failing:
                # the file could not even be opened: its writer cannot report it, so this log does
                self._open_failing = True
                self._own.append(self._record("store_error", "CRITICAL", {
                    "file": str(path), "errno": errno.errorcode.get(e.errno or 0, str(e.errno)),
                    "error": e.strerror or str(e)}))
            return i
        self._open_failing = False
        return i
