"""The watchdog's decisions in-process, without a subprocess or systemd: which collectors it watches (and
that they are the repository's units), how an exit is judged an OOM kill, a crash loop (the unit's own
failures, systemd's start limit, the watchdog's own restarts), and why a collector inside its window is
restarted (not running, stale heartbeat, dead feed) or left alone during its start grace. The journal
entries are shaped as `journalctl -o json` prints systemd 252's. The same rules against real systemd:
test_watchdog_system.py; against the real programs: test_watchdog.py."""

from __future__ import annotations

import configparser
import time
from datetime import datetime
from pathlib import Path

import pytest

from observer.core.clock import KST, ManualClock
from observer.core.config import validate_config
from observer.core.settings import TradingWindow
from observer.heal.watchdog import (
    Collector,
    Watchdog,
    collectors_from_config,
    crash_loop,
    error_text,
    failures,
    in_start_grace,
    is_oom,
    restart_cause,
    restarts_exhausted,
)
from observer.markets import calendar_from_config
from observer.providers import base as provider_base

REPO = Path(__file__).resolve().parents[2]
UNIT = "observer-track-b@kis.service"
MIB512 = str(512 * 2**20)   # how `systemctl show -p MemoryMax` prints MemoryMax=512M


def cfg(**over) -> dict:
    return validate_config({"data_dir": "/nonexistent/observer", **over})


# -- journal entries as journalctl -o json prints them -----------------------------------------------
def _systemd(us: int, message: str, **fields) -> dict:
    return {"__REALTIME_TIMESTAMP": str(us), "_PID": "1", "SYSLOG_IDENTIFIER": "systemd", "UNIT": UNIT,
            "MESSAGE": message, **fields}


def exited(us: int, code: str, status: str) -> dict:
    return _systemd(us, f"{UNIT}: Main process exited, code={code}, status={status}")


def failed(us: int, result: str) -> dict:
    return _systemd(us + 1, f"{UNIT}: Failed with result '{result}'.",
                    MESSAGE_ID="d9b373ed55a64feb8242e02dbe79a49c", UNIT_RESULT=result)


def own(us: int, message: str) -> dict:
    """A line of the unit's own output (the program's JSON log on stderr)."""
    return {"__REALTIME_TIMESTAMP": str(us), "_PID": "4242", "_SYSTEMD_UNIT": UNIT,
            "SYSLOG_IDENTIFIER": "observer-track-b", "MESSAGE": message}


def oom_killed(us: int) -> list[dict]:
    return [exited(us, "killed", "9/KILL"), failed(us, "signal")]


def crashed(us: int) -> list[dict]:
    return [own(us - 10, '{"level": "ERROR", "msg": "track-b failed", '
                         '"exc": "ModuleNotFoundError: No module named \'websocket\'"}'),
            exited(us, "exited", "1/FAILURE"), failed(us, "exit-code")]


def us_ago(s: float) -> int:
    return int((time.time() - s) * 1e6)


# -- which collectors ----------------------------------------------------------------------------
def test_by_default_it_watches_track_a_and_track_b_of_kis_in_their_windows():
    cs = collectors_from_config(cfg())
    assert [(c.name, c.unit, c.provider, (c.window.start, c.window.end), c.partition, c.no_data_s) for c in cs] == [
        ("track-a", "observer-track-a.service", "kis", ("09:00", "15:30"), "swing", 1500.0),
        ("track-b@kis", "observer-track-b@kis.service", "kis", ("09:30", "15:00"), "scalp", 300.0)]


