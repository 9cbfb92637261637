"""A real OpenSSH server for tests and benchmarks: own host key, own config, 127.0.0.1, a free port.

    with SshServer(tmp_path / "sshd") as srv:
        srv.user_key        # private key file of a generated ed25519 user key (authorized)
        srv.known_hosts     # known_hosts line for [127.0.0.1]:port with the server's host key

Started in the foreground (`sshd -D -e`), waited for until the port accepts (no fixed sleep),
stopped by PID. Tests run as root here, hence PermitRootLogin prohibit-password (keys only).
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def have_sshd() -> bool:
    return os.path.exists(SSHD) and shutil.which("ssh-keygen") is not None


def keygen(path: Path, comment: str = "test") -> Path:
    """A fresh ed25519 key pair at path / path.pub (no passphrase)."""
    for p in (path, path.with_suffix(".pub")):
        p.unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    os.chmod(path, 0o600)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SshServer:
    def __init__(self, workdir: Path, *, extra_config: str = ""):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        self.user = getpass.getuser()
        self.port = 0
        self.host_key = self.dir / "host_ed25519"
        self.user_key = self.dir / "user_ed25519"
        self.authorized = self.dir / "authorized_keys"
        self.known_hosts = self.dir / "known_hosts"
        self.log = self.dir / "sshd.log"
        self.extra_config = extra_config
        self.proc: subprocess.Popen | None = None

    # -- keys --------------------------------------------------------------------------------
    def make_keys(self) -> None:
        keygen(self.host_key, "test-host")
        keygen(self.user_key, "test-user")
        self.authorized.write_text(self.user_key.with_suffix(".pub").read_text())
        os.chmod(self.authorized, 0o600)

    def write_known_hosts(self, host_pub: Path | None = None) -> None:
        kind, b64 = (host_pub or self.host_key.with_suffix(".pub")).read_text().split()[:2]
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {kind} {b64}\n")

    def host_fingerprint(self) -> str:
        out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(self.host_key.with_suffix(".pub"))],
                             check=True, capture_output=True, text=True).stdout
        return out.split()[1]  # "SHA256:..."

    # -- process -----------------------------------------------------------------------------
    def config_text(self) -> str:
        return f"""\
Port {self.port}
ListenAddress 127.0.0.1
HostKey {self.host_key}
PidFile none
AuthorizedKeysFile {self.authorized}
AllowUsers {self.user}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
StrictModes no
Subsystem sftp internal-sftp
LogLevel VERBOSE
{self.extra_config}
"""

    def start(self, timeout: float = 15.0) -> SshServer:
        if not self.host_key.exists():
            self.make_keys()
        Path("/run/sshd").mkdir(exist_ok=True)  # privilege-separation dir sshd insists on
        self.port = free_port()
        conf = self.dir / "sshd_config"
        conf.write_text(self.config_text())
        self.write_known_hosts()
        subprocess.run([SSHD, "-t", "-f", str(conf)], check=True, capture_output=True)
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(conf)], stdout=logf, stderr=logf,
                                     stdin=subprocess.DEVNULL)
        logf.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(4).startswith(b"SSH-"):  # the banner: sshd is serving, not just bound
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"sshd did not accept on port {self.port} within {timeout}s")
            time.sleep(0.02)  # polling a condition, not waiting for luck

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def restart_with_new_host_key(self) -> None:
        """Same port and config, a different host key (the 'server was replaced' case)."""
        port = self.port
        self.stop()
        keygen(self.host_key, "test-host-2")
        self.port = port
        conf = self.dir / "sshd_config"
        conf.write_text(self.config_text())
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(conf)], stdout=logf, stderr=logf,
                                     stdin=subprocess.DEVNULL)
        logf.close()
        self._wait_banner()

    def _wait_banner(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(4).startswith(b"SSH-"):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError("sshd did not come back")

    def __enter__(self) -> SshServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
