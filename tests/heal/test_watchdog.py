"""The watchdog outside systemd: the real observer-track-b streaming from the simulator, the real
observer-watchdog judging it from the tree only (the restart path itself: test_watchdog_system.py)."""

from __future__ import annotations

import subprocess
import time

import orjson

from tests.support import arrived, wait_for
from tests.support.diskfull import tmpfs
from tests.support.fake_telegram import FakeTelegram
from tests.support.progenv import BIN, PY, Env

TG_TOKEN = "123456:test-token"   # Env's secrets file


def _heartbeat(env: Env) -> dict:
    try:
        return orjson.loads((env.root / "state" / "heartbeat" / "track-b@kis.json").read_bytes())
    except (OSError, ValueError):
        return {}


def test_dead_feed_with_a_live_loop_is_caught_quiet_symbol_is_not(tmp_path):
    tg = FakeTelegram(TG_TOKEN)
    env = Env(tmp_path, start="09:40:00", cfg={"watchdog": {"track_a": False, "start_grace_s": 0, "no_data_s": 4, "disk_alert_pct": 100,
                                                            "heartbeat_stale_s": 30},
                                               "alerts": {"telegram_api_base": tg.base, "send_timeout_s": 2}})
    active = [u["symbol"] for u in env.universe if u["active"]][:3]
    quiet = next(u["symbol"] for u in env.universe if not u["active"])
    tb = subprocess.Popen([PY, str(BIN / "observer-track-b"), "--provider", "kis", "--symbols", ",".join(active + [quiet]),
                           "--config", str(env.config)], env=env.env(), stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _heartbeat(env).get("trades", 0) > 0, 60, "track-b to record trades")
        r = env.run("observer-watchdog", "--once")
        assert r.returncode == 0 and r.stdout == "", r.stdout  # one symbol never traded: not a dead collector
        env.sim.apply_fault({"kind": "ws_stall", "scope": "all", "duration_real": 60})
        wait_for(lambda: time.time() - max(p.stat().st_mtime for p in (env.root / "scalp").rglob("*.jsonl")) > 5,
                 30, "the scalp partition to fall silent")
        assert time.time_ns() - _heartbeat(env)["wall_ns"] < 5e9  # the loop itself is alive
        r = env.run("observer-watchdog", "--once")
        assert r.returncode == 1
        assert "restart observer-track-b@kis.service: no new scalp record for" in r.stdout
        assert "the feed is dead" in r.stdout and "NOT restarted: not under systemd" in r.stdout
        # nothing could restart it: that pages (CRITICAL), with the reason
        arrived(tg, "CRITICAL · cannot_restart:observer-track-b@kis.service", "the feed is dead",
                 "not under systemd")
    finally:
        tb.terminate()
        tb.wait(30)
        env.close()
        tg.stop()


def test_backup_missing_and_disk_pressure(tmp_path):
    env = Env(tmp_path, start="22:30:00", cfg={"watchdog": {"track_a": False, "providers": [], "disk_alert_pct": 1,
                                                            "programs_dir": str(BIN)}})
    try:
        r = env.run("observer-watchdog", "--once", "--dry-run")
        assert "would disk" in r.stdout and "backup 20260316" in r.stdout
        assert env.events() == []  # a dry run changes nothing
        r = env.run("observer-watchdog", "--once")
        assert r.returncode == 1
        assert "backup of 20260316 missing at 22:00 KST" in r.stdout
        assert "emergency retention started (observer-retention exit" in r.stdout
        dp = env.events("disk_pressure")
        assert len(dp) == 1 and dp[0]["action"] == "retention_run" and dp[0]["anomaly_day"] is True
        assert len(env.events("backup_missing")) == 1
        r = env.run("observer-watchdog", "--once")  # reported once a day; retention once per cooldown
        assert r.stdout == "" and r.returncode == 0
    finally:
        env.close()