def test_one_track_b_per_provider_track_a_optional_windows_and_limits_from_the_config(monkeypatch):
    # a second provider registered for this test only (the watchdog asks each provider for its market)
    monkeypatch.setitem(provider_base._REGISTRY, "second", provider_base.provider_class("kis"))
    cs = collectors_from_config(cfg(watchdog={"track_a": False, "providers": ["kis", "second"], "no_data_s": 120},
                                    windows={"track_b": {"start": "09:05", "end": "14:50"}}))
    assert [(c.name, c.unit, c.provider, (c.window.start, c.window.end), c.no_data_s) for c in cs] == [
        ("track-b@kis", "observer-track-b@kis.service", "kis", ("09:05", "14:50"), 120.0),
        ("track-b@second", "observer-track-b@second.service", "second", ("09:05", "14:50"), 120.0)]
    ta = collectors_from_config(cfg(track_a={"provider": "second"}, watchdog={"track_a_no_data_s": 900}))[0]
    assert (ta.provider, ta.no_data_s) == ("second", 900.0)


def _unit_file(unit: str) -> Path:
    name, _, rest = unit.partition("@")
    return REPO / "systemd" / (f"{name}@.service" if rest else unit)


def test_every_watched_unit_is_a_unit_of_the_repository_started_before_its_window():
    """A unit name the install does not create could never be restarted; a timer starting a collector
    after its window opens would be judged dead every morning."""
    for c in collectors_from_config(cfg()):
        service = _unit_file(c.unit)
        assert service.is_file(), f"{c.unit}: no {service.relative_to(REPO)}"
        timer = configparser.ConfigParser(strict=False, interpolation=None)
        timer.read(service.with_suffix(".timer"))
        on = timer["Timer"]["OnCalendar"]         # Mon..Fri *-*-* 08:55:00 Asia/Seoul
        assert on.split()[2][:5] < c.window.start, f"{c.unit}: started at {on}, window {c.window}"


# -- OOM -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("result, status, memory_max, oom", [
    ("oom-kill", "", MIB512, True),                  # systemd saw the cgroup's OOM event
    ("oom-kill", "", "infinity", True),
    ("signal", "killed 9/KILL", MIB512, True),       # a nested cgroup: the kernel's kill, exit 137 under a limit
    ("signal", "killed 9/KILL", "infinity", False),  # SIGKILL without a limit: someone killed it
    ("signal", "killed 9/KILL", "", False),
    ("signal", "killed 9/KILL", None, False),
    ("signal", "killed 15/TERM", MIB512, False),
    ("exit-code", "exited 137", MIB512, False),      # the program exited 137 itself
    ("watchdog", "killed 6/ABRT", MIB512, False),
])
def test_is_oom(result, status, memory_max, oom):
    assert is_oom({"us": 1, "result": result, "status": status}, memory_max) is oom


def test_a_kernel_oom_kill_read_from_the_journal_is_an_oom_under_a_limit_only():
    now = us_ago(0)
    (f,) = failures(oom_killed(now))
    assert f == {"us": now + 1, "result": "signal", "status": "killed 9/KILL"}
    assert is_oom(f, MIB512) and not is_oom(f, "infinity")


# -- the journal ---------------------------------------------------------------------------------
def test_failures_are_systemds_records_only_with_the_exit_before_them():
    t = us_ago(60)
    entries = crashed(t) + oom_killed(t + 10_000_000) + [
        own(t + 20_000_000, "Failed with result 'exit-code'")]   # the program's own text is not systemd's
    assert failures(entries) == [{"us": t + 1, "result": "exit-code", "status": "exited 1/FAILURE"},
                                 {"us": t + 10_000_001, "result": "signal", "status": "killed 9/KILL"}]


def test_the_start_limit_as_systemd_252_logs_it_is_one_start_limit_hit():
    t = us_ago(30)
    entries = crashed(t) + [_systemd(t + 2_000_000, f"{UNIT}: Start request repeated too quickly."),
                            failed(t + 2_000_000, "exit-code")]   # 252 re-logs the last run's result
    assert [f["result"] for f in failures(entries)] == ["exit-code", "start-limit-hit"]


def test_the_error_line_is_the_programs_exception_not_systemds_lines():
    line, tail = error_text(crashed(us_ago(5)))
    assert line == "ModuleNotFoundError: No module named 'websocket'"
    assert tail == ["track-b failed", line]


