"""Track B against the simulator: every trade of the held symbols equals ground truth (count, price,
volume, order); raw/ decodes back to scalp/; WebSocket faults heal by themselves with gap markers."""

import subprocess
import sys
import threading
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from observer.collect.track_b import TrackB
from observer.markets import calendar_from_config
from observer.programs.verify import verify_tree
from observer.providers.base import get_provider
from observer.store.reader import iter_day
from tests.support import wait_for
from tests.support.diskfull import fill, tmpfs
from tests.support.sim import busiest
from tests.support.simenv import SimEnv

pytestmark = pytest.mark.e2e

HELD = 4
BIN = Path(__file__).resolve().parents[2] / "bin"


def run_track_b(env: SimEnv, symbols, market_s: float, during=None, **kw):
    """Run Track B with fixed symbols: wait until it records trades, call during(env, tb) (a fault),
    then let `market_s` market seconds pass and stop it as SIGTERM would."""
    store = env.store("observer-track-b@kis")
    prov = get_provider("kis", env.cfg, env.secrets, store, env.clock)
    cal = calendar_from_config(env.cfg)
    stop = threading.Event()
    tb = TrackB(store=store, provider=prov, clock=env.clock, calendar=cal, cfg=env.cfg, stop=stop,
                fixed_symbols=symbols, **kw)
    errors = []

    def body():
        try:
            tb.run_day(env.day)
        except Exception as e:  # surfaced below
            errors.append(e)

    t = threading.Thread(target=body, daemon=True)
    t.start()
    wait_for(lambda: tb.trades > 0 or errors, 60, "Track B to record anything")
    if during is not None:
        during(env, tb)
    end_ns = env.clock.now_ns() + int(market_s * 1e9)
    wait_for(lambda: env.clock.now_ns() >= end_ns or not t.is_alive(), market_s / env.speed + 30,
             "the market time to pass")
    stop.set()
    t.join(30)
    assert not t.is_alive(), "Track B did not stop"
    store.close()
    if errors:
        raise errors[0]
    return tb


def recorded_trades(env):
    out = defaultdict(list)
    for r in iter_day(env.root, env.day, kinds=("scalp",)):
        if r["kind"] == "trade":
            out[r["symbol"]].append(r)
    return out


def assert_trades_match_truth(env, rec, symbols, allow_gaps=False):
    truth = defaultdict(list)
    for t in env.truth("trades"):
        if t["symbol"] in symbols:
            truth[t["symbol"]].append(t)
    total = 0
    for sym in symbols:
        got = rec[sym]
        assert got, f"{sym}: nothing recorded"
        first, last = got[0]["cum_vol"], got[-1]["cum_vol"]
        want = [t for t in truth[sym] if first <= t["acml_vol"] <= last]
        key_got = [(r["cum_vol"], r["price"], r["qty"]) for r in got]
        key_want = [(t["acml_vol"], t["price"], t["qty"]) for t in want]
        if allow_gaps:
            assert len(set(key_got)) == len(key_got), f"{sym}: duplicate trades recorded"
            assert set(key_got) <= set(key_want), f"{sym}: recorded trades the market never made"
            assert key_got == sorted(key_got), f"{sym}: out of order"
        else:
            assert key_got == key_want, f"{sym}: recorded trades differ from ground truth"
        total += len(got)
    return total


START = "09:01:00"
WINDOWS = {"windows": {"track_b": {"start": "09:00", "end": "15:00"}}}


@pytest.fixture
def env(tmp_path):
    e = SimEnv(tmp_path, start=START, speed=30, symbols=40, active=10, cfg_overrides=WINDOWS)
    yield e
    e.close()


