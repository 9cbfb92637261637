"""Alerts against a real local HTTP fake of the Telegram Bot API: routing, dedup/throttle, the outbox
surviving a restart (another process drains what one left), secrets, a hanging server, lazy import."""

import io
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import orjson
import pytest

from observer.core import redact
from observer.core.clock import NS, ManualClock
from observer.core.config import validate_config
from observer.core.logging import setup_logging
from observer.programs.verify import verify_tree
from observer.store.store import Store
from observer.telemetry import alerts
from observer.telemetry.alerts import Alerter, daily_summary_due, send_daily_summary, summarize_day
from tests.support import wait_for
from tests.support.fake_telegram import CHAT, SECRETS, TOKEN
from tests.telemetry.conftest import DAY_START, make_cfg

REPO = Path(__file__).resolve().parents[2]


def outbox_lines(root: Path) -> list[dict]:
    out = []
    for p in sorted((root / "system" / "alerts").glob("*.jsonl")):
        out += [orjson.loads(line) for line in p.read_bytes().splitlines()]
    return out


def states_of(root: Path, alert_id: str) -> list[str]:
    return [r["state"] for r in outbox_lines(root) if r["id"] == alert_id]


def assert_tree_clean(root: Path):
    rep = verify_tree(root)
    assert rep["clean"], rep["problems"]


def test_config_defaults_match_the_schema():
    assert validate_config({})["alerts"] == alerts.alerts_config({})


def test_routing_critical_always_listed_warnings_only_info_never(tree, tg):
    a = Alerter(tree, make_cfg(tg), SECRETS, program="t")
    try:
        info = a.alert("sweep", "INFO", "sweep done")
        unlisted = a.alert("slot_churn", "WARNING", "many slot changes")
        listed = a.alert("disk:data_dir", "WARNING", "data_dir 83 % used")
        crit = a.alert("anything_at_all", "CRITICAL", "ImportError in track-b")
        err = a.alert("store_error", "ERROR", "EIO on scalp file")
        assert info["state"] == unlisted["state"] == "suppressed"
        assert info["error"].startswith("not routed") and "warning_keys" in unlisted["error"]
        assert listed["state"] == crit["state"] == err["state"] == "pending"
        tg.wait_for_messages(3)
        assert a.drain(5)["undelivered"] == 0
    finally:
        a.close()
    texts = tg.texts()
    assert len(texts) == 3
    assert any("disk:data_dir" in t and "83 %" in t and "WARNING" in t for t in texts)
    assert any("ImportError" in t and "CRITICAL" in t for t in texts)
    assert not any("sweep done" in t or "slot changes" in t for t in texts)
    assert {m["chat"]["id"] for m in tg.messages} == {int(CHAT)}
    assert_tree_clean(tree)


def test_disabled_alerts_are_recorded_not_sent(tree, tg):
    a = Alerter(tree, make_cfg(tg, enabled=False), SECRETS, program="t")
    rec = a.alert("crash_loop", "CRITICAL", "x")
    assert rec["state"] == "suppressed" and "enabled is false" in rec["error"]
    assert a.drain(3)["timed_out"] is False
    a.close()
    assert tg.requests == []


