"""Track B: the WebSocket streamer of one provider.

Threads: the provider's connection threads receive frames and hand them to `sink`, which only puts
them on a bounded queue (the socket reader never blocks on disk); the main loop drains the queue,
writes every raw frame to raw/ and every trade to scalp/, samples order books per slot at the
mitigation level's rate, reallocates slots from the triggers, watches load (mitigation) and
connection health, and feeds the heartbeat and the systemd watchdog only while it makes progress.
If the queue ever fills, the overflow is counted, evented and marked as a gap — never unbounded.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from datetime import date

import orjson
import psutil

from observer.collect.heartbeat import Heartbeat
from observer.collect.mitigation import (
    AnomalyTracker,
    MitigationController,
    RecordingRate,
    book_interval_s,
    rotation_minutes,
)
from observer.collect.slots import SlotManager, slot_capacity
from observer.collect.triggers import TriggerEngine, latest_snapshots
from observer.core.calendar import Calendar
from observer.core.clock import NS, Clock
from observer.core.contracts import ContractError, check
from observer.core.logging import get_logger
from observer.core.notify import Notifier
from observer.core.settings import TrackBConfig, TradingWindow
from observer.providers.base import TRADES, AuthError, Provider, ProviderError, RegistrationLimitError
from observer.store.markers import SUBSCRIBING, UNSUBSCRIBING
from observer.store.store import Store
from observer.store.writer import StoreError, StoreFull
from observer.telemetry.alerts import KEY_TRACK_B_RATE, KEY_WS_DOWN, ProgramAlerts, Sustained
from observer.telemetry.metrics import MetricsWriter

log = get_logger(__name__)
_LINE = orjson.OPT_APPEND_NEWLINE
MITIGATION_SAMPLE_S = 5.0  # market seconds between load samples fed to the mitigation controller
WRITE_BATCH = 256  # queue items written per block: amortises the writers' locks, bounds one step's latency
dumps = orjson.dumps
_DROP_REASONS = {"queue_overflow": "the writer fell behind; {n} frames dropped",
                 "store_full": "the disk refused writes and the store's buffer is full; {n} records not kept"}


class TrackB:
    def __init__(self, *, store: Store, provider: Provider, clock: Clock, calendar: Calendar, cfg: dict,
                 notifier: Notifier | None = None, stop: threading.Event | None = None,
                 fixed_symbols: list[str] | None = None, load_probe=None):
        self.store = store
        self.provider = provider
        self.pname = provider.name
        self.market = provider.market
        self.clock = clock
        self.calendar = calendar
        self.cfg = cfg
        self.bcfg = TrackBConfig.from_config(cfg)
        self.window = TradingWindow.from_config(cfg, "track_b")
        self.notifier = notifier or Notifier()
        self.stop = stop or threading.Event()
        self.events = store.events(self.pname)
        # A deque, not queue.Queue: append/popleft are atomic under the GIL and cost a fraction of
        # Queue's lock + condition per item; the bound is enforced by the sink itself.
        self.q: deque = deque()
        self.q_max = int(self.bcfg.queue_max)
        self._q_wake = threading.Event()
        self.raw = store.partition("raw", self.pname)
        self.mitigation = MitigationController(cfg, clock)
        self.scalp = store.partition("scalp", self.pname, self.market,
                                     rotation_minutes=rotation_minutes(self.mitigation.level))
        self.triggers = TriggerEngine(cfg, clock)
        self.channels = self.bcfg.channels
        self.fixed_symbols = fixed_symbols
        # (cpu %, memory %) — psutil by default; tests inject load to drive mitigation
        self.load_probe = load_probe or (lambda: (psutil.cpu_percent(None), psutil.virtual_memory().percent))
        self.slots = SlotManager(slot_capacity(cfg), float(self.bcfg.min_hold_s), float(self.bcfg.cooldown_s))
        self.hb = Heartbeat(store.root, f"track-b@{self.pname}", clock)
        self.rate = RecordingRate(float(self.bcfg.recording_rate_window_s),
                                  book_interval_s(self.mitigation.level))
        self.anomaly = AnomalyTracker(cfg, clock)
        self.metrics = MetricsWriter.from_config(store.root, f"track-b@{self.pname}", cfg, provider=self.pname,
                                                 clock=clock)
        self.alerts = ProgramAlerts(store, cfg, f"track-b@{self.pname}", clock=clock)
        store.on_store_error = self.alerts.store_error
        self.pause_after_s = float(self.bcfg.pause_after_s)
        self._rate_low = Sustained(float(self.alerts.acfg["track_b_rate_for_s"]))
        self._reconnects_before = 0  # reconnect events of earlier runs today (observer_ws_reconnects_today)
        self._reconnects_seen = 0
        self._connected = True
        self.stream = None
        # counters (also in STATUS, heartbeat and metrics)
        self.frames = 0
        self.trades = 0
        self.books_written = 0
        self._drops: dict[str, list[int]] = {}  # cause -> [count, first recv_ns, last recv_ns]
        self._drop_lock = threading.Lock()
        self.dropped = 0  # frames/records lost to backpressure or a full disk, all reported and marked
        self.store_refused = 0
        self._raw_prefix = (b'{"v":1,"kind":"raw","provider":' + dumps(self.pname)
                            + b',"recv_ns":%d,"frame":%b}\n')  # the line orjson makes of the raw record
        self.rejected = 0
        self.paused = False
        self.event_lag_s = 0.0
        self._down_since: float | None = None
        self._latest_book: dict[str, dict] = {}
        self._book_fresh: set[str] = set()
        self._slot_of: dict[str, int] = {}
        self._pending: dict[str, int] = {}  # allocated, subscription not yet effective: symbol -> allocation ns
        self._tcount: dict[str, int] = {}  # trades received per symbol since the last velocity feed
        self._last_exch = 0  # exchange time of the newest trade written (where an unsubscribe's blind spot starts)
        self._ready = False
        self._rate_t0 = time.monotonic()
        self._rate_frames0 = 0
        self.msgs_per_s = 0.0
        self.last_reconnect = ""
        # test-only faults (a memory leak for the MemoryMax test): the hooks are imported only when
        # OBSERVER_TEST_FAULTS names their trigger directory (outside the tree)
        self._test_faults = None
        if os.environ.get("OBSERVER_TEST_FAULTS"):
            from observer.sim.testfaults import FaultHooks
            self._test_faults = FaultHooks.from_env()

    # -- the socket side: never blocks ------------------------------------------------------
    def sink(self, frame: str, recv_ns: int, records: list[dict]) -> None:
        """Called by the connection thread for every frame: stamps and checks the records here (CPU
        only, no allocation to speak of) so the writer only serialises and appends; it never touches
        the disk and never waits. Serialising stays with the writer: orjson's output buffers are
        malloc'd, and queueing them from this thread fragmented its malloc arena (hundreds of MB of
        RSS after a writer stall). The slot and mitigation level stamped are those at receive time."""
        q = self.q
        if len(q) >= self.q_max:
            self._drop_window(recv_ns, recv_ns, 1, "queue_overflow")
            return
        trades = books = bad = None
        if records and not self.paused:
            lvl = self.mitigation.level
            slot_of = self._slot_of
            for rec in records:
                sym = rec["symbol"]
                rec["track"] = "B"
                rec["mitigation"] = lvl
                slot = slot_of.get(sym)
                if slot is not None:
                    rec["slot"] = slot
                kind = rec["kind"]
                if kind == "trade":
                    try:
                        check(rec)
                    except ContractError as e:
                        (bad := bad or []).append((sym, str(e)[:300]))
                        continue
                    (trades := trades or []).append(rec)
                elif kind == "book":
                    (books := books or []).append(rec)
        q.append((frame, recv_ns, trades, books, bad))
        if len(q) == 1:
            self._q_wake.set()

    # -- the main loop ------------------------------------------------------------------------
    def _write_batch(self, batch: list) -> None:
        """Write a batch of queue items (frame, recv_ns, checked trades, books, rejects): every frame
        to raw/, every trade to scalp/, each partition the batch as one block (one lock, one buffer
        append); books are kept for the sampler, contract rejects reported here (events write)."""
        self.frames += len(batch)
        raw_prefix = self._raw_prefix
        raw_ts = [item[1] for item in batch]
        try:
            self.raw.append_lines([raw_prefix % (item[1], dumps(item[0])) for item in batch], raw_ts)
        except StoreFull:
            self._refused("raw", raw_ts)
        lines, ts = [], []
        tc = self._tcount
        tc_get = tc.get
        for _, recv_ns, trades, books, bad in batch:
            if trades is not None:
                for rec in trades:
                    lines.append(dumps(rec, option=_LINE))
                    ts.append(recv_ns)
                    sym = rec["symbol"]
                    tc[sym] = tc_get(sym, 0) + 1  # the trade-velocity trigger's input (fed once a market second)
                self._last_exch = trades[-1]["exch_ns"] or self._last_exch
            if books is not None:
                for rec in books:
                    sym = rec["symbol"]
                    self._latest_book[sym] = rec
                    self._book_fresh.add(sym)
            if bad is not None:
                for sym, reason in bad:
                    self.rejected += 1
                    self.events.emit("record_rejected", "WARNING", record_kind="trade", reason=reason, symbol=sym)
        if lines:
            try:
                self.scalp.append_lines(lines, ts)
                self.trades += len(lines)
            except StoreFull:
                self._refused("scalp", ts)

    def _refused(self, partition: str, ts: list[int]) -> None:
        """The store refused a block (disk full and its buffer at the bound): nothing of it is
        acknowledged, so it is counted and marked like a queue overflow instead of crashing."""
        self.store_refused += len(ts)
        self._drop_window(ts[0], ts[-1], len(ts), "store_full")
        log.error("store refused a block", extra={"partition": partition, "records": len(ts)})

    def _drop_window(self, first_ns: int, last_ns: int, n: int, cause: str) -> None:
        with self._drop_lock:  # the socket thread and the main loop both count; only the main loop reports
            d = self._drops.get(cause)
            if d is None:
                self._drops[cause] = [n, first_ns, last_ns]
            else:
                d[0] += n
                d[2] = last_ns

    def _sample_books(self) -> None:
        """One sampling tick: write the newest book of every slot that changed since the last tick.

        A slot counts as recorded at this tick when the connection is up and its book state is
        captured (written now, or unchanged since the last written sample); during a disconnect or
        a pause it is not — that is what the recording rate measures."""
        now = self.clock.now_ns()
        for sym in list(self._book_fresh):
            rec = self._latest_book.get(sym)
            if rec is None or sym not in self._slot_of or self.paused:
                continue
            try:
                self.scalp.append(rec, rec["recv_ns"])
                self.books_written += 1
            except StoreFull:
                self._refused("scalp", [rec["recv_ns"]])
            except ContractError as e:
                self.rejected += 1
                self.events.emit("record_rejected", "WARNING", record_kind="book", reason=str(e)[:300], symbol=sym)
        self._book_fresh.clear()
        if self._connected and not self.paused:
            for sym, slot in self._slot_of.items():
                if sym in self._latest_book:
                    self.rate.record(slot, now)

    def _report_drops(self) -> None:
        if not self._drops:
            return
        with self._drop_lock:
            drops, self._drops = self._drops, {}
        for cause, (n, a, b) in drops.items():
            self.dropped += n
            if cause == "queue_overflow":
                self.metrics.inc("observer_frames_dropped_total", n)
            self.events.emit("recording", "CRITICAL", state=cause, dropped=n, reason=_DROP_REASONS[cause].format(n=n),
                             anomaly_day=True)
            for sym in sorted(self._slot_of):
                for ch in self.channels:
                    self.events.emit("gap_marker", "WARNING", market=self.market, symbol=sym, start_ns=a, end_ns=b,
                                     track="B", cause=cause, recoverable=(ch == TRADES), channel=ch,
                                     gap_id=f"B-{self.pname}-{sym}-{ch}-{cause}-{a}")

    # -- slots ----------------------------------------------------------------------------------
    def reallocate(self, day: date) -> None:
        now = self.clock.now_ns()
        if self.fixed_symbols is not None:
            from observer.collect.triggers import Candidate

            cands = [Candidate(s, "manual", 1.0, "fixed") for s in self.fixed_symbols]
        else:
            try:
                self.triggers.observe_snapshots(latest_snapshots(self.store.root, self.pname, self.market, day))
            except (OSError, ValueError) as e:
                log.warning("no Track A snapshots", extra={"error": str(e)})
            try:  # the broker's volume rank: candidates before Track A's first sweep, and fillers
                self.triggers.observe_volume_rank(self.provider.rest().volume_rank())
            except AuthError:
                raise  # refused credentials end the collector (run_collector), never a warning per cycle
            except (ProviderError, OSError, ValueError) as e:
                log.warning("volume rank unavailable", extra={"error": str(e)[:300]})
            cands = self.triggers.candidates(now)
        plan = self.slots.plan(cands, now)
        for slot, sym, reason in plan.release:
            for ch in self.channels:
                self.stream.unsubscribe(sym, ch)
            self._subscribed(sym, now, "released before its subscription was effective")
            self._slot_of.pop(sym, None)
            self.triggers.forget_trades(sym)
            self._latest_book.pop(sym, None)
            self.rate.unsubscribe(slot, now)
            ev = self.events.emit("slot", "INFO", action="release", slot=slot, symbol=sym, reason=reason)
            self._unsubscribed(sym, ev["ts_ns"])  # to the holding's end: the server may still be sending
        placed = []
        for slot, cand in plan.allocate:
            try:
                for ch in self.channels:
                    self.stream.subscribe(cand.symbol, ch)
            except RegistrationLimitError as e:
                plan.overflow.append(cand)
                log.error("registration limit", extra={"error": str(e)})
                continue
            self._slot_of[cand.symbol] = slot
            self._pending[cand.symbol] = now
            self.rate.subscribe(slot, now)
            placed.append((slot, cand))
            self.events.emit("slot", "INFO", action="allocate", slot=slot, symbol=cand.symbol, trigger=cand.trigger,
                             score=cand.score, reason=cand.reason)
        plan.allocate = placed
        self.slots.apply(plan, now)
        if plan.overflow:
            from observer.store import paths

            w = self.store.writer(paths.overflow_file(self.store.root, self.pname, day), "overflow", shared=True)
            for c in plan.overflow:
                w.append({"v": 1, "kind": "overflow", "ts_ns": now, "provider": self.pname, "market": self.market,
                          "symbol": c.symbol, "trigger": c.trigger, "score": c.score, "reason": c.reason})

    def _check_effective(self) -> None:
        """A slot records from its subscription's acknowledgement (or, where the protocol has none, its
        first trade), not from its allocation: the stretch between is marked, so the gap-filler pages
        it whatever its length (trades there never reach the stream)."""
        ch = TRADES if TRADES in self.channels else self.channels[0]
        for sym in list(self._pending):
            ack = self.stream.acked_ns(sym, ch)
            if ack is None and self._tcount.get(sym):
                ack = self.clock.now_ns()  # data flows: effective no later than now
            if ack is not None:
                self._subscribed(sym, ack, "")

    def _subscribed(self, sym: str, at_ns: int, why: str) -> None:
        """End the symbol's allocation -> effective stretch at `at_ns`: a `slot` effective event and,
        for the trades channel, a gap marker over the stretch."""
        alloc = self._pending.pop(sym, None)
        if alloc is None:
            return
        at_ns = max(at_ns, alloc)
        self.events.emit("slot", "INFO", action="effective", slot=self._slot_of.get(sym, -1), symbol=sym,
                         effective_ns=at_ns, after_s=round((at_ns - alloc) / NS, 3), reason=why or "acknowledged")
        if TRADES in self.channels:
            self.events.emit("gap_marker", "INFO", market=self.market, symbol=sym, start_ns=alloc, end_ns=at_ns,
                             track="B", cause=SUBSCRIBING, recoverable=True, channel=TRADES,
                             gap_id=f"B-{self.pname}-{sym}-{TRADES}-{SUBSCRIBING}-{alloc}")

    def _unsubscribed(self, sym: str, at_ns: int) -> None:
        """The trailing edge of a holding: trades executed just before the unsubscribe (or the stop) but
        not yet sent are never delivered. Frames come in exchange order, so the blind spot starts at the
        newest trade written (its second, less one for frames still in flight): marked, so the
        gap-filler pages it (the cumulative volume brackets it exactly; usually one call, no loss)."""
        if TRADES not in self.channels:
            return
        start = max(self._last_exch - self._last_exch % NS - NS, 0) or at_ns
        start = min(start, at_ns)
        self.events.emit("gap_marker", "INFO", market=self.market, symbol=sym, start_ns=start, end_ns=at_ns,
                         track="B", cause=UNSUBSCRIBING, recoverable=True, channel=TRADES,
                         gap_id=f"B-{self.pname}-{sym}-{TRADES}-{UNSUBSCRIBING}-{at_ns}")

    def _feed_velocity(self, now_ns: int) -> None:
        """Trades per held symbol since the last call into the trade-velocity trigger (every held symbol,
        0 included, so its baseline knows it was watched)."""
        counts, self._tcount = self._tcount, {}
        observe = self.triggers.observe_trades
        for sym in self._slot_of:
            observe(sym, counts.get(sym, 0), now_ns)

    # -- health -------------------------------------------------------------------------------
    def _health(self) -> None:
        err = self.stream.fatal()
        if err is not None:  # refused credentials: run_collector turns it into exit 3 + CRITICAL alert
            raise err
        st = self.stream.stats()
        conns = st.get("connections", {})
        up = bool(conns) and all(c.get("connected") for c in conns.values())
        now = time.monotonic()
        now_ns = self.clock.now_ns()
        fired: list[str] = []
        reconnects = int(st.get("reconnects", 0))
        for _ in range(reconnects - self._reconnects_seen):
            fired += self.anomaly.reconnect(now_ns)
        self._reconnects_seen = reconnects
        if up != self._connected:
            fired += self.anomaly.connected(now_ns) if up else self.anomaly.disconnected(now_ns)
            self._connected = up
        rate = self.rate.overall(now_ns)
        fired += self.anomaly.observe(now_ns, scalp_rate=rate)
        self._check_rate(now_ns, rate)
        for reason in fired:
            self.events.emit("anomaly_day", "WARNING", reason=reason, anomaly_day=True)
        if up:
            if self.paused and st.get("data_frames", 0):
                self.paused = False
                self.events.emit("recording", "WARNING", state="resumed", reason="data flows again")
            self._down_since = None
            if not self._ready and self.stream.registrations():
                self._ready = True
                self.notifier.ready(self.status_text())
                self.events.emit("collector", "INFO", state="ready", reason=f"{len(self._slot_of)} slots subscribed")
        else:
            if self._down_since is None:
                self._down_since = now
            elif not self.paused and (now - self._down_since) * self.clock.speed >= self.pause_after_s:
                self.paused = True
                why = f"no connection for {self.pause_after_s:g} s; still reconnecting"
                self.events.emit("recording", "CRITICAL", state="paused", anomaly_day=True, reason=why)
                self.alerts.alert(f"{KEY_WS_DOWN}:{self.pname}", "CRITICAL",
                                  f"{self.pname} WebSocket down for {self.pause_after_s / 60:g} min: scalp recording "
                                  f"paused, anomaly day; reconnecting goes on (last: {self.last_reconnect or '-'})",
                                  provider=self.pname)
        for c in conns.values():
            if c.get("last_cause"):
                self.last_reconnect = f"{c['last_cause']} ({c.get('last_downtime_s')}s)"

    def _check_rate(self, now_ns: int, rate: float | None) -> None:
        """track_b_rate: the recording rate below alerts.track_b_rate_min for track_b_rate_for_s (market s)."""
        if rate is None:
            return
        low = float(self.alerts.acfg["track_b_rate_min"])
        if self._rate_low.update(now_ns / NS, rate < low):
            self.alerts.alert(f"{KEY_TRACK_B_RATE}:{self.pname}", "WARNING",
                              f"{self.pname} Track B recording rate {rate * 100:.1f} % (< {low * 100:g} %) for "
                              f"{self._rate_low.held_s(now_ns / NS) / 60:.1f} min: {len(self._slot_of)} slots, level "
                              f"{self.mitigation.level}{', PAUSED' if self.paused else ''}",
                              provider=self.pname)

    def _mitigate(self) -> None:
        lag = 0.0
        try:
            head = self.q[0]
            lag = (self.clock.now_ns() - head[1]) / NS
        except IndexError:
            pass
        self.event_lag_s = lag
        cpu, mem = self.load_probe()
        for reason in self.anomaly.cpu(self.clock.now_ns(), cpu):
            self.events.emit("anomaly_day", "WARNING", reason=reason, anomaly_day=True)
        change = self.mitigation.observe(self.clock.now_ns(), cpu, mem, self.store.last_fsync_s * 1000, lag)
        if change:
            new, old, reason = change
            self.scalp.set_rotation(rotation_minutes(new))
            self.rate.set_interval(self.clock.now_ns(), book_interval_s(new))
            self.events.emit("mitigation", "WARNING" if new > old else "INFO", level=new, previous=old, reason=reason)
            self.notifier.status(self.status_text())

    def _metrics(self) -> None:
        m = self.metrics
        st = self.stream.stats() if self.stream is not None else {}
        conns = st.get("connections", {})
        m.set("observer_messages_per_second", self.msgs_per_s)
        m.set("observer_messages_total", self.frames)
        m.set("observer_records_acked_total", self.store.acked)
        m.set("observer_records_rejected_total", self.rejected)
        m.set("observer_ws_connected", bool(conns) and all(c.get("connected") for c in conns.values()))
        m.set("observer_ws_reconnects_total", st.get("reconnects", 0))
        m.set("observer_ws_reconnects_today", self._reconnects_before + int(st.get("reconnects", 0)))
        m.set("observer_slots_used", len(self._slot_of))
        m.set("observer_slots_capacity", self.slots.capacity)
        m.set("observer_mitigation_level", self.mitigation.level)
        m.set("observer_store_fsync_seconds", self.store.last_fsync_s)
        m.set("observer_event_lag_seconds", self.event_lag_s)
        m.inc("observer_frames_dropped_total", 0)  # present from the start: a rate() over it needs the zero
        m.set("observer_collection_ratio", self.rate.overall(self.clock.now_ns()), track="B")
        m.sample_system()
        m.maybe_write()

    def status_text(self) -> str:
        rate = self.rate.overall(self.clock.now_ns())
        return (f"slots {len(self._slot_of)}/{self.slots.capacity} | {self.msgs_per_s:.0f} msg/s | "
                f"rec {'-' if rate is None else f'{rate * 100:.1f}%'} | "
                f"level {self.mitigation.level} | trades {self.trades} books {self.books_written}"
                f"{' | PAUSED' if self.paused else ''}"
                f"{' | last reconnect ' + self.last_reconnect if self.last_reconnect else ''}")

    # -- the day --------------------------------------------------------------------------------
    def run_day(self, day: date) -> None:
        start, end = self.window.span(self.calendar, day)
        start_ns, end_ns = int(start.timestamp()) * NS, int(end.timestamp()) * NS
        realloc_ns = int(float(self.bcfg.reallocate_interval_s) * NS)
        while not self.stop.is_set() and self.clock.now_ns() < start_ns:
            self.hb.beat("waiting")
            self.notifier.progress()
            self.clock.sleep(min((start_ns - self.clock.now_ns()) / NS, self.clock.speed))
        if self.stop.is_set() or self.clock.now_ns() >= end_ns:
            return
        self._reconnects_before = _reconnect_events(self.store.root, self.pname, day)
        self.stream = self.provider.stream(self.sink, trading_date=day)
        self.reallocate(day)
        self.stream.start()
        next_realloc = self.clock.now_ns() + realloc_ns
        next_sample = time.monotonic()
        next_second = time.monotonic()
        next_mitigate = time.monotonic()
        next_feed = self.clock.now_ns() + NS
        mitigate_every = MITIGATION_SAMPLE_S
        try:
            while not self.stop.is_set() and self.clock.now_ns() < end_ns:
                q = self.q
                if not q:
                    self._q_wake.clear()
                    if not q:  # sleep until frames arrive or the next book sample is due
                        self._q_wake.wait(max(0.0, min(0.05, next_sample - time.monotonic())))
                deadline = min(time.monotonic() + 0.05, next_sample)
                pop = q.popleft
                while q:
                    # popleft is atomic against the socket thread's append; len() only shrinks here
                    self._write_batch([pop() for _ in range(min(len(q), WRITE_BATCH))])
                    if time.monotonic() >= deadline:
                        break
                if self._pending:
                    self._check_effective()
                now_ns = self.clock.now_ns()
                if now_ns >= next_feed:  # once a market second: the velocity windows are market time
                    next_feed = now_ns + NS
                    self._feed_velocity(now_ns)
                now = time.monotonic()
                if now >= next_sample:
                    self._sample_books()
                    next_sample = now + book_interval_s(self.mitigation.level) / self.clock.speed
                if now >= next_second:
                    next_second = now + 1.0
                    self._report_drops()
                    self._health()
                    dt = now - self._rate_t0
                    self.msgs_per_s = (self.frames - self._rate_frames0) / dt if dt > 0 else 0.0
                    self._rate_t0, self._rate_frames0 = now, self.frames
                    self.hb.beat("recording", frames=self.frames, trades=self.trades, books=self.books_written,
                                 slots=len(self._slot_of), level=self.mitigation.level, paused=self.paused,
                                 acked=self.store.acked, rec_rate=self.rate.overall(self.clock.now_ns()))
                    self.notifier.status(self.status_text())
                    self.notifier.progress()
                    self._metrics()
                    if self._test_faults is not None:
                        self._test_faults.tick()
                if now >= next_mitigate:
                    next_mitigate = now + mitigate_every / self.clock.speed
                    self._mitigate()
                if self.clock.now_ns() >= next_realloc:
                    next_realloc = self.clock.now_ns() + realloc_ns
                    try:
                        self.reallocate(day)
                    except AuthError:
                        raise
                    except (ProviderError, StoreError, OSError) as e:
                        log.error("reallocation failed", extra={"error": str(e)})
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        """Stop receiving, write what was received, make it durable."""
        if self.stream is not None:
            self.stream.stop(timeout=3.0)
        q = self.q
        while q:
            self._write_batch([q.popleft() for _ in range(min(len(q), WRITE_BATCH))])
        self._sample_books()
        self._report_drops()
        stop_ns = self.clock.now_ns()
        for sym in list(self._pending):
            self._subscribed(sym, stop_ns, "stopped before its subscription was effective")
        if self.stream is not None:
            for sym in sorted(self._slot_of):
                self._unsubscribed(sym, stop_ns)
        self.scalp.close()
        self.raw.close()
        self.store.sync_all()
        if self.stream is not None:
            self._metrics()
        self.metrics.write_now()
        self.alerts.close()
        self.store.on_store_error = None


def _reconnect_events(root, provider: str, day: date) -> int:
    """Reconnect events already in the day's event log (earlier runs of today): a restart does not
    reset observer_ws_reconnects_today."""
    from observer.store import paths

    n = 0
    try:
        with open(paths.events_file(root, provider, day), "rb") as f:
            for line in f:
                if b'"event":"reconnect"' in line:
                    n += 1
    except OSError:
        pass
    return n
