"""Preflight's self-test rows: every installed observer-* program started with --self-test by the
installed interpreter, in parallel; a failure is named by its first line and the module it broke in."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from observer.core import notify
from observer.core.checks import Check
from observer.core.selftest import fix_for
from observer.core.settings import PreflightConfig


def last_error_line(text: str) -> str:
    """The most telling line of a program's stderr: the exception line of a traceback, else the last line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if re.match(r"^([A-Za-z_][\w.]*)?(Error|Exception|Exit|Interrupt)\b(:.*)?$", ln):
            return ln
    return lines[-1] if lines else ""


def programs_dir(settings: PreflightConfig, program_path: str) -> Path:
    """preflight.programs_dir, else the directory preflight itself runs from (the installed venv's bin)."""
    return Path(settings.programs_dir or Path(program_path).resolve().parent)


def programs(settings: PreflightConfig, program_path: str) -> list[Path]:
    d = programs_dir(settings, program_path)
    return sorted(p for p in d.glob("observer-*") if p.is_file() and os.access(p, os.X_OK)
                  and not p.name.endswith((".py", ".pyc")))


def self_test(prog: Path, settings: PreflightConfig) -> Check:
    name = f"self-test {prog.name}"
    python = settings.python or sys.executable
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    timeout = settings.self_test_timeout_s
    t0 = time.monotonic()
    try:
        r = subprocess.run([python, str(prog), "--self-test"], capture_output=True, text=True,
                           timeout=timeout, env=env, cwd="/", stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return Check(name, "fail", f"--self-test did not finish within {timeout:g} s (hangs at import?)",
                     f"run {prog} --self-test by hand and see where it stops")
    except OSError as e:
        return Check(name, "fail", f"cannot start {python} {prog}: {e.strerror}", "reinstall: sudo ./install.sh")
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
                     "the program must accept --self-test alone (observer.cli.make_parser)", {"exit": r.returncode})
    line = last_error_line(err) or f"exit {r.returncode}"
    where = re.findall(r'File "[^"]*/(observer/[^"]+\.py)", line (\d+)', err)
    if where:  # the traceback's innermost frame of ours: which module broke
        line += f" (at {where[-1][0]}:{where[-1][1]})"
    return Check(name, "fail", f"exit {r.returncode}: {line}"[:400], fix_for([line]), {"exit": r.returncode})


def check_programs(settings: PreflightConfig, program_path: str) -> list[Check]:
    progs = programs(settings, program_path)
    if not progs:
        return [Check("self-test", "fail", f"no observer-* programs in {programs_dir(settings, program_path)}",
                      "set preflight.programs_dir or reinstall (sudo ./install.sh)")]
    workers = max(1, min(len(progs), os.cpu_count() or 2))
    with ThreadPoolExecutor(workers) as ex:
        return list(ex.map(lambda p: self_test(p, settings), progs))