def test_dedup_throttle_then_one_summary_with_the_count(tree, tg):
    clock = ManualClock(DAY_START)
    a = Alerter(tree, make_cfg(tg, throttle_min=10), SECRETS, program="watchdog", clock=clock)
    a.tick_s = 3600   # no background housekeeping between the test's clock steps
    try:
        first = a.alert("disk", "WARNING", "data_dir 81 % used")
        tg.wait_for_messages(1)
        repeats = []
        for pct in (82, 83, 84):
            clock.advance(60)
            repeats.append(a.alert("disk", "WARNING", f"data_dir {pct} % used"))
        assert [r["state"] for r in repeats] == ["suppressed"] * 3
        assert [r["count"] for r in repeats] == [1, 2, 3]
        assert all(r["error"].startswith("throttled") for r in repeats)
        # another program sharing the outbox is throttled by the same window
        b = Alerter(tree, make_cfg(tg, throttle_min=10), SECRETS, program="preflight", clock=clock)
        clock.advance(60)
        other = b.alert("disk", "WARNING", "data_dir 85 % used")
        b.close()
        assert other["state"] == "suppressed" and other["count"] == 4
        # within the window nothing more is sent, even on drain
        assert a.drain(5).get("summaries", 0) == 0
        assert len(tg.messages) == 1
        clock.advance(7 * 60)           # 11 min after the first: the window is over
        res = a.drain(5)
        assert res["summaries"] == 1 and res["sent"] == 1, res
        msgs = tg.wait_for_messages(2)
        summary = msgs[1]["text"]
        assert "4 more alert(s) 'disk'" in summary and "(×4)" in summary and "85 %" in summary
        assert len(tg.messages) == 2
        # the summary opened a new window: the next repeat is suppressed again
        clock.advance(30)
        assert a.alert("disk", "WARNING", "data_dir 86 % used")["state"] == "suppressed"
        assert first["state"] == "pending"
    finally:
        a.close()
    assert_tree_clean(tree)


def test_escalation_goes_through_and_a_late_repeat_carries_the_count(tree, tg):
    clock = ManualClock(DAY_START)
    a = Alerter(tree, make_cfg(tg, throttle_min=10), SECRETS, program="watchdog", clock=clock)
    a.tick_s = 3600
    try:
        a.alert("disk", "WARNING", "disk 83 %: emergency retention started")
        tg.wait_for_messages(1)
        clock.advance(60)
        crit = a.alert("disk", "CRITICAL", "disk 97 %: emergency retention FAILED")   # higher severity: not throttled
        assert crit["state"] == "pending"
        tg.wait_for_messages(2)
        a.alert("cpu", "WARNING", "cpu 93 %")
        tg.wait_for_messages(3)
        for _ in range(2):
            clock.advance(60)
            assert a.alert("cpu", "WARNING", "cpu 95 %")["state"] == "suppressed"
        # the window ends; the next alert arrives before any drain summarised: it carries the count
        clock.advance(10 * 60)
        late = a.alert("cpu", "WARNING", "cpu 97 %")
        assert late["state"] == "pending" and late["count"] == 3
        assert "+2 earlier alert(s)" in late["text"]
        msgs = tg.wait_for_messages(4)
        assert "(×3)" in msgs[3]["text"]
        assert a.drain(5).get("summaries", 0) == 0   # nothing left to summarise
    finally:
        a.close()


CHILD = textwrap.dedent("""
    import json, sys, time
    from observer.telemetry.alerts import Alerter
    root, cfg, secrets, mode = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
    a = Alerter(root, cfg, secrets, program="track-b")
    rec = a.alert("crash_loop:observer-track-b@kis", "CRITICAL",
                  "ModuleNotFoundError: No module named 'wsaccel'", unit="observer-track-b@kis.service")
    print(json.dumps(rec), flush=True)
    if mode == "wait-failed":
        deadline = time.monotonic() + 15
        while (a.entry(rec["id"]) or {}).get("state") != "failed":
            assert time.monotonic() < deadline, "no failed line"
            time.sleep(0.01)
        a.close(1)
    else:
        time.sleep(60)   # killed by the test while its send hangs
""")