def test_no_fault_session_records_every_trade(env):
    syms = busiest(env, HELD)
    tb = run_track_b(env, syms, 300)
    rec = recorded_trades(env)
    n = assert_trades_match_truth(env, rec, syms)
    assert n > 50 and tb.dropped == 0
    assert verify_tree(env.root)["clean"]
    # secrets (app key, app secret, and the token and approval key obtained with them) appear nowhere
    secrets = [env.secrets["KIS_APP_KEY"], env.secrets["KIS_APP_SECRET"]]
    for f in (env.root / "state").glob("kis_*.json"):
        obj = orjson.loads(f.read_bytes())
        secrets += [v for k, v in obj.items() if k in ("token", "access_token", "approval_key", "value")
                    and isinstance(v, str)]
    assert len(secrets) > 2, "expected a cached token and approval key to check for"
    for f in env.root.rglob("*.jsonl"):
        blob = f.read_bytes()
        for sec in secrets:
            assert sec.encode() not in blob, f"a secret leaked into {f}"
    books = [r for r in iter_day(env.root, env.day, kinds=("scalp",)) if r["kind"] == "book"]
    assert {b["symbol"] for b in books} == set(syms)
    # raw/ decodes back to exactly the trades in scalp/
    raw = subprocess.run([sys.executable, str(BIN / "observer-replay"), str(env.root), "--date", env.date, "--raw"],
                         capture_output=True, check=True).stdout
    dec = subprocess.run([sys.executable, str(BIN / "observer-decode"), "--provider", "kis"], input=raw,
                         capture_output=True)
    assert raw and dec.stdout
    decoded = [orjson.loads(x) for x in dec.stdout.splitlines()]
    dtrades = defaultdict(list)
    for r in decoded:
        if r["kind"] == "trade":
            dtrades[r["symbol"]].append((r["cum_vol"], r["price"], r["qty"], r["exch_ns"]))
    for sym in syms:
        assert dtrades[sym] == [(r["cum_vol"], r["price"], r["qty"], r["exch_ns"]) for r in rec[sym]]


@pytest.mark.parametrize("faults", [
    [{"kind": "ws_close_abrupt"}],
    [{"kind": "ws_stall", "duration": 90}],
    # refusing connects only matters once the connection is lost: drop it too
    [{"kind": "ws_refuse", "duration": 60}, {"kind": "ws_close_abrupt"}],
    [{"kind": "ws_flap", "duration": 60}],
], ids=["close_no_frame", "stall", "refuse", "flap"])
def test_websocket_faults_heal_with_gap_markers(tmp_path, faults):
    env = SimEnv(tmp_path, start=START, speed=30, symbols=40, active=10, sim_kw={"pingpong_interval": 2.0},
                 cfg_overrides={**WINDOWS,
                                "providers": {"kis": {"ws": {"stall_s": {"continuous": 20, "auction": 30}}}}})
    fault_at = []

    def inject(env, tb):
        fault_at.append(env.clock.now_ns())
        for f in faults:
            env.sim.apply_fault(dict(f))

    try:
        syms = busiest(env, HELD)
        run_track_b(env, syms, 300, during=inject)
        rec = recorded_trades(env)
        assert_trades_match_truth(env, rec, syms, allow_gaps=True)
        events = [r for r in iter_day(env.root, env.day, kinds=("events",))]
        kinds = [e["event"] for e in events]
        assert "reconnect" in kinds, kinds
        gaps = [e for e in events if e["event"] == "gap_marker"]
        assert {g["symbol"] for g in gaps} >= set(syms)
        # recording resumed after the fault: trades two minutes after it for every held symbol
        late = fault_at[0] + 120 * 10**9
        for sym in syms:
            assert any((r["exch_ns"] or 0) >= late for r in rec[sym]), f"{sym}: no trades after the fault"
        assert verify_tree(env.root)["clean"]
    finally:
        env.close()


