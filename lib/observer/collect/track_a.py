"""Track A: sweep the whole universe with the current-price call every `track_a.interval_minutes`,
aligned to the window (09:00, 09:10, ...), through the provider's shared rate limiter.

A sweep that cannot finish inside its slot is marked degraded and the next one still starts on
time; every symbol a sweep could not get has a gap marker; each sweep ends with a `sweep` event.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import date, datetime

from observer.collect.heartbeat import Heartbeat
from observer.core.calendar import Calendar
from observer.core.clock import NS, Clock, Stopped, kst
from observer.core.logging import get_logger
from observer.core.notify import Notifier
from observer.core.settings import TrackAConfig, TradingWindow
from observer.providers.base import AuthError, MarketRest, ProviderError, provider_class
from observer.store.store import Store
from observer.telemetry.alerts import KEY_TRACK_A_RATE, ProgramAlerts, Sustained
from observer.telemetry.metrics import MetricsWriter

log = get_logger(__name__)
BOOK_BUDGET_SHARE = 0.8  # of a slot's request budget; the rest is headroom for retries and other programs


def book_fits(symbols: int, calls_per_s: float | None, interval_min: int) -> bool:
    """True when a sweep can afford a second call per symbol (the best bid/ask) inside its slot:
    2 × symbols ≤ BOOK_BUDGET_SHARE × rate × slot seconds. Real account (19/s, 10 min): up to 4,560
    symbols; paper (2/s): up to 480."""
    return bool(calls_per_s) and 2 * symbols <= BOOK_BUDGET_SHARE * calls_per_s * interval_min * 60


def sweep_slots(start: datetime, end: datetime, interval_min: int) -> list[int]:
    """Slot start times (UTC ns) from the window start to its end inclusive (09:00 ... 15:30)."""
    step = interval_min * 60 * NS
    s = int(start.timestamp()) * NS
    e = int(end.timestamp()) * NS
    return list(range(s, e + 1, step))


class TrackA:
    def __init__(self, *, store: Store, rest: MarketRest, clock: Clock, calendar: Calendar, cfg: dict,
                 provider: str, symbols: list[str], notifier: Notifier | None = None,
                 stop: threading.Event | None = None):
        self.store = store
        self.rest = rest
        self.clock = clock
        self.calendar = calendar
        self.cfg = cfg
        self.provider = provider
        self.market = provider_class(provider).market
        self.symbols = symbols
        self.notifier = notifier or Notifier()
        self.stop = stop or threading.Event()
        tcfg = TrackAConfig.from_config(cfg)
        self.interval = tcfg.interval_minutes
        self.workers = tcfg.workers
        self.window = TradingWindow.from_config(cfg, "track_a")
        self.events = store.events(provider)
        self.swing = store.partition("swing", provider, self.market)
        self.hb = Heartbeat(store.root, "track-a", clock)
        self.metrics = MetricsWriter.from_config(store.root, "track-a", cfg, provider=provider, clock=clock)
        self.alerts = ProgramAlerts(store, cfg, "track-a", clock=clock)
        store.on_store_error = self.alerts.store_error
        # a sweep's coverage holds until the next sweep (the gauge Prometheus sees): low for
        # track_a_rate_for_s = low at sweeps that far apart with none good between
        self._rate_low = Sustained(float(self.alerts.acfg["track_a_rate_for_s"]))
        self.sweeps_done = 0
        self.last_status = ""
        # bid/ask come from a second call (the current-price reply has none): made only when the budget allows
        self.fill_book = book_fits(len(symbols), rest.calls_per_s(), self.interval)

    # -- waiting -----------------------------------------------------------------------------
    def _wait_until(self, target_ns: int, phase: str) -> bool:
        """Sleep (market time) until target; keep the heartbeat and watchdog fed. False if stopped."""
        while not self.stop.is_set():
            left = (target_ns - self.clock.now_ns()) / NS
            if left <= 0:
                return True
            self.hb.beat(phase, sweeps=self.sweeps_done)
            self.notifier.progress()
            try:
                self.clock.sleep(min(left, 1.0 * self.clock.speed))
            except Stopped:
                return False
        return False

    # -- one sweep ---------------------------------------------------------------------------
    def sweep(self, slot_ns: int, deadline_ns: int) -> dict:
        t0 = time.monotonic()
        ok = 0
        failed: dict[str, str] = {}
        pending: dict[Future, str] = {}
        label = kst(slot_ns).strftime("%H:%M")
        it = iter(self.symbols)

        book_failed: list[str] = []  # appended from the workers (list.append is atomic)

        def call(sym: str):
            if self.stop.is_set() or self.clock.now_ns() >= deadline_ns:
                raise TimeoutError("sweep_overrun")
            rec = self.rest.current_price(sym, sweep_ns=slot_ns)
            if self.fill_book and self.clock.now_ns() < deadline_ns:
                try:
                    rec.update(self.rest.best_quote(sym))
                except AuthError:
                    raise
                except (ProviderError, OSError, ValueError, KeyError) as e:  # the price is still worth keeping
                    book_failed.append(sym)
                    rec.setdefault("flags", []).append("book_unavailable")
                    log.warning("best quote failed", extra={"symbol": sym, "error": str(e)[:300]})
            return rec

        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="track-a") as ex:
            # keep at most 2 × workers calls queued, so a stop or an overrun leaves little in flight
            def refill():
                for sym in it:
                    pending[ex.submit(call, sym)] = sym
                    if len(pending) >= 2 * self.workers:
                        break

            refill()
            while pending:
                done, _ = wait(list(pending), timeout=0.5, return_when=FIRST_COMPLETED)
                for f in done:
                    sym = pending.pop(f)
                    try:
                        rec = f.result()
                        rec["track"] = "A"
                        self.swing.append(rec, slot_ns)
                        ok += 1
                    except TimeoutError:
                        failed[sym] = "sweep_overrun"
                    except Stopped:
                        failed[sym] = "stopped"
                    except AuthError:  # refused credentials end the program, not just this symbol
                        self.stop.set()
                        raise
                    except (ProviderError, OSError, ValueError, KeyError) as e:
                        failed[sym] = type(e).__name__
                        log.warning("current price failed", extra={"symbol": sym, "error": str(e)[:300]})
                if self.stop.is_set() or self.clock.now_ns() >= deadline_ns:
                    for sym in it:  # never started: the slot is over
                        failed[sym] = "sweep_overrun" if not self.stop.is_set() else "stopped"
                else:
                    refill()
                self.hb.beat("sweeping", sweeps=self.sweeps_done, slot=label, done=ok + len(failed),
                             of=len(self.symbols))
                self.notifier.progress()
        duration = time.monotonic() - t0
        degraded = any(v == "sweep_overrun" for v in failed.values())
        for sym, cause in sorted(failed.items()):
            self.events.emit("gap_marker", "WARNING", market=self.market, symbol=sym, start_ns=slot_ns,
                             end_ns=slot_ns + self.interval * 60 * NS, track="A", cause=cause, recoverable=False,
                             gap_id=f"A-{self.provider}-{sym}-{slot_ns}")
        errors: dict[str, int] = {}
        for cause in failed.values():
            errors[cause] = errors.get(cause, 0) + 1
        n = len(self.symbols)
        ev = {"slot": label, "sweep_ns": slot_ns, "symbols": n, "ok": ok, "failed": len(failed),
              "coverage_pct": round(100.0 * ok / n, 3) if n else 100.0, "duration_s": round(duration, 3),
              "degraded": degraded, "errors": errors,
              "book": {"filled": self.fill_book, "failed": len(book_failed)}}
        self.events.emit("sweep", "WARNING" if failed else "INFO", **ev)
        self.sweeps_done += 1
        m = self.metrics
        m.set("observer_collection_ratio", ev["coverage_pct"] / 100.0, track="A")
        self._check_rate(slot_ns, ev)
        m.inc("observer_gaps_total", len(failed))
        m.set("observer_records_acked_total", self.store.acked)
        m.sample_system()
        m.write_now()
        return ev

    def _check_rate(self, slot_ns: int, ev: dict) -> None:
        low = float(self.alerts.acfg["track_a_rate_min"]) * 100
        if self._rate_low.update(slot_ns / NS, ev["coverage_pct"] < low):
            self.alerts.alert(KEY_TRACK_A_RATE, "WARNING",
                              f"Track A collected {ev['coverage_pct']:.1f} % of {ev['symbols']} symbols (< {low:g} %) "
                              f"for {self._rate_low.held_s(slot_ns / NS) / 60:g} min; sweep {ev['slot']}: "
                              + (", ".join(f"{k} ×{v}" for k, v in sorted(ev["errors"].items())) or "no errors"),
                              provider=self.provider)

    # -- the day -----------------------------------------------------------------------------
    def _sweeps_already_done(self, day: date) -> set[int]:
        from observer.store import paths
        from observer.store.reader import read_file

        f = paths.events_file(self.store.root, self.provider, day)
        if not f.exists():
            return set()
        return {r["sweep_ns"] for r in read_file(f) if r.get("event") == "sweep" and "sweep_ns" in r}

    def run_day(self, day: date) -> int:
        """Sweep every slot of the day's window that has not passed. Returns the number of sweeps."""
        start, end = self.window.span(self.calendar, day)
        slots = sweep_slots(start, end, self.interval)
        step = self.interval * 60 * NS
        now = self.clock.now_ns()
        done = self._sweeps_already_done(day)  # a restart mid-day: those sweeps are not gaps
        missed = [s for s in slots if s + step <= now and s not in done]
        for s in missed:  # started late: say so, once per sweep that never happened
            self.events.emit("gap_marker", "WARNING", market=self.market, symbol="*", start_ns=s, end_ns=s + step,
                             track="A", cause="collector_not_running", recoverable=False,
                             gap_id=f"A-{self.provider}-*-{s}")
        book = "with bid/ask" if self.fill_book else "without bid/ask (2 calls per symbol exceed the slot's budget)"
        self.notifier.ready(f"Track A {day:%Y-%m-%d}: {len(self.symbols)} symbols {book}, "
                            f"{len(slots) - len(missed)} sweeps to go")
        self.events.emit("collector", "INFO", state="ready", reason=f"{len(self.symbols)} symbols {book}")
        count = 0
        for s in slots:
            if s + step <= now:
                continue
            if not self._wait_until(s, "waiting"):
                break
            ev = self.sweep(s, min(s + step, int(end.timestamp()) * NS + step))
            count += 1
            self.last_status = (f"sweep {ev['slot']}: {ev['ok']}/{ev['symbols']} ({ev['coverage_pct']}%) "
                                f"in {ev['duration_s']}s{' DEGRADED' if ev['degraded'] else ''}")
            self.notifier.status(self.last_status)
            if self.stop.is_set():
                break
        self.swing.close()
        self.alerts.close()
        self.store.on_store_error = None
        return count
