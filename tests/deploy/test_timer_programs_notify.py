"""The sd_notify protocol the Type=notify timer units rely on, program by program, against a real unix
datagram socket (what systemd gives them as NOTIFY_SOCKET; no namespace needed): READY first, then
WATCHDOG=1 only from the progress points of real work, and a clean exit. The real-systemd counterpart,
a hung gap-filler killed by its watchdog, is in test_collector_units.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

import pytest

from observer.core import notify
from tests.support.daygen import make_day

REPO = Path(__file__).resolve().parents[2]

DAY = date(2026, 1, 5)


class NotifySocket:
    """A NOTIFY_SOCKET that records every datagram, as systemd would receive them."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.msgs: list[str] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                self.msgs.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue

    def close(self) -> list[str]:
        self._stop.set()
        self._t.join(5)
        self.sock.close()
        return self.msgs


def run_under_notify(tmp: Path, program: str, *args: str, watchdog_usec: int = 1) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run a program as a Type=notify unit would: NOTIFY_SOCKET and WATCHDOG_USEC set (1 µs: every
    progress point pings, so each one shows)."""
    ns = NotifySocket(tmp / f"{program}.sock")
    env = {k: v for k, v in os.environ.items() if k not in ("OBSERVER_CLOCK", "WATCHDOG_PID", "INVOCATION_ID")}
    env.update(NOTIFY_SOCKET=str(ns.path), WATCHDOG_USEC=str(watchdog_usec))
    try:
        r = subprocess.run([sys.executable, str(REPO / "bin" / program), *args], capture_output=True, text=True,
                           env=env, timeout=300, cwd=REPO)
    finally:
        msgs = ns.close()
    return r, msgs


def _protocol(msgs: list[str], ready_status: str) -> int:
    """READY comes first (with its status), nothing but watchdog pings and statuses after it; the pings."""
    assert msgs, "nothing was sent to NOTIFY_SOCKET"
    assert msgs[0] == f"READY=1\nSTATUS={ready_status}", msgs[:3]
    assert all(m == "WATCHDOG=1" or m.startswith(("STATUS=", "STOPPING=1")) for m in msgs[1:]), set(msgs)
    return msgs.count("WATCHDOG=1")


def _config(tmp: Path, root: Path, extra: str = "") -> Path:
    c = tmp / "observer.toml"
    c.write_text(f'data_dir = "{root}"\nhost_id = "test-host"\n{extra}')
    return c


def test_backup_pings_per_block_written_and_chunk_verified(tmp_path):
    root = tmp_path / "data"
    make_day(root, DAY, mb=6)
    cfg = _config(tmp_path, root, "[backup]\nblock_mb = 1\n")
    # 1 MiB blocks: the ~6 MB day is several blocks, each one a ping
    r, msgs = run_under_notify(tmp_path, "observer-backup", "--config", str(cfg), "--date", "20260105",
                               "--level", "1")
    assert r.returncode == 0, r.stderr[-3000:]
    pings = _protocol(msgs, "packaging 20260105")
    assert pings >= 6, msgs  # written and then re-read: at least one ping per MB each way


def test_backup_that_has_nothing_to_do_still_sends_ready_before_it_exits(tmp_path):
    """A Type=notify unit whose process exits 0 before READY fails with result 'protocol'."""
    root = tmp_path / "data"
    root.mkdir()
    r, msgs = run_under_notify(tmp_path, "observer-backup", "--config", str(_config(tmp_path, root)),
                               "--date", "20260105")
    assert r.returncode == 0, r.stderr[-2000:]
    assert msgs and msgs[0].startswith("READY=1"), msgs


def test_retention_pings_per_day_examined(tmp_path):
    root = tmp_path / "data"
    for d in (date(2026, 1, 5), date(2026, 1, 6), date(2026, 1, 7)):
        make_day(root, d, mb=0.2, seed=d.day)
    r, msgs = run_under_notify(tmp_path, "observer-retention", "--config", str(_config(tmp_path, root)), "--dry-run")
    assert r.returncode == 0, r.stderr[-2000:]
    assert _protocol(msgs, "planning") >= 3


def test_preflight_pings_per_check_finished(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    r, msgs = run_under_notify(tmp_path, "observer-preflight", "--config", str(_config(tmp_path, root)), "--all",
                               "--only", "config,disk,memory,cpu", "--no-alert", "--json")
    assert r.returncode in (0, 1, 3), r.stderr[-2000:]  # a verdict (3: a check failed), not a crash
    assert _protocol(msgs, "checking") >= 4  # config, disk, memory, cpu


def test_progress_from_many_threads_pings_at_most_once_per_half_period(tmp_path, monkeypatch):
    srv = NotifySocket(tmp_path / "n.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(srv.path))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # 0.4 s: a ping at most every 0.2 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.setattr(notify, "_default", None)
    notify.ready("working")
    t0 = time.monotonic()

    def work():
        while time.monotonic() - t0 < 1.0:
            notify.progress()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    msgs = srv.close()
    pings = msgs.count("WATCHDOG=1")
    assert msgs[0] == "READY=1\nSTATUS=working"
    assert 3 <= pings <= 5, msgs  # 1.0 s of constant progress / 0.2 s, never one per call


@pytest.mark.parametrize("usec,pid_is_ours", [("0", True), ("400000", False)])
def test_no_watchdog_asked_for_this_process_means_no_pings(tmp_path, monkeypatch, usec, pid_is_ours):
    srv = NotifySocket(tmp_path / "n.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(srv.path))
    monkeypatch.setenv("WATCHDOG_USEC", usec)
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() if pid_is_ours else 1))
    monkeypatch.setattr(notify, "_default", None)
    notify.ready()
    for _ in range(1000):
        notify.progress()
    assert srv.close() == ["READY=1"]
