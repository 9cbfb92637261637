"""install.sh (VM mode) inside real systemd: layout, units, hardening, timers, idempotence, the
deploy guard, the restart broker and --uninstall. One namespace for the module; the tests run in
file order and the last one uninstalls."""

from __future__ import annotations

import os
import pwd
import re
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.support.systemd_ns import (
    CLOCK_MARKET,
    CLOCK_OUTSIDE,
    RELEASE_SRC,
    REPO,
    changes,
    run_install,
    snapshot_repo,
    wait_for,
)

pytestmark = pytest.mark.system

KST = ZoneInfo("Asia/Seoul")
UNIT_DIR = "/etc/systemd/system"
SERVICES = sorted(p.name for p in (REPO / "systemd").glob("*.service"))
# programs a unit runs, by unit file name (templates included)
PROGRAM_OF = {
    name: m.group(1)
    for name in SERVICES
    if (m := re.search(r"^ExecStart=/opt/observer/venv/bin/(\S+)", (REPO / "systemd" / name).read_text(), re.M))
}


def instance(unit: str) -> str:
    return unit.replace("@.", "@kis.")


def host_state() -> dict:
    try:
        user = pwd.getpwnam("observer").pw_uid
    except KeyError:
        user = None
    return {p: os.path.exists(p) for p in ("/opt/observer", "/etc/observer", "/var/lib/observer",
                                            "/etc/systemd/system/observer.target",
                                            "/etc/systemd/system/observer-.service.d")} | {"user": user}


@pytest.fixture(scope="module")
def installed(systemd_ns):
    before = host_state()
    snapshot_repo(systemd_ns)
    r = run_install(systemd_ns, "--with-sim", "--no-preflight")
    assert r.returncode == 0, r.stderr[-4000:]
    return {"ns": systemd_ns, "first": r, "host_before": before}


def test_install_sets_up_the_host_and_never_touches_the_real_one(installed):
    ns = installed["ns"]
    assert changes(installed["first"]), "a first install must report what it did"
    assert host_state() == installed["host_before"], "install.sh inside the namespace changed the host"
    ns.run("getent", "passwd", "observer", check=True)
    shell = ns.run("getent", "passwd", "observer", check=True).stdout.strip().split(":")[-1]
    assert shell == "/usr/sbin/nologin"
    modes = ns.sh("stat -c '%n %U:%G %a' /opt/observer /etc/observer /etc/observer/observer.toml "
                  "/etc/observer/secrets.env /var/lib/observer /var/lib/observer/state/unitctl", check=True).stdout
    assert modes.split("\n")[:6] == [
        "/opt/observer root:root 755",
        "/etc/observer root:observer 750",
        "/etc/observer/observer.toml root:observer 640",
        "/etc/observer/secrets.env observer:observer 600",
        "/var/lib/observer observer:observer 750",
        "/var/lib/observer/state/unitctl observer:observer 770",
    ]
    # the venv has every program the release ships, runnable
    for prog in sorted(p.name for p in (REPO / "bin").iterdir()):
        if f'"bin/{prog}"' in (REPO / "pyproject.toml").read_text():
            ns.run(f"/opt/observer/venv/bin/{prog}", "--help", check=True)
    # the venv's interpreter is the distribution's (a service cannot see /root's pyenv)
    base = ns.run("/opt/observer/venv/bin/python", "-c", "import sys; print(sys.base_prefix)", check=True).stdout
    assert base.strip() in ("/usr", "/usr/local")
    enabled = ns.run("systemctl", "is-enabled", "observer.target", "observer-unitctl.path",
                     "observer-track-b@kis.timer", "observer-sim.service").stdout.split()
    assert enabled == ["enabled"] * 4


def test_second_run_changes_nothing(installed):
    r = run_install(installed["ns"], "--with-sim", "--no-preflight")
    assert r.returncode == 0, r.stderr[-3000:]
    assert changes(r) == []
    assert r.stderr.rstrip().endswith("[install] nothing changed")


def test_every_unit_verifies_against_the_installed_tree(installed):
    ns = installed["ns"]
    units = sorted(p.name for p in (REPO / "systemd").iterdir() if p.suffix in (".service", ".timer", ".path",
                                                                                   ".target", ".slice"))
    have = set(ns.run("ls", "/opt/observer/venv/bin").stdout.split())
    pending = []
    for unit in units:
        r = ns.run("systemd-analyze", "verify", f"{UNIT_DIR}/{unit}" if "@." not in unit else instance(unit))
        out = (r.stdout + r.stderr).strip()
        prog = PROGRAM_OF.get(unit)
        if prog and prog not in have:
            # a program that is not written yet: the only complaint allowed is its missing binary
            assert re.fullmatch(rf".*Command /opt/observer/venv/bin/{prog} is not executable: No such file or directory",
                                out), out
            pending.append(unit)
            continue
        assert r.returncode == 0 and out == "", f"{unit}: {out}"
    if pending:
        print(f"units whose program is not in the release yet (verify needs it): {pending}")


