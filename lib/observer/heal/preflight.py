"""Preflight: everything the trading day needs, checked at 08:30 (docs/preflight.md).

Each check returns a Check(name, verdict ok/warn/fail/skip, one-line reason, how to fix it). The
checks never raise: an unexpected exception inside one is that check's `fail`. The incident of
2026-01-19 is the list's origin: an ImportError and a missing dependency (the `self-test` checks
start every installed program), a WebSocket that connects but never answers or drops without a
close frame (`websocket`), an OOM-prone host (`memory`), plus what a broker day needs (token,
REST, clock, disk, universe, units).
"""

from __future__ import annotations

import email.utils
import os
import pwd
import re
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import psutil

from observer.core import notify
from observer.core.calendar import KrxCalendar, calendar_from_config
from observer.core.clock import KST, NS, Clock, kst_datetime, yyyymmdd
from observer.core.logging import get_logger
from observer.core.secrets import SecretsError, load_secrets
from observer.core.selftest import fix_for

log = get_logger(__name__)

VERDICTS = ("ok", "warn", "fail", "skip")
RANK = {"ok": 0, "skip": 0, "warn": 1, "fail": 2}
NY = ZoneInfo("America/New_York")


@dataclass
class Check:
    name: str
    verdict: str
    reason: str
    fix: str = ""
    detail: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        d = {"name": self.name, "verdict": self.verdict, "reason": self.reason, "fix": self.fix}
        if self.detail:
            d["detail"] = self.detail
        return d


@dataclass
class Report:
    day: date
    checks: list[Check]
    skipped_day: str | None = None  # closed-day reason when nothing else ran
    duration_s: float = 0.0

    @property
    def verdict(self) -> str:
        worst = max((RANK[c.verdict] for c in self.checks), default=0)
        return {0: "ok", 1: "warn", 2: "fail"}[worst]

    @property
    def exit_code(self) -> int:
        return RANK[self.verdict]

    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.verdict == "fail"]

    def warned(self) -> list[Check]:
        return [c for c in self.checks if c.verdict == "warn"]

    def counts(self) -> dict:
        out = {v: 0 for v in VERDICTS}
        for c in self.checks:
            out[c.verdict] += 1
        return out


def hhmm(s: str) -> tuple[int, int]:
    h, m = s.split(":")
    return int(h), int(m)


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB" if n >= 2**20 else f"{n / 1024:,.0f} KiB"


