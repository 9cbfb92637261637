import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.lifecycle.sshd import SshServer, have_sshd

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


def wait_for(cond, timeout: float, what: str, proc: subprocess.Popen | None = None):
    """Poll a condition (not a fixed sleep) until true; fail with `what` on timeout or if proc exits."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}) before: {what}\n{proc.stderr.read().decode()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        time.sleep(0.005)


def kill9(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    proc.stderr.close()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if not have_sshd():
        pytest.fail("/usr/sbin/sshd missing: run ./install.sh --dev (installs Debian's openssh-server)")
    srv = SshServer(tmp_path_factory.mktemp("sshd"))
    srv.start()
    yield srv
    srv.stop()