@pytest.mark.parametrize("unit", [instance(u) for u in SERVICES])
def test_service_exposure_is_at_most_2(installed, unit):
    ns = installed["ns"]
    r = ns.run("systemd-analyze", "security", "--offline=true", "--threshold=20", "--no-pager", unit)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    score = float(re.search(r"Overall exposure level for \S+: (\d+\.\d)", r.stdout).group(1))
    assert score <= 2.0
    # and the shared drop-in is what hardens it
    dropins = ns.run("systemctl", "show", "-P", "DropInPaths", unit, check=True).stdout
    assert "/etc/systemd/system/observer-.service.d/10-hardening.conf" in dropins


# (timer, weekdays 0=Mon, HH:MM KST)
SCHEDULE = [
    ("observer-backup.timer", range(7), "21:00"),
    ("observer-retention.timer", range(7), "21:30"),
    ("observer-track-a.timer", range(5), "08:55"),
    ("observer-track-a-stop.timer", range(5), "16:35"),
    ("observer-track-b@kis.timer", range(5), "09:25"),
    ("observer-track-b-stop@kis.timer", range(5), "16:05"),
    ("observer-preflight.timer", range(5), "08:30"),
    ("observer-gap-filler.timer", range(5), "15:40"),
]


def next_elapse(now: datetime, days, hhmm: str) -> datetime:
    h, m = map(int, hhmm.split(":"))
    t = now.astimezone(KST).replace(hour=h, minute=m, second=0, microsecond=0)
    while t <= now or t.weekday() not in days:
        t += timedelta(days=1)
    return t


def test_timers_elapse_on_the_seoul_schedule(installed):
    ns = installed["ns"]
    listing = ns.sh("TZ=Asia/Seoul systemctl list-timers --all --no-pager 'observer*'", check=True).stdout
    active = [t for t, _, _ in SCHEDULE if ns.run("systemctl", "is-active", t).stdout.strip() == "active"]
    assert {"observer-backup.timer", "observer-track-b@kis.timer"} <= set(active)
    for timer, days, hhmm in SCHEDULE:
        if timer not in active:
            continue  # its program is not in the release yet, so install.sh did not enable it
        now = datetime.now(KST)
        got = datetime.fromtimestamp(_next_usec(ns, timer) / 1e6, KST)
        assert got == next_elapse(now, days, hhmm), f"{timer}: next {got}"
        row = next(line for line in listing.splitlines() if timer in line)
        assert f"{got:%Y-%m-%d %H:%M:%S} KST" in row, row


def _next_usec(ns, timer: str) -> int:
    out = ns.run("systemctl", "show", "-P", "NextElapseUSecRealtime", timer, env={"TZ": "UTC"}, check=True).stdout
    when = datetime.strptime(out.strip(), "%a %Y-%m-%d %H:%M:%S UTC").replace(tzinfo=UTC)
    return int(when.timestamp() * 1e6)


def test_programs_import_inside_the_sandbox(installed):
    """Every program with a unit runs --self-test under the shared hardening (MemoryDenyWriteExecute,
    the syscall filter, no capabilities ...) as the observer user: the imports Python needs all work."""
    ns = installed["ns"]
    ns.sh("""cat > /run/systemd/system/observer-selftest@.service <<'EOF'
[Service]
Type=oneshot
User=observer
Group=observer
PrivateUsers=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
LoadCredential=secrets.env:/etc/observer/secrets.env
StandardOutput=append:/run/observer-selftest/%i.log
StandardError=inherit
ExecStart=/opt/observer/venv/bin/%i --self-test
EOF
mkdir -p /run/observer-selftest; systemctl daemon-reload""", check=True)
    have = set(ns.run("ls", "/opt/observer/venv/bin").stdout.split())
    results = {}
    for prog in sorted(set(PROGRAM_OF.values()) & have):
        unit = f"observer-selftest@{prog}.service"
        r = ns.run("systemctl", "start", unit)
        log = ns.run("cat", f"/run/observer-selftest/{prog}.log").stdout
        results[prog] = (r.returncode, log.strip().splitlines()[-1:] if log else [])
    assert ns.run("systemctl", "show", "-P", "MemoryDenyWriteExecute",
                  "observer-selftest@observer-verify.service").stdout.strip() == "yes"
    ns.sh("rm /run/systemd/system/observer-selftest@.service; systemctl reset-failed 'observer-selftest@*'; "
          "systemctl daemon-reload")
    no_flag = [p for p, (rc, log) in results.items() if rc and "unrecognized arguments: --self-test" in "\n".join(log)]
    failed = {p: log[-5:] for p, (rc, log) in results.items() if rc and p not in no_flag}
    assert not failed, failed
    if no_flag:
        pytest.xfail(f"programs without --self-test yet (the spec says every program takes it): {no_flag}")


