"""observer-preflight as the 08:30 timer runs it: the real program against the simulator, each
failure of the 2026-01-19 incident (and the other day-killers) reproduced and named precisely."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from observer.core.clock import parse_clock_spec
from observer.providers.kis.auth import KisAuth
from tests.support.diskfull import fill, tmpfs
from tests.support.progenv import BIN, PY, REPO, Env, checks, make_venv, report


def test_healthy_day_passes_with_every_check(env: Env):
    r = env.preflight()
    rep = report(r)
    c = checks(rep)
    assert r.returncode == 0, r.stdout
    assert rep["verdict"] == "ok"
    for name in ("config", "trading_day", "secrets", "disk", "disk_write", "memory", "cpu", "token:kis", "rest:kis",
                 "clock:kis", "websocket:kis", "universe", "self-test observer-track-b", "self-test observer-track-a"):
        assert c[name]["verdict"] == "ok", (name, c[name])
    assert "obtained a new one" in c["token:kis"]["reason"]
    assert "answered" in c["websocket:kis"]["reason"] and "unsubscribed" in c["websocket:kis"]["reason"]
    assert (env.root / "universe" / "20260316_kr_stocks.json").exists()
    ev = env.events("preflight")
    assert len(ev) == 1 and ev[0]["verdict"] == "ok" and ev[0]["severity"] == "INFO"
    assert {x["name"] for x in ev[0]["checks"]} == set(c)
    # a second run reuses the cached token (valid past 15:40): no new issuance
    issued = env.sim.stats()["auth"]["tokens_issued"] if "auth" in env.sim.stats() else None
    r2 = env.preflight("--only", "token,rest")
    c2 = checks(report(r2))
    assert r2.returncode == 0
    assert "none requested" in c2["token:kis"]["reason"]
    if issued is not None:
        assert env.sim.stats()["auth"]["tokens_issued"] == issued


def test_table_on_a_terminal(env: Env):
    r = env.run("observer-preflight", "--no-alert", "--only", "config,disk,memory")
    assert r.returncode == 0
    head = r.stdout.splitlines()[0]
    assert [x.strip() for x in head.split("|")] == ["check", "verdict", "reason", "fix"]
    assert "preflight 2026-03-16: OK" in r.stdout and "exit 0" in r.stdout


def _broken_copy(tmp: Path) -> Path:
    """lib/observer with the incident's import: a name config does not have."""
    dst = tmp / "broken" / "observer"
    shutil.copytree(REPO / "lib" / "observer", dst, ignore=shutil.ignore_patterns("__pycache__"))
    tb = dst / "collect" / "track_b.py"
    tb.write_text(tb.read_text().replace("from observer.core.logging import get_logger",
                                         "from observer.core.config import get_redis_connection  # noqa\n"
                                         "from observer.core.logging import get_logger", 1))
    return dst


def test_program_with_an_import_error_fails(env: Env, tmp_path):
    python = make_venv(tmp_path / "venv", broken_package=_broken_copy(tmp_path))
    env.cfg["preflight"]["python"] = str(python)
    env.write_config()
    r = env.preflight("--only", "config,self-test")
    c = checks(report(r))
    assert r.returncode == 3
    tb = c["self-test observer-track-b"]
    assert tb["verdict"] == "fail"
    # the program dies at import, as the incident's collector did: the reason names the error and where
    assert "ImportError: cannot import name 'get_redis_connection' from 'observer.core.config'" in tb["reason"]
    assert "observer/collect/track_b.py:" in tb["reason"]
    # a program that gets as far as its own self-test names the module too
    assert "observer.collect.track_b: ImportError" in c["self-test observer-verify"]["reason"]
    assert "deploy a release" in tb["fix"]
    assert env.events("preflight")[0]["verdict"] == "fail"
    assert env.events("preflight")[0]["severity"] == "CRITICAL"


