"""KIS REST client against the simulator: token cache across processes, shared rate limit, errors, paging."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections import Counter

import orjson
import pytest

from observer.core.clock import NS
from observer.core.contracts import check
from observer.providers.base import ApiError, AuthError, get_provider
from observer.store.paths import state_dir

from .conftest import APP_KEY, events, kis_config, secrets

WORKER = r"""
import json, sys, time
from observer.core.config import validate_config
from observer.core.secrets import Secrets
from observer.providers.base import get_provider
cfg = validate_config(json.loads(sys.argv[1]))
sec = Secrets({"KIS_APP_KEY": sys.argv[2], "KIS_APP_SECRET": sys.argv[3]}, "test")
calls, symbol = int(sys.argv[4]), sys.argv[5]
rest = get_provider("kis", cfg, sec, None, None).rest()
print("READY", flush=True)
sys.stdin.readline()          # start together
stamps = []  # when the shared bucket let each request go
acquire = rest.bucket.acquire
def stamped(*a, **k):
    w = acquire(*a, **k)
    stamps.append(time.time_ns())
    return w
rest.bucket.acquire = stamped
for _ in range(calls):
    rest.current_price(symbol)
print(json.dumps({"stamps": stamps, "stats": rest.stats, "issued": rest.auth.token_cache.issued}), flush=True)
"""


def _cfg_json(cfg: dict) -> str:
    return json.dumps({k: v for k, v in cfg.items() if not k.startswith("_")})


def run_workers(cfg: dict, n: int, calls: int, symbol: str) -> list[dict]:
    env = dict(os.environ)
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, _cfg_json(cfg), APP_KEY, "testsecret/AAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                               str(calls), symbol], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(n)]
    for p in procs:
        assert p.stdout.readline().strip() == "READY", p.stderr.read()
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    out = []
    for p in procs:
        o, e = p.communicate(timeout=60)
        assert p.returncode == 0, e
        out.append({**json.loads(o.strip().splitlines()[-1]), "stderr": e})
    return out


def key_stats(sim) -> dict:
    st = sim.stats()["per_app_key"]
    return st[sim.auth.key_id(APP_KEY)]


def test_token_issued_once_for_two_processes(sim, tree):
    cfg = kis_config(sim, tree, token={"min_interval_s": 61})
    sym = sim.active_syms[0].info.code
    res = run_workers(cfg, 2, 3, sym)
    assert key_stats(sim)["tokens_issued"] == 1
    assert key_stats(sim).get("issue_rejected", 0) == 0
    assert sorted(r["issued"] for r in res) == [0, 1]
    files = list(state_dir(tree).glob("kis_token_*.json"))
    assert len(files) == 1 and stat.S_IMODE(files[0].stat().st_mode) == 0o600
    token = orjson.loads(files[0].read_bytes())["value"]
    assert APP_KEY not in files[0].name
    for r in res:  # neither the token nor the app key leaks into logs
        assert token not in r["stderr"] and APP_KEY not in r["stderr"]


def test_shared_rate_limit_across_two_processes(sim, tree):
    cfg = kis_config(sim, tree)  # env sim: 19/s, the simulator enforces the real 20/s per app key
    sym = sim.active_syms[0].info.code
    t0 = time.monotonic()
    res = run_workers(cfg, 2, 25, sym)
    elapsed = time.monotonic() - t0
    stamps = sorted(s for r in res for s in r["stamps"])
    assert len(stamps) == 50
    assert all(r["stats"]["rate_limited"] == 0 for r in res)
    assert sim.stats()["counters"].get("tr FHKST01010100", 0) == 50
    # the two processes together stay under 20 per second: any 1-s window holds at most 20 requests
    worst = max(sum(1 for t in stamps[i:] if t - stamps[i] < NS) for i in range(len(stamps)))
    assert worst <= 20, worst
    assert elapsed >= 49 / 19 - 0.3


def test_rate_limit_error_backs_off_and_retries(sim, tree, store):
    cfg = kis_config(sim, tree, rate_limit_per_s=60)  # faster than the server allows
    rest = get_provider("kis", cfg, secrets(), store).rest()
    sym = sim.active_syms[0].info.code
    for _ in range(40):
        check(rest.current_price(sym))
    assert rest.stats["rate_limited"] > 0  # the server said EGW00201 and we recovered
    evs = events(store, "rate_limited")
    assert evs and evs[0]["call"] == "FHKST01010100"


def test_rate_limit_storm_is_survived(sim, tree, store):
    rest = get_provider("kis", kis_config(sim, tree), secrets(), store).rest()
    sym = sim.active_syms[0].info.code
    rest.current_price(sym)
    sim.apply_fault({"kind": "rate_limit_storm", "duration_real": 0.7})
    t0 = time.monotonic()
    check(rest.current_price(sym))
    assert rest.stats["rate_limited"] >= 1 and time.monotonic() - t0 < 10


def test_token_expiry_refreshes_once_and_retries(sim, tree, store):
    rest = get_provider("kis", kis_config(sim, tree), secrets(), store).rest()
    sym = sim.active_syms[0].info.code
    rest.current_price(sym)
    old = rest.auth.token()
    sim.apply_fault({"kind": "token_expire", "reset_issue_limit": True})
    check(rest.current_price(sym))
    assert rest.stats["token_refreshes"] == 1 and rest.auth.token() != old
    assert key_stats(sim)["tokens_issued"] == 2
    assert [e["reason"] for e in events(store, "credential_issued") if e["what"] == "access token"] == [
        "none cached", "invalidated"]


def test_5xx_is_retried(sim, tree, store):
    rest = get_provider("kis", kis_config(sim, tree), secrets(), store).rest()
    sym = sim.active_syms[0].info.code
    rest.current_price(sym)
    sim.apply_fault({"kind": "rest_5xx", "duration_real": 0.3})
    check(rest.current_price(sym))
    assert rest.stats["retries"] >= 1


def test_bad_app_key_is_a_clear_error_without_retries(sim_factory, tree, store):
    sim = sim_factory(app_key="the-right-app-key", app_secret="the-right-secret")
    rest = get_provider("kis", kis_config(sim, tree), secrets(), store).rest()
    with pytest.raises(AuthError, match="EGW00103"):
        rest.current_price(sim.active_syms[0].info.code)
    assert sim.stats()["auth"]["token_requests"] == 1


def test_unknown_symbol_is_an_api_error(sim, tree, store):
    rest = get_provider("kis", kis_config(sim, tree), secrets(), store).rest()
    with pytest.raises(ApiError):
        rest.current_price("999999")


def _truth_trades(sim, symbol: str) -> list[dict]:
    sim.truth.flush()
    out = []
    with open(os.path.join(sim.truth.dir, "trades.jsonl"), "rb") as f:
        for line in f:
            t = orjson.loads(line)
            if t["symbol"] == symbol:
                out.append(t)
    return out


def test_recover_trades_pages_back_with_continuity(sim, tree, store):
    rest = get_provider("kis", kis_config(sim, tree), secrets(), store).rest()
    sym = sim.active_syms[0].info.code  # the busiest symbol
    end = sim.clock.now_ns() - 2 * NS
    start = end - 90 * NS
    rec = rest.recover_trades(sym, start, end, gap_id="g1")
    assert rec.calls > 2 and rec.complete and rec.gaps == []
    for r in rec.records:
        check(r, "recovered")
    lo, hi = rec.records[0]["exch_ns"], rec.records[-1]["exch_ns"]
    s_t = time.strftime("%H%M%S", time.gmtime((start + 9 * 3600 * NS) // NS))
    e_t = time.strftime("%H%M%S", time.gmtime((end + 9 * 3600 * NS) // NS))
    truth = [t for t in _truth_trades(sim, sym) if s_t <= t["time"] <= e_t]
    assert [(r["price"], r["qty"], r["cum_vol"]) for r in rec.records] == [
        (t["price"], t["qty"], t["acml_vol"]) for t in truth]
    assert lo >= start - NS and hi <= end
    vols = [r["cum_vol"] for r in rec.records]
    assert all(b - a == r["qty"] for a, b, r in zip(vols, vols[1:], rec.records[1:], strict=False))


def test_more_than_a_page_in_one_second_is_a_recorded_gap(sim_factory, tree, store):
    sim = sim_factory(symbols=12, active=2, activity=40.0, start="09:01")
    rest = get_provider("kis", kis_config(sim, tree), secrets(), store).rest()
    sym = sim.active_syms[0].info.code
    trades = _truth_trades(sim, sym)
    per_sec = Counter(t["time"] for t in trades if "090010" <= t["time"] < "090030")
    busy = sorted(s for s, n in per_sec.items() if n > 30)
    assert busy, "the simulator produced no second with more than 30 trades; raise activity"
    sec = busy[-1]
    from observer.core.clock import kst_ns

    day = sim.date
    rec = rest.recover_trades(sym, kst_ns(day, sec), kst_ns(day, sec))
    assert rec.calls <= 4
    assert [g["cause"] for g in rec.gaps] == ["more_than_page_in_one_second"], rec.gaps
    in_sec = [t for t in trades if t["time"] == sec]
    assert len(rec.records) == 30 < len(in_sec)
    # the recovered 30 are the newest of that second; the gap holds exactly the quantity of the rest
    assert [r["cum_vol"] for r in rec.records] == [t["acml_vol"] for t in in_sec[-30:]]
    missing = sum(t["qty"] for t in in_sec[:-30])
    assert rec.gaps[0]["missing_qty"] == missing > 0


def test_minute_bars_page_back(sim_factory, tree, store):
    sim = sim_factory(start="09:50", active=3)
    rest = get_provider("kis", kis_config(sim, tree), secrets(), store).rest()
    sym = sim.active_syms[0].info.code
    end = sim.clock.now_ns()
    bars = rest.minute_bars(sym, end - 45 * 60 * NS, end)
    assert len(bars) >= 44 and rest.stats["calls"] >= 2
    for b in bars:
        check(b)
    ts = [b["exch_ns"] for b in bars]
    assert ts == sorted(ts) and len(set(ts)) == len(ts)
    assert all(b - a == 60 * NS for a, b in zip(ts, ts[1:], strict=False))


def test_daily_prices_and_volume_rank(sim, tree, store):
    rest = get_provider("kis", kis_config(sim, tree), secrets(), store).rest()
    sym = sim.active_syms[0].info.code
    days = rest.daily_prices(sym)
    assert len(days) == 30 and all(check(b) is None and b["minutes"] == 1440 for b in days)
    ranks = rest.volume_rank()
    assert ranks and all(check(r) is None for r in ranks)
    assert [r["extra"]["rank"] for r in ranks] == sorted(r["extra"]["rank"] for r in ranks)
    snap = rest.current_price(sym)
    check(snap)
    assert snap["lower_limit"] < snap["price"] < snap["upper_limit"]