def test_restart_broker_restarts_allowed_units_only(installed):
    ns = installed["ns"]
    ns.run("systemctl", "start", "observer-sim.service", check=True)
    before = ns.wait_unit("observer-sim.service", 30, ActiveState="active", SubState="running")
    first = ns.show("observer-sim.service", "InvocationID")["InvocationID"]
    # the watchdog's side: the unprivileged observer user, through the client in lib
    ns.run("runuser", "-u", "observer", "--", "/opt/observer/venv/bin/python", "-c",
           "from observer.heal.unitctl import request; request('restart', 'observer-sim.service')", check=True)
    wait_for(lambda: ns.show("observer-sim.service", "InvocationID")["InvocationID"] != first, 30,
             "observer-sim.service to be restarted by the broker")
    assert before
    # anything else is refused, and the request is consumed either way
    for bad in ("restart:ssh.service", "stop:observer-track-a.service", "restart:observer-track-b@nope.service"):
        ns.run("runuser", "-u", "observer", "--", "touch", f"/var/lib/observer/state/unitctl/{bad}", check=True)
    wait_for(lambda: ns.run("ls", "-A", "/var/lib/observer/state/unitctl").stdout.strip() == "", 30,
             "the broker to consume the requests")
    log = ns.run("journalctl", "-t", "observer-unitctl", "-o", "cat", "--no-pager").stdout
    assert "restart observer-sim.service: queued" in log
    assert log.count("not on the allowed list") == 3, log
    assert ns.run("systemctl", "is-active", "observer-unitctl.path").stdout.strip() == "active"
    # the observer user itself has no way to do it directly
    r = ns.run("runuser", "-u", "observer", "--", "systemctl", "restart", "observer-sim.service")
    assert r.returncode != 0


def test_install_ends_with_the_preflight_table(installed):
    """install.sh runs preflight as the service user at the end and prints its table; on a fresh host
    with an empty secrets template it must say the host is not ready, and why."""
    ns = installed["ns"]
    r = run_install(ns, "--with-sim", clock="2026-11-23T17:30:00+09:00")  # a trading day, after hours
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    assert "[install] preflight:" in out
    for check in ("config", "secrets", "disk", "self-test"):
        assert check in out, f"preflight table lacks {check!r}:\n{out[-3000:]}"
    assert "preflight: FAILED" in out and "not ready" in out


SIM_DAY = "20261123"  # a Monday
SIM_DROPIN = """[Service]
ExecStart=
ExecStart=/opt/observer/venv/bin/observer-sim --seed 3 --symbols 60 --active 5 --date {day} --start 08:29:50 \
 --rest-port 18080 --ws-port 18081 --log-level WARNING
"""
SIM_CONFIG = """data_dir = "/var/lib/observer"

[providers.kis]
env = "sim"
rest_url = "{rest}"
ws_url = "{ws}"
master_url = "{rest}/common/master"

[preflight]
ws_answer_s = 5
load_warn_per_cpu = 1000.0
load_fail_per_cpu = 2000.0
"""


def _write(ns, path: str, text: str, mode: str, owner: str) -> None:
    ns.sh(f"mkdir -p $(dirname {path}) && cat > {path} && chmod {mode} {path} && chown {owner} {path}",
          input=text, check=True)


