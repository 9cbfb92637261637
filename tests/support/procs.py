"""The installed programs run as subprocesses from the checkout, without an inherited OBSERVER_CLOCK."""

import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PY = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable


def run_prog(name: str, *args, env=None, timeout=120, **kw) -> subprocess.CompletedProcess:
    e = dict(os.environ)
    e.pop("OBSERVER_CLOCK", None)
    e.update(env or {})
    return subprocess.run([PY, str(REPO / "bin" / name), *map(str, args)], capture_output=True, text=True,
                          env=e, timeout=timeout, cwd=REPO, **kw)


def start_prog(name: str, *args, env=None) -> subprocess.Popen:
    e = dict(os.environ)
    e.pop("OBSERVER_CLOCK", None)
    e.update(env or {})
    return subprocess.Popen([PY, str(REPO / "bin" / name), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=e, cwd=REPO)


def kill9(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    proc.stderr.close()

