import os
import signal
import subprocess
import sys
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