def test_mitigation_follows_injected_load(tmp_path):
    env = SimEnv(tmp_path, start=START, speed=30, symbols=40, active=10,
                 cfg_overrides={**WINDOWS, "track_b": {"mitigation": {"window_s": 20}}})
    try:
        syms = busiest(env, 2)
        tb = run_track_b(env, syms, 120, load_probe=lambda: (95.0, 40.0))
        events = [r for r in iter_day(env.root, env.day, kinds=("events",)) if r["event"] == "mitigation"]
        assert events and events[-1]["level"] == 2, events
        changed = events[-1]["ts_ns"]
        assert tb.scalp.minutes == 60  # 60-minute files at level 2
        books = [r for r in iter_day(env.root, env.day, kinds=("scalp",)) if r["kind"] == "book"]
        for sym in syms:
            after = [b["recv_ns"] for b in books if b["symbol"] == sym and b["recv_ns"] > changed + 3 * 10**9]
            assert len(after) > 5
            # at most one sample per 2 market seconds (0.5 Hz), whatever the frame rate; a book's
            # recv_ns is its arrival, so count samples over the span rather than measure spacing
            span_s = (after[-1] - after[0]) / 1e9
            assert len(after) <= span_s / 2 + 2, f"{len(after)} samples in {span_s:.0f} s at level 2"
        assert tb.mitigation.level == 2 and "level 2" in tb.status_text()
    finally:
        env.close()


def test_slots_follow_the_manual_override_live_and_overflow_is_ledgered(tmp_path):
    env = SimEnv(tmp_path, start=START, speed=30, symbols=40, active=10,
                 cfg_overrides={**WINDOWS, "track_b": {"slots": 3, "fill_idle_slots": False,
                                                        "reallocate_interval_s": 10}})
    try:
        syms = busiest(env, 4)
        manual = env.root / "state" / "manual_slots.txt"
        manual.parent.mkdir(parents=True, exist_ok=True)
        manual.write_text(f"# operator's picks\n{syms[0]}\n{syms[1]}\n")

        def add_two(env, tb):
            assert set(tb._slot_of) == {syms[0], syms[1]}
            manual.write_text(f"{syms[0]}\n{syms[1]}\n{syms[2]}\n{syms[3]}\n")

        store = env.store("observer-track-b@kis")
        prov = get_provider("kis", env.cfg, env.secrets, store, env.clock)
        stop = threading.Event()
        tb = TrackB(store=store, provider=prov, clock=env.clock, calendar=calendar_from_config(env.cfg),
                    cfg=env.cfg, stop=stop)
        t = threading.Thread(target=tb.run_day, args=(env.day,), daemon=True)
        t.start()
        wait_for(lambda: tb.trades > 0, 60, "Track B to record trades")
        add_two(env, tb)
        wait_for(lambda: len(tb._slot_of) == 3, 30, lambda: f"three slots (have {tb._slot_of})")
        stop.set()
        t.join(30)
        store.close()
        slots = [r for r in iter_day(env.root, env.day, kinds=("events",)) if r["event"] == "slot"]
        first = [s["symbol"] for s in slots if s["action"] == "allocate"][:2]
        assert set(first) == set(syms[:2]), "the manual picks were allocated first"
        assert len({s["slot"] for s in slots if s["action"] == "allocate"}) == 3
        from observer.store import paths

        ledger = paths.overflow_file(env.root, "kis", env.day)
        over = [orjson.loads(x) for x in ledger.read_bytes().splitlines()]
        held = set(tb._slot_of)
        assert len(held) == 3 and held >= set(syms[:2])
        left_out = (set(syms) - held).pop()
        assert any(o["symbol"] == left_out and o["trigger"] == "manual" for o in over)
        assert verify_tree(env.root)["clean"]
    finally:
        env.close()


