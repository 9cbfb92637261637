"""KIS WebSocket client against the simulator: faults, reconnect + resubscribe, stall, PINGPONG, limits, truth."""

from __future__ import annotations

import threading
import time

import orjson
import pytest

from observer.core.contracts import check
from observer.providers.base import BOOK, TRADES, RegistrationLimitError, Subscription, get_provider
from tests.support import wait_for

from .conftest import APP_KEY, events, kis_config, secrets


class Sink:
    def __init__(self):
        self.lock = threading.Lock()
        self.frames: list[tuple[str, int, list[dict]]] = []

    def __call__(self, frame, recv_ns, records):
        with self.lock:
            self.frames.append((frame, recv_ns, records))

    def records(self, kind=None):
        with self.lock:
            return [r for _, _, rs in self.frames for r in rs if kind is None or r["kind"] == kind]

    def count(self):
        with self.lock:
            return sum(len(rs) for _, _, rs in self.frames)


def make_stream(sim, tree, store, n_syms=3, accounts=None, **ws):
    kis = {"ws": ws}
    if accounts:
        kis["accounts"] = accounts
    cfg = kis_config(sim, tree, **kis)
    p = get_provider("kis", cfg, secrets(two=bool(accounts)), store, sim.clock)
    sink = Sink()
    stream = p.stream(sink)
    syms = [s.info.code for s in sim.active_syms[:n_syms]]
    for s in syms:
        stream.subscribe(s, TRADES)
        stream.subscribe(s, BOOK)
    return stream, sink, syms


def server_subs(sim) -> list[list[str]]:
    return [c["subs"] for c in sim.ws.snapshot()]


def expected_subs(syms):
    return sorted([f"H0STASP0:{s}" for s in syms] + [f"H0STCNT0:{s}" for s in syms])


def start(stream, streams, sink):
    streams.append(stream)
    stream.start()
    wait_for(lambda: sink.count() > 0, 10, what="first records")


def test_records_flow_and_satisfy_contracts(sim, tree, store, streams):
    stream, sink, syms = make_stream(sim, tree, store)
    start(stream, streams, sink)
    wait_for(lambda: len(sink.records("book")) > 3 and len(sink.records("trade")) > 3, 10, what="trades and books")
    for r in sink.records():
        check(r)
        assert r["symbol"] in syms and r["session_id"].startswith("kis-main-")
    assert server_subs(sim) == [expected_subs(syms)]
    assert stream.registrations() == {Subscription(s, c) for s in syms for c in (TRADES, BOOK)}


def _fault_and_recover(sim, stream, sink, fault, store, cause, timeout=15):
    before = stream.stats()["reconnects"]
    n0 = sink.count()
    sim.apply_fault(fault)
    wait_for(lambda: stream.stats()["reconnects"] > before, timeout, what=f"reconnect after {fault['kind']}")
    wait_for(lambda: sink.count() > n0 + 5, timeout, what="data after the reconnect")
    ev = [e for e in events(store, "reconnect")][-1]
    assert ev["cause"] in cause and ev["downtime_s"] >= 0 and ev["session_id"]
    return ev


def test_close_without_close_frame(sim, tree, store, streams):
    stream, sink, syms = make_stream(sim, tree, store)
    start(stream, streams, sink)
    _fault_and_recover(sim, stream, sink, {"kind": "ws_close_abrupt"}, store, ("eof", "reset"))
    wait_for(lambda: server_subs(sim) == [expected_subs(syms)], 5, what="every registration re-sent")
    gaps = events(store, "gap_marker")
    assert {(g["symbol"], g["channel"]) for g in gaps} == {(s, c) for s in syms for c in (TRADES, BOOK)}
    assert all(g["recoverable"] == (g["channel"] == TRADES) for g in gaps)


def test_tcp_reset(sim, tree, store, streams):
    stream, sink, syms = make_stream(sim, tree, store)
    start(stream, streams, sink)
    _fault_and_recover(sim, stream, sink, {"kind": "ws_close_abrupt", "rst": True}, store, ("eof", "reset"))
    wait_for(lambda: server_subs(sim) == [expected_subs(syms)], 5, what="every registration re-sent")


