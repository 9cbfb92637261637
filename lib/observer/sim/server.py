"""The simulator: one market, its REST and WebSocket servers, faults, ground truth and control endpoint.

Threads: a pump (advances every active symbol to the market clock every few ms, writes ground truth,
encodes each event once and hands the frame to its subscribers), a housekeeping tick (fault schedule,
PINGPONG, flapping), the HTTP servers and two threads per WebSocket connection.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from operator import attrgetter

from observer.core.clock import KST, Clock, ScaledClock, kst_datetime, parse_yyyymmdd, yyyymmdd
from observer.sim import encode
from observer.sim.control import ControlServer
from observer.sim.faults import DATA_KINDS, MALFORMED_MODES, FaultBook, load_schedule, validate
from observer.sim.market import (
    T_CLOSE,
    T_OPEN,
    T_PREOPEN,
    SymbolSim,
    TradeEv,
    Universe,
    hhmmss,
    parse_hhmmss,
)
from observer.sim.master import Masters
from observer.sim.quotes import Quotes
from observer.sim.rest import Auth, RateLimiter, RestServer, kst_text
from observer.sim.truth import GroundTruth
from observer.sim.ws import WsServer, ws_frame

log = logging.getLogger("observer.sim")
_by_t = attrgetter("t")
SLICE_MS = 5_000  # market ms per pump tick at most (a busy 5 s of 200 active symbols is a few thousand events)


@dataclass
class SimConfig:
    seed: int = 1
    symbols: int = 2500
    active: int = 60
    activity: float = 1.0
    speed: float = 1.0
    date: str | None = None  # YYYYMMDD, default today (KST)
    start: str = "08:55"  # market time at start
    host: str = "127.0.0.1"
    rest_port: int = 0
    ws_port: int = 0
    control_port: int | None = None  # None: no control endpoint; 0: a free port
    ground_truth: str | None = None
    faults_file: str | None = None
    faults: list = field(default_factory=list)  # scheduled fault dicts (in addition to faults_file)
    app_key: str | None = None
    app_secret: str | None = None
    rate_limit: float = 20.0  # REST calls/s per app key (paper: 2)
    token_issue_interval: float = 60.0  # market seconds between two issuances per app key (EGW00133)
    token_lifetime: float = 86400.0  # market seconds
    token_reuse_hours: float = 6.0
    pingpong_interval: float = 100.0  # real seconds
    max_subscriptions: int = 41
    cnt_fields: int = 46
    asp_fields: int = 62
    firehose: dict | None = None  # {"rate": msgs/s (0 = as fast as possible), "frames": N or None}
    stop_at: str | None = None  # market time HH:MM[:SS] to stop by itself
    tick_ms: float = 10.0  # pump period, real milliseconds
    # trade-rate bursts (deterministic, part of the generated day): [{"symbol", "at": "HH:MM[:SS]",
    # "duration": market s, "factor": x}] multiply the symbol's trade rate inside the window
    bursts: list = field(default_factory=list)


class Simulator:
    def __init__(self, cfg: SimConfig, clock: Clock | None = None):
        self.cfg = cfg
        self.date = parse_yyyymmdd(cfg.date) if cfg.date else datetime.now(KST).date()
        self.date_str = yyyymmdd(self.date)
        self.midnight_ns = int(kst_datetime(self.date, "000000").timestamp()) * 1_000_000_000
        self.clock = clock or ScaledClock(kst_datetime(self.date, cfg.start), cfg.speed)
        schedule = list(cfg.faults)
        if cfg.faults_file:
            schedule += load_schedule(cfg.faults_file)
        schedule = sorted((validate(s) for s in schedule), key=lambda s: s.get("at_ms", 0))
        self.faults = FaultBook(schedule, cfg.speed)
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
        self.truth = GroundTruth(cfg.ground_truth, self.date_str)
        self.auth = Auth(self)
        self.limiter = RateLimiter(cfg.rate_limit)
        self.quotes = Quotes(self)
        self.masters = Masters(self.universe, cfg.seed)
        self.rng = random.Random(f"{cfg.seed}|faults")
        self.dispatched_ms = -1
        # held by the pump for a whole tick (generate, ground truth, hand frames to the connections); taken by
        # subscribe/unsubscribe/close so that they fall between ticks (RLock: a slow-consumer abort closes a
        # connection from inside the pump's tick)
        self.dispatch_lock = threading.RLock()
        self.generated = {"trades": 0, "books": 0}
        self.sym_counts: dict[str, list[int]] = {}  # code → [trades, books, last acml_vol]
        self._lock = threading.Lock()
        self.counters: dict[str, int] = {}
        self.key_counts: dict[str, dict[str, int]] = {}
        self.stop_at_ms = parse_hhmmss(cfg.stop_at) if cfg.stop_at else None
        self.stop_requested = threading.Event()
        self._stop = threading.Event()
        self._stopped = False
        self.started_ns = 0
        self.rest: RestServer | None = None
        self.ws: WsServer | None = None
        self.control: ControlServer | None = None
        self._threads: list[threading.Thread] = []

    # ---- time ---------------------------------------------------------------------------------------------
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

    def clock_skew_s(self) -> float:
        a = self.faults.first("clock_skew")
        return float(a.spec["skew"]) if a else 0.0

    # ---- counters -----------------------------------------------------------------------------------------
    def count(self, what: str, n: int = 1) -> None:
        with self._lock:
            self.counters[what] = self.counters.get(what, 0) + n

    def count_key(self, kid: str, what: str) -> None:
        with self._lock:
            d = self.key_counts.setdefault(kid, {})
            d[what] = d.get(what, 0) + 1

    # ---- lifecycle ----------------------------------------------------------------------------------------
    @property
    def rest_url(self) -> str:
        return f"http://{self.cfg.host}:{self.rest.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.cfg.host}:{self.ws.port}"

    @property
    def control_url(self) -> str | None:
        return f"http://{self.cfg.host}:{self.control.port}" if self.control else None

    def urls(self) -> dict:
        return {"rest": self.rest_url, "ws": self.ws_url, "control": self.control_url}

    def start(self) -> Simulator:
        cfg = self.cfg
        self.started_ns = time.time_ns()
        self.rest = RestServer(self, cfg.host, cfg.rest_port)
        self.ws = WsServer(self, cfg.host, cfg.ws_port)
        if cfg.control_port is not None:
            self.control = ControlServer(self, cfg.host, cfg.control_port)
        self._write_meta(final=False)
        self.truth.write_json("universe.json", [
            {"symbol": i.code, "name": i.name, "market": i.market, "prev_close": i.prev_close,
             "lower": i.lower, "upper": i.upper, "active": i.active, "rank": i.rank, "rate": round(i.rate, 4),
             "prdy_vol": i.prdy_vol, "listed": i.listed} for i in self.universe.symbols])
        t0 = time.monotonic()
        self._pump_once()  # catch up from 08:30 to the start time before anyone can connect
        self.truth.flush()
        log.info("market caught up", extra={"t_ms": self.dispatched_ms, "seconds": round(time.monotonic() - t0, 3),
                                            "trades": self.generated["trades"]})
        self.rest.start()
        self.ws.start()
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
        if self.ws:
            self.ws.stop()
        if self.rest:
            self.rest.stop()
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
                self._pump_once()
            except Exception:  # a bug in one tick must not silently end the market
                log.exception("pump tick failed")
            if t0 - last_flush >= 0.25:
                self.truth.flush()
                last_flush = t0
            self._stop.wait(max(0.0, period - (time.monotonic() - t0)))
        self._pump_once()
        self.truth.flush()

    def _pump_once(self) -> None:
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
        # Under dispatch_lock: a (un)subscription or a close takes effect between two ticks, never inside
        # one, so "frames for events with from_t_ms < t <= until_t_ms were sent" holds exactly.
        with self.dispatch_lock:
            evs: list = []
            for s in self.active_syms:
                with s.lock:
                    s.advance(upto)
                    if s.outbox:
                        evs.extend(s.take(upto))
            if evs:
                evs.sort(key=_by_t)  # stable: each symbol's own order (and a cluster's records) is kept
                self.truth.events(evs)
                self._dispatch(evs)
            self.dispatched_ms = upto

    def _dispatch(self, evs: list) -> None:
        index = self.ws.index if self.ws else {}
        by_code = self.universe.by_code
        date = self.date_str
        cf, af = self.cfg.cnt_fields, self.cfg.asp_fields
        counts = self.sym_counts
        n = len(evs)
        i = 0
        nt = nb = 0
        while i < n:
            ev = evs[i]
            c = counts.get(ev.sym)
            if c is None:
                c = counts[ev.sym] = [0, 0, 0]
            if type(ev) is TradeEv:
                j = i + 1
                while j < n and type(evs[j]) is TradeEv and evs[j].sym == ev.sym and evs[j].group == ev.group:
                    j += 1
                c[0] += j - i
                c[2] = evs[j - 1].acml_vol
                nt += j - i
                subs = index.get((encode.CNT, ev.sym))
                if subs:
                    info = by_code[ev.sym]
                    recs = [encode.cnt_record(e, info, date, cf) for e in evs[i:j]]
                    frame = ws_frame(encode.data_frame(encode.CNT, recs).encode())
                    for conn in subs:
                        conn.send_data(encode.CNT, ev.sym, frame, j - i)
                i = j
            else:
                c[1] += 1
                nb += 1
                subs = index.get((encode.ASP, ev.sym))
                if subs:
                    frame = ws_frame(encode.data_frame(encode.ASP, [encode.asp_record(ev, by_code[ev.sym], af)])
                                     .encode())
                    for conn in subs:
                        conn.send_data(encode.ASP, ev.sym, frame, 1)
                i += 1
        self.generated["trades"] += nt
        self.generated["books"] += nb

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
        pp = encode.pingpong(kst_text(self.now_ns()))
        self.ws.housekeeping(pp)
        if self.stop_at_ms is not None and now >= self.stop_at_ms and not self.stop_requested.is_set():
            log.info("stop time reached", extra={"t_ms": now})
            self.stop_requested.set()

    # ---- faults -------------------------------------------------------------------------------------------
    def _conns(self, app_key: str | None = None) -> list:
        with self.ws.lock:
            return [c for c in self.ws.conns.values() if app_key is None or c.app_key == app_key]

    def apply_fault(self, spec: dict, scheduled: bool = False) -> dict:
        spec = validate(spec)
        now = self.market_ms()
        a = self.faults.activate(spec, now)
        kind = spec["kind"]
        affected = None
        app_key = spec.get("app_key")
        if kind == "ws_close_abrupt":
            affected = self.ws.close_all(abrupt=True, rst=bool(spec.get("rst")), cause="fault:ws_close_abrupt",
                                         app_key=app_key)
        elif kind == "ws_stall":
            conns = self._conns(app_key)
            with self.dispatch_lock:  # between ticks: a tick's frames are all sent or all counted as stalled
                for c in conns:
                    c.stalled = True
            a.spec = {**spec, "_conns": [c.id for c in conns]}
            affected = len(conns)
            if "duration" not in spec and "duration_real" not in spec and spec.get("scope") != "all":
                # stalled until the client gives up on the connection
                self.faults.expire_now(a)
        elif kind == "ws_flap":
            for c in self._conns():
                c.drop_at = time.monotonic() + self.ws.flap_delay(a)
        elif kind in ("token_expire", "token_invalidate"):
            affected = self.auth.fault_tokens("expired" if kind == "token_expire" else "invalid",
                                              bool(spec.get("reset_issue_limit")))
        elif kind == "approval_invalidate":
            affected = self.auth.fault_approvals(app_key)
        line = {"event": "start", "id": a.id, "kind": kind, "t_ms": now, "time": hhmmss(now), "ns": time.time_ns(),
                "scheduled": scheduled, "spec": _public_spec(spec, self), "affected": affected}
        self.truth.line("faults", line)
        log.info("fault", extra={"kind": kind, "id": a.id, "affected": affected})
        return {"id": a.id, "kind": kind, "t_ms": now, "affected": affected}

    def _fault_ended(self, a) -> None:
        with self.dispatch_lock:  # between ticks (see _tick)
            if a.kind == "ws_stall":
                ids = set(a.spec.get("_conns", []))
                for c in self._conns():
                    if c.id in ids or a.spec.get("scope") == "all":
                        c.stalled = False
            if a.kind == "ws_out_of_order":
                for c in self._conns():
                    for frame in c.held.values():
                        c.enqueue(frame)
                    c.held.clear()
        now = self.market_ms()
        self.truth.line("faults", {"event": "end", "id": a.id, "kind": a.kind, "t_ms": now, "time": hhmmss(now),
                                   "ns": time.time_ns(), "hits": a.hits})

    def clear_faults(self) -> int:
        gone = self.faults.clear()
        for a in gone:
            self._fault_ended(a)
        return len(gone)

    def apply_data_faults(self, conn, tr_id: str, sym: str, frame: bytes, nrec: int) -> None:
        for a in list(self.faults.active):
            if a.kind not in DATA_KINDS or not a.matches(tr_id, sym, conn.app_key):
                continue
            if a.remaining is not None and a.remaining <= 0:
                continue
            a.hits += 1
            if a.kind == "ws_drop_symbol":
                conn.dropped["drop_symbol"] = conn.dropped.get("drop_symbol", 0) + nrec
                return
            if a.remaining is not None:
                a.remaining -= 1
            payload = _payload(frame)
            base = {"event": "frame", "id": a.id, "kind": a.kind, "conn": conn.id, "tr_id": tr_id, "symbol": sym,
                    "records": nrec, "t_ms": self.market_ms(), "ns": time.time_ns(), **_frame_keys(tr_id, payload)}
            if a.kind == "ws_malformed":
                mode = a.spec.get("mode", "cycle")
                if mode == "cycle":
                    mode = MALFORMED_MODES[a.cycle % len(MALFORMED_MODES)]
                    a.cycle += 1
                conn.enqueue(ws_frame(self._garble(payload, mode).encode()))
                conn.dropped["malformed"] = conn.dropped.get("malformed", 0) + nrec
                self.truth.line("faults", {**base, "mode": mode})
                return
            if a.kind == "ws_duplicate":
                if conn.enqueue(frame):
                    conn.count_sent(tr_id, sym, nrec)
                    conn.enqueue(frame)
                    conn.dropped["duplicated"] = conn.dropped.get("duplicated", 0) + nrec
                self.truth.line("faults", base)
                return
            if a.kind == "ws_out_of_order":
                key = (tr_id, sym)
                held = conn.held.pop(key, None)
                if held is None:
                    conn.held[key] = frame
                    if a.remaining is not None:
                        a.remaining += 1  # the pair is counted when it is released
                    return
                if conn.enqueue(frame):
                    conn.count_sent(tr_id, sym, nrec)
                    conn.enqueue(held)
                    conn.count_sent(tr_id, sym, _frame_count(held))
                self.truth.line("faults", {**base, "swapped_with_previous": True})
                return
        if conn.enqueue(frame):
            conn.count_sent(tr_id, sym, nrec)

    def _garble(self, payload: str, mode: str) -> str:
        rng = self.rng
        head, _, data = payload.rpartition("|")
        fields = data.split("^")
        if mode == "truncate":
            keep = max(1, rng.randrange(len(fields) // 3, max(len(fields) // 3 + 1, len(fields) - 1)))
            return head + "|" + "^".join(fields[:keep])[:-1]
        if mode == "nonnumeric":
            fields[2] = "12a4"
            return head + "|" + "^".join(fields)
        if mode == "count":
            enc, tr, cnt = head.split("|")
            return f"{enc}|{tr}|{int(cnt) + 1:03d}|{data}"
        if mode == "encrypted":
            import base64

            enc, tr, cnt = head.split("|")
            return f"1|{tr}|{cnt}|" + base64.b64encode(rng.randbytes(96)).decode()
        return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789#%& ") for _ in range(rng.randrange(5, 80)))

    # ---- control -------------------------------------------------------------------------------------------
    def set_firehose(self, rate: float | None, frames: int | None = None, conn_id: int | None = None) -> int:
        n = 0
        for c in self._conns():
            if conn_id is not None and c.id != conn_id:
                continue
            with c.cond:
                c.firehose = None if rate is None else {"rate": rate, "frames": frames}
                c.cond.notify()
            n += 1
        return n

    def firehose_template(self, sym: str, now_mt: int, acml: int) -> list:
        info = self.universe.by_code[sym]
        p = info.prev_close
        s1 = 987654321012
        s2 = s1 * p
        ev = TradeEv(sym, now_mt, 0, 0, p, 1, s1, s2, "1", "continuous", p, p, p, T_OPEN, T_OPEN, T_OPEN,
                     0, 1, 0, 1, p, p, 1, 1, 1, 1, 0)
        rec = encode.cnt_record(ev, info, self.date_str, self.cfg.cnt_fields)
        a, b = rec.split(f"^{s1}^{s2}^")
        return [now_mt // 1000, acml, f"0|{encode.CNT}|001|{a}^", f"^{b}", p]

    def stats(self) -> dict:
        now = self.market_ms()
        with self._lock:
            counters = dict(self.counters)
            keys = {k: dict(v) for k, v in self.key_counts.items()}
        for kid, d in self.auth.per_key.items():
            keys.setdefault(kid, {}).update(d)
        ws = self.ws
        return {
            "date": self.date_str, "market_time": hhmmss(max(now, 0)), "t_ms": now, "phase": self.phase(now),
            "speed": self.cfg.speed, "dispatched_t_ms": self.dispatched_ms,
            "generated": dict(self.generated), "auth": dict(self.auth.stats), "per_app_key": keys,
            "counters": counters,
            "ws": {**(dict(ws.stats) if ws else {}), "connections": ws.snapshot() if ws else []},
            "faults": self.faults.snapshot(),
        }


def _payload(frame: bytes) -> str:
    n = frame[1] & 0x7F
    off = 2 if n < 126 else 4 if n == 126 else 10
    return frame[off:].decode()


def _frame_count(frame: bytes) -> int:
    try:
        return int(_payload(frame).split("|", 3)[2])
    except (ValueError, IndexError):
        return 1


def _frame_keys(tr_id: str, payload: str) -> dict:
    """What a faulted frame carried: exchange times and (trades) ACML_VOL of each record."""
    try:
        _, _, cnt, data = payload.split("|", 3)
        f = data.split("^")
        n = int(cnt)
        w = len(f) // n
        recs = [f[i * w:(i + 1) * w] for i in range(n)]
        out = {"times": [r[1] for r in recs]}
        if tr_id == encode.CNT:
            out["acml_vols"] = [int(r[13]) for r in recs]
        return out
    except (ValueError, IndexError, ZeroDivisionError):
        return {}


def _public_spec(spec: dict, sim: Simulator) -> dict:
    out = {k: v for k, v in spec.items() if k not in ("at_ms", "_conns")}
    if "app_key" in out:
        out["app_key"] = sim.auth.key_id(out["app_key"])
    return out


def run_in_thread(clock: Clock | None = None, **kwargs) -> Simulator:
    """Start a simulator in this process (servers on free ports unless given). Use as a context manager
    or call .stop(); .urls() gives {"rest", "ws", "control"}."""
    kwargs.setdefault("control_port", 0)
    return Simulator(SimConfig(**kwargs), clock=clock).start()