def test_queue_overflow_is_counted_evented_and_marked(tmp_path):
    """A writer stall (its append lock held, as a full buffer waiting on a slow flush holds it) fills the bounded queue: the socket
    side keeps receiving, the overflow is counted, a CRITICAL event says so, every held symbol gets a
    gap marker per channel, each lost trade lies inside a marked window, and recording resumes."""
    env = SimEnv(tmp_path, start=START, speed=30, symbols=40, active=10,
                 cfg_overrides={**WINDOWS, "track_b": {"queue_max": 1000}})
    stalled = {}

    def stall_writer(env, tb):
        w = tb.raw.writer_for(env.clock.now_ns())
        with w._lock:  # the main loop blocks in raw's append; the socket thread does not
            stalled["start"] = env.clock.now_ns()
            wait_for(lambda: tb._drops.get("queue_overflow", [0])[0] >= 200, 120, "the queue to overflow")
        stalled["end"] = env.clock.now_ns()

    try:
        syms = busiest(env, HELD)
        tb = run_track_b(env, syms, 120, during=stall_writer)
        assert tb.dropped >= 200
        assert len(tb.q) == 0
        events = list(iter_day(env.root, env.day, kinds=("events",)))
        crit = [e for e in events if e["event"] == "recording" and e["state"] == "queue_overflow"]
        assert crit and crit[0]["severity"] == "CRITICAL" and sum(e["dropped"] for e in crit) == tb.dropped
        markers = [e for e in events if e["event"] == "gap_marker" and e["cause"] == "queue_overflow"]
        assert {(m["symbol"], m["channel"]) for m in markers} == {(s, ch) for s in syms for ch in ("trades", "book")}
        assert all(m["recoverable"] == (m["channel"] == "trades") for m in markers)
        rec = recorded_trades(env)
        assert_trades_match_truth(env, rec, syms, allow_gaps=True)
        windows = [(m["start_ns"], m["end_ns"]) for m in markers if m["channel"] == "trades"]
        got = {(r["symbol"], r["cum_vol"]) for s in syms for r in rec[s]}
        # markers carry receive times; a trade arrives at most `lag` after its (whole-second) market time:
        # the largest delay seen on the recorded trades (a loaded machine makes the simulator send late)
        lag = max(2 * 10**9, max(r["recv_ns"] - r["exch_ns"] for s in syms for r in rec[s]) + 10**9)
        lost = 0
        for t in env.truth("trades"):
            sym = t["symbol"]
            if sym in syms and rec[sym] and rec[sym][0]["cum_vol"] <= t["acml_vol"] <= rec[sym][-1]["cum_vol"] \
                    and (sym, t["acml_vol"]) not in got:
                lost += 1
                at = env.t_ns(t["t_ms"])
                assert any(a - lag <= at <= b + 10**9 for a, b in windows), \
                    f"{sym}: trade at {t['time']} lost outside every marked window (lag {lag / 1e9:.1f} s)"
        assert lost > 0, "the stall lost no trades: the test did not exercise the overflow"
        # recording resumed: trades after the stall for every held symbol
        for sym in syms:
            assert any(r["recv_ns"] > stalled["end"] for r in rec[sym]), f"{sym}: nothing recorded after the stall"
        assert verify_tree(env.root)["clean"]
    finally:
        env.close()


def test_full_disk_is_survived_counted_and_recording_resumes(tmp_path):
    """The data tree's disk fills while Track B records (a tmpfs filled by the test): the writers keep
    what they accepted in memory up to their bound, Track B counts what the store refused instead of
    crashing, and once space returns everything accepted reaches the disk and recording goes on."""
    env = None
    with tmpfs(tmp_path / "data", "32m") as data:
        try:
            env = SimEnv(tmp_path, start=START, speed=30, symbols=40, active=10,
                         cfg_overrides={**WINDOWS, "store": {"max_buffer_bytes": 65536}})
            freed = {}

            def fill_disk(env, tb):
                fill(data / "filler")
                wait_for(lambda: tb.store_refused > 0, 120, "the store to refuse a block")
                (data / "filler").unlink()
                freed["at"] = env.clock.now_ns()

            syms = busiest(env, HELD)
            tb = run_track_b(env, syms, 60, during=fill_disk)
            assert tb.store_refused > 0 and tb.dropped >= tb.store_refused
            rec = recorded_trades(env)
            assert_trades_match_truth(env, rec, syms, allow_gaps=True)
            for sym in syms:
                assert any(r["recv_ns"] > freed["at"] for r in rec[sym]), \
                    f"{sym}: nothing recorded after space returned"
            assert verify_tree(env.root)["clean"]  # no torn or partial line anywhere
        finally:
            if env is not None:
                env.close()


