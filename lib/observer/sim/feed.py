"""The one seeded market as every protocol server sees it (interfaces.MarketView): the market clock, the
listing, each symbol's live state, and the tick feed the pump drives.

A tick brings every active symbol up to a market time, writes the tick's trades and books to the ground
truth, counts them, and hands them to each listener (one per provider's WebSocket server), all under
`tick_lock`, so a subscription or a close taken under the same lock falls exactly between two ticks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from datetime import date, datetime
from operator import attrgetter

from observer.core.clock import KST, Clock, ScaledClock, kst_datetime, parse_yyyymmdd, yyyymmdd
from observer.sim.config import SimConfig
from observer.sim.market import T_CLOSE, T_OPEN, T_PREOPEN, SymbolSim, TradeEv, Universe, parse_hhmmss
from observer.sim.truth import GroundTruth

_by_t = attrgetter("t")
SLICE_MS = 5_000  # market ms per pump tick at most (a busy 5 s of 200 active symbols is a few thousand events)


def trading_date(cfg: SimConfig) -> date:
    return parse_yyyymmdd(cfg.date) if cfg.date else datetime.now(KST).date()


class Market:
    def __init__(self, cfg: SimConfig, day: date, clock: Clock | None, truth: GroundTruth):
        self.seed = cfg.seed
        self.date = day
        self.date_str = yyyymmdd(self.date)
        self.midnight_ns = int(kst_datetime(self.date, "000000").timestamp()) * 1_000_000_000
        self.clock = clock or ScaledClock(kst_datetime(self.date, cfg.start), cfg.speed)
        self.universe = Universe(cfg.seed, cfg.symbols, cfg.active, cfg.activity)
        bursts: dict[str, list] = {}
        for b in cfg.bursts:
            try:
                at = parse_hhmmss(str(b["at"]))
                bursts.setdefault(str(b["symbol"]), []).append((at, at + int(float(b["duration"]) * 1000),
                                                                float(b["factor"])))
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"bad burst {b!r}: want symbol, at HH:MM[:SS], duration s, factor ({e})") from None
        self.syms = {i.code: SymbolSim(i, cfg.seed, self.date_str, bursts.get(i.code, ())) for i in self.universe.symbols}
        self.active_syms = [self.syms[i.code] for i in self.universe.symbols if i.active]
        self._truth = truth
        self.tick_lock = threading.RLock()
        self.dispatched_ms = -1
        self.generated = {"trades": 0, "books": 0}
        self.sym_counts: dict[str, list[int]] = {}  # code → [trades, books, last acml_vol]
        self._listeners: list[Callable[[list], None]] = []

    # ---- clock --------------------------------------------------------------------------------------------
    def now_ns(self) -> int:
        return self.clock.now_ns()

    def market_ms(self) -> int:
        return (self.clock.now_ns() - self.midnight_ns) // 1_000_000

    def phase(self, t_ms: int | None = None) -> str:
        t = self.market_ms() if t_ms is None else t_ms
        if t < T_PREOPEN:
            return "before_preopen"
        if t < T_OPEN:
            return "preopen"
        if t < 15 * 3_600_000 + 20 * 60_000:
            return "continuous"
        if t < T_CLOSE:
            return "close_auction"
        return "closed"

    # ---- listing and live state ---------------------------------------------------------------------------
    def symbol(self, code: str) -> SymbolSim | None:
        return self.syms.get(code)

    def symbols(self) -> Iterable[SymbolSim]:
        return self.syms.values()

    # ---- the feed -----------------------------------------------------------------------------------------
    def listen(self, listener: Callable[[list], None]) -> None:
        with self.tick_lock:
            self._listeners.append(listener)

    def pump_once(self) -> None:
        """Bring the feed up to the market clock, one slice of at most SLICE_MS market time per tick, so a
        late start or a pump that fell behind never holds more than one slice of events in memory."""
        now = self.market_ms()
        t = max(self.dispatched_ms, T_PREOPEN - 1)  # nothing happens before the pre-open
        while now - t > SLICE_MS:
            t += SLICE_MS
            self._tick(t)
        if now > self.dispatched_ms:
            self._tick(now)

    def _tick(self, upto: int) -> None:
        # Under tick_lock: a (un)subscription or a close takes effect between two ticks, never inside one, so
        # "frames for events with from_t_ms < t <= until_t_ms were sent" holds exactly.
        with self.tick_lock:
            evs: list = []
            for s in self.active_syms:
                with s.lock:
                    s.advance(upto)
                    if s.outbox:
                        evs.extend(s.take(upto))
            if evs:
                evs.sort(key=_by_t)  # stable: each symbol's own order (and a cluster's records) is kept
                self._truth.events(evs)
                self._count(evs)
                for listener in self._listeners:
                    listener(evs)
            self.dispatched_ms = upto

    def _count(self, evs: list) -> None:
        counts = self.sym_counts
        nt = 0
        for ev in evs:
            c = counts.get(ev.sym)
            if c is None:
                c = counts[ev.sym] = [0, 0, 0]
            if type(ev) is TradeEv:
                c[0] += 1
                c[2] = ev.acml_vol
                nt += 1
            else:
                c[1] += 1
        self.generated["trades"] += nt
        self.generated["books"] += len(evs) - nt