def test_missing_dependency_fails(env: Env, tmp_path):
    python = make_venv(tmp_path / "venv", drop=("websocket", "websocket_client"))
    env.cfg["preflight"]["python"] = str(python)
    env.write_config()
    r = env.preflight("--only", "self-test")
    c = checks(report(r))
    assert r.returncode == 3
    tb = c["self-test observer-track-b"]
    assert tb["verdict"] == "fail"
    # the distribution to install comes first, then the import that fails for lack of it
    assert tb["reason"].startswith("missing dependency websocket-client: not installed (required by "
                                   "stock-trading-observer"), tb
    assert any("No module named 'websocket'" in f for f in tb["detail"]["failures"]), tb
    assert "install the missing package" in tb["fix"]


def _seed_token(env: Env) -> None:
    pc = env.cfg["providers"]["kis"]
    KisAuth(base_url=pc["rest_url"], app_key="PStestappkey000001", app_secret="testsecret-0000000001",
            state_dir=env.root / "state", clock=parse_clock_spec(env.clock.spec())).token()


def test_token_the_broker_rejects_fails_when_no_new_one_may_be_issued(env: Env):
    _seed_token(env)  # a cached token that looks valid until tomorrow
    env.sim.apply_fault({"kind": "token_invalidate"})
    r = env.preflight("--only", "token,rest")
    c = checks(report(r))
    assert r.returncode == 3
    t = c["token:kis"]
    assert t["verdict"] == "fail"
    assert "the broker refuses the token (EGW00121" in t["reason"]
    assert "issuance limit" in t["reason"]
    assert "KIS_APP_KEY" in t["fix"]


def test_expired_token_is_replaced_within_the_issuance_limit(tmp_path):
    e = Env(tmp_path, sim_kw={"token_issue_interval": 0.0},
            cfg={"providers": {"kis": {"token": {"min_interval_s": 0}}}})
    try:
        _seed_token(e)
        e.sim.apply_fault({"kind": "token_expire"})
        r = e.preflight("--only", "token,rest")
        c = checks(report(r))
        assert r.returncode == 1, r.stdout
        assert c["token:kis"]["verdict"] == "warn"
        assert "refuses the token (EGW00123" in c["token:kis"]["reason"] and "obtained a new one" in c["token:kis"]["reason"]
        assert c["rest:kis"]["verdict"] == "ok"
    finally:
        e.close()


def test_websocket_that_never_answers_fails(env: Env):
    env.sim.apply_fault({"kind": "ws_stall", "scope": "all", "duration_real": 120})
    t0 = time.monotonic()
    r = env.preflight("--only", "websocket")
    c = checks(report(r))
    assert r.returncode == 3
    w = c["websocket:kis"]
    assert w["verdict"] == "fail"
    assert "got no answer within 3 s" in w["reason"] and "silent" in w["reason"]
    assert time.monotonic() - t0 < 30


def test_refused_websocket_fails(env: Env):
    env.sim.apply_fault({"kind": "ws_refuse", "duration_real": 120})
    r = env.preflight("--only", "websocket")
    w = checks(report(r))["websocket:kis"]
    assert r.returncode == 3 and w["verdict"] == "fail"
    assert "connect failed" in w["reason"] or "handshake" in w["reason"]


def test_secrets_readable_by_others_fail(env: Env):
    os.chmod(env.secrets, 0o644)
    c = checks(report(env.preflight("--only", "secrets")))["secrets"]
    assert c["verdict"] == "fail"
    assert c["reason"] == f"{env.secrets} has mode 0644: group/others can read the broker keys"
    assert c["fix"] == f"chmod 600 {env.secrets}"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_secrets_owned_by_someone_else_fail(env: Env):
    nobody = pwd.getpwnam("nobody")
    os.chown(env.secrets, nobody.pw_uid, nobody.pw_gid)
    c = checks(report(env.preflight("--only", "secrets")))["secrets"]
    assert c["verdict"] == "fail"
    assert "is owned by nobody, not by the service user" in c["reason"]