def last_error_line(text: str) -> str:
    """The most telling line of a program's stderr: the exception line of a traceback, else the last line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if re.match(r"^([A-Za-z_][\w.]*)?(Error|Exception|Exit|Interrupt)\b(:.*)?$", ln):
            return ln
    return lines[-1] if lines else ""


# ---------------------------------------------------------------------------------------------------
# the deploy guard (RFC-007 time lock)
# ---------------------------------------------------------------------------------------------------
def deploy_guard(cfg: dict, clock: Clock, calendar: KrxCalendar | None = None) -> tuple[bool, str]:
    """(locked, message): locked during KR market hours on KRX trading days (the lock moves with a
    late open/close) and, when configured, during US hours on NYSE trading days."""
    g = (cfg.get("preflight") or {}).get("deploy_guard") or {}
    cal = calendar or calendar_from_config(cfg)
    now = clock.now()
    kst = now.astimezone(KST)
    day = kst.date()
    kr = f"{g.get('kr_start', '08:00')}-{g.get('kr_end', '16:00')}"
    when = kst.strftime("%Y-%m-%d %H:%M KST (%a)")
    reason = cal.closed_reason(day)
    if reason is None:
        s = cal.session(day)
        # the start stays (preflight runs at 08:30 whatever the open); the end follows a late close
        start = kst_datetime(day, g.get("kr_start", "08:00"))
        end = kst_datetime(day, g.get("kr_end", "16:00")) + s.close_shift
        shifted = f", end shifted by the {s.late_open_reason}" if s.close_shift else ""
        if start <= kst < end:
            return True, (f"deploy guard: {when} is inside KR market hours ({start:%H:%M}-{end:%H:%M} KST on "
                          f"trading days{shifted}): refusing to touch running collectors; deploy after "
                          f"{end:%H:%M} KST or use --force")
        kr_note = f"outside KR market hours ({start:%H:%M}-{end:%H:%M} KST{shifted})"
    else:
        kr_note = f"not a KRX trading day ({reason})"
    if g.get("us_market"):
        import holidays

        ny = now.astimezone(NY)
        nyse = holidays.financial_holidays("NYSE", years=ny.year)
        if ny.weekday() < 5 and ny.date() not in nyse:
            sh, sm = hhmm(g.get("us_start", "09:00"))
            eh, em = hhmm(g.get("us_end", "16:30"))
            us_start = ny.replace(hour=sh, minute=sm, second=0, microsecond=0)
            us_end = ny.replace(hour=eh, minute=em, second=0, microsecond=0)
            if us_start <= ny < us_end:
                return True, (f"deploy guard: {when} = {ny:%H:%M} New York is inside US market hours "
                              f"({us_start:%H:%M}-{us_end:%H:%M} America/New_York on NYSE trading days): "
                              f"refusing; deploy after {us_end:%H:%M} New York or use --force")
        kr_note += ", and outside US market hours"
    return False, f"deploy guard: {when} is {kr_note} (lock {kr} KST): deploying is allowed"


# ---------------------------------------------------------------------------------------------------
# the checks
# ---------------------------------------------------------------------------------------------------
class Preflight:
    def __init__(self, cfg: dict, clock: Clock, *, config_error: str | None = None, systemd: bool = False,
                 run_all: bool = False, only: set[str] | None = None, secrets=None, store=None,
                 program_path: str | None = None):
        self.cfg = cfg
        self.p = cfg.get("preflight") or {}
        self.clock = clock
        self.config_error = config_error
        self.systemd = systemd
        self.run_all = run_all
        self.only = only
        self.root = Path(cfg.get("data_dir", "/var/lib/observer"))
        self.secrets = secrets
        self.store = store
        self.program_path = program_path or sys.argv[0]
        self.calendar: KrxCalendar | None = None
        self.checks: list[Check] = []
        self.day = clock.today_kst()
        self._tokens: dict[str, dict] = {}  # provider -> {"auth":..., "token":...}
        self._skew_samples: list[tuple[int, int, int]] = []

    # -- driver --------------------------------------------------------------------------------
    def _want(self, name: str) -> bool:
        if not self.only:
            return True
        return any(name == o or name.startswith(o + ":") or name.startswith(o + " ") for o in self.only)

    def _run(self, name: str, fn: Callable[[], Check | list[Check] | None]) -> None:
        if not self._want(name):
            return
        t0 = time.monotonic()
        try:
            got = fn()
        except Exception as e:  # a check never takes preflight down
            log.exception("check crashed", extra={"check": name})
            got = Check(name, "fail", f"the check itself failed: {type(e).__name__}: {e}"[:400],
                        "a bug in observer-preflight: report it with the log above")
        for c in got if isinstance(got, list) else [got] if got else []:
            c.detail.setdefault("ms", round((time.monotonic() - t0) * 1000))
            self.checks.append(c)
            log.info("check", extra={"check": c.name, "verdict": c.verdict, "reason": c.reason})
        notify.progress()  # a check finished: real progress for the unit's watchdog

    def run(self) -> Report:
        t0 = time.monotonic()
        self._run("config", self.check_config)
        closed = self.check_trading_day()
        if closed.verdict == "skip" and not self.run_all:
            self.checks.append(closed)
            return Report(self.day, self.checks, skipped_day=closed.detail.get("closed_reason"),
                          duration_s=time.monotonic() - t0)
        if self._want("trading_day"):
            self.checks.append(closed)
        self._run("secrets", self.check_secrets)
        self._run("self-test", self.check_programs)
        self._run("disk", self.check_disk)
        self._run("disk_write", self.check_disk_write)
        self._run("memory", self.check_memory)
        self._run("cpu", self.check_cpu)
        for prov in self.p.get("providers", ["kis"]):
            if prov != "kis":
                self._run(f"token:{prov}", lambda prov=prov: Check(
                    f"token:{prov}", "skip", f"no preflight checks for provider {prov!r} yet"))
                continue
            self._run(f"token:{prov}", self.check_kis_token)
            self._run(f"rest:{prov}", self.check_kis_rest)
            self._run(f"clock:{prov}", self.check_kis_clock)
            self._run(f"websocket:{prov}", self.check_kis_ws)
        self._run("universe", self.check_universe)
        if self.systemd:
            self._run("units", self.check_units)
        return Report(self.day, self.checks, duration_s=time.monotonic() - t0)

    # -- config / calendar -----------------------------------------------------------------------
    def check_config(self) -> Check:
        if self.config_error:
            first = self.config_error.splitlines()
            return Check("config", "fail", " ".join(x.strip() for x in first[:3])[:400],
                         "fix the listed keys (observer-preflight --check-config shows every problem; "
                         "docs/configuration.md)")
        try:
            self.calendar = calendar_from_config(self.cfg)
        except ValueError as e:
            return Check("config", "fail", str(e)[:400], "fix [calendar] in the config (docs/calendar.md)")
        return Check("config", "ok", f"{self.cfg.get('_source', 'defaults')} is valid")

    def check_trading_day(self) -> Check:
        cal = self.calendar or calendar_from_config({})
        self.calendar = cal
        reason = cal.closed_reason(self.day)
        if reason is not None:
            nxt = cal.next_trading_day(self.day)
            return Check("trading_day", "skip", f"{self.day} is not a KRX trading day ({reason}); "
                         f"next trading day {nxt}", "nothing to do: the collectors stand down today",
                         {"closed_reason": reason, "next_trading_day": nxt.isoformat()})
        s = cal.session(self.day)
        late = f", late open: {s.late_open_reason}" if s.late_open_reason else ""
        return Check("trading_day", "ok", f"{self.day} trades {s.open:%H:%M}-{s.close:%H:%M} KST{late}")

    # -- secrets --------------------------------------------------------------------------------
    def _expected_owner(self) -> tuple[int, str]:
        uid = os.geteuid()
        if uid == 0:
            try:
                pw = pwd.getpwnam(self.p.get("service_user", "observer"))
                return pw.pw_uid, pw.pw_name
            except KeyError:
                pass
        try:
            return uid, pwd.getpwuid(uid).pw_name
        except KeyError:
            return uid, str(uid)

    def check_secrets(self) -> Check:
        path = Path(self.cfg.get("secrets_file", "/etc/observer/secrets.env"))
        cred = os.environ.get("CREDENTIALS_DIRECTORY")
        notes = []
        try:
            st = path.stat()
        except FileNotFoundError:
            if not cred:
                return Check("secrets", "fail", f"{path} does not exist",
                             f"create it (KEY=VALUE lines, see docs/deployment.md), then chmod 600 {path}")
            st = None
            notes.append(f"{path} not visible; using the systemd credential")
        except PermissionError as e:
            st = None
            notes.append(f"cannot stat {path}: {e.strerror}")
        if st is not None:
            mode = stat.S_IMODE(st.st_mode)
            if mode & 0o077:
                return Check("secrets", "fail",
                             f"{path} has mode {mode:04o}: group/others can read the broker keys",
                             f"chmod 600 {path}", {"mode": f"{mode:04o}"})
            want_uid, want_name = self._expected_owner()
            if st.st_uid != want_uid:
                try:
                    owner = pwd.getpwuid(st.st_uid).pw_name
                except KeyError:
                    owner = str(st.st_uid)
                return Check("secrets", "fail", f"{path} is owned by {owner}, not by the service user {want_name}",
                             f"chown {want_name} {path}", {"owner": owner})
        try:
            secrets = self.secrets if self.secrets is not None else load_secrets(self.cfg)
        except SecretsError as e:
            return Check("secrets", "fail", str(e)[:400], f"chmod 600 {path}; check its KEY=VALUE lines")
        self.secrets = secrets
        missing = []
        for prov in self.p.get("providers", ["kis"]):
            pc = (self.cfg.get("providers") or {}).get(prov) or {}
            for acc in pc.get("accounts") or []:
                for k in (acc.get("key_env"), acc.get("secret_env")):
                    if k and not secrets.get(k):
                        missing.append(k)
        if missing:
            return Check("secrets", "fail", f"missing or empty in {secrets.source}: {', '.join(missing)} "
                         "(names only)", f"fill them in: sudoedit {path}")
        tg = [k for k in ("TELEGRAM_BOT_TOKEN", "TELEGRAM_CHAT_ID") if not secrets.get(k)]
        if tg:
            return Check("secrets", "warn", f"{', '.join(tg)} empty: alerts are only logged, nobody is told",
                         f"add them to {path} (docs/deployment.md)")
        return Check("secrets", "ok", f"{secrets.source}: {len(secrets)} keys, mode 0600, right owner"
                     + (f" ({'; '.join(notes)})" if notes else ""))

    # -- every program imports and starts ---------------------------------------------------------
    def programs(self) -> list[Path]:
        d = Path(self.p.get("programs_dir") or Path(self.program_path).resolve().parent)
        return sorted(p for p in d.glob("observer-*") if p.is_file() and os.access(p, os.X_OK)
                      and not p.name.endswith((".py", ".pyc")))

    def _self_test(self, prog: Path) -> Check:
        name = f"self-test {prog.name}"
        python = self.p.get("python") or sys.executable
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
        timeout = float(self.p.get("self_test_timeout_s", 60))
        t0 = time.monotonic()
        try:
            r = subprocess.run([python, str(prog), "--self-test"], capture_output=True, text=True,
                               timeout=timeout, env=env, cwd="/", stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return Check(name, "fail", f"--self-test did not finish within {timeout:g} s (hangs at import?)",
                         f"run {prog} --self-test by hand and see where it stops")
        except OSError as e:
            return Check(name, "fail", f"cannot start {python} {prog}: {e.strerror}",
                         "reinstall: sudo ./install.sh")
        notify.progress()  # one program's self-test finished
        ms = round((time.monotonic() - t0) * 1000)
        err = r.stderr or ""
        if r.returncode == 0:
            return Check(name, "ok", f"imports every module and dependency ({ms} ms)", detail={"ms": ms})
        fails = [ln[len("self-test: "):] for ln in err.splitlines()
                 if ln.startswith("self-test: ") and not ln.rstrip().endswith(("FAILED", ": ok"))]
        usage = re.search(r"error: (unrecognized arguments: --self-test|the following arguments are required.*)", err)
        if fails:
            more = f" (+{len(fails) - 1} more)" if len(fails) > 1 else ""
            return Check(name, "fail", fails[0][:300] + more, fix_for(fails), {"failures": fails[:20], "exit": r.returncode})
        if usage:
            return Check(name, "warn", f"cannot self-test: {usage.group(1)[:200]}",
                         "the program must accept --self-test alone (observer.cli.make_parser)",
                         {"exit": r.returncode})
        line = last_error_line(err) or f"exit {r.returncode}"
        where = re.findall(r'File "[^"]*/(observer/[^"]+\.py)", line (\d+)', err)
        if where:  # the traceback's innermost frame of ours: which module broke
            line += f" (at {where[-1][0]}:{where[-1][1]})"
        return Check(name, "fail", f"exit {r.returncode}: {line}"[:400], fix_for([line]), {"exit": r.returncode})

    def check_programs(self) -> list[Check]:
        progs = self.programs()
        if not progs:
            d = self.p.get("programs_dir") or Path(self.program_path).resolve().parent
            return [Check("self-test", "fail", f"no observer-* programs in {d}",
                          "set preflight.programs_dir or reinstall (sudo ./install.sh)")]
        workers = max(1, min(len(progs), os.cpu_count() or 2))
        with ThreadPoolExecutor(workers) as ex:
            return list(ex.map(self._self_test, progs))

    # -- host -----------------------------------------------------------------------------------
    def check_disk(self) -> Check:
        if not self.root.is_dir():
            return Check("disk", "fail", f"data_dir {self.root} does not exist",
                         "create it: sudo ./install.sh (or fix data_dir in the config)")
        u = psutil.disk_usage(str(self.root))
        pct = u.used / (u.used + u.free) * 100 if u.used + u.free else 100.0
        free_mb = u.free / 2**20
        detail = {"used_pct": round(pct, 1), "free_bytes": u.free, "total_bytes": u.total}
        what = f"{self.root}: {pct:.0f} % used, {_mib(u.free)} free of {_mib(u.total)}"
        fix = "free space: observer-retention (deletes receipted days), or grow the disk"
        if pct >= float(self.p.get("disk_fail_pct", 95)) or free_mb < float(self.p.get("disk_min_free_mb", 2048)):
            return Check("disk", "fail", what + f" (fail at {self.p.get('disk_fail_pct', 95):g} % or below "
                         f"{self.p.get('disk_min_free_mb', 2048):g} MiB free)", fix, detail)
        if pct >= float(self.p.get("disk_warn_pct", 80)):
            return Check("disk", "warn", what + f" (warn at {self.p.get('disk_warn_pct', 80):g} %)", fix, detail)
        return Check("disk", "ok", what, detail=detail)

    def check_disk_write(self) -> Check:
        d = self.root / "state"
        probe = d / f".preflight-probe-{os.getpid()}"
        size = int(self.p.get("disk_probe_kb", 256)) * 1024
        fd = -1
        try:
            d.mkdir(parents=True, exist_ok=True)
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            data = os.urandom(min(size, 65536)) * (size // min(size, 65536) or 1)
            t0 = time.monotonic()
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
            ms = (time.monotonic() - t0) * 1000
            os.close(fd)
            fd = -1
            if probe.read_bytes() != data:
                return Check("disk_write", "fail", f"{probe}: read back differs from what was written",
                             "the disk or file system is corrupting data: check dmesg")
        except OSError as e:
            return Check("disk_write", "fail", f"write+fsync probe of {_mib(size)} in {d} failed: "
                         f"{e.strerror or e} (errno {e.errno})",
                         "free space / fix permissions (the service user must own data_dir) / check dmesg",
                         {"errno": e.errno})
        finally:
            if fd >= 0:
                os.close(fd)
            try:
                probe.unlink()
            except OSError:
                pass
        detail = {"fsync_ms": round(ms, 1), "bytes": size}
        if ms >= float(self.p.get("fsync_warn_ms", 500)):
            return Check("disk_write", "warn", f"write+fsync of {_mib(size)} took {ms:.0f} ms (slow disk: the "
                         "collectors' durability window will stretch)", "check iostat / the VM's disk tier", detail)
        return Check("disk_write", "ok", f"write+fsync of {_mib(size)} in {d}: {ms:.0f} ms", detail=detail)

    def check_memory(self) -> Check:
        vm = psutil.virtual_memory()
        avail = vm.available / 2**20
        detail = {"available_bytes": vm.available, "total_bytes": vm.total, "used_pct": vm.percent}
        what = f"{_mib(vm.available)} available of {_mib(vm.total)} ({vm.percent:.0f} % used)"
        fix = "find what holds memory (ps aux --sort=-rss | head); the collectors need ~1 GiB together"
        if avail < float(self.p.get("memory_fail_mb", 384)):
            return Check("memory", "fail", what + f": below {self.p.get('memory_fail_mb', 384):g} MiB the "
                         "collectors will be OOM-killed", fix, detail)
        if avail < float(self.p.get("memory_warn_mb", 768)):
            return Check("memory", "warn", what + f": below {self.p.get('memory_warn_mb', 768):g} MiB", fix, detail)
        return Check("memory", "ok", what, detail=detail)

    def check_cpu(self) -> Check:
        n = os.cpu_count() or 1
        load1 = os.getloadavg()[0]
        per = load1 / n
        detail = {"load1": load1, "cpus": n}
        what = f"load {load1:.2f} on {n} CPUs ({per:.2f} per CPU)"
        fix = "find the busy process (top); the collectors need CPU at the open"
        if per >= float(self.p.get("load_fail_per_cpu", 4.0)):
            return Check("cpu", "fail", what, fix, detail)
        if per >= float(self.p.get("load_warn_per_cpu", 1.0)):
            return Check("cpu", "warn", what, fix, detail)
        return Check("cpu", "ok", what, detail=detail)

    # -- KIS: token, REST, clock, WebSocket -------------------------------------------------------------
    def _kis(self) -> dict:
        """KisAuth with one issuance attempt (no blocking retries) on the shared token cache."""
        got = self._tokens.get("kis")
        if got is not None:
            return got
        from observer.providers.kis.auth import KisAuth
        from observer.providers.kis.rest import urls

        pc = (self.cfg.get("providers") or {}).get("kis") or {}
        rest_url, ws_url = urls(pc)
        if self.secrets is None:
            self.secrets = load_secrets(self.cfg)
        acc = (pc.get("accounts") or [{"name": "main", "key_env": "KIS_APP_KEY", "secret_env": "KIS_APP_SECRET"}])[0]
        key, secret = self.secrets.get(acc["key_env"], ""), self.secrets.get(acc["secret_env"], "")
        auth = KisAuth.from_config(pc, base_url=rest_url, app_key=key, app_secret=secret, state_dir=self.root / "state",
                                   clock=self.clock, max_attempts=1)
        got = self._tokens["kis"] = {"auth": auth, "rest_url": rest_url, "ws_url": ws_url + ((pc.get("ws") or {}).get("path") or ""),
                                     "pc": pc, "token": None, "token_check": None, "rest": None}
        return got

    def _need_ns(self) -> int:
        return int(kst_datetime(self.day, self.p.get("token_valid_until", "15:40")).timestamp()) * NS

    def _obtain_token(self, k: dict, invalid: str | None) -> tuple[str | None, str]:
        """Ask for a new token, honouring the issuance limit; (token, '') or (None, why not)."""
        from observer.providers.base import ProviderError

        auth = k["auth"]
        cached = auth.token_cache._read() or {}
        wait = (cached.get("requested_ns", 0) + auth.token_cache.min_interval_s * NS - self.clock.now_ns()) / NS
        limit = float(self.p.get("token_wait_s", 90))
        if wait > limit:
            return None, (f"the issuance limit (1 token per {auth.token_cache.min_interval_s:g} s) allows the next "
                          f"request only in {wait:.0f} s (> preflight.token_wait_s {limit:g})")
        try:
            return auth.token(invalid=invalid), ""
        except ProviderError as e:
            return None, str(e)[:300]

    def _rest_call(self, k: dict, token: str) -> dict:
        """One real REST call (current price of the test symbol) with this exact token, no retries."""
        import requests

        from observer.providers.kis.auth import rest_timeouts
        from observer.providers.kis.rest import QUOT, TR_PRICE

        pc = k["pc"]
        sym = self.p.get("test_symbol", "005930")
        headers = {"content-type": "application/json; charset=utf-8", "authorization": f"Bearer {token}",
                   "appkey": k["auth"].app_key, "appsecret": k["auth"].app_secret, "tr_id": TR_PRICE,
                   "tr_cont": "", "custtype": pc.get("custtype", "P")}
        params = {"FID_COND_MRKT_DIV_CODE": pc.get("market_div", "J"), "FID_INPUT_ISCD": sym}
        t0n = self.clock.now_ns()
        t0 = time.monotonic()
        try:
            r = requests.get(k["rest_url"] + QUOT + "inquire-price", params=params, headers=headers,
                             timeout=rest_timeouts(pc))
        except requests.RequestException as e:
            return {"ok": False, "net": True, "error": f"{type(e).__name__}: {_short_net(e)}"}
        t1n = self.clock.now_ns()
        ms = round((time.monotonic() - t0) * 1000)
        if r.headers.get("Date"):
            self._skew_samples.append((t0n, t1n, _http_date_ns(r.headers["Date"])))
        try:
            body = r.json()
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        code = str(body.get("msg_cd") or body.get("error_code") or "")
        msg = str(body.get("msg1") or body.get("error_description") or "")[:120]
        out = body.get("output") if isinstance(body.get("output"), dict) else {}
        ok = r.status_code == 200 and str(body.get("rt_cd", "")) == "0" and bool(out)
        return {"ok": ok, "net": False, "status": r.status_code, "code": code, "msg": msg, "ms": ms,
                "price": out.get("stck_prpr"), "symbol": sym}

    def check_kis_token(self) -> Check:
        from observer.providers.kis.rest import TOKEN_CODES

        name = "token:kis"
        k = self._kis()
        auth = k["auth"]
        need = self._need_ns()
        need_txt = self.p.get("token_valid_until", "15:40")
        fix_creds = "check KIS_APP_KEY / KIS_APP_SECRET in the secrets file and the app's status on the KIS portal"
        cached = auth.token_cache._read()
        now = self.clock.now_ns()
        notes = []
        token = None
        if cached and cached.get("value") and cached.get("expires_ns", 0) > need:
            token = cached["value"]
            notes.append(f"cached token valid until {_kst(cached['expires_ns'])} (past {need_txt}); none requested")
        else:
            why = ("no cached token" if not (cached and cached.get("value")) else
                   f"cached token expires {_kst(cached.get('expires_ns', 0))}, before {need_txt}"
                   if cached.get("expires_ns", 0) > now else "cached token expired")
            token, err = self._obtain_token(k, cached.get("value") if cached and cached.get("value") else None)
            if token is None:
                return Check(name, "fail", f"{why}, and no new one could be obtained: {err}", fix_creds)
            notes.append(f"{why}: obtained a new one")
        # the broker is the judge: one real call with exactly this token
        res = self._rest_call(k, token)
        k["rest"] = res
        if not res["ok"] and not res["net"] and res.get("code") in TOKEN_CODES:
            refused = f"the broker refuses the token ({res['code']} {res['msg']})".rstrip()
            new, err = self._obtain_token(k, token)
            if new is None:
                return Check(name, "fail", f"{refused}, and no new one could be obtained: {err}", fix_creds,
                             {"code": res["code"]})
            token = new
            res = k["rest"] = self._rest_call(k, token)
            if not res["ok"] and res.get("code") in TOKEN_CODES:
                return Check(name, "fail", f"{refused}; the new token is refused too ({res['code']})", fix_creds)
            notes = [f"{refused}: obtained a new one"]
        k["token"] = token
        c = auth.token_cache._read() or {}
        exp = c.get("expires_ns", 0) if c.get("value") == token else 0
        if res["net"]:
            return Check(name, "warn", "; ".join(notes) + "; not verified: the broker is unreachable",
                         "see the rest check")
        if exp and exp <= need:
            return Check(name, "warn", "; ".join(notes) + f"; but it expires {_kst(exp)}, before {need_txt}",
                         "the collectors will refresh it; check token.refresh_ahead_s")
        verdict = "warn" if any("refuses" in n for n in notes) else "ok"
        return Check(name, verdict, "; ".join(notes) + ("; accepted by the broker" if res["ok"] else ""),
                     "" if verdict == "ok" else "the cached token was revoked or expired early: watch for repeats")

    def check_kis_rest(self) -> Check:
        name = "rest:kis"
        k = self._kis()
        res = k.get("rest")
        if res is None:
            if not k.get("token"):
                return Check(name, "skip", "no token (see the token check)", "")
            res = k["rest"] = self._rest_call(k, k["token"])
        where = f"{k['rest_url']} inquire-price {res.get('symbol', '')}"
        if res["net"]:
            return Check(name, "fail", f"{where}: {res['error']}",
                         "check the network / DNS / firewall to the broker (curl -v the URL)")
        if not res["ok"]:
            return Check(name, "fail", f"{where}: HTTP {res['status']} {res.get('code', '')} {res.get('msg', '')}".rstrip(),
                         "read the broker's message; a 5xx is the broker's side (retry later)")
        return Check(name, "ok", f"{where}: HTTP 200 in {res['ms']} ms, price {res.get('price')}",
                     detail={"ms": res["ms"]})

    def check_kis_clock(self) -> Check:
        import requests

        name = "clock:kis"
        k = self._kis()
        n = int(self.p.get("skew_samples", 6))
        sess = requests.Session()
        errors = []
        for i in range(n):
            t0 = self.clock.now_ns()
            try:
                r = sess.head(k["rest_url"] + "/", timeout=(3.05, 5))
                t1 = self.clock.now_ns()
                if r.headers.get("Date"):
                    self._skew_samples.append((t0, t1, _http_date_ns(r.headers["Date"])))
            except (requests.RequestException, ValueError, TypeError) as e:
                errors.append(f"{type(e).__name__}")
            if i < n - 1:
                time.sleep(1.0 / n)  # spread the samples over one second of the Date header's resolution
        sess.close()
        if not self._skew_samples:
            return Check(name, "warn" if errors else "skip",
                         f"no Date header from {k['rest_url']} ({', '.join(errors[:2]) or 'none sent'})",
                         "check chrony (chronyc tracking) by hand")
        skew, unc = estimate_skew(self._skew_samples)
        detail = {"skew_s": round(skew, 3), "uncertainty_s": round(unc, 3), "samples": len(self._skew_samples)}
        sign = "ahead of" if skew < 0 else "behind"
        what = (f"local clock {abs(skew):.2f} s {sign} the broker's Date header (±{unc:.2f} s, "
                f"{len(self._skew_samples)} samples)")
        fix = "sync the clock: chronyc tracking / timedatectl; check chrony's sources"
        if abs(skew) >= float(self.p.get("skew_fail_s", 5)):
            return Check(name, "fail", what, fix, detail)
        if abs(skew) >= float(self.p.get("skew_warn_s", 1)):
            return Check(name, "warn", what, fix, detail)
        return Check(name, "ok", what, detail=detail)

    def check_kis_ws(self) -> Check:
        name = "websocket:kis"
        hb = _heartbeat_age(self.root, "track-b@kis")
        if hb is not None and hb < 10:
            return Check(name, "skip", f"observer-track-b@kis is streaming (heartbeat {hb:.0f} s old): a probe "
                         "would compete for the app key's WebSocket session", "")
        k = self._kis()
        return probe_kis_ws(k["auth"], k["ws_url"], self.p.get("test_symbol", "005930"),
                            float(self.p.get("ws_answer_s", 10)),
                            float((k["pc"].get("ws") or {}).get("connect_timeout_s", 10)),
                            k["pc"].get("custtype", "P"))

    # -- universe / units ------------------------------------------------------------------------------
    def check_universe(self) -> Check:
        from observer.collect.universe import MARKET, UniverseError, ensure_universe
        from observer.providers.base import ProviderError, get_provider
        from observer.store import paths
        from observer.telemetry.alerts.notifier import SEND_NOW_S, ProgramAlerts

        path = paths.universe_file(self.root, self.day, MARKET)
        if path.exists():
            from observer.store.state import read_json

            u = read_json(path) or {}
            return Check("universe", "ok", f"{path.name} exists ({len(u.get('symbols', []))} symbols)")
        if self.store is None:
            return Check("universe", "skip", "no store to create it in", "")
        try:
            prov = get_provider("kis", self.cfg, self.secrets if self.secrets is not None else load_secrets(self.cfg),
                                self.store, self.clock)
            uni = ensure_universe(self.root, self.day, prov.rest(), self.cfg, self.calendar or calendar_from_config(self.cfg),
                                  self.store.events("kis"), self.clock, source=prov,
                                  alerts=ProgramAlerts(self.store, self.cfg, "observer-preflight",
                                                      send_s=SEND_NOW_S))
        except (UniverseError, ProviderError, OSError, SecretsError) as e:
            return Check("universe", "fail", f"no universe for {yyyymmdd(self.day)}: {e}"[:400],
                         "check the stock listing download (or universe.candidates_file) and the REST check; "
                         "the collectors cannot choose symbols")
        n = len(uni.get("symbols", []))
        fb = (uni.get("source") or {}).get("fallback_from")
        if fb:
            return Check("universe", "warn", f"{path.name} created now ({n} symbols) from the listing files kept on "
                         f"{fb}: today's download failed", "see the universe event for why")
        if uni.get("date") not in (None, yyyymmdd(self.day), self.day.isoformat()):
            return Check("universe", "warn", f"today's could not be created; using {uni.get('date')}'s ({n} symbols)",
                         "see the universe event for why")
        return Check("universe", "ok", f"{path.name} created now ({n} symbols)")

    def default_units(self) -> list[str]:
        units = ["observer-watchdog.service", "observer-unitctl.path", "observer-preflight.timer",
                 "observer-track-a.timer", "observer-gap-filler.timer", "observer-backup.timer",
                 "observer-retention.timer"]
        for p in (self.cfg.get("watchdog") or {}).get("providers", self.p.get("providers", ["kis"])):
            units.append(f"observer-track-b@{p}.timer")
        return units

    def check_units(self) -> list[Check]:
        out = []
        for unit in self.p.get("units") or self.default_units():
            name = f"unit {unit}"
            try:
                en = subprocess.run(["systemctl", "is-enabled", unit], capture_output=True, text=True, timeout=15)
                fa = subprocess.run(["systemctl", "is-failed", unit], capture_output=True, text=True, timeout=15)
            except (OSError, subprocess.TimeoutExpired) as e:
                out.append(Check(name, "warn", f"cannot ask systemd: {e}", "run preflight where systemctl works"))
                continue
            enabled = en.stdout.strip() or en.stderr.strip()
            state = fa.stdout.strip()
            if en.returncode != 0:
                out.append(Check(name, "fail", f"not enabled ({enabled})", f"sudo systemctl enable --now {unit}"))
            elif state == "failed":
                sev = "fail" if unit.startswith(("observer-watchdog", "observer-unitctl")) else "warn"
                out.append(Check(name, sev, "enabled, but in the failed state",
                                 f"journalctl -u {unit} -n 50; then sudo systemctl reset-failed {unit}"))
            else:
                out.append(Check(name, "ok", f"{enabled}, {state or 'not failed'}"))
        return out


# ---------------------------------------------------------------------------------------------------
# helpers shared by the checks
# ---------------------------------------------------------------------------------------------------
def _short_net(e: Exception) -> str:
    s = str(e)
    m = re.search(r"\[Errno -?\d+\] ([^'\")]+)", s)
    if m:
        return m.group(1).strip()
    if "Read timed out" in s:
        return "no reply (read timed out)"
    return s[:160]


def _kst(ns: int) -> str:
    return datetime.fromtimestamp(ns / NS, tz=KST).strftime("%m-%d %H:%M KST")


def _http_date_ns(text: str) -> int:
    return int(email.utils.parsedate_to_datetime(text).timestamp()) * NS


def _heartbeat_age(root: Path, name: str) -> float | None:
    from observer.store import paths
    from observer.store.state import read_json

    try:
        hb = read_json(paths.heartbeat_file(root, name))
    except (OSError, ValueError):
        return None
    if not hb or "wall_ns" not in hb:
        return None
    try:
        os.kill(int(hb.get("pid", 0)), 0)
    except (OSError, ValueError):
        return None  # that process is gone
    return (time.time_ns() - int(hb["wall_ns"])) / NS


def estimate_skew(samples: list[tuple[int, int, int]]) -> tuple[float, float]:
    """Clock offset (server - local, seconds) from (local_before_ns, local_after_ns, server_date_ns)
    samples. A Date header is truncated to the second, so each sample says the offset lies in
    (D - t1, D + 1 s - t0); the intersection of the samples narrows it to about the spacing.
    Returns (estimate, half-width). Inconsistent samples (a jump): the median of the midpoints."""
    lo = max(d - t1 for t0, t1, d in samples)
    hi = min(d + NS - t0 for t0, t1, d in samples)
    if lo <= hi:
        return (lo + hi) / 2 / NS, (hi - lo) / 2 / NS
    mids = sorted((d + NS // 2 - (t0 + t1) // 2) for t0, t1, d in samples)
    return mids[len(mids) // 2] / NS, 0.5


def probe_kis_ws(auth, ws_url: str, symbol: str, answer_s: float, connect_s: float, custtype: str = "P") -> Check:
    """Approval key, connect, one H0STCNT0 subscription answered within answer_s, unsubscribe, close."""
    import orjson
    import websocket

    from observer.providers.base import ProviderError
    from observer.providers.kis.parse import TR_TRADES, subscribe_message

    name = "websocket:kis"
    fix_net = "check the network path to the broker's WebSocket port (and the broker's notices)"
    try:
        key = auth.approval_key()
    except ProviderError as e:
        return Check(name, "fail", f"no approval key: {e}"[:400],
                     "check KIS_APP_KEY / KIS_APP_SECRET; the approval key comes from /oauth2/Approval")
    t0 = time.monotonic()
    try:
        ws = websocket.create_connection(ws_url, timeout=connect_s, skip_utf8_validation=True)
    except (TimeoutError, websocket.WebSocketTimeoutException):
        return Check(name, "fail", f"{ws_url}: no WebSocket handshake within {connect_s:g} s", fix_net)
    except websocket.WebSocketBadStatusException as e:
        return Check(name, "fail", f"{ws_url}: handshake refused: {str(e)[:200]}", fix_net)
    except (OSError, websocket.WebSocketException) as e:
        what = (e.strerror if isinstance(e, OSError) and e.strerror else f"{type(e).__name__}: {e}")[:200]
        return Check(name, "fail", f"{ws_url}: connect failed: {what}", fix_net)
    connect_ms = round((time.monotonic() - t0) * 1000)
    try:
        t1 = time.monotonic()
        ws.send(subscribe_message(key, TR_TRADES, symbol, register=True, custtype=custtype))
        deadline = t1 + answer_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return Check(name, "fail", f"connected in {connect_ms} ms, but the test subscription ({TR_TRADES} "
                             f"{symbol}) got no answer within {answer_s:g} s: the feed is silent (stalled server "
                             "or half-open connection)", fix_net, {"connect_ms": connect_ms})
            ws.settimeout(left)
            try:
                op, data = ws.recv_data(control_frame=True)
            except (TimeoutError, websocket.WebSocketTimeoutException):
                continue
            except websocket.WebSocketConnectionClosedException:
                return Check(name, "fail", f"connected in {connect_ms} ms, then the server dropped the connection "
                             "without a close frame before answering the test subscription (the incident's "
                             "'no close frame' flapping)", fix_net, {"connect_ms": connect_ms})
            if op == websocket.ABNF.OPCODE_CLOSE:
                code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
                return Check(name, "fail", f"the server closed the connection (close code {code}) before answering "
                             "the test subscription", fix_net, {"close_code": code})
            if op not in (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY):
                continue
            text = data.decode("utf-8", "replace")
            if not text.startswith("{"):
                continue  # a data frame: the subscription is answered by its ack first, keep looking
            try:
                msg = orjson.loads(text)
            except orjson.JSONDecodeError:
                continue
            header = msg.get("header") or {}
            body = msg.get("body") or {}
            if header.get("tr_id") == "PINGPONG":
                ws.send(text)
                continue
            if header.get("tr_id") != TR_TRADES or header.get("tr_key") != symbol:
                continue
            answer_ms = round((time.monotonic() - t1) * 1000)
            code = str(body.get("msg_cd", ""))
            if str(body.get("rt_cd", "")) != "0":
                if code == "OPSP0011":
                    try:
                        auth.approval_key(invalid=key)
                    except ProviderError:
                        pass
                return Check(name, "fail", f"the test subscription was refused: {code} {body.get('msg1', '')}".rstrip(),
                             "read the broker's message (OPSP0008: too many registrations; OPSP8996: the app key is "
                             "in use by another session)", {"code": code})
            try:
                ws.send(subscribe_message(key, TR_TRADES, symbol, register=False, custtype=custtype))
            except (OSError, websocket.WebSocketException):
                pass
            return Check(name, "ok", f"connected in {connect_ms} ms; {TR_TRADES} {symbol} answered in {answer_ms} ms "
                         f"({code} {body.get('msg1', '')}); unsubscribed".rstrip(),
                         detail={"connect_ms": connect_ms, "answer_ms": answer_ms})
    finally:
        try:
            ws.close(timeout=1)
        except Exception:
            pass


# ---------------------------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------------------------
def format_table(rep: Report, width: int = 0) -> str:
    width = width or 160
    rows = [("check", "verdict", "reason", "fix")] + [(c.name, c.verdict.upper() if c.verdict != "ok" else "ok",
                                                       c.reason, c.fix) for c in rep.checks]
    w0 = max(len(r[0]) for r in rows)
    w1 = 7
    rest = max(40, width - w0 - w1 - 6)
    wr = max(30, int(rest * 0.62))
    lines = []
    for i, (n, v, r, f) in enumerate(rows):
        rl = _wrap(r, wr)
        fl = _wrap(f, max(20, rest - wr - 3))
        for j in range(max(len(rl), len(fl))):
            lines.append(f"{n if j == 0 else '':<{w0}} | {v if j == 0 else '':<{w1}} | "
                         f"{rl[j] if j < len(rl) else '':<{wr}} | {fl[j] if j < len(fl) else ''}".rstrip())
        if i == 0:
            lines.append("-" * min(width, w0 + w1 + wr + 30))
    c = rep.counts()
    if rep.skipped_day:
        lines.append(f"\n{rep.day}: not a trading day ({rep.skipped_day}): nothing else checked; exit 0")
    else:
        lines.append(f"\npreflight {rep.day}: {rep.verdict.upper()} — {c['ok']} ok, {c['warn']} warn, {c['fail']} fail"
                     f"{', ' + str(c['skip']) + ' skipped' if c['skip'] else ''} ({rep.duration_s:.1f} s); "
                     f"exit {rep.exit_code}")
    return "\n".join(lines)


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width, break_long_words=True, break_on_hyphens=False) or [""]


def summary_text(rep: Report, host: str) -> str:
    bad = rep.failed() or rep.warned()
    head = (f"preflight {rep.day} on {host}: {rep.verdict.upper()} "
            f"({len(rep.failed())} fail, {len(rep.warned())} warn)")
    return head + "".join(f"\n- {c.name}: {c.reason}" + (f" → {c.fix}" if c.fix else "") for c in bad[:12])
