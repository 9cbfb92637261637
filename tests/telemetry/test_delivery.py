"""Every row of the alert table, end to end: the condition is caused for real (the simulator's faults,
a filled tmpfs, CPU burners, a failing program) and the test waits for the MESSAGE at the local fake
Telegram server (tests/support/fake_telegram.py) — not for an outbox line. Durations are shortened by
config only. The watchdog-side rows (disk, backup_missing, reconnects, ws_flapping) are in
tests/heal/test_watchdog.py, the systemd ones (crash_loop, restart, oom) in test_watchdog_system.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime

import pytest

from observer.collect.track_a import TrackA
from observer.core.clock import KST, ManualClock
from observer.heal.watchdog import Watchdog
from observer.markets import calendar_from_config
from observer.providers.base import get_provider
from observer.store.reader import iter_day
from observer.store.store import Store
from observer.telemetry.alerts import Alerter, summarize_day
from observer.telemetry.alerts.notifier import ProgramAlerts
from tests.collect.test_track_b import START, WINDOWS, recorded_trades, run_track_b
from tests.support import arrived, wait_for
from tests.support.diskfull import fill, tmpfs
from tests.support.fake_telegram import CHAT, SECRETS, TOKEN, FakeTelegram
from tests.support.sim import busiest
from tests.support.simenv import SimEnv
from tests.telemetry.conftest import make_cfg

pytestmark = pytest.mark.e2e


def _with_telegram(env: SimEnv) -> None:
    with open(env.secrets_file, "a") as f:
        f.write(f"TELEGRAM_BOT_TOKEN={TOKEN}\nTELEGRAM_CHAT_ID={CHAT}\n")


def _sim_env(tmp_path, tg, speed: float = 30, **kw) -> SimEnv:
    over = kw.pop("cfg_overrides", {})
    over = {**WINDOWS, **over, "alerts": {"telegram_api_base": tg.base, "send_timeout_s": 2, "retry_backoff_s": 0.5,
                                          **over.get("alerts", {})}}
    env = SimEnv(tmp_path, start=START, speed=speed, symbols=40, active=10, cfg_overrides=over, **kw)
    _with_telegram(env)
    return env


# -- Track B: ws_down (the 5-minutes-of-failure pause), track_b_rate, store_error -----------------------------
def test_ws_down_pauses_alerts_marks_the_day_keeps_retrying_and_records_again(tmp_path, tg):
    """The simulator refuses connections for 6 minutes: after track_b.pause_after_s (5 min) Track B
    pauses scalp recording, the CRITICAL ws_down alert ARRIVES, the day is an anomaly day; reconnecting
    never stops and recording resumes once connections are accepted again. Shortened by the clock's
    speed (20: 15 and 18 real s): the minute between them must outlast Track B's 1 s health tick."""
    pause_s, refuse_s = 300.0, 360.0   # market s
    env = _sim_env(tmp_path, tg, speed=20, cfg_overrides={
        "track_b": {"pause_after_s": pause_s},
        "providers": {"kis": {"ws": {"backoff_s": [0.2, 0.5]}}}})
    seen = {}

    def outage(env, tb):
        seen["t0"] = env.clock.now_ns()
        env.sim.apply_fault({"kind": "ws_refuse", "duration": refuse_s})
        env.sim.apply_fault({"kind": "ws_close_abrupt"})
        wait_for(lambda: tb.paused, 60, "Track B to pause")
        seen["text"] = arrived(tg, "CRITICAL", "ws_down:kis", "WebSocket down for 5 min", "scalp recording paused",
                               timeout=60)
        wait_for(lambda: not tb.paused, 60, "Track B to resume")
        seen["resumed"] = env.clock.now_ns()

    try:
        syms = busiest(env, 4)
        run_track_b(env, syms, 60, during=outage)
        events = list(iter_day(env.root, env.day, kinds=("events",)))
        paused = [e for e in events if e["event"] == "recording" and e.get("state") == "paused"]
        assert len(paused) == 1 and paused[0]["severity"] == "CRITICAL" and paused[0]["anomaly_day"] is True
        assert [e for e in events if e["event"] == "recording" and e.get("state") == "resumed"]
        rec = [e for e in events if e["event"] == "reconnect" and e["ts_ns"] > seen["t0"]]
        assert rec and rec[0]["attempt"] >= 3, f"it should have kept retrying through the refusal: {rec}"
        trades = recorded_trades(env)
        for sym in syms:
            assert any(r["recv_ns"] > seen["resumed"] for r in trades[sym]), f"{sym}: nothing after the outage"
        assert len([t for t in tg.texts() if "ws_down" in t]) == 1, "one alert per outage"
    finally:
        env.close()


