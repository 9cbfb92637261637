"""The real Track B streamer under its real unit (observer-track-b@kis.service with the shared hardening),
recording from the real simulator under its unit (observer-sim.service): Type=notify READY, the STATUS
text in `systemctl status`, structured logs in the journal, and WatchdogSec killing a frozen loop."""

from __future__ import annotations

import json
import os
import signal

import pytest
from harness import SystemdNamespace, changes, run_install, snapshot_repo, wait_for

pytestmark = pytest.mark.system

SIM_DAY = "20261123"  # a Monday; the simulated clock starts 15 s before the 09:30 Track B window
SIM_DROPIN = """[Service]
ExecStart=
ExecStart=/opt/observer/venv/bin/observer-sim --seed 7 --symbols 200 --active 20 --date {day} --start 09:29:45 \
 --rest-port 18080 --ws-port 18081 --ground-truth /var/lib/observer/sim/ground-truth --log-level WARNING
# test-only: the ground-truth log (needed here for the symbol list) is held in memory by the simulator
MemoryHigh=1536M
MemoryMax=2G
"""
CONFIG = """data_dir = "/var/lib/observer"

[providers.kis]
env = "sim"
rest_url = "{rest}"
ws_url = "{ws}"
"""
# test-only: the simulator's clock, fixed symbols instead of Track A's triggers, and a short watchdog
# so a frozen loop is caught in seconds (the shipped unit says 60 s)
TRACK_B_DROPIN = """[Service]
Environment=OBSERVER_CLOCK={clock}
ExecStart=
ExecStart=/opt/observer/venv/bin/observer-track-b --provider %i --config /etc/observer/observer.toml --symbols {symbols}
WatchdogSec=6s
TimeoutAbortSec=3s
"""


def write(ns: SystemdNamespace, path: str, text: str, mode: str = "0644", owner: str = "root:root") -> None:
    ns.sh(f"mkdir -p $(dirname {path}) && cat > {path} && chmod {mode} {path} && chown {owner} {path}",
          input=text, check=True)


@pytest.fixture(scope="module")
def streaming(systemd_ns):
    ns = systemd_ns
    snapshot_repo(ns)
    r = run_install(ns, "--with-sim", "--no-preflight")
    assert r.returncode == 0, r.stderr[-4000:]
    assert changes(r)
    write(ns, "/run/systemd/system/observer-sim.service.d/50-test.conf", SIM_DROPIN.format(day=SIM_DAY))
    ns.run("systemctl", "daemon-reload", check=True)
    ns.run("systemctl", "restart", "observer-sim.service", check=True)

    invocation = ns.show("observer-sim.service", "InvocationID")["InvocationID"]

    def sim_ready():
        out = ns.run("journalctl", f"_SYSTEMD_INVOCATION_ID={invocation}", "-o", "cat", "--no-pager").stdout
        for line in reversed(out.splitlines()):
            if line.startswith("{") and '"rest"' in line:
                return json.loads(line)
        return None

    ready = wait_for(sim_ready, 60, "observer-sim to print its ready line", interval=0.3)
    universe = json.loads(ns.run("cat", "/var/lib/observer/sim/ground-truth/universe.json", check=True).stdout)
    symbols = ",".join(u["symbol"] for u in universe[:5])
    write(ns, "/etc/observer/observer.toml", CONFIG.format(rest=ready["rest"], ws=ready["ws"]), "0640", "root:observer")
    write(ns, "/etc/observer/secrets.env", "KIS_APP_KEY=sim-key\nKIS_APP_SECRET=sim-secret\n", "0600",
          "observer:observer")
    write(ns, "/run/systemd/system/observer-track-b@kis.service.d/50-test.conf",
          TRACK_B_DROPIN.format(clock=ready["clock"], symbols=symbols))
    ns.run("systemctl", "daemon-reload", check=True)
    return {"ns": ns, "sim": ready}


def test_track_b_reaches_ready_and_shows_its_status(streaming):
    ns = streaming["ns"]
    ns.run("systemctl", "start", "--no-block", "observer-track-b@kis.service", check=True)
    ns.wait_unit("observer-track-b@kis.service", 90, ActiveState="active", SubState="running")
    props = ns.show("observer-track-b@kis.service", "Type", "StatusText", "User", "NRestarts", "MemoryMax")
    assert props["Type"] == "notify"
    assert props["User"] == "observer"
    assert props["StatusText"].startswith("slots "), props
    status = ns.run("systemctl", "status", "--no-pager", "observer-track-b@kis.service").stdout
    # the text changes every second (msg/s): compare its stable head, the slot count
    assert f'Status: "{props["StatusText"].split("|")[0]}|' in status, status
    # the program's structured (JSON) logs are in the journal under its unit
    logs = ns.run("journalctl", "-u", "observer-track-b@kis", "-o", "cat", "--no-pager").stdout.splitlines()
    assert any(line.startswith("{") and json.loads(line).get("level") for line in logs if line.startswith("{")), logs
    # it writes the tree as the observer user, through the sandbox
    owners = ns.sh("find /var/lib/observer -newer /etc/observer/observer.toml -type f -printf '%u\\n' | sort -u").stdout
    assert owners.split() == ["observer"], owners


def test_a_frozen_streamer_is_killed_by_the_watchdog_and_restarted(streaming):
    ns = streaming["ns"]
    ns.wait_unit("observer-track-b@kis.service", 90, ActiveState="active", SubState="running")
    before = ns.show("observer-track-b@kis.service", "MainPID", "NRestarts")
    # the namespace's PID is not the host's: freeze the main process through the host's view
    host_pid = _host_pid(ns, int(before["MainPID"]))
    os.kill(host_pid, signal.SIGSTOP)
    wait_for(lambda: int(ns.show("observer-track-b@kis.service", "NRestarts")["NRestarts"]) > int(before["NRestarts"]),
             60, "the watchdog to kill and restart the frozen streamer", interval=0.5)
    ns.wait_unit("observer-track-b@kis.service", 90, ActiveState="active", SubState="running")
    after = ns.show("observer-track-b@kis.service", "MainPID")
    assert after["MainPID"] != before["MainPID"]
    journal = ns.run("journalctl", "-u", "observer-track-b@kis", "--no-pager").stdout
    assert "Watchdog timeout" in journal, journal[-3000:]


def _host_pid(ns: SystemdNamespace, ns_pid: int) -> int:
    """The host PID of a process whose PID inside the namespace is ns_pid."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                for line in f:
                    if line.startswith("NSpid:"):
                        pids = line.split()[1:]
                        if len(pids) >= 2 and int(pids[-1]) == ns_pid and _in_ns(int(entry), ns.pid):
                            return int(entry)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    raise LookupError(f"no host PID for namespace PID {ns_pid}")


def _in_ns(pid: int, ns_init: int) -> bool:
    return os.readlink(f"/proc/{pid}/ns/pid") == os.readlink(f"/proc/{ns_init}/ns/pid")