def test_stall_detected_in_time(sim, tree, store, streams):
    stall = 1.5
    stream, sink, syms = make_stream(sim, tree, store, stall_s={p: stall for p in
                                                                ("preopen", "continuous", "auction", "after")})
    start(stream, streams, sink)
    t0 = time.monotonic()
    _fault_and_recover(sim, stream, sink, {"kind": "ws_stall"}, store, ("stall",))
    detected = stream.stats()["connections"]["main"]["last_downtime_s"]
    took = time.monotonic() - t0
    assert stall <= took < stall + 3.0, took
    assert detected is not None
    wait_for(lambda: expected_subs(syms) in server_subs(sim), 5, what="registrations on the new connection")
    # the gap begins at the last data frame before the stall, not when the stall was noticed
    (g,) = {(g["start_ns"], g["end_ns"]) for g in events(store, "gap_marker") if g["cause"] == "ws_stall"}
    before = [r["recv_ns"] for r in sink.records() if r["recv_ns"] <= g[1]]
    assert g[0] == max(before), (g, max(before))
    assert g[1] - g[0] >= stall * 10**9  # the whole silent stretch (stall_s, market time) is inside


def test_subscribe_and_never_receive_is_a_stall(sim, tree, store, streams):
    # a symbol that never trades (inactive) on an otherwise empty connection: caught from subscribe time
    quiet = next(s.code for s in sim.universe.symbols if not s.active)
    cfg = kis_config(sim, tree, ws={"stall_s": {"continuous": 1.0, "preopen": 1.0, "auction": 1.0, "after": 1.0}})
    stream = get_provider("kis", cfg, secrets(), store, sim.clock).stream(Sink())
    streams.append(stream)
    stream.subscribe(quiet, TRADES)
    stream.start()
    t0 = time.monotonic()
    wait_for(lambda: stream.stats()["stalls"] >= 1, 6, what="stall on a silent subscription")
    assert 1.0 <= time.monotonic() - t0 < 4.0


def test_refused_connects_back_off_and_recover(sim, tree, store, streams):
    stream, sink, syms = make_stream(sim, tree, store)
    start(stream, streams, sink)
    sim.apply_fault({"kind": "ws_refuse", "duration_real": 1.2})
    sim.apply_fault({"kind": "ws_close_abrupt"})
    before = stream.stats()["reconnects"]
    wait_for(lambda: stream.stats()["reconnects"] > before, 15, what="reconnect after refusals")
    st = stream.stats()
    assert st["connect_failures"] >= 1
    ev = events(store, "reconnect")[-1]
    assert ev["downtime_s"] >= 1.0 and ev["attempt"] >= 2
    wait_for(lambda: server_subs(sim) == [expected_subs(syms)], 5, what="registrations re-sent")


def test_flapping_server_is_not_hammered(sim, tree, store, streams):
    stream, sink, syms = make_stream(sim, tree, store, backoff_reset_s=30.0)
    start(stream, streams, sink)
    sim.apply_fault({"kind": "ws_flap", "duration_real": 4.0, "min_real": 0.3, "max_real": 0.5})
    wait_for(lambda: len(events(store, "reconnect")) >= 3, 15, what="three reconnects while flapping")
    # data flowed between drops, but never for backoff_reset_s: the backoff kept growing (0.2, 0.4, 0.8 ...)
    attempts = [e["attempt"] for e in events(store, "reconnect")]
    assert attempts[:3] == [1, 2, 3], attempts
    sim.clear_faults()
    n0 = sink.count()
    wait_for(lambda: sink.count() > n0 + 5, 15, what="data after the flapping")


