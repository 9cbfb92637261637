"""Real systemd 252 as PID 1 of a private PID+mount namespace over an overlay root (design §6).

Everything systemd and install.sh change inside lands in STATE_DIR/upper; the host's /, /etc and /tmp
are never written. The namespace ends by PID (kill -9 of its PID 1), then its state dir is removed.

    ns = SystemdNamespace.boot()
    ns.run("systemctl", "status", "observer.target")
    ns.close()

Also runnable by hand: `python tests/support/systemd_ns.py` boots one, prints its PID and how to enter
it, and tears it down on Enter.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

# outside /tmp: the namespace gets its own tmpfs /tmp, and systemd-tmpfiles must never see the host's
STATE_BASE = Path(os.environ.get("OBSERVER_SYSTEMD_STATE_BASE", "/var/tmp/observer-systemd-tests"))
# the checkout: bound into every namespace at this same path (BOOT_SH), wherever it lives
REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run by hand (python tests/support/systemd_ns.py): tests.support from the checkout
    sys.path.insert(0, str(REPO))

from tests.support import wait_for as _wait_for  # noqa: E402

# the one wait_for, polling systemd (a subprocess per try) at 10 Hz; callers may pass their own interval
wait_for = functools.partial(_wait_for, interval=0.1)

BOOT_SH = r"""#!/bin/sh
set -e
B=$STATE_DIR; mkdir -p $B/upper $B/work $B/root
mount --make-rprivate /
mount -t overlay overlay -o lowerdir=/,upperdir=$B/upper,workdir=$B/work $B/root
for d in proc sys dev; do mount --rbind /$d $B/root/$d; done
mount -t tmpfs tmpfs $B/root/run; mount -t tmpfs tmpfs $B/root/tmp
# the checkout may sit under /tmp or /run (hidden by the tmpfs just mounted) or on a file system the
# overlay of / does not show: bind it read-only at its own path, so the tests find it from anywhere
mkdir -p "$B/root$REPO"; mount --bind "$REPO" "$B/root$REPO"; mount -o remount,bind,ro "$B/root$REPO"
cd $B/root; mkdir -p oldroot; pivot_root . oldroot; umount -l /oldroot
# systemd makes / shared at boot only when it is not in a container; without it, mounts made in a
# service's helper namespace (the ramfs of LoadCredential=) never reach the service: empty creds
mount --make-rshared /
# only systemd's own units and ours run inside: the services the host has enabled (a database, a
# metrics server, sshd) share the host's network and would fight it, and every other namespace, for
# their ports; one whose start hangs on that keeps the boot from ever settling
for w in /etc/systemd/system/multi-user.target.wants/*.service; do
  [ -e "$w" ] || [ -L "$w" ] || continue; n=${w##*/}; [ -e "/etc/systemd/system/$n" ] || ln -s /dev/null "/etc/systemd/system/$n"
