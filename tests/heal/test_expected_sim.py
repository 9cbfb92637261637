"""The incident's morning: Track B dead from its window start (an import error), started 40 market minutes
late. The watchdog marks the expected symbols from the window start until Track B's first slot allocation
(once, also across its own restart), and the gap-filler recovers their trades from the open exactly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

from observer.core.clock import NS, kst_ns
from observer.heal.expected import expected_symbols, previous_day_slots
from observer.heal.watchdog import Watchdog
from observer.markets import calendar_from_config
from observer.store import paths
from observer.store.reader import iter_day
from tests.support import wait_for
from tests.support.progenv import toml_dump
from tests.support.scenario import gap_fill, merged_keys, truth_by_symbol
from tests.support.sim import busiest, sim_config
from tests.support.simenv import SimEnv

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / "bin"


def _events(root: Path, day, event: str) -> list[dict]:
    return [e for e in iter_day(root, day, kinds=("events",)) if e.get("event") == event]


def _config(env: SimEnv, path: Path, symbols: list[str]) -> Path:
    path.write_text(toml_dump({**sim_config(env.sim, env.root, env.secrets_file, env.candidates),
                               "track_b": {"expected_symbols": symbols}}))
    return path


def _track_b(env: SimEnv, cfg: Path, symbols: list[str], pythonpath: str) -> subprocess.Popen:
    e = dict(os.environ, OBSERVER_CLOCK=env.clock.spec(), PYTHONPATH=pythonpath)
    e.pop("NOTIFY_SOCKET", None)
    return subprocess.Popen([sys.executable, str(BIN / "observer-track-b"), "--config", str(cfg), "--symbols",
                             ",".join(symbols)], env=e, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_late_start_after_import_error_is_marked_and_recovered_exactly(tmp_path):
    env = SimEnv(tmp_path, start="09:29:40", speed=60, symbols=30, active=8,
                 cfg_overrides={"gapfill": {"tracks": ["B"]},
                                "watchdog": {"track_a": False, "disk_alert_pct": 100, "expected_late_s": 10}})
    try:
        expected = busiest(env, 3)
        env.cfg["track_b"]["expected_symbols"] = expected
        cfg = _config(env, tmp_path / "observer.toml", expected)
        cal = calendar_from_config(env.cfg)
        w_ns = kst_ns(env.day, "093000")
        wd_store = env.store("observer-watchdog")
        wd = Watchdog(env.cfg, env.clock, cal, store=wd_store, alerts=None, use_systemd=False)

        # 1. the broken deployment: a dependency that fails at import (the 2026-01-19 morning)
        broken = tmp_path / "broken"
        broken.mkdir()
        (broken / "orjson.py").write_text('raise ImportError("cannot import name \'loads\' from \'orjson\'")\n')
        crashes = 0
        notes = []
        while env.clock.now_ns() < w_ns + 40 * 60 * NS:
            p = _track_b(env, cfg, expected, f"{broken}{os.pathsep}{REPO / 'lib'}")
            _, err = p.communicate(timeout=60)
            assert p.returncode != 0 and b"ImportError" in err, err[-500:]
            crashes += 1
            notes += [f.text for f in wd.run_pass() if f.subject == "track-b@kis"]
        assert crashes >= 3
        assert any("not recording since the window start 093000" in t for t in notes), notes
        assert [m for m in _events(env.root, env.day, "gap_marker") if m["cause"] == "collector_down"] == [], \
            "the interval is still open: nothing is marked yet"

        # 2. fixed: Track B starts 40 market minutes late and records
        late = env.clock.now_ns()
        tb = _track_b(env, cfg, expected, str(REPO / "lib"))
        try:
            wait_for(lambda: len(_events(env.root, env.day, "slot")) >= len(expected) or tb.poll() is not None, 60,
                     "a slot event for every expected symbol (or Track B to end)")
            assert tb.poll() is None, tb.stderr.read().decode()[-1000:]
            found = wd.run_pass()
            (env.root / "state" / "watchdog.json").unlink()  # a restart that lost its state: the log still tells
            wd2 = Watchdog(env.cfg, env.clock, cal, store=wd_store, alerts=None, use_systemd=False)
            found += wd2.run_pass() + wd.run_pass()
            stop_at = env.clock.now_ns() + 120 * NS  # two market minutes of recording
            wait_for(lambda: env.clock.now_ns() >= stop_at, 30, "two market minutes of recording")
        finally:
            tb.terminate()
            tb.wait(30)
        wd_store.close()
        gaps = [f for f in found if f.what == "gap"]
        assert len(gaps) == 1 and "collector_down markers for 3 expected symbols" in gaps[0].text, found
        down = [m for m in _events(env.root, env.day, "gap_marker") if m["cause"] == "collector_down"]
        assert sorted((m["symbol"], m["channel"]) for m in down) == sorted(
            (s, ch) for s in expected for ch in ("trades", "book")), "one marker per symbol and channel, never twice"
        first_alloc = min(e["ts_ns"] for e in _events(env.root, env.day, "slot"))
        assert all(m["start_ns"] == w_ns and m["end_ns"] == first_alloc >= late for m in down)
        assert all(m["recoverable"] == (m["channel"] == "trades") for m in down)

        # 3. after the close: the gap-filler recovers the expected symbols' trades from the open
        summary = gap_fill(env, env.root)
        assert summary["failed_jobs"] == 0 and summary["recovered_trades"] > 0, summary
        truth = truth_by_symbol(env, expected)
        merged = merged_keys(env.root, env.day, expected)
        for sym in expected:
            got = [k for k in merged[sym] if k[3] >= w_ns]
            hi = got[-1][0]
            want = [(t["acml_vol"], t["price"], t["qty"], env.t_ns(t["t_ms"] - t["t_ms"] % 1000)) for t in truth[sym]
                    if env.t_ns(t["t_ms"]) >= w_ns and t["acml_vol"] <= hi]
            assert len(want) > 100, (sym, len(want))
            assert got == want, f"{sym}: {len(got)} merged trades from the open vs {len(want)} in ground truth"
            recovered = [k for k in got if k[3] < first_alloc]
            assert len(recovered) > 50, f"{sym}: the 40 minutes before the late start were not backfilled"
        assert gap_fill(env, env.root)["recovered_trades"] == 0  # a rerun finds nothing left
    finally:
        env.close()


def test_expected_symbols_default_to_the_previous_days_longest_held_slots(tmp_path):
    from datetime import date

    root = tmp_path / "data"
    prev = date(2026, 3, 13)  # the Friday before 2026-03-16
    p = paths.events_file(root, "kis", prev)
    p.parent.mkdir(parents=True)
    t0 = kst_ns(prev, "093000")
    evs = [("allocate", "A", 0), ("allocate", "B", 0), ("allocate", "C", 0), ("release", "B", 60),
           ("allocate", "D", 61), ("release", "C", 3000), ("allocate", "B", 3001)]
    lines = [{"v": 1, "kind": "event", "event": "slot", "action": a, "symbol": s, "slot": 0, "ts_ns": t0 + t * NS}
             for a, s, t in evs + [("allocate", "../../etc", 1)]] + [
                 {"v": 1, "kind": "event", "event": "reconnect", "ts_ns": t0 + 20000 * NS}]
    p.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines) + b'{"torn')
    # A held to the last event (20000 s), D 19939 s, B 60 + 16999 s, C 3000 s
    assert previous_day_slots(root, "kis", prev, 3) == ["A", "D", "B"]
    cfg = {"data_dir": str(root), "track_b": {"slots": 2, "channels": ["trades"]}}
    cal = calendar_from_config({})
    syms, src = expected_symbols(cfg, root, "kis", date(2026, 3, 16), cal)
    assert syms == ["A", "D"] and src == "slots held on 20260313"
    cfg["track_b"]["expected_symbols"] = ["X", "Y", "X"]
    assert expected_symbols(cfg, root, "kis", date(2026, 3, 16), cal) == (["X", "Y"], "track_b.expected_symbols")