def test_track_b_rate_below_90_percent_for_the_configured_time_alerts(tmp_path, tg):
    """A lost connection (refused for 60 market s) drops the recording rate; held below 90 % for
    track_b_rate_for_s the WARNING arrives (routed by default)."""
    env = _sim_env(tmp_path, tg, cfg_overrides={
        "alerts": {"track_b_rate_for_s": 20},
        "track_b": {"recording_rate": {"window_s": 30}},
        "providers": {"kis": {"ws": {"backoff_s": [0.5, 1]}}}})

    def outage(env, tb):
        env.sim.apply_fault({"kind": "ws_refuse", "duration": 90})
        env.sim.apply_fault({"kind": "ws_close_abrupt"})
        text = arrived(tg, "WARNING", "track_b_rate:kis", "Track B recording rate", timeout=60)
        assert "(< 90 %)" in text

    try:
        run_track_b(env, busiest(env, 4), 10, during=outage)
    finally:
        env.close()


def test_store_error_on_a_full_disk_alerts(tmp_path, tg):
    """The data tree's disk fills while Track B records: the writer's store_error (once per outage)
    pages — the alert is sent from memory although its outbox line cannot be written either."""
    env = None
    with tmpfs(tmp_path / "data", "32m") as data:
        try:
            env = _sim_env(tmp_path, tg, cfg_overrides={"store": {"max_buffer_bytes": 65536}})

            def fill_disk(env, tb):
                try:
                    fill(data / "filler")
                except OSError:  # tests.support.diskfull.fill: close() re-flushes a partial buffer into the full disk
                    pass
                arrived(tg, "CRITICAL", "store_error", "the store cannot write (ENOSPC", timeout=60)
                (data / "filler").unlink()

            run_track_b(env, busiest(env, 4), 20, during=fill_disk)
            assert len([t for t in tg.texts() if "store_error" in t]) == 1, "one alert per outage"
        finally:
            if env is not None:
                env.close()


# -- Track A: track_a_rate -------------------------------------------------------------------------------------
def test_track_a_rate_below_95_percent_for_10_minutes_alerts(tmp_path, tg):
    """The simulator's REST answers 503 for the quotations: sweeps at 09:00 and 09:10 cover 0 %; the
    second one completes 10 min of low coverage and the WARNING arrives."""
    over = {"windows": {"track_a": {"start": "09:00", "end": "09:10"}},
            "alerts": {"telegram_api_base": tg.base, "send_timeout_s": 1, "claim_timeout_s": 1},
            "providers": {"kis": {"retry": {"max_attempts": 1}}}}
    env = SimEnv(tmp_path, start="08:59:30", speed=60, symbols=30, active=6, cfg_overrides=over)
    _with_telegram(env)
    try:
        env.sim.apply_fault({"kind": "rest_5xx", "duration": 1200, "status": 503, "scope": "quotations"})
        store = env.store("observer-track-a")
        prov = get_provider("kis", env.cfg, env.secrets, store, env.clock)
        ta = TrackA(store=store, rest=prov.rest(), clock=env.clock, calendar=calendar_from_config(env.cfg),
                    cfg=env.cfg, provider="kis", symbols=sorted(env.universe_truth)[:20])
        assert ta.run_day(env.day) == 2
        store.close()
        # Track A's sender gets 1 s at its stop; what it did not send the watchdog's drain takes over
        from observer.core.secrets import load_secrets

        drainer = Alerter(env.root, env.cfg, load_secrets(env.cfg), program="watchdog", clock=env.clock)
        try:
            wait_for(lambda: any("track_a_rate" in t for t in tg.texts()) or bool(drainer.drain(2)) and False, 60,
                     "the drain to deliver track_a_rate")
        finally:
            drainer.close(1)
        text = arrived(tg, "WARNING", "track_a_rate", "Track A collected 0.0 % of 20 symbols (< 95 %) for 10 min",
                       timeout=60)
        assert "sweep 09:10: ApiError ×20" in text
        assert len([t for t in tg.texts() if "track_a_rate" in t]) == 1
    finally:
        env.close()