# -- crash loops ---------------------------------------------------------------------------------
K, M_S = 3, 15 * 60


def test_k_failures_inside_m_minutes_are_a_crash_loop():
    entries = [e for s in (600, 300, 30) for e in crashed(us_ago(s))]
    looping, real, limit = crash_loop(failures(entries), entries, {"ActiveState": "activating"}, time.time(), K, M_S)
    assert looping and len(real) == 3 and not limit


def test_a_failure_older_than_m_minutes_does_not_count():
    entries = [e for s in (M_S + 60, 300, 30) for e in crashed(us_ago(s))]
    looping, real, limit = crash_loop(failures(entries), entries, {"ActiveState": "activating"}, time.time(), K, M_S)
    assert not looping and len(real) == 2 and not limit


def test_the_start_limit_is_a_crash_loop_whatever_the_count():
    entries = crashed(us_ago(30))
    assert crash_loop(failures(entries), entries, {"Result": "start-limit-hit"}, time.time(), K, M_S)[::2] == (True, True)
    # systemd 252 keeps the last run's Result: the "repeated too quickly" line of a failed unit says it
    limited = entries + [_systemd(us_ago(29), f"{UNIT}: Start request repeated too quickly.")]
    show = {"ActiveState": "failed", "Result": "exit-code"}
    looping, real, limit = crash_loop(failures(limited), limited, show, time.time(), K, M_S)
    assert looping and limit and [f["result"] for f in real] == ["exit-code"]   # the limit is not a failure


def test_the_programs_own_repeated_too_quickly_text_is_not_the_start_limit():
    entries = crashed(us_ago(30)) + [own(us_ago(29), "Start request repeated too quickly.")]
    show = {"ActiveState": "failed", "Result": "exit-code"}
    assert crash_loop(failures(entries), entries, show, time.time(), K, M_S) == (False, failures(entries), False)


def test_the_watchdogs_own_restarts_give_up_after_k_in_m_minutes():
    now = 1_800_000_000.0
    assert restarts_exhausted([now - 800, now - 400, now - 10], now, K, M_S) == (True, [now - 800, now - 400, now - 10])
    assert restarts_exhausted([now - M_S, now - 400, now - 10], now, K, M_S) == (False, [now - 400, now - 10])
    assert restarts_exhausted([], now, K, M_S) == (False, [])


# -- restart causes ------------------------------------------------------------------------------
TB = Collector("track-b@kis", UNIT, "kis", TradingWindow("09:30", "15:00"), "scalp", "krx", 300.0)
HB = {"pid": 4242, "phase": "stream"}


@pytest.mark.parametrize("show, hb_age, data_age, cause", [
    ({"ActiveState": "failed", "SubState": "failed"}, 1.0, 0.0, "not_running"),   # first, whatever the rest
    ({"ActiveState": "inactive", "SubState": "dead"}, None, 999.0, "not_running"),
    ({"ActiveState": "activating", "SubState": "auto-restart"}, 1.0, 0.0, None),   # systemd is restarting it
    ({"ActiveState": "reloading"}, 1.0, 0.0, None),
    ({}, None, 0.0, "heartbeat_stale"),                                            # outside systemd: no unit state
    ({"ActiveState": "active"}, None, 0.0, "heartbeat_stale"),
    ({"ActiveState": "active"}, 90.5, 999.0, "heartbeat_stale"),                  # before the feed
    ({"ActiveState": "active"}, 90.0, 0.0, None),                                 # exactly stale_s: not yet
    ({"ActiveState": "active"}, 1.0, 300.5, "no_data"),
    ({"ActiveState": "active"}, 1.0, 300.0, None),
    ({}, 1.0, 0.0, None),
])
def test_restart_cause(show, hb_age, data_age, cause):
    got = restart_cause(TB, show, HB, hb_age, 90.0, data_age, None)
    assert (got and got[0]) == cause


