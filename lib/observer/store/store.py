"""The data tree as programs see it: rotating partition writers, the events log, one flusher thread."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import orjson

from observer.core.clock import NS, Clock
from observer.core.contracts import check
from observer.core.logging import get_logger
from observer.core.redact import redact_obj
from observer.store import paths
from observer.store.writer import DEFAULT_DURABILITY, Durability, JsonlWriter, StoreError

log = get_logger(__name__)

_SEVERITY_LEVEL = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}


class Store:
    """Owns every writer a program opens in the tree. One per process."""

    def __init__(self, root: str | os.PathLike, *, durability: Durability = DEFAULT_DURABILITY,
                 clock: Clock | None = None, program: str = "observer", provider: str = "system",
                 host: str | None = None):
        self.root = Path(root)
        self.durability = durability
        self.clock = clock or Clock()
        self.program = program
        self.provider = provider
        self.host = host or socket.gethostname()
        self._writers: dict[Path, JsonlWriter] = {}
        self._lock = threading.Lock()
        self._events: dict[str, EventLog] = {}
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        # set by a program that raises alerts: called with a store_error's fields, so a full disk pages
        # (observer.alerts sends from memory when its outbox cannot be written either)
        self.on_store_error = None

    # -- writers ---------------------------------------------------------------------------
    def writer(self, path: Path, partition: str | None = None, shared: bool = False) -> JsonlWriter:
        with self._lock:
            w = self._writers.get(path)
            if w is None or w.closed:
                sink = None if partition == "events" else self._writer_event
                w = JsonlWriter(path, durability=self.durability, shared=shared, partition=partition,
                                on_event=sink)
                self._writers[path] = w
            return w

    def release(self, w: JsonlWriter) -> None:
        """Sync and close one writer (rotation)."""
        with self._lock:
            self._writers.pop(w.path, None)
        w.close()

    def _writer_event(self, event: str, severity: str, **fields) -> None:
        if event == "store_error" and self.on_store_error is not None:
            try:
                self.on_store_error(fields)
            except Exception:  # the hook must never break the writer
                log.exception("store_error hook failed")
        self.events(self.provider).emit(event, severity, **fields)

    def events(self, provider: str | None = None) -> EventLog:
        provider = provider or self.provider
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
        when no further appends arrive."""
        if self._flusher is not None:
            return

        def run():
            while not self._stop.wait(period_s):
                for w in list(self._writers.values()):
                    try:
                        w.maybe_flush()
                    except Exception:
                        log.exception("flush failed", extra={"file": str(w.path)})

        self._flusher = threading.Thread(target=run, name="store-flusher", daemon=True)
        self._flusher.start()

    @property
    def acked(self) -> int:
        return sum(w.acked for w in list(self._writers.values()))

    @property
    def last_fsync_s(self) -> float:
        return max((w.last_fsync_s for w in list(self._writers.values())), default=0.0)

    def sync_all(self) -> None:
        errors = []
        for w in list(self._writers.values()):
            try:
                w.sync()
            except StoreError as e:
                errors.append(str(e))
        if errors:
            raise StoreError("; ".join(errors))

    def close(self) -> None:
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join(timeout=2)
        for w in list(self._writers.values()):
            try:
                w.close()
            except Exception:
                log.exception("close failed", extra={"file": str(w.path)})
        self._writers.clear()

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
            self.store.release(self._w)
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
    to stderr, so journald has it even when the disk is full. Emitting never raises into a caller
    because of the disk; an event that breaks its contract does raise (a programming error)."""

    def __init__(self, store: Store, provider: str):
        self.store = store
        self.provider = provider

    def emit(self, event: str, severity: str = "INFO", **fields) -> dict:
        rec = {"v": 1, "kind": "event", "ts_ns": self.store.clock.now_ns(), "event": event,
               "severity": severity, "provider": self.provider, "program": self.store.program,
               "host": self.store.host}
        rec.update(redact_obj(fields))
        check(rec)
        level = _SEVERITY_LEVEL.get(severity, 20)
        log.log(level, event, extra={"event_fields": fields and redact_obj(fields)})
        path = paths.events_file(self.store.root, self.provider, paths.day_of(rec["ts_ns"]))
        try:
            self.store.writer(path, "events", shared=True).append_line(orjson.dumps(rec, option=orjson.OPT_APPEND_NEWLINE))
        except (StoreError, OSError) as e:
            log.error("event not written to the tree", extra={"event": event, "error": str(e)})
        return rec
