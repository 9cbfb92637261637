"""Refused credentials end a collector with a clear exit and a CRITICAL alert; SIGTERM ends every wait.

Real parts: the simulator refusing the app secret (its own check of key/secret, HTTP 403 EGW00103),
observer-track-a as a subprocess, a real SIGTERM, the fake Telegram server receiving the alert.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import orjson
import pytest

from observer.core.clock import NS, ManualClock, ScaledClock, Stopped
from observer.core.ratelimit import TokenBucket
from observer.providers.base import AuthError
from observer.providers.kis.auth import KisAuth, key_hash
from observer.store.fs import SharedRecord
from tests.support.fake_telegram import FakeTelegram
from tests.support.progenv import BIN, PY, Env

pytestmark = pytest.mark.hostile

APP_KEY = "PStestappkey000001"
GOOD_SECRET = "the-right-secret-0000000001"
WRONG_SECRET = "testsecret-0000000001"  # what Env writes into secrets.env
TG_TOKEN = "123456:test-token"           # what Env writes into secrets.env


@pytest.fixture
def tg():
    f = FakeTelegram(TG_TOKEN)
    yield f
    f.stop()


def _start(env: Env, program: str = "observer-track-a") -> subprocess.Popen:
    return subprocess.Popen([PY, str(BIN / program), "--config", str(env.config)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env.env())


def test_refused_secret_ends_track_a_with_exit_3_and_a_critical_alert(tmp_path, tg):
    env = Env(tmp_path, start="08:50:00", sim_kw={"app_key": APP_KEY, "app_secret": GOOD_SECRET},
              cfg={"alerts": {"telegram_api_base": tg.base, "send_timeout_s": 2, "retry_backoff_s": 0}})
    try:
        t0 = time.monotonic()
        p = _start(env)
        try:
            out, err = p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
        took = time.monotonic() - t0
        assert p.returncode == 3, err[-3000:]
        assert took < 30, f"took {took:.1f} s: a refused secret must not wait out issuance limits"
        assert "issuance limit" not in err, "it waited for the issuance limit after a definitive refusal"
        # the simulator saw one token request, not one per symbol
        assert env.sim.auth.stats["bad_appkey"] <= 2, env.sim.auth.stats
        msgs = tg.wait_for_messages(1, timeout=20)
        text = "\n".join(m["text"] for m in msgs)
        assert "credentials_refused" in text and "'main'" in text, text
        for s in (WRONG_SECRET, GOOD_SECRET):
            assert s not in text and s not in err and s not in out
        ev = [e for e in env.events(provider="kis") if e["event"] == "collector"]
        assert ev and ev[-1]["severity"] == "CRITICAL" and "credentials refused" in ev[-1]["reason"]
        outbox = list((env.root / "system" / "alerts").glob("*.jsonl"))
        lines = [orjson.loads(x) for f in outbox for x in f.read_bytes().splitlines()]
        assert any(x["key"] == "credentials_refused" and x["severity"] == "CRITICAL" for x in lines)
    finally:
        env.close()


def test_sigterm_during_a_61_s_issuance_wait_ends_within_5_s(tmp_path):
    env = Env(tmp_path, start="08:50:00")
    try:
        # another process asked for a token a moment ago: the next request must wait out the 1/min limit
        state = env.root / "state"
        state.mkdir(parents=True, exist_ok=True)
        cache = state / f"kis_token_{key_hash(env.sim.urls()['rest'], APP_KEY)}.json"
        cache.write_bytes(orjson.dumps({"requested_ns": env.clock.now_ns()}))
        os.chmod(cache, 0o600)
        p = _start(env)
        try:
            lines: list[str] = []
            waiting = threading.Event()

            def read():
                for line in p.stderr:
                    lines.append(line)
                    if "issuance limit" in line:
                        waiting.set()

            threading.Thread(target=read, daemon=True).start()
            assert waiting.wait(60), "".join(lines)[-3000:]
            t0 = time.monotonic()
            p.send_signal(signal.SIGTERM)
            rc = p.wait(timeout=30)
            took = time.monotonic() - t0
        finally:
            if p.poll() is None:
                p.kill()
        assert took < 5.0, f"SIGTERM took {took:.2f} s"
        assert rc == 0, "".join(lines)[-3000:]
        stopped = [e for e in env.events(provider="kis") if e["event"] == "collector" and e["state"] == "stopped"]
        assert stopped and stopped[-1]["reason"] == "signal"
    finally:
        env.close()


# -- the waits themselves, in process --------------------------------------------------------------
def _stop_after(ev: threading.Event, seconds: float) -> None:
    threading.Timer(seconds, ev.set).start()


def test_rate_limiter_wait_ends_on_stop(tmp_path):
    clock = ScaledClock(time.time_ns(), 1.0)
    stop = threading.Event()
    clock.stop_on(stop)
    b = TokenBucket(SharedRecord(tmp_path / "b.bucket"), rate=1.0, clock=clock)
    b.penalize(60)  # the broker said "too fast": nobody gets a token for a minute
    _stop_after(stop, 0.3)
    t0 = time.monotonic()
    with pytest.raises(Stopped):
        b.acquire()
    assert time.monotonic() - t0 < 2


def test_issuance_wait_and_credential_lock_end_on_stop(tmp_path):
    """A process waiting on the credential lock (held by another one through its 61 s wait) stops too."""
    clock = ScaledClock(time.time_ns(), 1.0)
    stop = threading.Event()
    clock.stop_on(stop)
    auth = KisAuth(base_url="http://127.0.0.1:9", app_key=APP_KEY, app_secret=WRONG_SECRET, state_dir=tmp_path,
                   clock=clock)
    cache = Path(tmp_path, f"kis_token_{key_hash('http://127.0.0.1:9', APP_KEY)}.json")
    cache.write_bytes(orjson.dumps({"requested_ns": clock.now_ns()}))
    import fcntl

    fd = os.open(auth.token_cache.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)  # "another process" holds the lock
    try:
        _stop_after(stop, 0.3)
        t0 = time.monotonic()
        with pytest.raises(Stopped):
            auth.token()
        assert time.monotonic() - t0 < 2
    finally:
        os.close(fd)
    stop.clear()
    _stop_after(stop, 0.3)  # now the lock is free: the 61 s issuance wait itself ends on stop
    t0 = time.monotonic()
    with pytest.raises(Stopped):
        auth.token()
    assert time.monotonic() - t0 < 2


def test_manual_clock_sleep_raises_once_stopped():
    clock = ManualClock(10 * NS)
    stop = threading.Event()
    clock.stop_on(stop)
    clock.sleep(1)
    assert clock.now_ns() == 11 * NS
    stop.set()
    with pytest.raises(Stopped):
        clock.sleep(1)


def test_refusal_is_remembered_without_waiting(tmp_path):
    """After the broker refused the secret, asking again fails at once (no 61 s wait, no request)."""
    from observer.sim import run_in_thread

    clock = ScaledClock(time.time_ns(), 1.0)
    with run_in_thread(seed=1, symbols=5, active=1, app_key=APP_KEY, app_secret=GOOD_SECRET) as sim:
        auth = KisAuth(base_url=sim.urls()["rest"], app_key=APP_KEY, app_secret=WRONG_SECRET, state_dir=tmp_path,
                       clock=clock)
        with pytest.raises(AuthError, match="EGW00103"):
            auth.token()
        n = sim.auth.stats["token_requests"]
        t0 = time.monotonic()
        with pytest.raises(AuthError, match="EGW00103"):
            auth.token()
        with pytest.raises(AuthError, match="EGW00103"):
            auth.approval_key()
        assert time.monotonic() - t0 < 0.5 and sim.auth.stats["token_requests"] == n


def test_bucket_written_by_a_process_on_another_clock_does_not_block_for_days(tmp_path):
    """Two processes on different clocks share one bucket (a program on the simulator's market clock,
    a collector on the real clock): a refill time days ahead is no penalty and must not be waited out."""
    real = ManualClock(time.time_ns())
    market = ManualClock(time.time_ns() - 9 * 86400 * NS)  # nine days behind
    a = TokenBucket(SharedRecord(tmp_path / "b.bucket"), rate=5.0, clock=real)
    b = TokenBucket(SharedRecord(tmp_path / "b.bucket"), rate=5.0, clock=market)
    a.acquire()
    a.penalize(3)  # a penalty (seconds ahead) is still honoured on its own clock
    assert 2.5 < a.try_acquire() < 3.5
    assert b.acquire(timeout=10) < 1  # the other clock's time is not waited out (it was: nine days)
    assert a.acquire(timeout=10) < 10


def test_refused_secret_ends_track_b_with_exit_3_and_a_critical_alert(tmp_path, tg):
    """The streamer's refusal comes from its connection thread (the approval key) or the volume-rank call:
    either way the collector ends with exit 3 and the CRITICAL alert, instead of reconnecting all day."""
    env = Env(tmp_path, start="09:29:58", sim_kw={"app_key": APP_KEY, "app_secret": GOOD_SECRET},
              cfg={"alerts": {"telegram_api_base": tg.base, "send_timeout_s": 2, "retry_backoff_s": 0}})
    try:
        t0 = time.monotonic()
        p = _start(env, "observer-track-b")
        try:
            out, err = p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
        assert p.returncode == 3, err[-3000:]
        assert time.monotonic() - t0 < 40, "a refused secret must end the streamer, not reconnect all day"
        msgs = tg.wait_for_messages(1, timeout=20)
        text = "\n".join(m["text"] for m in msgs)
        assert "credentials_refused" in text and "track-b" in text, text
        for s in (WRONG_SECRET, GOOD_SECRET):
            assert s not in text and s not in err and s not in out
        ev = [e for e in env.events(provider="kis") if e["event"] == "collector"]
        assert ev and ev[-1]["severity"] == "CRITICAL" and "credentials refused" in ev[-1]["reason"]
    finally:
        env.close()
