"""The watchdog against real systemd (design §6, tests/support/systemd_ns.py): the repository's own units
(observer-track-b@.service with its Restart=/StartLimit/MemoryMax/WatchdogSec, the restart broker
observer-unitctl.path + .service) with a drop-in that runs the repo's code; the real observer-track-b
streaming from the simulator; the real observer-watchdog inside the namespace.

- a streamer whose loop is frozen (SIGSTOP) is restarted through the restart broker;
- a unit crash-looping on an ImportError (the incident) is not restarted and is reported with its
  error line, as an anomaly day;
- a unit killed by the OOM killer (the incident's exit 137) is reported as such.
"""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from tests.support import arrived, systemd_ns
from tests.support.fake_telegram import FakeTelegram
from tests.support.progenv import REPO, Env, toml_dump

pytestmark = pytest.mark.system
PY = str(REPO / ".venv" / "bin" / "python")
UNIT = "observer-track-b@kis.service"
DATA = "/var/lib/observer"
FAULTS = "/run/observer-test-faults"  # trigger files of observer.sim.testfaults: outside the data tree


@pytest.fixture
def tg():
    """The fake Telegram server: the namespace shares the host's network, so the watchdog inside reaches it."""
    f = FakeTelegram("123456:test-token")   # Env's secrets
    yield f
    f.stop()


def alerting(env: Env, tg: FakeTelegram) -> Env:
    env.cfg["alerts"] = {"telegram_api_base": tg.base, "send_timeout_s": 2}
    return env


@pytest.fixture
def ns():
    problem = systemd_ns.unshare_problem()
    if problem:
        pytest.skip(problem)
    # basic.target: our units are started by hand; multi-user.target would also start whatever the
    # host has installed (a host PostgreSQL never finishes starting in the namespace)
    boot = systemd_ns.BOOT_SH
    systemd_ns.BOOT_SH = boot.replace("--unit=multi-user.target", "--unit=basic.target")
    try:
        n = systemd_ns.SystemdNamespace.boot()
    finally:
        systemd_ns.BOOT_SH = boot
    yield n
    n.close()


def write(ns, path: str, text: str, mode: str = "0644") -> None:
    ns.run("bash", "-c", f'mkdir -p "$(dirname {path})" && cat > {path} && chmod {mode} {path}', input=text,
           check=True)


def install(ns, env: Env, symbols: list[str], extra_service: str = "") -> None:
    """The repo's units + a drop-in that runs this checkout; the restart broker as shipped."""
    cfg = dict(env.cfg)
    cfg["data_dir"] = DATA
    cfg["secrets_file"] = "/etc/observer/secrets.env"
    # disk_alert_pct 100: the host's own disk level is not what these tests are about
    cfg["watchdog"] = {"track_a": False, "providers": ["kis"], "heartbeat_stale_s": 3, "start_grace_s": 1,
                       "disk_alert_pct": 100,
                       "no_data_s": 120, "crash_loop_restarts": 3, "crash_loop_minutes": 15}
    write(ns, "/etc/observer/observer.toml", toml_dump(cfg))
    write(ns, "/etc/observer/secrets.env", env.secrets.read_text(), "0600")
    ns.sh("groupadd -f observer && mkdir -p /var/lib/observer/state/unitctl && "
          f"cp {REPO}/systemd/observer-track-b@.service {REPO}/systemd/observer-track-b@.timer "
          f"{REPO}/systemd/observer-unitctl.path {REPO}/systemd/observer-unitctl.service "
          f"{REPO}/systemd/observer.target /etc/systemd/system/", check=True)
    write(ns, "/etc/systemd/system/observer-unitctl.service.d/test.conf",
          f"[Service]\nExecStart=\nExecStart={REPO}/lib/observer/deploy/unitctl.sh /var/lib/observer/state/unitctl\n")
    write(ns, "/etc/systemd/system/observer-track-b@.service.d/test.conf",
          "[Service]\nUser=\nGroup=\nExecStart=\n"
          f"ExecStart={PY} {REPO}/bin/observer-track-b --provider %i --symbols {','.join(symbols)} "
          "--config /etc/observer/observer.toml\n"
          f"Environment=OBSERVER_CLOCK={env.clock.spec()}\n{extra_service}")
    ns.run("systemctl", "daemon-reload", check=True)
    ns.run("systemctl", "enable", "observer-track-b@kis.timer", check=True)  # the broker allows enabled providers only
    ns.run("systemctl", "start", "observer-unitctl.path", check=True)


