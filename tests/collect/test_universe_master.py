"""The universe from the stock master files, end to end against the simulator's download server:
created from the served masters (ETF/ETN/SPAC/preferred/REIT dropped), the files kept in the day's
snapshot dir, the last good copy used (WARNING alert at the fake Telegram) when the download fails,
hostile zips refused with a clear message; preflight creates it on a tree with no symbols file."""

from __future__ import annotations

import orjson
import pytest

from observer.collect.universe import UniverseError, ensure_universe
from observer.markets import calendar_from_config
from observer.providers.base import get_provider
from observer.providers.kis import master
from observer.store import paths
from observer.telemetry.alerts import Alerter
from tests.support.fake_telegram import FakeTelegram
from tests.support.simenv import SimEnv

pytestmark = pytest.mark.e2e

TG_TOKEN = "7123456789:AAHk3xQ-fakeTokenForTests_0123456789"


@pytest.fixture
def env(tmp_path):
    e = SimEnv(tmp_path, start="08:30:00", speed=60, symbols=40, active=4, cfg_overrides={
        "universe": {"candidates_file": ""}})
    e.cfg["providers"]["kis"]["master_url"] = e.sim.urls()["rest"] + "/common/master"
    yield e
    e.close()


def _make(env, store, alerts=None, day=None):
    prov = get_provider("kis", env.cfg, env.secrets, store, env.clock)
    return ensure_universe(env.root, day or env.day, prov.rest(), env.cfg, calendar_from_config(env.cfg),
                           store.events("kis"), env.clock, source=prov, alerts=alerts), prov


def _events(env, action):
    f = paths.events_file(env.root, "kis", env.day)
    return [e for e in map(orjson.loads, f.read_bytes().splitlines()) if e.get("action") == action]


def test_universe_from_the_served_masters(env):
    store = env.store("t")
    uni, _ = _make(env, store)
    want = sorted(s for s, u in env.universe_truth.items() if u["prev_close"] >= 4000)
    assert sorted(s["symbol"] for s in uni["symbols"]) == want
    extras = {e["symbol"] for e in env.sim.masters.extras}
    assert len(extras) == 10 and not extras & {s["symbol"] for s in uni["symbols"]}
    assert uni["failed"] == [] and uni["candidates"] == len(env.universe_truth)
    src = uni["source"]
    assert src["kind"] == "listing_files" and src["listed"] == len(env.universe_truth) + 10
    assert src["by_type"] == {"etf": 2, "etn": 2, "preferred": 2, "reit": 2, "spac": 2,
                              "stock": len(env.universe_truth)}
    one = uni["symbols"][0]
    t = env.universe_truth[one["symbol"]]
    assert (one["name"], one["market"], one["type"]) == (t["name"], t["market"], "stock")
    kept = paths.universe_sources_dir(env.root, env.day)
    assert sorted(p.name for p in kept.iterdir()) == ["kosdaq_code.mst.zip", "kospi_code.mst.zip"]
    assert (kept / "kospi_code.mst.zip").read_bytes() == env.sim.masters.files["kospi_code.mst.zip"]
    # the day is reproducible from what was kept, and a second run neither downloads nor changes it
    n = env.sim.counters.get("master kospi_code.mst.zip 200")
    again, _ = _make(env, store)
    assert again == uni and env.sim.counters.get("master kospi_code.mst.zip 200") == n
    store.close()


def test_include_types_widens_the_candidates(env):
    env.cfg["universe"]["include_types"] = ["stock", "preferred"]
    store = env.store("t")
    prov = get_provider("kis", env.cfg, env.secrets, store, env.clock)
    from observer.collect.universe import listed_candidates

    syms, info, _ = listed_candidates(env.root, env.day, prov, env.cfg["universe"], calendar_from_config(env.cfg),
                                     store.events("kis"))
    prefs = {e["symbol"] for e in env.sim.masters.extras if e["type"] == "preferred"}
    assert prefs <= set(syms) and {info[s]["type"] for s in prefs} == {"preferred"}
    store.close()


