"""A simulated segment with scheduled faults recorded by Track B (SimEnv + TrackB, as in
tests/collect/test_track_b.py), and the ground-truth comparisons the recovery tests share."""

from __future__ import annotations

import shutil
import threading
from collections import defaultdict
from pathlib import Path

from observer.collect.track_b import TrackB
from observer.markets import calendar_from_config
from observer.providers.base import get_provider
from observer.recover.gapfill import GapFiller
from observer.store.reader import iter_day
from observer.store.replay import merged_trades
from tests.support import wait_for
from tests.support.sim import busiest
from tests.support.simenv import SimEnv

HELD = 5


def run_track_b(env: SimEnv, symbols: list[str], script) -> TrackB:
    """Track B with fixed symbols; once it records, `script(env, tb, market_sleep)` injects faults and lets
    the market run; then Track B is stopped as SIGTERM would."""
    store = env.store("observer-track-b@kis")
    prov = get_provider("kis", env.cfg, env.secrets, store, env.clock)
    stop = threading.Event()
    tb = TrackB(store=store, provider=prov, clock=env.clock, calendar=calendar_from_config(env.cfg), cfg=env.cfg,
                stop=stop, fixed_symbols=symbols)
    t = threading.Thread(target=tb.run_day, args=(env.day,), daemon=True)
    t.start()
    try:
        wait_for(lambda: tb.trades > 0 or not t.is_alive(), 120, "Track B to record anything")
        script(env, tb)
    finally:
        stop.set()
        t.join(60)
        store.close()
    assert not t.is_alive(), "Track B did not stop"
    return tb


def reconnects(tb: TrackB) -> int:
    return tb.stream.stats().get("reconnects", 0) if tb.stream is not None else 0


def fault_script(drop_symbol: str):
    """Faults after the stream is up, each waiting for the previous one to heal (conditions, not guesses)."""

    def script(env: SimEnv, tb: TrackB) -> None:
        env.clock.sleep(20)  # market seconds of clean recording
        env.sim.apply_fault({"kind": "ws_close_abrupt"})
        wait_for(lambda: reconnects(tb) >= 1, 60, "a reconnect after ws_close_abrupt")
        env.clock.sleep(20)
        env.sim.apply_fault({"kind": "ws_stall", "duration": 40})
        wait_for(lambda: reconnects(tb) >= 2, 60, "a reconnect after ws_stall")
        env.clock.sleep(15)
        env.sim.apply_fault({"kind": "ws_drop_symbol", "duration": 30, "symbol": drop_symbol})
        env.clock.sleep(45)
        env.sim.apply_fault({"kind": "ws_malformed", "count": 4, "mode": "truncate", "tr_id": "H0STCNT0"})
        env.clock.sleep(20)

    return script


def record_segment(tmp: Path, *, symbols: int = HELD, script=None, **kw) -> tuple[SimEnv, list[str]]:
    env = SimEnv(tmp, start="09:29:50", speed=30, symbols=40, active=10,
                 sim_kw={"pingpong_interval": 2.0, **kw.get("sim_kw", {})},
                 cfg_overrides={"providers": {"kis": {"ws": {"stall_s": {"continuous": 15, "auction": 30}},
                                                      "rate_limit_per_s": 5}},
                                "gapfill": {"tracks": ["B"]}, **kw.get("cfg", {})})
    syms = busiest(env, symbols)
    try:
        run_track_b(env, syms, script or fault_script(syms[1]))
    except BaseException:
        env.close()
        raise
    return env, syms


def copy_tree(env: SimEnv, dst: Path) -> Path:
    shutil.copytree(env.root, dst)
    return dst


def gap_fill(env: SimEnv, root: Path, program: str = "observer-gap-filler", cfg: dict | None = None) -> dict:
    from observer.store.store import Store
    from observer.store.writer import Durability

    cfg = cfg or env.cfg
    store = Store(root, durability=Durability.from_config(cfg), clock=env.clock, program=program, provider="kis")
    try:
        prov = get_provider("kis", cfg, env.secrets, store, env.clock)
        gf = GapFiller(store=store, rest=prov.rest(), cfg=cfg, clock=env.clock, day=env.day,
                       calendar=calendar_from_config(cfg), progress=False)
        return gf.run()
    finally:
        store.close()


def truth_by_symbol(env: SimEnv, symbols) -> dict[str, list[dict]]:
    out = defaultdict(list)
    for t in env.truth("trades"):
        if t["symbol"] in symbols:
            out[t["symbol"]].append(t)
    return out


def merged_keys(root: Path, day, symbols) -> dict[str, list[tuple]]:
    out = defaultdict(list)
    for r in merged_trades(root, day, symbols=set(symbols)):
        out[r["symbol"]].append((r["cum_vol"], r["price"], r["qty"], r["exch_ns"]))
    return out


def scalp_keys(root: Path, day, symbols) -> dict[str, list[tuple]]:
    out = defaultdict(list)
    for r in iter_day(root, day, kinds=("scalp",)):
        if r["kind"] == "trade" and r["symbol"] in symbols:
            out[r["symbol"]].append((r["cum_vol"], r["price"], r["qty"], r["exch_ns"]))
    return out


def truth_keys(env: SimEnv, truth: list[dict], lo: int, hi: int) -> list[tuple]:
    """Ground-truth trades with lo <= cum_vol <= hi as merged-view keys."""
    return [(t["acml_vol"], t["price"], t["qty"], env.t_ns(t["t_ms"] - t["t_ms"] % 1000))
            for t in truth if lo <= t["acml_vol"] <= hi]


def warm_token(env: SimEnv) -> None:
    """Issue the REST token once into the recorded tree's state/, so every copy reuses it (the broker
    allows one issuance a minute)."""
    store = env.store("observer-gap-filler")
    try:
        get_provider("kis", env.cfg, env.secrets, store, env.clock).rest().current_price(busiest(env, 1)[0])
    finally:
        store.close()


def toml_config(env: SimEnv, root: Path, path: Path, **over) -> Path:
    """observer.toml for a subprocess run against the same simulator."""
    urls = env.sim.urls()
    rate = over.get("rate", 5)
    text = f'''data_dir = "{root}"
secrets_file = "{env.secrets_file}"
[store]
fsync_interval_ms = 200
[universe]
candidates_file = "{env.candidates}"
[providers.kis]
env = "sim"
rest_url = "{urls['rest']}"
ws_url = "{urls['ws']}"
rate_limit_per_s = {rate}
[gapfill]
tracks = ["B"]
'''
    path.write_text(text)
    return path