def test_restart_reasons_name_what_was_seen():
    assert restart_cause(TB, {"ActiveState": "failed", "SubState": "failed"}, HB, 1.0, 90.0, 0.0, None)[1] == (
        f"{UNIT} is failed/failed inside its window (09:30-15:00)")
    assert restart_cause(TB, {}, None, None, 90.0, 0.0, None)[1] == "no heartbeat from track-b@kis"
    assert restart_cause(TB, {}, HB, 120.4, 90.0, 0.0, None)[1] == (
        "heartbeat 120 s old (> 90 s): the main loop is stuck (pid 4242, phase stream)")
    reason = restart_cause(TB, {}, HB, 2.0, 90.0, 400.0, "scalp/kis/krx/20260316/005930.jsonl")[1]
    assert reason.startswith("no new scalp record for 400 market s (> 300 s) while the market is open; "
                             "newest file scalp/kis/krx/20260316/005930.jsonl; heartbeat fresh (2 s)")
    assert "newest file none today" in restart_cause(TB, {}, HB, 2.0, 90.0, 400.0, None)[1]


@pytest.mark.parametrize("since_window, since_start, since_restart, speed, grace", [
    (100.0, None, None, 1.0, True),        # the window opened less than start_grace_s ago
    (3600.0, None, None, 1.0, False),
    (3600.0, 60.0, None, 1.0, True),       # the unit (re)started a minute ago
    (3600.0, 60.0, None, 30.0, False),     # ... a minute of real time is 30 market minutes at 30x
    (3600.0, 600.0, 10.0, 1.0, True),      # the watchdog restarted it 10 s ago
])
def test_in_start_grace(since_window, since_start, since_restart, speed, grace):
    assert in_start_grace(since_window, since_start, since_restart, speed, 180.0) is grace


# -- one pass, in-process, on systemd's recorded answers --------------------------------------------
class RecordedSystemd:
    """systemd's answers for one unit as the watchdog asks for them (show, journal --since / -n)."""

    def __init__(self, show: dict, entries: list[dict]):
        self._show, self.entries = show, entries

    def show(self, unit: str) -> dict:
        return dict(self._show) if unit == UNIT else {"ActiveState": "inactive", "SubState": "dead"}

    def journal(self, unit: str, *, since_s: float | None = None, lines: int | None = None) -> list[dict]:
        out = [e for e in self.entries if unit == UNIT and (since_s is None or int(e["__REALTIME_TIMESTAMP"]) >= since_s * 1e6)]
        return out[-lines:] if lines else out


def test_a_pass_reports_each_oom_kill_then_the_crash_loop_once(tmp_path):
    c = cfg(data_dir=str(tmp_path), watchdog={"track_a": False, "disk_alert_pct": 100})
    entries = [e for s in (400, 200, 20) for e in oom_killed(us_ago(s))]
    sd = RecordedSystemd({"ActiveState": "activating", "SubState": "auto-restart", "Result": "signal",
                          "MemoryMax": MIB512}, entries)
    saturday = ManualClock(datetime(2026, 3, 14, 10, 0, tzinfo=KST))   # no window today: only the journal counts
    wd = Watchdog(c, saturday, calendar_from_config(c), store=None, alerts=None, systemd=sd, use_systemd=True)
    first = wd.run_pass()
    assert [(f.what, f.subject) for f in first] == [("unit_failure", UNIT)] * 3 + [("crash_loop", UNIT)]
    assert first[0].text == f"{UNIT} killed by the OOM killer (memory limit) (MemoryMax=512M, exit 137 = SIGKILL)"
    assert first[3].text.startswith(f"{UNIT} is in a crash loop: 3 failures in 15 min "
                                    "(killed by the OOM killer (memory limit) ×3).")
    again = [f.text for f in Watchdog(c, saturday, calendar_from_config(c), store=None, alerts=None, systemd=sd,
                                      use_systemd=True).run_pass()]
    assert again == [], again   # from state/watchdog.json: the same failures are not reported twice, nor the loop today
