"""Preflight's checks of the host and the day: config, trading day, secrets file, disk, disk write,
memory, CPU and the systemd units. Each returns a Check; the thresholds come from [preflight]
(PreflightConfig)."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
import time
from datetime import date
from pathlib import Path

import psutil

from observer.core.calendar import Calendar
from observer.core.checks import Check
from observer.core.config import section
from observer.core.secrets import SecretsError, load_secrets
from observer.core.settings import PreflightConfig, WatchdogConfig
from observer.markets import calendar_from_config


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB" if n >= 2**20 else f"{n / 1024:,.0f} KiB"


# -- config / calendar -------------------------------------------------------------------------------
def check_config(cfg: dict, config_error: str | None) -> tuple[Check, Calendar | None]:
    """The config row, and the calendar it configures (None when it cannot be had)."""
    if config_error:
        first = config_error.splitlines()
        return Check("config", "fail", " ".join(x.strip() for x in first[:3])[:400],
                     "fix the listed keys (observer-preflight --check-config shows every problem; "
                     "docs/configuration.md)"), None
    try:
        cal = calendar_from_config(cfg)
    except ValueError as e:
        return Check("config", "fail", str(e)[:400], "fix [calendar] in the config (docs/calendar.md)"), None
    return Check("config", "ok", f"{cfg.get('_source', 'defaults')} is valid"), cal


def check_trading_day(cal: Calendar, day: date) -> Check:
    reason = cal.closed_reason(day)
    if reason is not None:
        nxt = cal.next_trading_day(day)
        return Check("trading_day", "skip", f"{day} is not a {cal.market_name} trading day ({reason}); next trading day {nxt}",
                     "nothing to do: the collectors stand down today",
                     {"closed_reason": reason, "next_trading_day": nxt.isoformat()})
    s = cal.session(day)
    late = f", late open: {s.late_open_reason}" if s.late_open_reason else ""
    return Check("trading_day", "ok", f"{day} trades {s.open:%H:%M}-{s.close:%H:%M} KST{late}")


# -- secrets ----------------------------------------------------------------------------------------
def expected_owner(settings: PreflightConfig) -> tuple[int, str]:
    """(uid, name) the secrets file must belong to: the service user when run as root, else whoever runs."""
    uid = os.geteuid()
    if uid == 0:
        try:
            pw = pwd.getpwnam(settings.service_user)
            return pw.pw_uid, pw.pw_name
        except KeyError:
            pass
    try:
        return uid, pwd.getpwuid(uid).pw_name
    except KeyError:
        return uid, str(uid)


def check_secrets(cfg: dict, settings: PreflightConfig, secrets=None) -> tuple[Check, object]:
    """The secrets row (mode, owner, the configured providers' keys, Telegram's), and the secrets loaded."""
    path = Path(section(cfg)["secrets_file"])
    cred = os.environ.get("CREDENTIALS_DIRECTORY")
    notes = []
    try:
        st = path.stat()
    except FileNotFoundError:
        if not cred:
            return Check("secrets", "fail", f"{path} does not exist",
                         f"create it (KEY=VALUE lines, see docs/deployment.md), then chmod 600 {path}"), secrets
        st = None
        notes.append(f"{path} not visible; using the systemd credential")
    except PermissionError as e:
        st = None
        notes.append(f"cannot stat {path}: {e.strerror}")
    if st is not None:
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            return Check("secrets", "fail", f"{path} has mode {mode:04o}: group/others can read the broker keys",
                         f"chmod 600 {path}", {"mode": f"{mode:04o}"}), secrets
        want_uid, want_name = expected_owner(settings)
        if st.st_uid != want_uid:
            try:
                owner = pwd.getpwuid(st.st_uid).pw_name
            except KeyError:
                owner = str(st.st_uid)
            return Check("secrets", "fail", f"{path} is owned by {owner}, not by the service user {want_name}",
                         f"chown {want_name} {path}", {"owner": owner}), secrets
    try:
        if secrets is None:
            secrets = load_secrets(cfg)
    except SecretsError as e:
        return Check("secrets", "fail", str(e)[:400], f"chmod 600 {path}; check its KEY=VALUE lines"), None
    missing = []
    for prov in settings.providers:
        pc = (cfg.get("providers") or {}).get(prov) or {}
        for acc in pc.get("accounts") or []:
            for k in (acc.get("key_env"), acc.get("secret_env")):
                if k and not secrets.get(k):
                    missing.append(k)
    if missing:
        return Check("secrets", "fail", f"missing or empty in {secrets.source}: {', '.join(missing)} (names only)",
                     f"fill them in: sudoedit {path}"), secrets
    tg = [k for k in ("TELEGRAM_BOT_TOKEN", "TELEGRAM_CHAT_ID") if not secrets.get(k)]
    if tg:
        return Check("secrets", "warn", f"{', '.join(tg)} empty: alerts are only logged, nobody is told",
                     f"add them to {path} (docs/deployment.md)"), secrets
    return Check("secrets", "ok", f"{secrets.source}: {len(secrets)} keys, mode 0600, right owner"
                 + (f" ({'; '.join(notes)})" if notes else "")), secrets


# -- disk, memory, CPU --------------------------------------------------------------------------------
def disk_verdict(root: Path, used: int, free: int, total: int, settings: PreflightConfig) -> Check:
    """The disk row from the numbers: fail at disk_fail_pct used or below disk_min_free_mb free, warn at
    disk_warn_pct."""
    pct = used / (used + free) * 100 if used + free else 100.0
    detail = {"used_pct": round(pct, 1), "free_bytes": free, "total_bytes": total}
    what = f"{root}: {pct:.0f} % used, {mib(free)} free of {mib(total)}"
    fix = "free space: observer-retention (deletes receipted days), or grow the disk"
    fail_pct, min_free = settings.disk_fail_pct, settings.disk_min_free_mb
    if pct >= fail_pct or free / 2**20 < min_free:
        return Check("disk", "fail", what + f" (fail at {fail_pct:g} % or below {min_free:g} MiB free)", fix, detail)
    warn_pct = settings.disk_warn_pct
    if pct >= warn_pct:
        return Check("disk", "warn", what + f" (warn at {warn_pct:g} %)", fix, detail)
    return Check("disk", "ok", what, detail=detail)


def check_disk(root: Path, settings: PreflightConfig) -> Check:
    if not root.is_dir():
        return Check("disk", "fail", f"data_dir {root} does not exist",
                     "create it: sudo ./install.sh (or fix data_dir in the config)")
    u = psutil.disk_usage(str(root))
    return disk_verdict(root, u.used, u.free, u.total, settings)


def check_disk_write(root: Path, settings: PreflightConfig) -> Check:
    """Write, fsync and read back a probe file in state/: ENOSPC, EROFS, permissions, a slow disk."""
    d = root / "state"
    probe = d / f".preflight-probe-{os.getpid()}"
    size = settings.disk_probe_kb * 1024
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
        return Check("disk_write", "fail", f"write+fsync probe of {mib(size)} in {d} failed: "
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
    if ms >= settings.fsync_warn_ms:
        return Check("disk_write", "warn", f"write+fsync of {mib(size)} took {ms:.0f} ms (slow disk: the "
                     "collectors' durability window will stretch)", "check iostat / the VM's disk tier", detail)
    return Check("disk_write", "ok", f"write+fsync of {mib(size)} in {d}: {ms:.0f} ms", detail=detail)


def check_memory(settings: PreflightConfig) -> Check:
    vm = psutil.virtual_memory()
    avail = vm.available / 2**20
    detail = {"available_bytes": vm.available, "total_bytes": vm.total, "used_pct": vm.percent}
    what = f"{mib(vm.available)} available of {mib(vm.total)} ({vm.percent:.0f} % used)"
    fix = "find what holds memory (ps aux --sort=-rss | head); the collectors need ~1 GiB together"
    if avail < settings.memory_fail_mb:
        return Check("memory", "fail", what + f": below {settings.memory_fail_mb:g} MiB the "
                     "collectors will be OOM-killed", fix, detail)
    if avail < settings.memory_warn_mb:
        return Check("memory", "warn", what + f": below {settings.memory_warn_mb:g} MiB", fix, detail)
    return Check("memory", "ok", what, detail=detail)


def check_cpu(settings: PreflightConfig) -> Check:
    n = os.cpu_count() or 1
    load1 = os.getloadavg()[0]
    per = load1 / n
    detail = {"load1": load1, "cpus": n}
    what = f"load {load1:.2f} on {n} CPUs ({per:.2f} per CPU)"
    fix = "find the busy process (top); the collectors need CPU at the open"
    if per >= settings.load_fail_per_cpu:
        return Check("cpu", "fail", what, fix, detail)
    if per >= settings.load_warn_per_cpu:
        return Check("cpu", "warn", what, fix, detail)
    return Check("cpu", "ok", what, detail=detail)


# -- systemd units ----------------------------------------------------------------------------------
def default_units(cfg: dict) -> list[str]:
    """The standard set: the timers and services of every install, and a streamer per watched provider."""
    units = ["observer-watchdog.service", "observer-unitctl.path", "observer-preflight.timer",
             "observer-track-a.timer", "observer-gap-filler.timer", "observer-backup.timer",
             "observer-retention.timer"]
    for p in WatchdogConfig.from_config(cfg).providers:
        units.append(f"observer-track-b@{p}.timer")
    return units


def check_units(cfg: dict, settings: PreflightConfig) -> list[Check]:
    out = []
    for unit in settings.units or default_units(cfg):
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