def test_full_disk_fails(env: Env, tmp_path):
    with tmpfs(tmp_path / "full", "2m") as mnt:
        fill(mnt / "filler")
        (mnt / "state").mkdir(exist_ok=True)
        env.cfg["data_dir"] = str(mnt)
        env.write_config()
        r = env.preflight("--only", "disk,disk_write")
        c = checks(report(r))
        assert r.returncode == 3
        assert c["disk"]["verdict"] == "fail" and "100 % used" in c["disk"]["reason"]
        assert c["disk_write"]["verdict"] == "fail"
        assert "No space left on device" in c["disk_write"]["reason"]


@pytest.mark.parametrize("skew,verdict", [(7.0, "fail"), (2.0, "warn")])
def test_clock_skew_against_the_broker(env: Env, skew, verdict):
    env.sim.apply_fault({"kind": "clock_skew", "skew": skew, "duration_real": 120})
    r = env.preflight("--only", "clock")
    c = checks(report(r))["clock:kis"]
    assert c["verdict"] == verdict, c
    assert f"local clock {skew:.2f}"[:16] in c["reason"] or abs(c["detail"]["skew_s"] - skew) < 0.6
    assert abs(c["detail"]["skew_s"] - skew) < 0.6 and "behind the broker's Date header" in c["reason"]
    assert r.returncode == {"fail": 3, "warn": 1}[verdict]


def test_krx_holiday_is_skipped_cleanly(tmp_path):
    e = Env(tmp_path, day="20260505")  # Tuesday, Children's Day
    try:
        r = e.preflight()
        rep = report(r)
        assert r.returncode == 0
        assert rep["skipped_day"] == "holiday: Children's Day"
        assert [c["name"] for c in rep["checks"]] == ["config", "trading_day"]
        sk = e.events("trading_day_skipped")
        assert len(sk) == 1 and sk[0]["date"] == "20260505" and sk[0]["next_trading_day"] == "2026-05-06"
        assert e.events("preflight") == []
        assert e.sim.stats()["rest"]["requests"] == 0 if "rest" in e.sim.stats() else True
        assert not list((e.root / "state").glob("kis_token_*.json"))  # no token requested on a closed day
    finally:
        e.close()


@pytest.mark.parametrize("when,locked", [
    ("2026-03-16T10:00:00+09:00", True),    # Monday, session
    ("2026-03-16T07:59:00+09:00", False),
    ("2026-03-16T08:00:00+09:00", True),
    ("2026-03-16T15:59:00+09:00", True),
    ("2026-03-16T16:00:00+09:00", False),
    ("2026-03-14T10:00:00+09:00", False),   # Saturday
    ("2026-05-05T10:00:00+09:00", False),   # Children's Day
    ("2026-11-19T16:30:00+09:00", True),    # CSAT day: the close moves to 16:30, the lock to 17:00
    ("2026-11-19T17:00:00+09:00", False),
])
def test_deploy_guard(tmp_path, when, locked):
    cfg = tmp_path / "o.toml"
    cfg.write_text(f'data_dir = "{tmp_path}"\n')
    r = subprocess.run([PY, str(BIN / "observer-preflight"), "--config", str(cfg), "--deploy-guard"],
                       capture_output=True, text=True, env={**os.environ, "OBSERVER_CLOCK": when})
    assert r.returncode == (1 if locked else 0), r.stdout + r.stderr
    assert ("inside KR market hours" in r.stdout) == locked
    assert r.stdout.startswith("deploy guard: ")


def test_deploy_guard_us_hours(tmp_path):
    cfg = tmp_path / "o.toml"
    cfg.write_text(f'data_dir = "{tmp_path}"\n[preflight.deploy_guard]\nus_market = true\n')
    env = {**os.environ, "OBSERVER_CLOCK": "2026-03-16T23:00:00+09:00"}  # 10:00 EDT in New York
    r = subprocess.run([PY, str(BIN / "observer-preflight"), "--config", str(cfg), "--deploy-guard"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 1 and "inside US market hours" in r.stdout
    env["OBSERVER_CLOCK"] = "2026-03-16T18:00:00+09:00"  # 05:00 in New York
    r = subprocess.run([PY, str(BIN / "observer-preflight"), "--config", str(cfg), "--deploy-guard"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout
