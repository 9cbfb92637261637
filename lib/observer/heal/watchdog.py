"""The watchdog: notices what the collectors cannot say about themselves, and acts (docs/watchdog.md).

It reads only the tree (heartbeats in state/heartbeat/, the newest records' files, the events log)
and systemd's view of the units (systemctl show, journalctl). Each pass:

- crash loops: a watched unit that failed K times in M minutes (journal: systemd's "Failed with
  result" entries), or hit its start limit, or that the watchdog itself restarted K times in M
  minutes -> no more restarts today, a CRITICAL alert with the error line of the unit's own output
  (e.g. the ImportError), a `crash_loop` event with anomaly_day. Every new failure is also a
  `unit_failure` event; an OOM kill alerts on its own.
- a collector inside its window on a trading day, past the start grace: heartbeat stale (the loop
  is stuck) or no new record in its partition for no_data_s (a dead feed; judged on the whole
  partition, so one quiet symbol is never a dead collector) or its unit not running -> restart
  through the restart broker (observer.heal.unitctl), a `restart` event, an alert.
- WebSocket flapping from the `reconnect` events; disk above disk_alert_pct -> emergency
  retention; the day's backup missing at the deadline.

State that must survive a restart of the watchdog itself (restart history, alert throttles, what
was already reported) lives in state/watchdog.json.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import psutil

from observer.core.calendar import Calendar
from observer.core.clock import NS, Clock, kst_datetime, yyyymmdd
from observer.core.logging import get_logger
from observer.core.settings import TrackAConfig, TradingWindow, WatchdogConfig
from observer.heal.expected import ExpectedCoverage
from observer.heal.preflight import last_error_line
from observer.lifecycle import layout
from observer.providers.base import provider_class
from observer.store import paths
from observer.store.reader import read_new
from observer.store.state import read_json, write_json_atomic
from observer.telemetry.alerts import alerts_config
from observer.telemetry.alerts.table import (
    KEY_BACKUP_MISSING,
    KEY_CANNOT_RESTART,
    KEY_CPU,
    KEY_CRASH_LOOP,
    KEY_DISK,
    KEY_OOM,
    KEY_RECONNECTS,
    KEY_RESTART,
    KEY_WS_FLAPPING,
    Sustained,
)

log = get_logger(__name__)

# systemd journal message ids (sd-messages.h)
MID_FAILURE_RESULT = "d9b373ed55a64feb8242e02dbe79a49c"   # "Failed with result '...'" (UNIT_RESULT=)
_FAILED_RE = re.compile(r"Failed with result '([a-z-]+)'")
_EXITED_RE = re.compile(r"Main process exited, code=(\w+), status=(\S+)")

RESULT_TEXT = {
    "exit-code": "exited with an error", "signal": "killed by a signal", "core-dump": "dumped core",
    "watchdog": "stopped pinging the systemd watchdog", "oom-kill": "killed by the OOM killer (memory limit)",
    "start-limit-hit": "hit systemd's start limit", "timeout": "timed out", "resources": "could not get resources",
    "exec-condition": "failed its exec condition", "protocol": "broke the sd_notify protocol",
}


@dataclass
class Collector:
    name: str            # heartbeat name: track-a, track-b@kis
    unit: str            # observer-track-a.service, observer-track-b@kis.service
    provider: str        # events go to system/events/<provider>/
    window: TradingWindow
    partition: str       # swing / scalp
    market: str
    no_data_s: float


@dataclass
class Finding:
    what: str            # restart / crash_loop / unit_failure / flapping / disk / backup / note
    subject: str
    text: str
    done: bool = True    # False: dry run or not possible
    data: dict = field(default_factory=dict)


def collectors_from_config(cfg: dict) -> list[Collector]:
    w = WatchdogConfig.from_config(cfg)
    out = []
    if w.track_a:
        a = TrackAConfig.from_config(cfg).provider
        out.append(Collector("track-a", "observer-track-a.service", a,
                             TradingWindow.from_config(cfg, "track_a"), "swing", provider_class(a).market, float(w.track_a_no_data_s)))
    tb = TradingWindow.from_config(cfg, "track_b")
    for p in w.providers:
        out.append(Collector(f"track-b@{p}", f"observer-track-b@{p}.service", p, tb, "scalp",
                             provider_class(p).market, float(w.no_data_s)))
    return out


def _bytes(v: str) -> str:
    try:
        n = int(v)
    except (TypeError, ValueError):
        return str(v)
    return f"{n // 2**20}M" if n % 2**20 == 0 else str(n)


def under_systemd() -> bool:
    return Path("/run/systemd/system").is_dir() and shutil.which("systemctl") is not None


# ---------------------------------------------------------------------------------------------------
# systemd's view (read-only)
# ---------------------------------------------------------------------------------------------------
class Systemd:
    PROPS = ("LoadState", "ActiveState", "SubState", "Result", "NRestarts", "MainPID",
             "ActiveEnterTimestamp", "ExecMainStatus", "MemoryMax")

    def show(self, unit: str) -> dict:
        try:
            r = subprocess.run(["systemctl", "show", unit, "--timestamp=unix", "--property=" + ",".join(self.PROPS)],
                               capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired) as e:
            return {"error": str(e)}
        out = {}
        for line in r.stdout.splitlines():
            k, _, v = line.partition("=")
            out[k] = v
        return out

    def journal(self, unit: str, *, since_s: float | None = None, lines: int | None = None) -> list[dict]:
        cmd = ["journalctl", "-u", unit, "-o", "json", "--no-pager", "-q"]
        if since_s is not None:
            cmd += ["--since", f"@{int(since_s)}"]
        if lines is not None:
            cmd += ["-n", str(lines)]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as e:
            log.warning("journalctl failed", extra={"unit": unit, "error": str(e)})
            return []
        out = []
        for line in r.stdout.splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


def _msg(entry: dict) -> str:
    m = entry.get("MESSAGE", "")
    if isinstance(m, list):  # non-UTF-8 bytes
        m = bytes(x for x in m if isinstance(x, int)).decode("utf-8", "replace")
    return str(m)


def _is_systemd(entry: dict) -> bool:
    return entry.get("_PID") == "1" or entry.get("SYSLOG_IDENTIFIER") == "systemd" or "UNIT" in entry and "_SYSTEMD_UNIT" not in entry


def failures(entries: list[dict]) -> list[dict]:
    """systemd's failure records of a unit: [{us, result, status}] oldest first (status: the main
    process's exit as systemd logged it just before, e.g. 'killed 9/KILL')."""
    out = []
    status = ""
    for e in entries:
        if not _is_systemd(e):
            continue
        text = _msg(e)
        m = _EXITED_RE.search(text)
        if m:
            status = f"{m.group(1)} {m.group(2)}"
            continue
        if "repeated too quickly" in text:  # systemd 252 then re-logs the last result: that is the start limit
            status = "start-limit"
            continue
        res = e.get("UNIT_RESULT")
        if not res and e.get("MESSAGE_ID") != MID_FAILURE_RESULT:
            m = _FAILED_RE.search(_msg(e))
            res = m.group(1) if m else None
        if res:
            if status == "start-limit":
                res = "start-limit-hit"
            out.append({"us": int(e.get("__REALTIME_TIMESTAMP", 0)), "result": res, "status": status})
            status = ""
    return out


def is_oom(f: dict, memory_max: str | None) -> bool:
    """systemd says oom-kill when it sees the cgroup's OOM event; where it cannot (a nested or
    undelegated cgroup) the kernel's OOM kill shows as SIGKILL under a MemoryMax (exit 137)."""
    limited = memory_max not in (None, "", "infinity")
    return f["result"] == "oom-kill" or (f["result"] == "signal" and f.get("status") == "killed 9/KILL" and limited)


def error_text(entries: list[dict]) -> tuple[str, list[str]]:
    """The error line of the unit's own output (the program's, not systemd's), and its last lines."""
    lines: list[str] = []
    for e in entries:
        if _is_systemd(e):
            continue
        m = _msg(e)
        if m.startswith("{"):
            try:
                j = json.loads(m)
                parts = [str(j.get("msg", ""))] + [str(j[k]) for k in ("error", "exc") if j.get(k)]
                m = "\n".join(p for p in parts if p)
            except ValueError:
                pass
        lines.extend(x for x in m.splitlines() if x.strip())
    return last_error_line("\n".join(lines)), lines[-8:]


def in_start_grace(since_window: float, since_start: float | None, since_restart: float | None, speed: float,
                   grace: float) -> bool:
    """Too early to judge a collector: its window, its unit's start (systemd's ActiveEnterTimestamp) or the
    watchdog's last restart of it is less than `grace` market seconds ago (the real ones scaled by speed)."""
    ages = [since_window] + [x * speed for x in (since_start, since_restart) if x is not None]
    return min(ages) < grace


def restart_cause(c: Collector, show: dict, hb: dict | None, hb_age: float | None, stale_s: float, data_age: float,
                  newest: str | None) -> tuple[str, str] | None:
    """Why a collector inside its window needs a restart, as (cause, reason), or None: its unit is not
    running (only known under systemd: `show` empty otherwise), its heartbeat is missing or older than
    stale_s (the loop is stuck), or its partition had no new record for no_data_s market seconds while
    the heartbeat is fresh (the feed is dead)."""
    active = show.get("ActiveState") if show else None
    if active is not None and active not in ("active", "reloading", "activating"):
        return "not_running", (f"{c.unit} is {active}/{show.get('SubState')} inside its window "
                               f"({c.window})")
    if hb_age is None or hb_age > stale_s:
        return "heartbeat_stale", (f"no heartbeat from {c.name}" if hb_age is None else
                                   f"heartbeat {hb_age:.0f} s old (> {stale_s:g} s): the main loop is stuck "
                                   f"(pid {hb.get('pid')}, phase {hb.get('phase')})")
    if data_age > c.no_data_s:
        return "no_data", (f"no new {c.partition} record for {data_age:.0f} market s (> {c.no_data_s:g} s) while the "
                           f"market is open; newest file {newest or 'none today'}; heartbeat fresh ({hb_age:.0f} s): "
                           f"the feed is dead")
    return None


def crash_loop(fails: list[dict], entries: list[dict], show: dict, now: float, k: int,
               m_s: float) -> tuple[bool, list[dict], bool]:
    """(in a crash loop, the unit's failures of the last m_s seconds, systemd's start limit hit): K real
    failures in M minutes, or the start limit, which systemd 252 shows only as the "Start request repeated
    too quickly" line while keeping the last run's Result."""
    real_fails = [f for f in fails if f["result"] != "start-limit-hit" and f["us"] / 1e6 > now - m_s]
    limit_hit = show.get("Result") == "start-limit-hit" or (show.get("ActiveState") == "failed" and (
        any(f["result"] == "start-limit-hit" for f in fails)
        or any(_is_systemd(e) and "repeated too quickly" in _msg(e) for e in entries)))
    return len(real_fails) >= k or limit_hit, real_fails, limit_hit


def restarts_exhausted(restarts: list[float], now: float, k: int, m_s: float) -> tuple[bool, list[float]]:
    """(the watchdog's own restarts give up, its restarts of the last m_s seconds): K of them in M minutes
    and the collector still needs one, so restarting does not help."""
    recent = [t for t in restarts if now - t < m_s]
    return len(recent) >= k, recent