@pytest.mark.timeout(900)  # the module's install may run in this test's setup when it runs alone
def test_fresh_install_passes_preflight_without_a_symbols_file(installed):
    """The installed config (no symbols file anywhere) pointed at the simulator: preflight at 08:30 builds
    the day's universe from the stock master files the simulator serves and passes."""
    import json

    ns = installed["ns"]
    assert ns.run("test", "-e", "/etc/observer/symbols.txt").returncode != 0
    _write(ns, "/run/systemd/system/observer-sim.service.d/50-test.conf", SIM_DROPIN.format(day=SIM_DAY),
           "0644", "root:root")
    try:
        ready = ns.restart_sim(60)
        # 08:30 on a fresh VM: the collectors' timers have not fired yet (the install may have started them,
        # on the real clock)
        ns.run("systemctl", "stop", "observer-track-a.service", "observer-track-b@kis.service")
        _write(ns, "/etc/observer/observer.toml", SIM_CONFIG.format(rest=ready["rest"], ws=ready["ws"]), "0640",
               "root:observer")
        _write(ns, "/etc/observer/secrets.env", "KIS_APP_KEY=sim-key\nKIS_APP_SECRET=sim-secret\n", "0600",
               "observer:observer")
        t0 = time.monotonic()
        r = ns.run("timeout", "400", "runuser", "-u", "observer", "--", "/opt/observer/venv/bin/observer-preflight",
                   "--config", "/etc/observer/observer.toml", "--json", "--no-alert",
                   env={"OBSERVER_CLOCK": ready["clock"]}, timeout=420)
        print(f"preflight took {time.monotonic() - t0:.1f} s")
        assert r.stdout.strip(), "\n".join(x[:300] for x in r.stderr.splitlines()[-25:])
        rep = json.loads(r.stdout)
        verdicts = {c["name"]: (c["verdict"], c["reason"]) for c in rep["checks"]}
        assert r.returncode in (0, 1) and rep["verdict"] in ("ok", "warn"), verdicts
        assert verdicts["universe"][0] == "ok" and "created now" in verdicts["universe"][1], verdicts["universe"]
        uni = json.loads(ns.run("cat", f"/var/lib/observer/universe/{SIM_DAY}_kr_stocks.json", check=True).stdout)
        assert uni["source"]["kind"] == "listing_files" and uni["symbols"], uni["source"]
        kept = ns.sh(f"stat -c '%n %U %a' /var/lib/observer/universe/{SIM_DAY}/*").stdout.split("\n")
        assert sorted(x.split()[0].rsplit("/", 1)[1] for x in kept if x) == ["kosdaq_code.mst.zip", "kospi_code.mst.zip"]
        assert all(x.split()[1:] == ["observer", "640"] for x in kept if x), kept
    finally:
        ns.run("rm", "-f", "/run/systemd/system/observer-sim.service.d/50-test.conf")
        ns.run("systemctl", "daemon-reload")
        ns.run("systemctl", "restart", "observer-sim.service")


def test_deploy_guard_refuses_an_upgrade_in_market_hours(installed):
    ns = installed["ns"]
    # --deploy-guard alone: the verdict for a clock inside and outside market hours
    assert run_install(ns, "--deploy-guard", clock=CLOCK_MARKET).returncode == 1
    assert run_install(ns, "--deploy-guard", clock=CLOCK_OUTSIDE).returncode == 0
    # a new release (a changed unit file; the repo is edited only inside the namespace's overlay)
    ns.sh(f"echo '# upgraded' >> {RELEASE_SRC}/systemd/observer-backup.timer", check=True)
    r = run_install(ns, "--with-sim", "--no-preflight", clock=CLOCK_MARKET)
    assert r.returncode == 1, r.stderr
    assert "refusing an upgrade during market hours" in r.stderr
    assert changes(r) == []
    assert "# upgraded" not in ns.run("cat", f"{UNIT_DIR}/observer-backup.timer").stdout
    # after hours it goes through, and the collectors' restart rule applies
    r = run_install(ns, "--with-sim", "--no-preflight", clock="2026-11-23T17:30:00+09:00")
    assert r.returncode == 0, r.stderr
    assert "[install] changed: unit observer-backup.timer" in changes(r)
    assert "# upgraded" in ns.run("cat", f"{UNIT_DIR}/observer-backup.timer").stdout
    # --force overrides the guard
    ns.sh(f"echo '# again' >> {RELEASE_SRC}/systemd/observer-backup.timer", check=True)
    r = run_install(ns, "--with-sim", "--no-preflight", "--force", clock=CLOCK_MARKET)
    assert r.returncode == 0 and "--force: going ahead" in r.stderr, r.stderr


def test_uninstall_removes_code_and_units_and_keeps_data_and_config(installed):
    ns = installed["ns"]
    ns.run("runuser", "-u", "observer", "--", "sh", "-c", "echo kept > /var/lib/observer/state/marker", check=True)
    r = run_install(ns, "--uninstall", clock=CLOCK_MARKET)
    assert r.returncode == 1 and "refusing an uninstall" in r.stderr
    r = run_install(ns, "--uninstall")
    assert r.returncode == 0, r.stderr
    left = ns.sh("ls /etc/systemd/system | grep -c '^observer' ; "
                 "find /etc/systemd/system -name 'observer*' | wc -l", check=True).stdout.split()
    assert left == ["0", "0"], ns.sh("find /etc/systemd/system -name 'observer*'").stdout
    assert ns.run("test", "-e", "/opt/observer").returncode == 1
    loaded = ns.run("systemctl", "list-units", "--all", "--plain", "--no-legend", "observer*").stdout.strip()
    assert loaded == ""
    assert ns.run("cat", "/var/lib/observer/state/marker").stdout == "kept\n"
    ns.run("test", "-f", "/etc/observer/observer.toml", check=True)
    ns.run("test", "-f", "/etc/observer/secrets.env", check=True)
    ns.run("getent", "passwd", "observer", check=True)
    again = run_install(ns, "--uninstall")
    assert again.returncode == 0 and changes(again) == []