def test_a_trade_velocity_burst_keeps_its_slot_against_a_manual_pick(tmp_path):
    """Track B feeds its own trade counts to the velocity trigger: a held symbol whose trade rate bursts
    (the simulator's burst scenario) ranks as trade_velocity and wins the slot a manual pick wants; the
    pick is ledgered as overflow. Without the feed it is displaced (manual picks outrank nothing else)."""
    probe = SimEnv(tmp_path / "probe", start=START, speed=20, symbols=40, active=10)
    x = busiest(probe, 6)[5]  # a mid-rate symbol: its burst stands out against its own baseline
    probe.close()
    # 5 market minutes of baseline, then 20x the trade rate: against a 600 s baseline it stays a burst
    # for about 5 market minutes (15 real s), far longer than the steps below need
    env = SimEnv(tmp_path, start=START, speed=20, symbols=40, active=10,
                 sim_kw={"bursts": [{"symbol": x, "at": "09:06:00", "duration": 1200, "factor": 20}]},
                 cfg_overrides={**WINDOWS, "track_b": {
                     "slots": 1, "fill_idle_slots": False, "reallocate_interval_s": 5, "min_hold_s": 20,
                     "triggers": {"trade_velocity_window_s": 30, "trade_velocity_baseline_s": 600,
                                  "trade_velocity_ratio": 4, "trade_velocity_min_per_min": 20,
                                  "volume_pace_ratio": 1e9}}})
    try:
        y = next(s for s in busiest(env, 10) if s != x)
        manual = env.root / "state" / "manual_slots.txt"
        manual.parent.mkdir(parents=True, exist_ok=True)
        manual.write_text(f"{x}\n")
        store = env.store("observer-track-b@kis")
        prov = get_provider("kis", env.cfg, env.secrets, store, env.clock)
        stop = threading.Event()
        tb = TrackB(store=store, provider=prov, clock=env.clock, calendar=calendar_from_config(env.cfg),
                    cfg=env.cfg, stop=stop)
        t = threading.Thread(target=tb.run_day, args=(env.day,), daemon=True)
        t.start()
        try:
            wait_for(lambda: set(tb._slot_of) == {x}, 60, lambda: f"the slot of {x} only (have {tb._slot_of})")
            velocity = lambda: any(c.symbol == x and c.trigger == "trade_velocity"  # noqa: E731
                                   for c in tb.triggers.candidates(env.clock.now_ns()))
            from observer.core.clock import kst_ns

            burst_ns = kst_ns(env.day, "090600")
            wait_for(lambda: env.clock.now_ns() >= burst_ns, 60, "the burst time")
            wait_for(velocity, 60, "the burst to make a trade_velocity candidate")
            manual.write_text(f"{y}\n{x}\n")  # the operator now prefers y
            # x past its minimum hold (displaceable), then three reallocation rounds
            until = max(tb.slots.holdings()[0].since_ns + 20 * 10**9, env.clock.now_ns()) + 15 * 10**9
            wait_for(lambda: env.clock.now_ns() >= until, 30, "the market time to pass")
        finally:
            stop.set()
            t.join(30)
            store.close()
        assert set(tb._slot_of) == {x}, f"the bursting symbol lost its slot: {tb._slot_of}"
        from observer.store import paths

        over = [orjson.loads(v) for v in paths.overflow_file(env.root, "kis", env.day).read_bytes().splitlines()]
        assert any(o["symbol"] == y and o["trigger"] == "manual" for o in over), over
        slots = [r for r in iter_day(env.root, env.day, kinds=("events",)) if r["event"] == "slot"]
        assert not any(s["action"] == "allocate" and s["symbol"] == y for s in slots)
    finally:
        env.close()
