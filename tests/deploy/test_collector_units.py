"""The real Track B streamer under its real unit (observer-track-b@kis.service with the shared hardening),
recording from the real simulator under its unit (observer-sim.service): Type=notify READY, the STATUS
text in `systemctl status`, structured logs in the journal, and WatchdogSec killing a frozen loop. Then the
real gap-filler under its timer's unit (Type=notify, pinging only on real progress): killed by its watchdog
while the broker's REST API hangs, and finishing normally, longer than WatchdogSec, when it answers."""

from __future__ import annotations

import json
import os
import re
import signal
import time

import pytest
import requests

from tests.support.systemd_ns import REPO, SystemdNamespace, changes, run_install, snapshot_repo, wait_for

pytestmark = pytest.mark.system

SIM_DAY = "20261123"  # a Monday; the simulated clock starts 15 s before the 09:30 Track B window
# free ports, read back from the ready line: the namespace shares the host's network with every other
# namespace booted meanwhile (the shipped unit's fixed ports would collide)
SIM_DROPIN = """[Service]
ExecStart=
ExecStart=/opt/observer/venv/bin/observer-sim --seed 7 --symbols 200 --active 20 --date {day} --start 09:29:45 \
 --rest-port 0 --ws-port 0 --control-port 0 --ground-truth /var/lib/observer/sim/ground-truth --log-level WARNING
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
# a REST reply that never completes: the client waits as long as the server stalls, as it would on a
# server that trickles its reply byte by byte (a per-read timeout never fires then)
CONFIG_PATIENT_CLIENT = CONFIG + """
[providers.kis.timeouts]
read_s = 300
"""
# test-only: the simulator's clock (the gap-filler fills "today") and a short watchdog (shipped: 10 min)
GAP_FILLER_DROPIN = """[Service]
Environment=OBSERVER_CLOCK={clock}
WatchdogSec={watchdog}s
TimeoutAbortSec=3s
"""
GAP_FILLER = "observer-gap-filler.service"
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
    ready = ns.restart_sim(120)
    universe = json.loads(ns.run("cat", "/var/lib/observer/sim/ground-truth/universe.json", check=True).stdout)
    # the five busiest: every one trades within seconds, so a short outage leaves a hole in each
    symbols = ",".join(u["symbol"] for u in sorted(universe, key=lambda u: (not u["active"], -u["rate"]))[:5])
    write(ns, "/etc/observer/observer.toml", CONFIG.format(rest=ready["rest"], ws=ready["ws"]), "0640", "root:observer")
    write(ns, "/etc/observer/secrets.env", "KIS_APP_KEY=sim-key\nKIS_APP_SECRET=sim-secret\n", "0600",
          "observer:observer")
    write(ns, "/run/systemd/system/observer-track-b@kis.service.d/50-test.conf",
          TRACK_B_DROPIN.format(clock=ready["clock"], symbols=symbols))
    ns.run("systemctl", "daemon-reload", check=True)
    return {"ns": ns, "sim": ready, "symbols": symbols.split(",")}


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


def test_a_bad_config_fails_the_streamer_at_once_without_restarts(streaming):
    """Exit 2 (bad usage or configuration, docs/exit-codes.md) is not restarted (RestartPreventExitStatus=2):
    restarting cannot fix a config; without it systemd would retry up to the start limit."""
    ns = streaming["ns"]
    unit = "observer-track-b@badconfig.service"
    write(ns, f"/run/systemd/system/{unit}.d/50-test.conf",
          "[Service]\nExecStart=\nExecStart=/opt/observer/venv/bin/observer-track-b --provider kis "
          "--config /etc/observer/missing.toml\n")
    ns.run("systemctl", "daemon-reload", check=True)
    ns.run("systemctl", "start", "--no-block", unit, check=True)
    ns.wait_unit(unit, 60, ActiveState="failed")
    props = ns.show(unit, "NRestarts", "ExecMainStatus", "Result")
    assert (props["ExecMainStatus"], props["Result"], props["NRestarts"]) == ("2", "exit-code", "0"), props


def test_the_checkout_is_visible_inside_the_namespace_at_its_own_path(systemd_ns):
    """Wherever the checkout lives (under /tmp too, which the namespace mounts afresh), it is there, read-only."""
    ns = systemd_ns
    inside = ns.run("cat", str(REPO / "pyproject.toml"), check=True).stdout
    assert inside == (REPO / "pyproject.toml").read_text()
    r = ns.run("touch", str(REPO / "written-from-the-namespace"))
    assert r.returncode != 0 and "Read-only file system" in r.stderr, r
    assert not (REPO / "written-from-the-namespace").exists()


def _fault(sim: dict, **spec) -> dict:
    r = requests.post(sim["control"] + "/fault", json=spec, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def _fault_hits(sim: dict, fault_id) -> int:
    snap = requests.get(sim["control"] + "/faults", timeout=10).json()
    for f in snap["active"]:
        if f.get("id") == fault_id:
            return int(f.get("hits", 0))
    raise AssertionError(f"fault {fault_id} is not in force: {snap}")


def _finished(ns: SystemdNamespace, unit: str, t0: float) -> bool:
    """The run started after t0 (host monotonic, as systemd's in the namespace) has ended."""
    p = ns.show(unit, "ActiveState", "ExecMainStartTimestampMonotonic")
    return p["ActiveState"] in ("inactive", "failed") and int(p["ExecMainStartTimestampMonotonic"]) / 1e6 > t0


def _journal_tail(ns: SystemdNamespace) -> list[str]:
    out = ns.run("journalctl", "-u", "observer-gap-filler", "-o", "short-monotonic", "--no-pager", "-n", "30").stdout
    return out.splitlines()


def _runs(ns: SystemdNamespace, unit: str) -> dict[str, int]:
    """Monotonic µs of the last run: start, READY (active), end."""
    p = ns.show(unit, "ExecMainStartTimestampMonotonic", "ActiveEnterTimestampMonotonic",
                "InactiveEnterTimestampMonotonic")
    return {k: int(v) for k, v in p.items() if k.endswith("Monotonic")}


@pytest.fixture(scope="module")
def holes(streaming):
    """Trades Track B never received: the simulator drops every frame of its symbols for 10 s, so each
    symbol's cumulative volume jumps there (a hole the broker's REST API can still fill). Then Track B
    stops for the day."""
    ns, sim = streaming["ns"], streaming["sim"]
    unit = "observer-track-b@kis.service"
    ns.run("systemctl", "start", "--no-block", unit, check=True)  # (running already after the tests above)
    ns.wait_unit(unit, 90, ActiveState="active", SubState="running")

    def trades() -> int:
        m = re.search(r"\btrades (\d+)", ns.show(unit, "StatusText")["StatusText"])
        return int(m.group(1)) if m else 0

    wait_for(lambda: trades() >= 20, 90, "Track B to record trades", interval=0.5)
    for sym in streaming["symbols"]:
        _fault(sim, kind="ws_drop_symbol", symbol=sym, duration_real=10)
    wait_for(lambda: not requests.get(sim["control"] + "/faults", timeout=10).json()["active"], 60,
             "the outage to end", interval=0.5)
    after = trades()
    wait_for(lambda: trades() >= after + 20, 90, "Track B to record again after the outage", interval=0.5)
    ns.run("systemctl", "stop", unit, check=True)
    return streaming


@pytest.mark.timeout(900)  # the module's install and Track B's recording come first when run alone
def test_a_gap_filler_hung_on_the_rest_api_is_killed_by_its_watchdog(holes):
    ns, sim = holes["ns"], holes["sim"]
    write(ns, "/etc/observer/observer.toml", CONFIG_PATIENT_CLIENT.format(rest=sim["rest"], ws=sim["ws"]), "0640",
          "root:observer")
    write(ns, f"/run/systemd/system/{GAP_FILLER}.d/50-test.conf",
          GAP_FILLER_DROPIN.format(clock=sim["clock"], watchdog=5))
    ns.run("systemctl", "daemon-reload", check=True)
    props = ns.show(GAP_FILLER, "Type", "NotifyAccess", "User")
    assert props == {"Type": "notify", "NotifyAccess": "main", "User": "observer"}, props
    # the broker's REST API stops answering: every quotation reply stalls for two minutes
    stall = _fault(sim, kind="rest_slow", delay=120, duration_real=600)
    try:
        t0 = time.monotonic()
        ns.run("systemctl", "start", "--no-block", GAP_FILLER, check=True)
        wait_for(lambda: _finished(ns, GAP_FILLER, t0), 120, "the gap-filler to end", interval=0.5)
        p = ns.show(GAP_FILLER, "Result", "WatchdogUSec")  # (WatchdogUSec reads "infinity" before a first start)
        assert p == {"Result": "watchdog", "WatchdogUSec": "5s"}, (p, _journal_tail(ns))
        t = _runs(ns, GAP_FILLER)
        assert t["ActiveEnterTimestampMonotonic"] > 0, "the gap-filler never sent READY"
        # killed WatchdogSec after its last sign of progress (READY), not after RuntimeMaxSec's hours
        hung = (t["InactiveEnterTimestampMonotonic"] - t["ActiveEnterTimestampMonotonic"]) / 1e6
        assert 5 <= hung < 5 + 3 + 10, hung  # WatchdogSec, TimeoutAbortSec, slack for a loaded machine
        # it was inside a REST call the simulator was stalling, not somewhere else
        assert _fault_hits(sim, stall["id"]) >= 1
        journal = ns.run("journalctl", "-u", "observer-gap-filler", "--no-pager").stdout
        assert "Watchdog timeout" in journal, journal[-3000:]
    finally:
        requests.post(sim["control"] + "/faults/clear", json={}, timeout=10)


@pytest.mark.timeout(900)
def test_a_gap_filler_making_progress_outlives_its_watchdog_and_succeeds(holes):
    ns, sim = holes["ns"], holes["sim"]
    write(ns, "/etc/observer/observer.toml", CONFIG.format(rest=sim["rest"], ws=sim["ws"]), "0640", "root:observer")
    watchdog, delay = 8, 2
    write(ns, f"/run/systemd/system/{GAP_FILLER}.d/50-test.conf",
          GAP_FILLER_DROPIN.format(clock=sim["clock"], watchdog=watchdog))
    ns.run("systemctl", "daemon-reload", check=True)
    ns.run("systemctl", "reset-failed", GAP_FILLER)
    # slow but answering: 2 s a REST call, well below WatchdogSec; the whole run takes longer than
    # WatchdogSec, and only the pings on the pages it fetches keep it alive
    slow = _fault(sim, kind="rest_slow", delay=delay, duration_real=600)
    try:
        t0 = time.monotonic()
        ns.run("systemctl", "start", "--no-block", GAP_FILLER, check=True)
        wait_for(lambda: _finished(ns, GAP_FILLER, t0), 300, "the gap-filler to finish", interval=0.5)
        p = ns.show(GAP_FILLER, "Result", "ExecMainStatus", "ActiveState")
        journal = ns.run("journalctl", "-u", "observer-gap-filler", "-o", "cat", "--no-pager").stdout
        errors = [x for x in journal.splitlines() if '"ERROR"' in x or "Traceback" in x]
        assert p == {"Result": "success", "ExecMainStatus": "0", "ActiveState": "inactive"}, (p, errors, _journal_tail(ns))
        summary = next(json.loads(x) for x in reversed(journal.splitlines()) if x.startswith('{"summary"'))["summary"]
        assert summary["recovered_trades"] > 0 and summary["failed_jobs"] == 0, summary
        t = _runs(ns, GAP_FILLER)
        ran = (t["InactiveEnterTimestampMonotonic"] - t["ActiveEnterTimestampMonotonic"]) / 1e6
        assert summary["calls"] * delay > watchdog and ran > watchdog, (summary, ran)
        assert _fault_hits(sim, slow["id"]) >= summary["calls"]
    finally:
        requests.post(sim["control"] + "/faults/clear", json={}, timeout=10)


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