# -- the watchdog: cpu -----------------------------------------------------------------------------------------
def test_cpu_above_90_percent_for_the_configured_time_alerts(tmp_path, tg):
    """CPU burners on every core: the watchdog samples the host CPU each pass; held above 90 % for
    alerts.cpu_for_s (shortened) the WARNING arrives."""
    root = tmp_path / "data"
    cfg = {"data_dir": str(root), **make_cfg(tg, cpu_for_s=3),
           "watchdog": {"track_a": False, "providers": [], "disk_alert_pct": 100}}
    from observer.core.config import validate_config

    cfg = validate_config(cfg)
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    store = Store(root, program="watchdog")
    sink = ProgramAlerts(store, cfg, "watchdog", secrets=SECRETS, close_s=5)
    try:
        clock = ManualClock(datetime(2026, 3, 16, 10, 0, tzinfo=KST))
        wd = Watchdog(cfg, clock, calendar_from_config(cfg), store=store, alerts=sink, use_systemd=False)

        def passes():
            wd.run_pass()
            return any("cpu" in t for t in tg.texts())

        wait_for(lambda: passes() or time.sleep(0.3), 60, lambda: f"a cpu alert (last busy {wd.cpu_busy})")
        text = arrived(tg, "WARNING", "· cpu", "host CPU", timeout=60)
        assert "above 90 % for" in text
    finally:
        for b in burners:
            b.kill()
            b.wait()
        sink.close()
        store.close()


# -- the outbox: an hour of Telegram outage, then the backlog, deduplicated ------------------------------------
def test_an_hour_of_telegram_outage_delivers_the_backlog_once(tmp_path, tg):
    root = tmp_path / "data"
    clock = ManualClock(datetime(2026, 3, 16, 10, 0, tzinfo=KST))
    a = Alerter(root, make_cfg(tg, throttle_min=30, retry_backoff_s=0.2, retry_backoff_max_s=0.2),
                SECRETS, program="watchdog", clock=clock)
    a.tick_s = 3600
    try:
        tg.set_mode("down")
        a.alert("ws_down:kis", "CRITICAL", "kis WebSocket down for 5 min")
        for i in range(6):  # the same disk alert every 10 min of the hour: throttled to one + a summary
            a.alert("disk", "WARNING", f"disk {81 + i} %")
            clock.advance(600)
            a.drain(2)
        a.alert("store_error", "CRITICAL", "ENOSPC on scalp")
        assert tg.messages == []
        tg.set_mode("up")
        clock.advance(600)
        wait_for(lambda: not a.drain(5).get("undelivered", 1), 60, lambda: f"the backlog delivered ({a.stats()})")
        texts = tg.texts()
        assert sum("ws_down:kis" in t for t in texts) == 1
        assert sum("store_error" in t for t in texts) == 1
        disk = [t for t in texts if "disk" in t]
        # first disk alert, then the throttled ones folded into one message with their count: never 6
        assert 1 <= len(disk) <= 3 and any("more alert(s) 'disk'" in t or "earlier alert(s)" in t for t in disk), disk
        a.drain(5)
        assert len(tg.texts()) == len(texts), "a second drain re-sent something"
    finally:
        a.close(2)