def _child(tree, cfg, mode):
    if mode == "hang":
        cfg = {**cfg, "alerts": {**cfg["alerts"], "send_timeout_s": 20}}   # in flight until killed
    env = {**os.environ, "PYTHONPATH": str(REPO / "lib")}
    return subprocess.Popen([sys.executable, "-c", CHILD, str(tree), json.dumps(cfg), json.dumps(SECRETS), mode],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_outbox_retry_when_telegram_is_down_then_up_across_processes(tree, tg):
    cfg = make_cfg(tg)
    tg.set_mode("down")
    p = _child(tree, cfg, "wait-failed")
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    rec = json.loads(out.splitlines()[0])
    assert states_of(tree, rec["id"]) == ["pending", "failed"]
    failed = [r for r in outbox_lines(tree) if r["state"] == "failed"][0]
    assert failed["attempts"] == 1 and failed["error"]
    events = b"".join(p.read_bytes() for p in (tree / "system" / "events").rglob("*.jsonl"))
    assert b'"alert_delivery"' in events and b'"failing"' in events

    # a drain while Telegram is still down changes nothing but the attempt count
    b = Alerter(tree, cfg, SECRETS, program="watchdog")
    r1 = b.drain(5)
    assert r1.get("failed") == 1 and r1["undelivered"] == 1
    b.close()

    tg.set_mode("up")
    c = Alerter(tree, cfg, SECRETS, program="watchdog")   # a new instance (as after a restart)
    try:
        res = c.drain(10)
        assert res["sent"] == 1 and res["undelivered"] == 0, res
        assert c.drain(5).get("sent", 0) == 0               # delivered once, never again
    finally:
        c.close()
    assert len(tg.messages) == 1 and "wsaccel" in tg.messages[0]["text"]
    assert states_of(tree, rec["id"]) == ["pending", "failed", "pending", "failed", "pending", "sent"]
    last = [r for r in outbox_lines(tree) if r["id"] == rec["id"]][-1]
    assert last["attempts"] == 3 and last["program"] == "track-b" and "error" not in last
    assert_tree_clean(tree)


def test_pending_of_a_live_sender_is_left_alone_and_taken_over_when_it_dies(tree, tg):
    cfg = make_cfg(tg)
    cfg = {**cfg, "alerts": {**cfg["alerts"], "send_timeout_s": 20}}
    tg.set_mode("hang")
    p = _child(tree, cfg, "hang")
    try:
        rec = json.loads(p.stdout.readline())
        wait_for(lambda: any("sendMessage" in path or "getMe" in path for _m, path in tg.requests), 10,
                 what="the child's request to reach the server")
        # the child's send is in flight: another program's drain must not send it too
        b = Alerter(tree, cfg, SECRETS, program="watchdog")
        assert b.drain(3).get("sent", 0) == 0
        b.close()
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    assert states_of(tree, rec["id"]) == ["pending"]
    tg.set_mode("up")
    later = ManualClock(time.time_ns() + 200 * NS)   # past the claim timeout (at least 3x the longest send: 123 s)
    c = Alerter(tree, cfg, SECRETS, program="watchdog", clock=later)
    try:
        res = c.drain(10)
    finally:
        c.close()
    assert res["sent"] == 1, res
    assert states_of(tree, rec["id"]) == ["pending", "pending", "sent"]
    assert len(tg.messages) == 1


def test_secrets_never_reach_a_message_the_outbox_a_log_or_an_event(tree, tg):
    app_secret = "PSx8kA9QzT1mB7cLwN2vAPPSECRET"
    redact.register_secret(app_secret)
    unregistered_by_name = "zz-unregistered-value-zz"
    buf = io.StringIO()
    setup_logging("alerts-test", "DEBUG", stream=buf)
    try:
        a = Alerter(tree, make_cfg(tg), SECRETS, program="preflight")
        a.alert("preflight", "CRITICAL", f"token check failed: appkey={app_secret} bot={TOKEN}",
                detail=f"GET https://broker/oauth?secret={app_secret}", app_secret=unregistered_by_name,
                headers={"authorization": f"Bearer {app_secret}"})
        tg.wait_for_messages(1)
        a.close()
        # a server that rejects the token: python-telegram-bot's InvalidToken message quotes the token
        other = type(tg)("999:other-token-entirely")
        try:
            b = Alerter(tree, make_cfg(other), SECRETS, program="preflight")
            rec = b.alert("crash_loop", "CRITICAL", "second")
            wait_for(lambda: (b.entry(rec["id"]) or {}).get("state") == "failed", 10, what="failed line")
            b.close()
        finally:
            other.stop()
    finally:
        logging.getLogger().handlers.clear()
    failed = [r for r in outbox_lines(tree) if r["state"] == "failed"]
    assert failed and "***" in failed[0]["error"], failed
    text = tg.messages[0]["text"]
    assert "token check failed" in text and "***" in text
    blobs = {
        "message": "\n".join(tg.texts()).encode(),
        "outbox": b"".join(p.read_bytes() for p in (tree / "system" / "alerts").glob("*.jsonl")),
        "events": b"".join(p.read_bytes() for p in (tree / "system" / "events").rglob("*.jsonl")),
        "log": buf.getvalue().encode(),
    }
    assert blobs["log"], "the test should have captured log lines"
    for where, blob in blobs.items():
        for secret in (app_secret, TOKEN, unregistered_by_name):
            assert secret.encode() not in blob, f"secret in the {where}"
    assert_tree_clean(tree)


def test_caller_never_waits_for_a_hanging_server(tree, tg):
    tg.set_mode("hang")
    a = Alerter(tree, make_cfg(tg, send_timeout_s=0.5, retry_backoff_s=30, queue_max=5), SECRETS, program="track-b")
    t0 = time.monotonic()
    first = a.alert("crash_loop", "CRITICAL", "first")
    took = time.monotonic() - t0
    # durable before alert() returned
    assert states_of(tree, first["id"]) == ["pending"]
    t1 = time.monotonic()
    for i in range(50):
        a.alert(f"restart:unit{i}", "CRITICAL", f"restart {i}")
    many = time.monotonic() - t1
    assert took < 0.5 and many < 3.0, (took, many)
    wait_for(lambda: (a.entry(first["id"]) or {}).get("state") == "failed", 10, what="timeout → failed")
    err = a.entry(first["id"])["error"]
    assert "timeout" in err.lower() or "timedout" in err.lower(), err
    # close() is bounded even while a request hangs
    a2 = Alerter(tree, make_cfg(tg, send_timeout_s=5), SECRETS, program="other")
    a2.alert("crash_loop:x", "CRITICAL", "in flight")
    n = len(tg.requests)
    wait_for(lambda: len(tg.requests) > n, 10, what="the request to hang")
    t2 = time.monotonic()
    a2.close(timeout_s=1)
    a.close(timeout_s=1)
    assert time.monotonic() - t2 < 3.0
    assert len(tg.messages) == 0
    # everything is still in the outbox for a later drain
    assert sum(1 for r in outbox_lines(tree) if r["state"] == "pending" and r["attempts"] == 0) == 52


def test_alert_never_raises_when_the_outbox_cannot_be_written(tree, tg):
    (tree / "system").mkdir()
    (tree / "system" / "alerts").write_text("not a directory")
    a = Alerter(tree, make_cfg(tg), SECRETS, program="t")
    rec = a.alert("crash_loop", "CRITICAL", "still delivered")
    assert rec["id"] and rec["state"] == "pending"
    tg.wait_for_messages(1)
    assert a.drain(3)["timed_out"] is False
    a.close()


def test_unconfigured_telegram_keeps_alerts_pending(tree):
    a = Alerter(tree, {}, {}, program="t")
    rec = a.alert("crash_loop", "CRITICAL", "no bot token")
    res = a.drain(3)
    a.close()
    assert rec["state"] == "pending" and res["undelivered"] == 1
    assert states_of(tree, rec["id"]) == ["pending"]


def test_expired_alerts_are_given_up(tree, tg):
    clock = ManualClock(DAY_START)
    tg.set_mode("down")
    a = Alerter(tree, make_cfg(tg, max_age_h=1), SECRETS, program="t", clock=clock)
    rec = a.alert("crash_loop", "CRITICAL", "old news")
    wait_for(lambda: (a.entry(rec["id"]) or {}).get("state") == "failed", 10, what="failed")
    clock.advance(3601)
    res = a.drain(5)
    a.close()
    assert res["expired"] == 1 and res["undelivered"] == 0
    last = outbox_lines(tree)[-1]
    assert last["state"] == "suppressed" and last["error"].startswith("expired")


def test_daily_summary_counts_and_preflight_warnings_sent_once(tree, tg):
    clock = ManualClock(DAY_START.replace(hour=9))
    cfg = make_cfg(tg, throttle_min=30)
    s = Store(tree, program="preflight", clock=clock)
    s.events().emit("preflight", "WARNING", verdict="warn", checks=[
        {"name": "clock_skew", "verdict": "warn", "reason": "1.4 s behind the broker's Date header"},
        {"name": "disk", "verdict": "ok", "reason": "41 % used"}])
    for _ in range(2):
        s.events("kis").emit("reconnect", "WARNING", cause="eof without close frame")
    s.close()
    a = Alerter(tree, cfg, SECRETS, program="watchdog", clock=clock)
    a.alert("crash_loop:observer-track-b@kis", "CRITICAL", "ImportError")
    for _ in range(3):
        a.alert("disk", "WARNING", "83 %")
    a.alert("sweep", "INFO", "sweep 1")
    a.alert("sweep", "INFO", "sweep 2")
    a.alert("slot_churn", "WARNING", "unlisted")
    tg.wait_for_messages(2)
    clock.advance(31 * 60)
    assert a.drain(5)["summaries"] == 1      # the throttle window's summary of the 2 repeats
    tg.wait_for_messages(3)
    a.close()
    clock.set(DAY_START.replace(hour=21, minute=35))
    assert daily_summary_due(cfg, clock) == DAY_START.date()
    assert daily_summary_due(cfg, ManualClock(DAY_START)) is None
    rep = send_daily_summary(tree, cfg, SECRETS, DAY_START.date(), clock=clock)
    assert rep["created"] and rep["state"] == "sent", rep
    assert rep["alerts"] == 7 and rep["by_severity"] == {"CRITICAL": 1, "WARNING": 4, "INFO": 2}
    assert rep["outcome"] == {"sent": 2, "throttled": 2, "not_routed": 3}
    text = tg.wait_for_messages(4)[3]["text"]
    assert "daily summary 2026-03-03" in text and "Alerts: 7" in text and "CRITICAL 1" in text
    assert "clock_skew" in text and "1.4 s" in text and "disk: 41" not in text
    assert "reconnect 2" in text and "WARNING disk ×3" in text
    again = send_daily_summary(tree, cfg, SECRETS, "20260303", clock=clock)
    assert not again["created"] and again["id"] == rep["id"] and again["state"] == "sent"
    assert len(tg.messages) == 4
    assert summarize_day(tree, DAY_START.date(), cfg)["alerts"] == 7   # the summary does not count itself
    assert_tree_clean(tree)


def test_importing_alerts_does_not_import_telegram(tree):
    code = textwrap.dedent(f"""
        import sys
        import observer.telemetry.alerts, observer.telemetry.metrics
        from observer.telemetry.alerts import Alerter
        a = Alerter({str(tree)!r}, {{}}, {{}}, program="t")
        a.alert("crash_loop", "CRITICAL", "x")
        a.drain(2)
        a.close()
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("telegram", "httpx", "httpcore"))
        assert not bad, bad
        print("ok")
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO / "lib")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


@pytest.mark.parametrize("mode", ["error", "ratelimit"])
def test_server_errors_are_failed_attempts(tree, tg, mode):
    tg.set_mode(mode)
    a = Alerter(tree, make_cfg(tg), SECRETS, program="t")
    rec = a.alert("crash_loop", "CRITICAL", "x")
    wait_for(lambda: (a.entry(rec["id"]) or {}).get("state") == "failed", 10, what="failed")
    tg.set_mode("up")
    a._circuit_until = 0.0   # RetryAfter opened the circuit; the test does not wait it out
    res = a.drain(5)
    a.close()
    assert res["sent"] == 1