def watchdog(ns, env: Env, *args: str):
    return ns.run(PY, f"{REPO}/bin/observer-watchdog", "--config", "/etc/observer/observer.toml", "--once", *args,
                  env={"OBSERVER_CLOCK": env.clock.spec()}, timeout=120)


def tree(ns) -> Path:
    return ns.state_dir / "upper" / DATA.lstrip("/")


def events(ns, provider: str, event: str) -> list[dict]:
    p = tree(ns) / "system" / "events" / provider / "20260316.jsonl"
    if not p.exists():
        return []
    return [r for r in (orjson.loads(x) for x in p.read_bytes().splitlines() if x.strip()) if r["event"] == event]


def heartbeat(ns) -> dict | None:
    try:
        return orjson.loads((tree(ns) / "state" / "heartbeat" / "track-b@kis.json").read_bytes())
    except (OSError, ValueError):
        return None


def test_frozen_streamer_is_restarted_through_the_broker(ns, tmp_path, tg):
    env = alerting(Env(tmp_path, start="09:40:00"), tg)
    try:
        active = [u["symbol"] for u in env.universe if u["active"]][:3]
        quiet = next(u["symbol"] for u in env.universe if not u["active"])  # never trades: a quiet symbol
        install(ns, env, active + [quiet])
        ns.run("systemctl", "start", UNIT, check=True)  # Type=notify: returns once READY
        systemd_ns.wait_for(lambda: (heartbeat(ns) or {}).get("phase") == "recording"
                         and (heartbeat(ns) or {}).get("trades", 0) > 0, 60, "track-b to record trades")
        # healthy, one symbol silent all along: not a dead collector
        r = watchdog(ns, env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "restart" not in r.stdout
        pid = ns.show(UNIT, "MainPID")["MainPID"]
        ns.run("kill", "-STOP", pid, check=True)
        systemd_ns.wait_for(lambda: time.time_ns() - heartbeat(ns)["wall_ns"] > 3.5e9, 30, "the heartbeat to go stale")
        r = watchdog(ns, env)
        assert r.returncode == 1, r.stdout + r.stderr
        assert f"restart {UNIT}: heartbeat" in r.stdout and "the main loop is stuck" in r.stdout
        arrived(tg, f"ERROR · restart:{UNIT}", f"restarted {UNIT}: heartbeat", "the main loop is stuck")
        # the broker carries the request out: a new main process, running
        systemd_ns.wait_for(lambda: (lambda s: s["ActiveState"] == "active" and s["MainPID"] not in ("0", pid))(
            ns.show(UNIT, "ActiveState", "MainPID")), 60, "systemd to restart the unit")
        ev = events(ns, "kis", "restart")
        assert len(ev) == 1
        assert ev[0]["unit"] == UNIT and ev[0]["cause"] == "heartbeat_stale" and ev[0]["mechanism"] == "observer-unitctl"
        assert ev[0]["pid"] == int(pid)
        broker = ns.run("journalctl", "-u", "observer-unitctl.service", "--no-pager", "-o", "cat").stdout
        assert f"restart {UNIT}: queued" in broker
        assert not list((tree(ns) / "state" / "unitctl").glob("*"))  # the request was consumed
        systemd_ns.wait_for(lambda: str((heartbeat(ns) or {}).get("pid")) == ns.show(UNIT, "MainPID")["MainPID"]
                         and heartbeat(ns).get("phase") == "recording", 60, "the new process to record")
    finally:
        env.close()


def _broken_overlay(ns) -> None:
    ns.sh("mkdir -p /opt/broken && cp -r /work/main/lib/observer /opt/broken/ && "
          "sed -i '0,/^from observer.core.logging import get_logger/s//"
          "from observer.core.config import get_redis_connection\\nfrom observer.core.logging import get_logger/' "
          "/opt/broken/observer/collect/track_b.py", check=True)


def test_crash_loop_on_an_import_error_is_stopped_and_reported(ns, tmp_path, tg):
    env = alerting(Env(tmp_path, start="09:40:00"), tg)
    try:
        _broken_overlay(ns)
        install(ns, env, ["005930"], "Environment=PYTHONPATH=/opt/broken\nRestartSec=100ms\n")
        ns.run("systemctl", "start", "--no-block", UNIT, check=True)
        ns.wait_unit(UNIT, 90, ActiveState="failed")  # not auto-restart any more: the start limit stopped it
        r = watchdog(ns, env)
        assert r.returncode == 1
        assert f"crash_loop {UNIT}: {UNIT} is in a crash loop" in r.stdout, r.stdout + r.stderr
        assert "systemd's start limit was hit" in r.stdout
        assert "Error: ImportError: cannot import name 'get_redis_connection' from 'observer.core.config'" in r.stdout
        assert "restart " + UNIT not in r.stdout
        arrived(tg, f"CRITICAL · crash_loop:{UNIT}", "is in a crash loop",
                "ImportError: cannot import name 'get_redis_connection'")
        cl = events(ns, "kis", "crash_loop")
        assert len(cl) == 1 and cl[0]["anomaly_day"] is True and cl[0]["start_limit_hit"] is True
        assert cl[0]["severity"] == "CRITICAL" and cl[0]["failures"] >= 3
        assert cl[0]["error"].startswith("ImportError: cannot import name 'get_redis_connection'")
        fails = events(ns, "kis", "unit_failure")
        assert len(fails) >= 3 and {f["result"] for f in fails} == {"exit-code"}
        assert events(ns, "kis", "restart") == []
        assert not list((tree(ns) / "state" / "unitctl").glob("*"))
        # the next pass does not report it again, nor restart it
        r = watchdog(ns, env)
        assert "crash_loop" not in r.stdout and "restart" not in r.stdout
        assert len(events(ns, "kis", "crash_loop")) == 1
        assert ns.show(UNIT, "ActiveState")["ActiveState"] == "failed"
    finally:
        env.close()


def test_oom_kill_is_detected_and_reported(ns, tmp_path, tg):
    env = alerting(Env(tmp_path, start="09:40:00"), tg)
    try:
        install(ns, env, ["005930"], "MemoryMax=16M\nMemorySwapMax=0\nRestartSec=100ms\n")
        ns.run("systemctl", "start", "--no-block", UNIT, check=True)
        ns.wait_unit(UNIT, 90, ActiveState="failed")  # not auto-restart any more: the start limit stopped it
        r = watchdog(ns, env)
        assert r.returncode == 1
        assert f"unit_failure {UNIT}: {UNIT} killed by the OOM killer (memory limit) (MemoryMax=" in r.stdout, \
            r.stdout + r.stderr
        assert "crash loop" in r.stdout and "killed by the OOM killer (memory limit) ×" in r.stdout
        fails = events(ns, "kis", "unit_failure")
        assert fails and all(f["oom"] for f in fails), [(f["result"], f["oom"], f["error"]) for f in fails]
        assert events(ns, "kis", "crash_loop")[0]["result"] == "oom-kill"
        arrived(tg, f"ERROR · oom:{UNIT}", "killed by the OOM killer (memory limit)")
    finally:
        env.close()


def test_streamer_past_memory_max_is_killed_and_restarted(ns, tmp_path):
    """A leak (test-only fault) pushes the real streamer past MemoryMax: the kernel kills it, systemd's
    Restart= brings it back, and the new process records again."""
    env = Env(tmp_path, start="09:40:00")
    try:
        active = [u["symbol"] for u in env.universe if u["active"]][:3]
        install(ns, env, active, f"Environment=OBSERVER_TEST_FAULTS={FAULTS}\nMemoryHigh=infinity\nMemoryMax=200M\n"
                                 "MemorySwapMax=0\nRestartSec=200ms\n")
        ns.run("systemctl", "start", UNIT, check=True)
        systemd_ns.wait_for(lambda: (heartbeat(ns) or {}).get("trades", 0) > 0, 60, "track-b to record trades")
        pid = ns.show(UNIT, "MainPID")["MainPID"]
        write(ns, f"{FAULTS}/leak_mb_per_s", "40\n")
        systemd_ns.wait_for(lambda: (lambda s: s["ActiveState"] == "active" and s["MainPID"] not in ("0", pid)
                                  and int(s["NRestarts"]) >= 1)(ns.show(UNIT, "ActiveState", "MainPID", "NRestarts")),
                         90, "the OOM-killed streamer to be restarted")
        new_pid = ns.show(UNIT, "MainPID")["MainPID"]
        systemd_ns.wait_for(lambda: str((heartbeat(ns) or {}).get("pid")) == new_pid
                         and (heartbeat(ns) or {}).get("trades", 0) > 0, 60, "the restarted streamer to record")
        log = ns.run("journalctl", "-u", UNIT, "--no-pager", "-o", "cat").stdout
        assert "test fault: leaking memory" in log
        assert "memory" in log.lower() and ("oom" in log.lower() or "SIGKILL" in log or "status=9" in log), log[-2000:]
    finally:
        env.close()