def test_download_fails_last_good_copy_used_and_warning_delivered(env):
    tg = FakeTelegram(TG_TOKEN)
    try:
        store = env.store("t")
        cal = calendar_from_config(env.cfg)
        prev = cal.previous_trading_day(env.day)
        prov = get_provider("kis", env.cfg, env.secrets, store, env.clock)
        prov.fetch_listings(paths.universe_sources_dir(env.root, prev))  # yesterday's good copy
        env.sim.apply_fault({"kind": "master_bad", "mode": "error", "duration_real": 3600})
        # default routing (observer.telemetry.alerts.table) sends universe_fallback WARNINGs
        cfg = {"alerts": {"telegram_api_base": tg.base, "send_timeout_s": 2, "retry_backoff_s": 0}, "host_id": "vm1"}
        alerter = Alerter(env.root, cfg, {"TELEGRAM_BOT_TOKEN": TG_TOKEN, "TELEGRAM_CHAT_ID": "42"}, program="t",
                          store=store)
        uni, _ = _make(env, store, alerts=alerter)
        alerter.close(timeout_s=10)
        msgs = tg.wait_for_messages(1, timeout=15)
        text = msgs[0]["text"]
        assert "universe_fallback" in text and "HTTP 503" in text and f"{prev:%Y%m%d}" in text, text
        assert uni["source"]["fallback_from"] == f"{prev:%Y%m%d}"
        want = sorted(s for s, u in env.universe_truth.items() if u["prev_close"] >= 4000)
        assert sorted(s["symbol"] for s in uni["symbols"]) == want
        kept = paths.universe_sources_dir(env.root, env.day)
        assert (kept / "kosdaq_code.mst.zip").read_bytes() == env.sim.masters.files["kosdaq_code.mst.zip"]
        ev = _events(env, "listing_fallback")
        assert ev and ev[0]["severity"] == "WARNING" and ev[0]["source_date"] == f"{prev:%Y%m%d}"
        store.close()
    finally:
        tg.stop()


@pytest.mark.parametrize("mode,why", [
    ("corrupt", "not a readable zip"), ("bomb", "unpacks to 67108864 bytes"),
    ("wrong_member", "no member named 'kospi_code.mst'"), ("many_members", "21 members"),
    ("missing", "HTTP 404"),
])
def test_hostile_masters_refused_with_a_clear_message(env, mode, why):
    env.sim.apply_fault({"kind": "master_bad", "mode": mode, "duration_real": 3600})
    store = env.store("t")
    with pytest.raises(UniverseError) as ei:
        _make(env, store)
    msg = str(ei.value)
    assert why in msg and "stock listing download failed" in msg, msg
    assert "\n" not in msg
    kept = paths.universe_sources_dir(env.root, env.day)
    assert not kept.exists() or not any(kept.iterdir()), "a refused file was kept"
    assert not paths.universe_file(env.root, env.day, "kr_stocks").exists()
    assert not list(env.tmp.rglob("kospi_code.mst")), "something was extracted"
    store.close()


def test_corrupt_kept_copy_is_not_a_good_copy(env):
    store = env.store("t")
    cal = calendar_from_config(env.cfg)
    prev = cal.previous_trading_day(env.day)
    d = paths.universe_sources_dir(env.root, prev)
    d.mkdir(parents=True)
    (d / "kospi_code.mst.zip").write_bytes(b"PK\x03\x04 broken")
    (d / "kosdaq_code.mst.zip").write_bytes(env.sim.masters.files["kosdaq_code.mst.zip"])
    env.sim.apply_fault({"kind": "master_bad", "mode": "error", "duration_real": 3600})
    with pytest.raises(UniverseError, match="no good copy kept"):
        _make(env, store)
    store.close()


def test_preflight_creates_the_universe_with_no_symbols_file(tmp_path):
    from tests.support.progenv import Env, checks, report

    env = Env(tmp_path, cfg={"universe": {"candidates_file": ""}})
    try:
        env.cfg["providers"]["kis"]["master_url"] = env.sim.urls()["rest"] + "/common/master"
        (tmp_path / "symbols.txt").unlink()
        env.write_config()
        r = env.preflight("--only", "universe")
        c = checks(report(r))["universe"]
        assert c["verdict"] == "ok" and "created now" in c["reason"], (c, r.stderr[-2000:])
        uni = orjson.loads(paths.universe_file(env.root, env.day, "kr_stocks").read_bytes())
        assert uni["source"]["kind"] == "listing_files"
        assert {s["symbol"] for s in uni["symbols"]} == {u["symbol"] for u in env.universe if u["prev_close"] >= 4000}
        assert sorted(p.name for p in paths.universe_sources_dir(env.root, env.day).iterdir()) == [
            "kosdaq_code.mst.zip", "kospi_code.mst.zip"]
    finally:
        env.close()


def test_masters_kept_are_bounded_regular_files(env, tmp_path):
    """A kept copy that is a symlink (or oversized) is never read as a good copy."""
    d = tmp_path / "kept"
    d.mkdir()
    outside = tmp_path / "outside.zip"
    outside.write_bytes(env.sim.masters.files["kospi_code.mst.zip"])
    (d / "kospi_code.mst.zip").symlink_to(outside)
    (d / "kosdaq_code.mst.zip").write_bytes(env.sim.masters.files["kosdaq_code.mst.zip"])
    with pytest.raises(master.MasterError, match="not a regular file"):
        master.load_dir(d)
