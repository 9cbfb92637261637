"""The simulator: one market, the providers that serve it (KIS: kis.KisProvider, always; Kiwoom:
kiwoom.KiwoomProvider, when `providers` names it), faults, ground truth and the control endpoint.

Threads: a pump (advances every active symbol to the market clock every few ms, writes ground truth, hands
each tick's events to the providers' feed listeners), a housekeeping tick (fault schedule, PINGPONG,
flapping), the HTTP servers and two threads per WebSocket connection.

The Simulator owns and wires the parts; a provider's servers see only the views of interfaces.py (the
market, their faults, their ground-truth recorder), the control endpoint only interfaces.SimControl.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict

from observer.core.clock import Clock, yyyymmdd
from observer.sim.config import SimConfig
from observer.sim.control import ControlServer
from observer.sim.faults import FaultBook, FaultError, load_schedule, validate
from observer.sim.feed import Market, trading_date
from observer.sim.kis import KisProvider
from observer.sim.kiwoom import KiwoomProvider
from observer.sim.market import hhmmss, parse_hhmmss
from observer.sim.truth import GroundTruth

__all__ = ["SimConfig", "Simulator", "run_in_thread"]

log = logging.getLogger("observer.sim")
KINDS = {p.name: p for p in (KisProvider, KiwoomProvider)}  # the broker protocols the simulator can serve


def served(names) -> tuple[str, ...]:
    """The providers a config asks for, checked: known names, KIS among them (its URLs are the top-level
    ones, as they always were)."""
    names = tuple(dict.fromkeys(str(n).strip() for n in names))
    bad = [n for n in names if n not in KINDS]
    if bad or KisProvider.name not in names:
        raise ValueError(f"providers {list(names)}: want {KisProvider.name!r} and any of "
                         f"{sorted(set(KINDS) - {KisProvider.name})}; unknown: {bad}")
    return names


class Simulator:
    def __init__(self, cfg: SimConfig, clock: Clock | None = None):
        self.cfg = cfg
        self.served = served(cfg.providers)
        day = trading_date(cfg)
        schedule = list(cfg.faults)
        if cfg.faults_file:
            schedule += load_schedule(cfg.faults_file)
        schedule = sorted((self._validate(s) for s in schedule), key=lambda s: s.get("at_ms", 0))
        self.faults = FaultBook(schedule, cfg.speed)
        self.truth = GroundTruth(cfg.ground_truth, yyyymmdd(day))
        self.market = Market(cfg, day, clock, self.truth)
        # one provider per broker protocol, each with its own view of the faults; KIS's ground truth goes to the
        # top of the ground-truth directory (where it always was), another's to a subdirectory named after it
        self.providers = {name: KINDS[name](cfg, self.market, self.faults.view(name),
                                            self.truth if name == KisProvider.name else self.truth.child(name))
                          for name in self.served}
        self.kis = self.providers[KisProvider.name]
        m = self.market
        self.clock, self.date, self.date_str, self.midnight_ns = m.clock, m.date, m.date_str, m.midnight_ns
        self.universe, self.syms, self.active_syms = m.universe, m.syms, m.active_syms
        self.generated, self.sym_counts = m.generated, m.sym_counts
        self.auth, self.masters, self.counters = self.kis.auth, self.kis.masters, self.kis.counters.counters
        self.stop_at_ms = parse_hhmmss(cfg.stop_at) if cfg.stop_at else None
        self.stop_requested = threading.Event()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._stopped = False
        self.started_ns = 0
        self.control: ControlServer | None = None
        self._threads: list[threading.Thread] = []

    # ---- the parts, as tests and programs name them -------------------------------------------------------
    @property
    def dispatched_ms(self) -> int:
        return self.market.dispatched_ms

    @property
    def rest(self):
        return self.kis.rest

    @property
    def ws(self):
        return self.kis.ws

    def now_ns(self) -> int:
        return self.market.now_ns()

    def market_ms(self) -> int:
        return self.market.market_ms()

    def phase(self, t_ms: int | None = None) -> str:
        return self.market.phase(t_ms)

    # ---- lifecycle ----------------------------------------------------------------------------------------
    @property
    def rest_url(self) -> str | None:
        return self.kis.urls()["rest"]

    @property
    def ws_url(self) -> str | None:
        return self.kis.urls()["ws"]

    @property
    def control_url(self) -> str | None:
        return f"http://{self.cfg.host}:{self.control.port}" if self.control else None

    def urls(self) -> dict:
        """{"rest", "ws"} of KIS, "control", and with several providers each one's {"rest", "ws"} under its name."""
        out = {**self.kis.urls(), "control": self.control_url}
        if len(self.providers) > 1:
            out.update({name: p.urls() for name, p in self.providers.items()})
        return out

    def start(self) -> Simulator:
        cfg = self.cfg
        self.started_ns = time.time_ns()
        # bound before the catch-up (a port in use fails at once; a client connecting meanwhile waits in the
        # backlog), served after it
        for p in self.providers.values():
            p.bind()
        if cfg.control_port is not None:
            self.control = ControlServer(self, cfg.host, cfg.control_port)
        self._write_meta(final=False)
        self.truth.write_json("universe.json", [
            {"symbol": i.code, "name": i.name, "market": i.market, "prev_close": i.prev_close,
             "lower": i.lower, "upper": i.upper, "active": i.active, "rank": i.rank, "rate": round(i.rate, 4),
             "prdy_vol": i.prdy_vol, "listed": i.listed} for i in self.universe.symbols])
        t0 = time.monotonic()
        self.market.pump_once()  # catch up from 08:30 to the start time before anyone can connect
        self.truth.flush()
        log.info("market caught up", extra={"t_ms": self.dispatched_ms, "seconds": round(time.monotonic() - t0, 3),
                                            "trades": self.generated["trades"]})
        for p in self.providers.values():
            p.start()
        if self.control:
            self.control.start()
        for target, name in ((self._pump_loop, "sim-pump"), (self._housekeeping_loop, "sim-housekeeping")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        log.info("simulator ready", extra={**self.urls(), "date": self.date_str, "speed": cfg.speed,
                                           "symbols": cfg.symbols, "active": len(self.active_syms)})
        return self

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._stop.set()
        self.stop_requested.set()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(5)
        for p in self.providers.values():
            p.stop()
        if self.control:
            self.control.stop()
        self._write_summary()
        self._write_meta(final=True)
        self.truth.close()
        log.info("simulator stopped", extra={"trades": self.generated["trades"], "books": self.generated["books"]})

    def __enter__(self) -> Simulator:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _write_meta(self, final: bool) -> None:
        cfg = asdict(self.cfg)
        cfg.pop("app_key", None)
        cfg.pop("app_secret", None)
        meta = {"format": 1, "date": self.date_str, "config": cfg, "started_ns": self.started_ns,
                "urls": self.urls() if self.rest else None,
                "sessions": {"preopen": "083000", "open_random_end": "090000-090030",
                             "continuous_until": "152000", "close_auction": "152000-153000", "close": "153000"}}
        if final:
            meta.update(stopped_ns=time.time_ns(), generated_until_t_ms=self.dispatched_ms,
                        generated_until=hhmmss(max(self.dispatched_ms, 0)))
        self.truth.write_json("meta.json", meta)

    def _write_summary(self) -> None:
        syms = {code: {"trades": c[0], "books": c[1], "last_acml_vol": c[2]} for code, c in self.sym_counts.items()}
        self.truth.write_json("summary.json", {
            "generated_until_t_ms": self.dispatched_ms, "generated": self.generated, "symbols": syms,
            "stats": self.stats()})

    # ---- the pump -----------------------------------------------------------------------------------------
    def _pump_loop(self) -> None:
        period = self.cfg.tick_ms / 1000
        last_flush = time.monotonic()
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                self.market.pump_once()
            except Exception:  # a bug in one tick must not silently end the market
                log.exception("pump tick failed")
            if t0 - last_flush >= 0.25:
                self.truth.flush()
                last_flush = t0
            self._stop.wait(max(0.0, period - (time.monotonic() - t0)))
        self.market.pump_once()
        self.truth.flush()

    # ---- housekeeping -------------------------------------------------------------------------------------
    def _housekeeping_loop(self) -> None:
        while not self._stop.wait(0.02):
            try:
                self._housekeeping_once()
            except Exception:
                log.exception("housekeeping tick failed")

    def _housekeeping_once(self) -> None:
        now = self.market_ms()
        for spec in self.faults.due(now):
            try:
                self.apply_fault(spec, scheduled=True)
            except Exception:
                log.exception("scheduled fault failed", extra={"kind": spec.get("kind")})
        for a in self.faults.expire(now):
            self._fault_ended(a)
        for p in self.providers.values():
            p.housekeeping()
        if self.stop_at_ms is not None and now >= self.stop_at_ms and not self.stop_requested.is_set():
            log.info("stop time reached", extra={"t_ms": now})
            self.stop_requested.set()

    # ---- faults -------------------------------------------------------------------------------------------
    def _validate(self, spec: dict) -> dict:
        spec = validate(spec)
        name = spec.get("provider")
        if name is not None and name not in self.served:
            raise FaultError(f"{spec['kind']}: provider {name!r} is not served here; served: "
                             f"{', '.join(sorted(self.served))}")
        return spec

    def _served_by(self, spec: dict) -> list:
        name = spec.get("provider")
        return list(self.providers.values()) if name is None else [self.providers[name]]

    def schedule_fault(self, spec: dict) -> None:
        self.faults.schedule(self._validate(spec))

    def apply_fault(self, spec: dict, scheduled: bool = False) -> dict:
        spec = self._validate(spec)
        now = self.market_ms()
        a = self.faults.activate(spec, now)
        kind = spec["kind"]
        hits = [n for n in (p.fault_started(a) for p in self._served_by(spec)) if n is not None]
        affected = sum(hits) if hits else None
        line = {"event": "start", "id": a.id, "kind": kind, "t_ms": now, "time": hhmmss(now), "ns": time.time_ns(),
                "scheduled": scheduled, "spec": self._public_spec(spec), "affected": affected}
        self.truth.line("faults", line)
        log.info("fault", extra={"kind": kind, "id": a.id, "affected": affected})
        return {"id": a.id, "kind": kind, "t_ms": now, "affected": affected}

    def _fault_ended(self, a) -> None:
        for p in self._served_by(a.spec):
            p.fault_ended(a)
        now = self.market_ms()
        self.truth.line("faults", {"event": "end", "id": a.id, "kind": a.kind, "t_ms": now, "time": hhmmss(now),
                                   "ns": time.time_ns(), "hits": a.hits})

    def clear_faults(self) -> int:
        gone = self.faults.clear()
        for a in gone:
            self._fault_ended(a)
        return len(gone)

    def _public_spec(self, spec: dict) -> dict:
        out = {k: v for k, v in spec.items() if k != "at_ms"}
        if "app_key" in out:  # the label of the provider the fault is for (the first one if it is for all)
            out["app_key"] = self._served_by(spec)[0].key_id(out["app_key"])
        return out

    # ---- control (interfaces.SimControl) ------------------------------------------------------------------
    def health(self) -> dict:
        t = self.market_ms()
        return {"ok": True, "date": self.date_str, "market_time": hhmmss(max(t, 0)), "t_ms": t,
                "phase": self.phase(t), "dispatched_t_ms": self.dispatched_ms, **self.urls()}

    def fault_snapshot(self) -> dict:
        return self.faults.snapshot()

    def set_firehose(self, rate: float | None, frames: int | None = None, conn_id: int | None = None) -> int:
        return sum(p.set_firehose(rate, frames, conn_id) for p in self.providers.values())

    def request_stop(self) -> None:
        self.stop_requested.set()

    def stats(self) -> dict:
        now = self.market_ms()
        return {
            "date": self.date_str, "market_time": hhmmss(max(now, 0)), "t_ms": now, "phase": self.phase(now),
            "speed": self.cfg.speed, "dispatched_t_ms": self.dispatched_ms,
            "generated": dict(self.generated), **self.kis.stats(), "faults": self.faults.snapshot(),
            # every other provider's part under its name (KIS's stays at the top, where it always was)
            **{name: p.stats() for name, p in self.providers.items() if p is not self.kis},
        }


def run_in_thread(clock: Clock | None = None, **kwargs) -> Simulator:
    """Start a simulator in this process (servers on free ports unless given). Use as a context manager
    or call .stop(); .urls() gives {"rest", "ws", "control"}."""
    kwargs.setdefault("control_port", 0)
    return Simulator(SimConfig(**kwargs), clock=clock).start()