# -- the daily summary, sent by the watchdog program -----------------------------------------------------------
def test_daily_summary_arrives_from_the_watchdog(tmp_path, tg):
    from tests.support.progenv import BIN, PY, Env

    env = Env(tmp_path, start="21:31:00", cfg={
        "watchdog": {"track_a": False, "providers": [], "disk_alert_pct": 100, "interval_s": 1},
        "alerts": {"telegram_api_base": tg.base, "send_timeout_s": 2}})
    tg.token = "123456:test-token"   # the heal Env's secrets
    try:
        a = Alerter(env.root, env.cfg, {"TELEGRAM_BOT_TOKEN": tg.token, "TELEGRAM_CHAT_ID": "42"},
                    program="observer-preflight", clock=env.clock)
        a.alert("preflight_warn:20260316", "WARNING", "clock skew 0.4 s")
        a.close(2)
        p = subprocess.Popen([PY, str(BIN / "observer-watchdog"), "--config", str(env.config)], env=env.env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            text = arrived(tg, "Observer daily summary 2026-03-16", timeout=60)
            assert "WARNING preflight_warn:20260316 ×1 (not routed 1)" in text
            assert summarize_day(env.root, "20260316")["alerts"] == 1
        finally:
            p.terminate()
            assert p.wait(10) == 0
        assert sum("daily summary" in t for t in tg.texts()) == 1
        assert not any("clock skew" in t and "summary" not in t for t in tg.texts()), "a preflight warning paged"
    finally:
        env.close()


# -- the lifecycle programs: backup, retention; preflight ---------------------------------------------------
LIFE_NOW = {"OBSERVER_CLOCK": "2026-03-20T22:00:00+09:00"}


def _life_config(tmp_path, root, tg) -> str:
    secrets = tmp_path / "secrets.env"
    secrets.write_text(f"TELEGRAM_BOT_TOKEN={TOKEN}\nTELEGRAM_CHAT_ID={CHAT}\n")
    os.chmod(secrets, 0o600)
    cfg = tmp_path / "observer.toml"
    cfg.write_text(f'data_dir = "{root}"\nsecrets_file = "{secrets}"\n\n'
                   f'[alerts]\ntelegram_api_base = "{tg.base}"\nsend_timeout_s = 2\n')
    return str(cfg)


def _fill(path) -> None:
    try:
        fill(path)
    except OSError:  # tests.support.diskfull.fill: close() re-flushes a partial buffer into the full disk
        pass


def test_backup_failure_alert_arrives(tmp_path, tg):
    """The backup runs out of disk while packaging (a filled tmpfs): CRITICAL `backup` arrives, sent from
    memory although neither the event nor the outbox line can be written."""
    from tests.lifecycle.test_retention import small_day
    from tests.support.procs import run_prog

    with tmpfs(tmp_path / "data", "4m") as root:
        small_day(root, datetime(2026, 3, 19).date(), False)
        _fill(root / "ballast")
        r = run_prog("observer-backup", "--config", _life_config(tmp_path, root, tg), "--date", "20260319",
                     env=LIFE_NOW)
        assert r.returncode == 3, r.stdout + r.stderr[-2000:]
        arrived(tg, "CRITICAL · backup", "backup failed: disk full while packaging 20260319", timeout=30)


def test_retention_blocked_on_a_full_disk_alert_arrives(tmp_path, tg):
    """The disk is full and the only day on it was never backed up (no receipt): retention may delete
    nothing, and CRITICAL `retention` arrives with the reason."""
    from tests.lifecycle.test_retention import small_day
    from tests.support.procs import run_prog

    with tmpfs(tmp_path / "data", "4m") as root:
        small_day(root, datetime(2026, 3, 19).date(), False)
        _fill(root / "ballast")
        r = run_prog("observer-retention", "--config", _life_config(tmp_path, root, tg), env=LIFE_NOW)
        assert r.returncode == 1, r.stdout + r.stderr[-2000:]
        arrived(tg, "CRITICAL · retention", "retention failed: disk critically full and nothing more may be "
                 "deleted without a verified receipt", timeout=30)


def test_preflight_fail_pages_and_preflight_warn_waits_for_the_summary(tmp_path):
    """The broker's app secret missing from the secrets file before the open: preflight fails and
    CRITICAL `preflight_fail` arrives; a preflight warning is not paged (it is in the daily summary)."""
    from tests.support.progenv import Env

    tg = FakeTelegram("123456:test-token")   # the heal Env's secrets
    env = Env(tmp_path, cfg={"alerts": {"telegram_api_base": tg.base, "send_timeout_s": 2}})
    try:
        env.secrets.write_text("\n".join(x for x in env.secrets.read_text().splitlines()
                                         if not x.startswith("KIS_APP_SECRET")) + "\n")
        r = env.run("observer-preflight", "--json")
        assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]   # 2: a configuration problem
        arrived(tg, "CRITICAL · preflight_fail:20260316", "token:kis", timeout=30)
        n = len(tg.texts())
        a = Alerter(env.root, env.cfg, {"TELEGRAM_BOT_TOKEN": tg.token, "TELEGRAM_CHAT_ID": "42"},
                    program="observer-preflight", clock=env.clock)
        rec = a.alert("preflight_warn:20260316", "WARNING", "clock skew 0.4 s")
        a.close(2)
        assert rec["state"] == "suppressed" and rec["error"].startswith("not routed")
        assert len(tg.texts()) == n
    finally:
        env.close()
        tg.stop()