done
exec env container=other /lib/systemd/systemd --system --unit=multi-user.target
"""

# what commands inside see: a plain root environment (no pyenv, no venv), plus the host's pip
# settings so install.sh finds the same package index
BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "SYSTEMD_PAGER": "cat",
    "SYSTEMD_COLORS": "0",
    "SYSTEMD_LOG_COLOR": "0",
}


def unshare_problem() -> str | None:
    """Why real-systemd tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root (unshare of PID and mount namespaces, overlay mount)"
    if not shutil.which("unshare") or not shutil.which("nsenter"):
        return "util-linux unshare/nsenter not installed (install.sh --dev installs them)"
    r = subprocess.run(["unshare", "--fork", "--pid", "--mount", "--mount-proc", "true"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return f"unshare is not permitted here: {r.stderr.strip()}"
    return None


class SystemdNamespace:
    def __init__(self, state_dir: Path, proc: subprocess.Popen, pid: int):
        self.state_dir = state_dir
        self.proc = proc  # the unshare process
        self.pid = pid    # systemd, PID 1 inside, as seen from the host
        self.boot_state = ""

    # --- lifecycle ---

    @classmethod
    def boot(cls, timeout: float = 60.0) -> SystemdNamespace:
        STATE_BASE.mkdir(parents=True, exist_ok=True)
        state_dir = Path(tempfile.mkdtemp(prefix="ns-", dir=STATE_BASE))
        boot_sh = state_dir / "boot.sh"
        boot_sh.write_text(BOOT_SH)
        boot_sh.chmod(0o755)
        log = open(state_dir / "boot.log", "wb")
        proc = subprocess.Popen(
            ["unshare", "--fork", "--pid", "--mount", "--uts", "--ipc", "--mount-proc", str(boot_sh)],
            env={**BASE_ENV, "STATE_DIR": str(state_dir), "REPO": str(REPO)}, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        ns = cls(state_dir, proc, 0)
        try:
            ns.pid = wait_for(lambda: _systemd_child(proc), 15, "systemd to start in the namespace")
            ns.boot_state = wait_for(ns._booted, timeout, "systemctl is-system-running to settle")
            if ns.boot_state != "running":
                failed = ns.run("systemctl", "--failed", "--no-legend", "--plain").stdout
                print(f"[systemd-ns] booted {ns.boot_state}; failed units:\n{failed}", file=sys.stderr)
        except BaseException:
            ns.close()
            raise
        return ns

    def _booted(self) -> str | None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"the namespace died while booting: {(self.state_dir / 'boot.log').read_text()[-2000:]}")
        r = self.run("systemctl", "is-system-running", "--wait", timeout=30)
        state = r.stdout.strip()
        return state if state in ("running", "degraded") else None

    def close(self) -> None:
        """Kill the namespace by its PID 1, unmount anything left, delete the state dir."""
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.kill()
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        if self.pid:
            wait_for(lambda: not Path(f"/proc/{self.pid}").exists(), 15, f"namespace PID {self.pid} to exit")
        root = str(self.state_dir)
        for line in reversed(Path("/proc/self/mounts").read_text().splitlines()):
            target = line.split()[1]
            if target == root or target.startswith(root + "/"):
                subprocess.run(["umount", "-l", target], check=False)
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- inside ---

    def run(self, *cmd: str, env: dict | None = None, timeout: float = 120, check: bool = False,
            input: str | None = None) -> subprocess.CompletedProcess:
        """Run a command inside the namespace (its mounts, PIDs, UTS and IPC) as root."""
        full_env = dict(BASE_ENV)
        full_env.update({k: v for k, v in os.environ.items() if k.startswith("PIP_")})
        full_env.update(env or {})
        argv = ["nsenter", "-t", str(self.pid), "-m", "-p", "-u", "-i", "--", "env", "-i",
                *(f"{k}={v}" for k, v in full_env.items()), *cmd]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} -> exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}")
        return r

    def sh(self, script: str, **kw) -> subprocess.CompletedProcess:
        return self.run("bash", "-c", script, **kw)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        r = self.run("systemctl", "show", unit, *(f"--property={p}" for p in props), check=True)
        return dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)

    def wait_unit(self, unit: str, timeout: float, **want: str) -> dict[str, str]:
        """Poll `systemctl show` until every given property has the wanted value."""
        last: dict[str, str] = {}

        def check():
            nonlocal last
            last = self.show(unit, *want, "ActiveState")
            if all(last.get(k) == v for k, v in want.items()):
                return last
            if last.get("ActiveState") == "failed" and want.get("ActiveState") != "failed":
                raise TimeoutError(f"{unit} failed while waiting for {want}")
            return None

        try:
            return wait_for(check, timeout, f"{unit} to reach {want}", interval=0.2)
        except TimeoutError as e:
            status = self.run("systemctl", "status", "--no-pager", "-l", unit).stdout
            raise AssertionError(f"{e}; last seen {last}\n{status}") from None

    def restart_sim(self, timeout: float) -> dict:
        """Restart observer-sim.service and return the ready line (URLs, clock) its new run printed to the
        journal; on a timeout the unit's status is in the error."""
        self.run("systemctl", "daemon-reload", check=True)
        self.run("systemctl", "restart", "observer-sim.service", check=True)
        invocation = self.show("observer-sim.service", "InvocationID")["InvocationID"]

        def ready():
            out = self.run("journalctl", f"_SYSTEMD_INVOCATION_ID={invocation}", "-o", "cat", "--no-pager").stdout
            for line in reversed(out.splitlines()):
                if line.startswith("{") and '"rest"' in line:
                    return json.loads(line)
            return None

        try:
            return wait_for(ready, timeout, "observer-sim to print its ready line", interval=0.3)
        except TimeoutError as e:
            status = self.run("systemctl", "status", "--no-pager", "-l", "-n", "30", "observer-sim.service").stdout
            raise AssertionError(f"{e}\n{status}") from None


# --- install.sh inside a namespace ---

# install.sh runs from a snapshot of the repo taken inside the namespace when its module starts (like
# a release unpacked on a VM): others editing the working tree meanwhile cannot change what a
# "second run changes nothing" test compares.
RELEASE_SRC = "/srv/observer-src"
INSTALL = f"{RELEASE_SRC}/install.sh"

# Injected clocks (Asia/Seoul) for install.sh's deploy guard: a Sunday afternoon is outside market
# hours, Monday 10:00 is inside.
CLOCK_OUTSIDE = "2026-11-22T14:00:00+09:00"
CLOCK_MARKET = "2026-11-23T10:00:00+09:00"


def snapshot_repo(ns: SystemdNamespace) -> None:
    ns.sh(f"rm -rf {RELEASE_SRC} && mkdir -p {RELEASE_SRC} && tar -C {REPO} --exclude=./.venv --exclude=./.venv-checkov "
          f"--exclude=./.git --exclude=__pycache__ --exclude=./build --exclude='*.egg-info' --exclude=./.hypothesis "
          f"--exclude=./.pytest_cache --exclude=./.ruff_cache -cf - . | tar -C {RELEASE_SRC} -xf -", check=True)


def run_install(ns: SystemdNamespace, *args: str, clock: str = CLOCK_OUTSIDE, timeout: float = 400):
    return ns.run(INSTALL, *args, env={"OBSERVER_CLOCK": clock}, timeout=timeout)


def changes(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("[install] changed:")]


def _systemd_child(proc: subprocess.Popen) -> int | None:
    try:
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    except FileNotFoundError:
        return None
    for c in children:
        try:
            if Path(f"/proc/{c}/comm").read_text().strip() == "systemd":
                return int(c)
        except FileNotFoundError:
            continue
    return None


if __name__ == "__main__":
    problem = unshare_problem()
    if problem:
        sys.exit(problem)
    ns = SystemdNamespace.boot()
    try:
        print(f"systemd PID {ns.pid} ({ns.boot_state}); state dir {ns.state_dir}")
        print(f"enter: nsenter -t {ns.pid} -m -p -u -i bash      (Enter here ends it)")
        input()
    finally:
        ns.close()