# ---------------------------------------------------------------------------------------------------
# the watchdog
# ---------------------------------------------------------------------------------------------------
class Watchdog:
    def __init__(self, cfg: dict, clock: Clock, calendar: Calendar, *, store, alerts, dry_run: bool = False,
                 systemd: Systemd | None = None, use_systemd: bool | None = None, program_path: str | None = None,
                 out=None):
        self.cfg = cfg
        self.w = WatchdogConfig.from_config(cfg)
        self.clock = clock
        self.calendar = calendar
        self.root = Path(cfg["data_dir"])
        self.store = store
        self.alerts = alerts
        self.dry_run = dry_run
        self.sd = systemd or Systemd()
        self.use_systemd = under_systemd() if use_systemd is None else use_systemd
        self.program_path = program_path or sys.argv[0]
        self.collectors = collectors_from_config(cfg)
        self.out = out
        self.state_path = paths.watchdog_state_file(self.root)
        self.state = self._load_state()
        self._ev_offsets: dict[str, int] = {}
        self._reconnects: dict[str, list[int]] = {}
        acfg = alerts_config(cfg)
        self._cpu_max = float(acfg["cpu_max"])
        self._cpu_high = Sustained(float(acfg["cpu_for_s"]))
        self._cpu_prev = None
        self.cpu_busy: float | None = None
        self._bk_offsets: dict[str, int] = {}
        self._bk_last: tuple[int, bool] | None = None       # (ts_ns, ok) of the newest backup outcome
        self._bk_success_ns: int | None = None
        self.passes = 0
        self.expected = ExpectedCoverage(self)  # Track B's expected symbols while it does not record

    # -- state ------------------------------------------------------------------------------------
    def _load_state(self) -> dict:
        try:
            s = read_json(self.state_path) or {}
        except (OSError, ValueError):
            s = {}
        for k in ("units", "alerts", "days"):
            s.setdefault(k, {})
        return s

    def _save_state(self) -> None:
        if self.dry_run:
            return
        try:
            write_json_atomic(self.state_path, self.state)
        except OSError as e:
            log.error("watchdog state not saved", extra={"error": str(e)})

    def _unit_state(self, unit: str) -> dict:
        return self.state["units"].setdefault(unit, {"restarts": [], "seen_us": 0, "gave_up": ""})

    def _once_per_day(self, key: str, day: str) -> bool:
        """True the first time `key` is asked on `day`."""
        d = self.state["days"]
        if d.get(key) == day:
            return False
        if not self.dry_run:
            d[key] = day
        return True

    # -- acting -----------------------------------------------------------------------------------
    def _say(self, f: Finding) -> Finding:
        prefix = "would " if not f.done and self.dry_run else ""
        line = f"{prefix}{f.what} {f.subject}: {f.text}"
        if self.out is not None:
            print(line, file=self.out, flush=True)
        log.info("finding", extra={"what": f.what, "subject": f.subject, "text": f.text[:500], "done": f.done})
        return f

    def _event(self, provider: str, event: str, severity: str, **fields) -> None:
        if self.dry_run or self.store is None:
            return
        self.store.events(provider).emit(event, severity, **fields)

    def _alert(self, key: str, severity: str, text: str, *, throttle: bool = True, **context) -> None:
        if self.dry_run or self.alerts is None:
            return
        now = time.time()
        last = self.state["alerts"].get(key, 0)
        if throttle and now - last < float(self.w.alert_repeat_s):
            return
        self.state["alerts"][key] = now
        self.alerts.alert(key, severity, text, **context)

    def _request(self, verb: str, unit: str) -> tuple[bool, str]:
        """Restart/start a unit through the restart broker (the watchdog's one narrow privilege)."""
        from observer.heal.unitctl import UnitctlError, request

        if not self.use_systemd:
            return False, "not under systemd: nothing can restart units here"
        try:
            p = request(verb, unit, self.root)
        except (UnitctlError, OSError) as e:
            return False, f"restart broker request refused: {e}"
        return True, str(p.relative_to(self.root))

    # -- one pass ---------------------------------------------------------------------------------
    def run_pass(self) -> list[Finding]:
        out: list[Finding] = []
        now_kst = self.clock.now_kst()
        day = now_kst.date()
        trading = self.calendar.is_trading_day(day)
        for c in self.collectors:
            try:
                out += self._check_collector(c, now_kst, trading)
            except Exception as e:  # one collector's check never stops the others
                log.exception("collector check failed", extra={"collector": c.name})
                out.append(self._say(Finding("note", c.unit, f"check failed: {type(e).__name__}: {e}", False)))
        for step in (self._check_flapping, self._check_disk, self._check_backup, self._check_cpu):
            try:
                out += step(now_kst, trading)
            except Exception as e:
                log.exception("check failed", extra={"check": step.__name__})
                out.append(self._say(Finding("note", step.__name__, f"{type(e).__name__}: {e}", False)))
        out += self.expected.check(now_kst, trading)  # reports its own failure, never raises
        self.passes += 1
        self._save_state()
        return out

    # -- collectors ---------------------------------------------------------------------------------
    def _check_collector(self, c: Collector, now_kst: datetime, trading: bool) -> list[Finding]:
        out: list[Finding] = []
        day = yyyymmdd(now_kst.date())
        us = self._unit_state(c.unit)
        if us.get("gave_up") and us["gave_up"] != day:
            us["gave_up"] = ""  # a new day: try again
        show = self.sd.show(c.unit) if self.use_systemd else {}
        if self.use_systemd:
            loop = self._crash_loop(c, show, us, day)
            out += loop
            if any(f.what == "crash_loop" for f in loop) or us.get("gave_up") == day:
                if us.get("gave_up") == day and self._healthy(c, show):
                    us["gave_up"] = ""  # fixed by hand and running again
                    out.append(self._say(Finding("note", c.unit, "running again after a crash loop: watching it again")))
                else:
                    return out
        if not trading:
            return out
        start, end = c.window.span(self.calendar, now_kst.date())
        if not start <= now_kst < end:
            return out
        speed = max(self.clock.speed, 1e-9)
        grace = float(self.w.start_grace_s)
        since_window = (now_kst - start).total_seconds()
        real_now = time.time()
        since_start = self._since_active(show, real_now) if show else None
        since_restart = real_now - us["restarts"][-1] if us["restarts"] else None
        if in_start_grace(since_window, since_start, since_restart, speed, grace):
            return out
        hb = read_json(paths.heartbeat_file(self.root, c.name))
        hb_age = (time.time_ns() - int(hb["wall_ns"])) / NS if hb and "wall_ns" in hb else None
        data_age, newest = self._data_age(c, now_kst, start, speed)
        stale_s = float(self.w.heartbeat_stale_s)
        verdict = restart_cause(c, show, hb, hb_age, stale_s, data_age, newest)
        if verdict is None:
            return out
        cause, reason = verdict
        out.append(self._restart(c, cause, reason, hb, hb_age, data_age, show, us, day))
        return out

    def _healthy(self, c: Collector, show: dict) -> bool:
        hb = read_json(paths.heartbeat_file(self.root, c.name))
        fresh = hb and (time.time_ns() - int(hb.get("wall_ns", 0))) / NS < float(self.w.heartbeat_stale_s)
        return show.get("ActiveState") == "active" and bool(fresh) and str(hb.get("pid")) == show.get("MainPID")

    @staticmethod
    def _since_active(show: dict, real_now: float) -> float | None:
        ts = show.get("ActiveEnterTimestamp", "")
        if not ts or ts == "n/a":
            return None
        try:
            return real_now - int(ts.lstrip("@"))
        except ValueError:
            return None

    def _data_age(self, c: Collector, now_kst: datetime, start: datetime, speed: float) -> tuple[float, str | None]:
        """Market seconds since the newest record of the collector's partition (the whole partition:
        a quiet symbol does not make it old), counted from the window start when there is none."""
        d = self.root / c.partition / c.provider / c.market / yyyymmdd(now_kst.date())
        newest, mt = None, 0.0
        try:
            for f in d.iterdir():
                if f.suffix == ".jsonl":
                    m = f.stat().st_mtime
                    if m > mt:
                        newest, mt = f, m
        except OSError:
            pass
        if newest is None:
            return (now_kst - start).total_seconds(), None
        return max(0.0, (time.time() - mt) * speed), str(newest.relative_to(self.root))

    def _restart(self, c: Collector, cause: str, reason: str, hb, hb_age, data_age, show, us, day) -> Finding:
        k = int(self.w.crash_loop_restarts)
        m_s = float(self.w.crash_loop_minutes) * 60
        now = time.time()
        exhausted, recent = restarts_exhausted(us["restarts"], now, k, m_s)
        if exhausted:
            text = (f"{c.unit}: the watchdog restarted it {len(recent)} times in {m_s / 60:g} min and it is still "
                    f"failing ({reason}); restarting does not help: giving up for today")
            if not self.dry_run:
                us["gave_up"] = day
            self._event(c.provider, "crash_loop", "CRITICAL", unit=c.unit, failures=len(recent), minutes=m_s / 60,
                        result=cause, start_limit_hit=False, error=reason[:500], anomaly_day=True)
            self._alert(f"{KEY_CRASH_LOOP}:{c.unit}", "CRITICAL", text, throttle=False, unit=c.unit)
            return self._say(Finding("crash_loop", c.unit, text, not self.dry_run))
        if self.dry_run:
            return self._say(Finding("restart", c.unit, reason, False, {"cause": cause}))
        ok, detail = self._request("restart", c.unit)
        if ok:
            us["restarts"] = recent + [now]
            self._event(c.provider, "restart", "WARNING", unit=c.unit, reason=reason[:500], cause=cause,
                        collector=c.name, heartbeat_age_s=None if hb_age is None else round(hb_age, 1),
                        data_age_s=round(data_age, 1), pid=(hb or {}).get("pid"), mechanism="observer-unitctl",
                        request=detail)
            self._alert(f"{KEY_RESTART}:{c.unit}", "ERROR", f"restarted {c.unit}: {reason}", throttle=False, unit=c.unit,
                        cause=cause)
            return self._say(Finding("restart", c.unit, reason, True, {"cause": cause, "request": detail}))
        self._alert(f"{KEY_CANNOT_RESTART}:{c.unit}", "CRITICAL", f"{c.unit} needs a restart ({reason}) but {detail}",
                    unit=c.unit)
        return self._say(Finding("restart", c.unit, f"{reason}; NOT restarted: {detail}", False, {"cause": cause}))

    def _crash_loop(self, c: Collector, show: dict, us: dict, day: str) -> list[Finding]:
        out: list[Finding] = []
        k = int(self.w.crash_loop_restarts)
        m_s = float(self.w.crash_loop_minutes) * 60
        now = time.time()
        entries = self.sd.journal(c.unit, since_s=now - max(m_s, 60))
        fails = failures(entries)
        new = [f for f in fails if f["us"] > us.get("seen_us", 0)]
        err_cache: list = []

        def err() -> tuple[str, list[str]]:
            if not err_cache:
                err_cache.append(error_text(self.sd.journal(c.unit, lines=int(self.w.journal_lines))))
            return err_cache[0]

        for f in new:
            if f["result"] == "start-limit-hit":
                continue
            oom = is_oom(f, show.get("MemoryMax"))
            line, _ = err()
            mm = show.get("MemoryMax")
            what = RESULT_TEXT["oom-kill"] if oom else RESULT_TEXT.get(f["result"], f["result"])
            text = (f"{c.unit} {what}"
                    + (f" (MemoryMax={_bytes(mm)}, exit 137 = SIGKILL)" if oom and mm not in (None, "", "infinity") else "")
                    + ("" if oom or not line else f": {line}"))
            self._event(c.provider, "unit_failure", "ERROR", unit=c.unit, result=f["result"], oom=oom,
                        at_ns=f["us"] * 1000, error=(line or "")[:500])
            if oom:
                self._alert(f"{KEY_OOM}:{c.unit}", "ERROR", text + "; systemd restarts it (Restart=on-failure)", unit=c.unit)
            out.append(self._say(Finding("unit_failure", c.unit, text, True, {"result": f["result"]})))
        if fails and not self.dry_run:
            us["seen_us"] = max(us.get("seen_us", 0), fails[-1]["us"])
        looping, real_fails, limit_hit = crash_loop(fails, entries, show, now, k, m_s)
        if looping and us.get("gave_up") != day:
            line, tail = err()
            results = Counter("oom-kill" if is_oom(f, show.get("MemoryMax")) else f["result"] for f in real_fails)
            res_txt = ", ".join(f"{RESULT_TEXT.get(r, r)} ×{n}" for r, n in results.most_common()) or show.get("Result", "")
            text = (f"{c.unit} is in a crash loop: {len(real_fails)} failures in {m_s / 60:g} min"
                    + (" and systemd's start limit was hit" if limit_hit else "") + f" ({res_txt}). "
                    + (f"Error: {line}" if line else "No error line in its journal.")
                    + " The watchdog stops restarting it today; the day is an anomaly day.")
            if not self.dry_run:
                us["gave_up"] = day
            self._event(c.provider, "crash_loop", "CRITICAL", unit=c.unit, failures=len(real_fails), minutes=m_s / 60,
                        result=(("oom-kill" if is_oom(real_fails[-1], show.get("MemoryMax")) else real_fails[-1]["result"])
                                if real_fails else show.get("Result", "")),
                        start_limit_hit=bool(limit_hit), error=(line or "")[:1000], journal_tail=[x[:300] for x in tail],
                        anomaly_day=True)
            self._alert(f"{KEY_CRASH_LOOP}:{c.unit}", "CRITICAL", text, throttle=False, unit=c.unit, error=line)
            out.append(self._say(Finding("crash_loop", c.unit, text, not self.dry_run,
                                         {"error": line, "failures": len(real_fails)})))
        return out

    # -- flapping ------------------------------------------------------------------------------------
    def _check_flapping(self, now_kst: datetime, trading: bool) -> list[Finding]:
        out: list[Finding] = []
        day = now_kst.date()
        now_ns = self.clock.now_ns()
        win_ns = float(self.w.flap_window_s) * NS
        for p in self.w.providers:
            path = paths.events_file(self.root, p, day)
            ts = self._reconnects.setdefault(p, [])
            causes = self.state.setdefault("causes", {}).setdefault(p, {})
            key = str(path)
            off = self._ev_offsets.get(key, 0)
            if off == 0:
                ts.clear()
                causes.clear()
            # complete lines since the last look, bounded; only lines naming a reconnect are parsed
            recs, self._ev_offsets[key] = read_new(path, off, contains=b'"reconnect"')
            for rec in recs:
                if rec.get("event") == "reconnect":
                    ts.append(int(rec.get("ts_ns", 0)))
                    causes[rec.get("cause", "?")] = causes.get(rec.get("cause", "?"), 0) + 1
            recent = [t for t in ts if now_ns - t <= win_ns]
            dstr = yyyymmdd(day)
            if len(recent) >= int(self.w.flap_reconnects):
                text = (f"{p} WebSocket is flapping: {len(recent)} reconnects in the last "
                        f"{win_ns / NS / 60:g} min ({len(ts)} today; causes: "
                        + ", ".join(f"{k} ×{v}" for k, v in sorted(causes.items(), key=lambda x: -x[1])) + ")")
                key_a = f"{KEY_WS_FLAPPING}:{p}"
                if time.time() - self.state["alerts"].get(key_a, 0) >= float(self.w.alert_repeat_s):
                    self._event(p, "ws_flapping", "WARNING", reconnects=len(recent), window_s=win_ns / NS,
                                day_total=len(ts), causes=dict(causes), anomaly_day=False)
                    self._alert(key_a, "WARNING", text, provider=p)
                    out.append(self._say(Finding("flapping", p, text, not self.dry_run)))
            if len(ts) >= int(self.w.reconnects_per_day) and self._once_per_day(f"reconnects_day:{p}", dstr):
                text = f"{p} WebSocket reconnected {len(ts)} times today (≥ {self.w.reconnects_per_day}): anomaly day"
                self._event(p, "ws_flapping", "WARNING", reconnects=len(ts), window_s=86400, day_total=len(ts),
                            causes=dict(causes), anomaly_day=True)
                self._alert(f"{KEY_RECONNECTS}:{p}", "WARNING", text, throttle=False, provider=p)
                out.append(self._say(Finding("flapping", p, text, not self.dry_run)))
        return out

    # -- disk / backup -------------------------------------------------------------------------------
    def _check_disk(self, now_kst: datetime, trading: bool) -> list[Finding]:
        try:
            u = psutil.disk_usage(str(self.root))
        except OSError as e:
            return [self._say(Finding("disk", str(self.root), f"cannot read usage: {e}", False))]
        pct = u.used / (u.used + u.free) * 100 if u.used + u.free else 100.0
        limit = float(self.w.disk_alert_pct)
        if pct <= limit:
            return []
        last = float(self.state.get("retention_at", 0))
        cool = float(self.w.retention_cooldown_s)
        base = f"{self.root} is {pct:.1f} % full (> {limit:g} %), {u.free / 2**30:.1f} GiB free"
        if time.time() - last < cool:
            return []
        if self.dry_run:
            return [self._say(Finding("disk", str(self.root), base + ": would start an emergency retention run", False))]
        if self.use_systemd:
            ok, detail = self._request("start", "observer-retention.service")
            action = "retention_requested" if ok else "retention_failed"
        else:
            ok, detail = self._run_retention()
            action = "retention_run" if ok else "retention_failed"
        self.state["retention_at"] = time.time()
        text = base + (f": emergency retention started ({detail})" if ok else f": emergency retention FAILED: {detail}")
        self._event("system", "disk_pressure", "CRITICAL" if not ok else "WARNING", path=str(self.root),
                    used_pct=round(pct, 1), free_bytes=u.free, action=action, detail=detail[:500], anomaly_day=True)
        self._alert(KEY_DISK, "CRITICAL" if not ok else "WARNING", text, used_pct=round(pct, 1))
        return [self._say(Finding("disk", str(self.root), text, ok))]

    def _run_retention(self) -> tuple[bool, str]:
        d = Path(self.w.programs_dir or Path(self.program_path).resolve().parent)
        prog = d / "observer-retention"
        if not prog.exists():
            return False, f"{prog} not found"
        cmd = [sys.executable, str(prog)]
        if self.cfg.get("_source"):
            cmd += ["--config", self.cfg["_source"]]
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)
        except (OSError, subprocess.TimeoutExpired) as e:
            return False, str(e)
        if r.returncode not in (0, 1):
            return False, f"observer-retention exit {r.returncode}: {last_error_line(r.stderr)}"
        return True, f"observer-retention exit {r.returncode}"

    def _check_backup(self, now_kst: datetime, trading: bool) -> list[Finding]:
        if not trading:
            return []
        deadline = kst_datetime(now_kst.date(), self.w.backup_deadline)
        if now_kst < deadline:
            return []
        day = yyyymmdd(now_kst.date())
        manifest = paths.backup_dir(self.root, now_kst.date()) / layout.MANIFEST
        if manifest.exists() or not self._once_per_day("backup_missing", day):
            return []
        text = (f"backup of {day} missing at {deadline:%H:%M} KST: {manifest.relative_to(self.root)} does not exist "
                "(journalctl -u observer-backup.service)")
        self._event("system", "backup_missing", "ERROR", date=day, deadline=f"{deadline:%H:%M}")
        self._alert(f"{KEY_BACKUP_MISSING}:{day}", "ERROR", text, throttle=False, date=day)
        return [self._say(Finding("backup", day, text, not self.dry_run))]


    # -- CPU (design §4: CPU > 90 % for 10 min) --------------------------------------------------------
    def _host_cpu(self) -> float | None:
        """Host CPU busy share since the previous pass (cpu_times deltas: no shared psutil state)."""
        t = psutil.cpu_times()
        idle = t.idle + getattr(t, "iowait", 0.0)
        total = sum(t)
        prev, self._cpu_prev = self._cpu_prev, (idle, total)
        if prev is None or total <= prev[1]:
            return None
        return max(0.0, min(1.0, 1.0 - (idle - prev[0]) / (total - prev[1])))

    def _check_cpu(self, now_kst: datetime, trading: bool) -> list[Finding]:
        busy = self._host_cpu()
        if busy is None:
            return []
        self.cpu_busy = busy
        if not self._cpu_high.update(time.monotonic(), busy > self._cpu_max):
            return []
        held = self._cpu_high.held_s(time.monotonic())
        text = (f"host CPU {busy * 100:.0f} % busy, above {self._cpu_max * 100:g} % for {held / 60:.1f} min "
                f"(load {os.getloadavg()[0]:.1f}); load mitigation lowers order-book sampling")
        self._alert(KEY_CPU, "WARNING", text, cpu_pct=round(busy * 100, 1))
        return [self._say(Finding("cpu", "host", text, not self.dry_run))]

    # -- backup outcome for the metrics (observer_backup_last_*) --------------------------------------
    def backup_status(self) -> dict:
        """The newest backup run's outcome from the `backup` events of the last 3 days' system event logs
        (read incrementally): {"ok": bool|None, "success_s": unix s|None}. A refused run (too early) is
        no outcome. The watchdog publishes it because the backup is a oneshot whose own metrics go stale."""
        today = self.clock.now_kst().date()
        days = [today - timedelta(days=i) for i in (2, 1, 0)]
        keep = set()
        for d in days:
            path = paths.events_file(self.root, "system", d)
            key = str(path)
            keep.add(key)
            off = self._bk_offsets.get(key, 0)
            try:
                with open(path, "rb") as f:
                    f.seek(off)
                    chunk = f.read()
            except OSError:
                continue
            end = chunk.rfind(b"\n") + 1
            self._bk_offsets[key] = off + end
            for line in chunk[:end].splitlines():
                if b'"event":"backup"' not in line:
                    continue
                try:
                    rec = json.loads(line)
                    ts = int(rec.get("ts_ns", 0))
                except (ValueError, TypeError):
                    continue
                if rec.get("event") != "backup" or rec.get("action") == "refused":
                    continue
                ok = bool(rec.get("ok"))
                if self._bk_last is None or ts >= self._bk_last[0]:
                    self._bk_last = (ts, ok)
                if ok and (self._bk_success_ns is None or ts > self._bk_success_ns):
                    self._bk_success_ns = ts
        for k in list(self._bk_offsets):
            if k not in keep:
                del self._bk_offsets[k]
        return {"ok": None if self._bk_last is None else self._bk_last[1],
                "success_s": None if self._bk_success_ns is None else self._bk_success_ns / NS}