def _data_flowed_longer_than(stream, reset_s: float) -> None:
    """Wait until the current connection has received data frames for longer than reset_s: a frame that
    arrives reset_s after the connection's first one is what resets the backoff (WsSession._receive).
    Waiting on the frames, not on a fixed sleep, holds on a loaded machine where data starts late."""
    n0 = stream.stats()["data_frames"]
    wait_for(lambda: stream.stats()["data_frames"] > n0, 10, what="data on the new connection")
    t_first = time.monotonic()
    n1 = wait_for(lambda: time.monotonic() >= t_first + reset_s * 1.2 and stream.stats()["data_frames"], 10,
                  what="backoff_reset_s to pass")
    wait_for(lambda: stream.stats()["data_frames"] > n1 + 1, 10, what="data frames after backoff_reset_s")


def test_backoff_resets_only_after_data_flowed(sim, tree, store, streams):
    stream, sink, syms = make_stream(sim, tree, store, backoff_reset_s=0.5)
    start(stream, streams, sink)
    for _ in range(2):
        before = stream.stats()["reconnects"]
        _data_flowed_longer_than(stream, 0.5)
        sim.apply_fault({"kind": "ws_close_abrupt"})
        wait_for(lambda b=before: stream.stats()["reconnects"] > b, 10, what="reconnect")
    wait_for(lambda: len(events(store, "reconnect")) == 2, 5, what="two reconnect events")
    assert [e["attempt"] for e in events(store, "reconnect")] == [1, 1]


def test_pingpong_is_echoed(sim_factory, tree, store, streams):
    sim = sim_factory(pingpong_interval=0.3)
    stream, sink, syms = make_stream(sim, tree, store, n_syms=1)
    start(stream, streams, sink)
    wait_for(lambda: sum(c["pongs_received"] for c in sim.ws.snapshot()) >= 2, 5, what="PINGPONG echoes")
    assert stream.stats()["pingpongs"] >= 2
    sent = [f for f, _, _ in sink.frames if "PINGPONG" in f]
    assert sent and orjson.loads(sent[0])["header"]["tr_id"] == "PINGPONG"


def test_registration_limit_is_a_clear_error(sim_factory, tree, store, streams):
    sim = sim_factory(symbols=120, active=4)
    cfg = kis_config(sim, tree)
    stream = get_provider("kis", cfg, secrets(), store, sim.clock).stream(Sink())
    streams.append(stream)
    codes = [s.code for s in sim.universe.symbols]
    for c in codes[:20]:
        stream.subscribe(c, TRADES)
        stream.subscribe(c, BOOK)
    stream.subscribe(codes[20], TRADES)  # 41
    with pytest.raises(RegistrationLimitError, match="41"):
        stream.subscribe(codes[20], BOOK)
    stream.start()
    wait_for(lambda: [c["subscriptions"] for c in sim.ws.snapshot()] == [41], 10, what="41 registered")
    assert sim.ws.stats.get("max_subscribe", 0) == 0  # never asked the server for a 42nd
    assert len(stream.registrations()) == 41


def test_two_accounts_two_connections(sim, tree, store, streams):
    accounts = [{"name": "a", "key_env": "KIS_APP_KEY", "secret_env": "KIS_APP_SECRET"},
                {"name": "b", "key_env": "KIS_APP_KEY2", "secret_env": "KIS_APP_SECRET2"}]
    stream, sink, syms = make_stream(sim, tree, store, n_syms=1, accounts=accounts)
    assert stream.max_registrations == 82
    codes = [c for c in (s.code for s in sim.universe.symbols) if c != syms[0]]
    for c in codes[:39]:  # 40 symbols with both channels = 80 registrations
        stream.subscribe(c, TRADES)
        stream.subscribe(c, BOOK)
    start(stream, streams, sink)
    wait_for(lambda: sorted(c["subscriptions"] for c in sim.ws.snapshot()) == [40, 40], 10, what="two connections")
    per_conn = [set(s.split(":")[1] for s in subs) for subs in server_subs(sim)]
    assert not (per_conn[0] & per_conn[1])  # a symbol's trades and book share one connection
    stream.subscribe(codes[39], TRADES)
    stream.subscribe(codes[40], TRADES)
    with pytest.raises(RegistrationLimitError, match="82"):
        stream.subscribe(codes[41], TRADES)
    wait_for(lambda: sorted(c["subscriptions"] for c in sim.ws.snapshot()) == [41, 41], 10, what="two full connections")