def test_flapping_websocket_is_reported_and_alerted(tmp_path):
    """The incident's "no close frame" drops every few seconds: the streamer heals each one itself
    (tests/collect), and the watchdog sees the pattern in the reconnect events and alerts: flapping
    and the day's reconnects (> watchdog.reconnects_per_day, 20 by design, 3 here) both arrive."""
    tg = FakeTelegram(TG_TOKEN)
    env = Env(tmp_path, start="09:40:00", cfg={"watchdog": {"track_a": False, "start_grace_s": 0, "no_data_s": 600, "disk_alert_pct": 100,
                                                            "heartbeat_stale_s": 60, "flap_reconnects": 3,
                                                            "reconnects_per_day": 3},
                                               "alerts": {"telegram_api_base": tg.base, "send_timeout_s": 2}})
    active = [u["symbol"] for u in env.universe if u["active"]][:2]
    tb = subprocess.Popen([PY, str(BIN / "observer-track-b"), "--provider", "kis", "--symbols", ",".join(active),
                           "--config", str(env.config)], env=env.env(), stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _heartbeat(env).get("trades", 0) > 0, 60, "track-b to record trades")
        env.sim.apply_fault({"kind": "ws_flap", "duration_real": 120, "min_real": 1, "max_real": 2})
        wait_for(lambda: len(env.events("reconnect", "kis")) >= 3, 90, "three reconnects")
        r = env.run("observer-watchdog", "--once")
        assert "WebSocket is flapping" in r.stdout, r.stdout + r.stderr
        ev = env.events("ws_flapping", "kis")
        assert ev and ev[0]["reconnects"] >= 3
        # both rows of the table ARRIVE (routed WARNINGs by default): flapping, and the day's reconnects
        arrived(tg, "WARNING · ws_flapping:kis", "kis WebSocket is flapping")
        arrived(tg, "WARNING · reconnects:kis", "kis WebSocket reconnected", "anomaly day")
    finally:
        tb.terminate()
        tb.wait(30)
        env.close()
        tg.stop()


def test_full_disk_and_missing_backup_alerts_arrive(tmp_path):
    """data_dir on a real small disk filled past 80 %: the watchdog starts an emergency retention run and
    the disk alert ARRIVES; at 22:30 with no backup package the backup_missing alert arrives too."""
    tg = FakeTelegram(TG_TOKEN)
    with tmpfs(tmp_path / "data", "8m") as data:
        env = Env(tmp_path, start="22:30:00", cfg={
            "watchdog": {"track_a": False, "providers": [], "programs_dir": str(BIN)},
            "alerts": {"telegram_api_base": tg.base, "send_timeout_s": 2}})
        try:
            (data / "ballast").write_bytes(b"\0" * (7 << 20))   # 7 of 8 MiB: 87 % used
            r = env.run("observer-watchdog", "--once")
            assert r.returncode == 1, r.stdout + r.stderr
            text = arrived(tg, "WARNING · disk", "% full (> 80 %)", "emergency retention started")
            assert "observer-retention exit" in text
            arrived(tg, "ERROR · backup_missing:20260316", "backup of 20260316 missing at 22:00 KST")
        finally:
            env.close()
            tg.stop()


def test_backup_status_for_the_metrics_comes_from_the_backup_events(tmp_path):
    """observer_backup_last_status / _success_timestamp_seconds: the newest backup outcome of the last
    three days' events (a refused run is none), read incrementally across passes."""
    from datetime import datetime

    from observer.core.clock import KST, ManualClock
    from observer.core.config import validate_config
    from observer.heal.watchdog import Watchdog
    from observer.markets import calendar_from_config
    from observer.store.store import Store

    root = tmp_path / "data"
    cfg = validate_config({"data_dir": str(root)})
    clock = ManualClock(datetime(2026, 3, 16, 21, 0, tzinfo=KST))
    store = Store(root, program="observer-backup", clock=clock)
    wd = Watchdog(cfg, clock, calendar_from_config(cfg), store=None, alerts=None, use_systemd=False)
    try:
        assert wd.backup_status() == {"ok": None, "success_s": None}
        store.events().emit("backup", "INFO", date="20260313", ok=True, action="built")
        ok_at = clock.now_ns() / 1e9
        clock.advance(86400 * 2)   # two days later (the newest day's file and the one before are read)
        store.events().emit("backup", "WARNING", date="20260318", ok=False, action="refused", reason="too early")
        assert wd.backup_status() == {"ok": True, "success_s": ok_at}
        clock.advance(60)
        store.events().emit("backup", "CRITICAL", date="20260318", ok=False, action="failed", error="ENOSPC")
        assert wd.backup_status() == {"ok": False, "success_s": ok_at}
    finally:
        store.close()