def test_malformed_frames_reported_not_fatal(sim, tree, store, streams):
    stream, sink, syms = make_stream(sim, tree, store)
    start(stream, streams, sink)
    sim.apply_fault({"kind": "ws_malformed", "count": 8, "mode": "cycle"})
    wait_for(lambda: stream.stats()["errors"] + stream.stats()["rejects"] >= 4, 10, what="malformed frames noticed")
    n0 = sink.count()
    wait_for(lambda: sink.count() > n0 + 5, 10, what="data after malformed frames")
    assert stream.stats()["reconnects"] == 0
    assert events(store, "record_rejected")


def test_decoded_stream_equals_ground_truth(sim, tree, store, streams):
    stream, sink, syms = make_stream(sim, tree, store, n_syms=2)
    start(stream, streams, sink)
    wait_for(lambda: len(sink.records("trade")) >= 30, 15, what="30 trades")
    stream.stop()
    sim.truth.flush()
    truth = {}
    with open(f"{sim.truth.dir}/trades.jsonl", "rb") as f:
        for line in f:
            t = orjson.loads(line)
            truth[(t["symbol"], t["acml_vol"])] = t
    got = sink.records("trade")
    for r in got:
        t = truth[(r["symbol"], r["cum_vol"])]
        assert (r["price"], r["qty"], r["side"]) == (t["price"], t["qty"], t["side"])
        assert r["exch_ns"] // 10**9 == sim.midnight_ns // 10**9 + t["t_ms"] // 1000
    # completeness: between the first and last received trade of a symbol nothing is missing
    for s in syms:
        mine = sorted(r["cum_vol"] for r in got if r["symbol"] == s)
        if len(mine) < 2:
            continue
        expect = sorted(v for (sym, v) in truth if sym == s and mine[0] <= v <= mine[-1])
        assert mine == expect


def test_design_backoff_default():
    from observer.core.config import validate_config

    assert validate_config({})["providers"]["kis"]["ws"]["backoff_s"] == [1, 2, 5, 10, 20, 30, 60]
    assert APP_KEY


def test_dropped_symbol_is_reported_stale_and_comes_back(sim, tree, store, streams):
    stream, sink, syms = make_stream(sim, tree, store, n_syms=3,
                                     stale_s={"trades": {"continuous": 3}, "book": {"continuous": 3}})
    start(stream, streams, sink)
    victim = syms[0]
    sim.apply_fault({"kind": "ws_drop_symbol", "symbol": victim, "duration": 8})
    t_fault = sim.clock.now_ns()

    def stale(state):
        return [e for e in events(store, "stream_stale") if e["symbol"] == victim and e["state"] == state]

    wait_for(lambda: stale("stale"), 15, what="a stale event for the dropped symbol")
    # the connection stayed up: a quiet symbol is not a dead connection
    assert stream.stats()["reconnects"] == 0
    others = [r for r in sink.records() if r["symbol"] != victim and r["recv_ns"] > t_fault]
    assert others, "the other symbols kept flowing during the fault"
    wait_for(lambda: stale("resumed"), 30, what="the dropped symbol's data to resume")


def test_second_connection_with_the_same_app_key_is_reported(sim, tree, store, streams):
    s1, sink1, _ = make_stream(sim, tree, store, n_syms=1)
    start(s1, streams, sink1)
    s2, _, _ = make_stream(sim, tree, store, n_syms=1)
    streams.append(s2)
    s2.start()
    wait_for(lambda: [e for e in events(store, "subscription_error") if e.get("code") == "OPSP8996"], 20,
             what="OPSP8996 (ALREADY IN USE appkey) reported")
    n = sink1.count()
    wait_for(lambda: sink1.count() > n + 3, 15, what="the first connection unaffected")
