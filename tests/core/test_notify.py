"""sd_notify against a real unix datagram socket, and a broken NOTIFY_SOCKET logged once, loudly."""

import io
import json
import logging
import socket

from observer.core.logging import setup_logging
from observer.core.notify import Notifier


def recv_all(sock):
    out = []
    sock.settimeout(0.5)
    try:
        while True:
            out.append(sock.recv(4096).decode())
            sock.settimeout(0.05)
    except TimeoutError:
        pass
    return out


def test_ready_status_watchdog_stopping(tmp_path, monkeypatch):
    path = tmp_path / "notify.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # 0.2 s → ping at most every 0.1 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    n = Notifier()
    n.ready("slots 3/41 | 120 msg/s")
    n.progress()          # too soon after READY: no ping
    n._last_ping -= 1     # pretend the period passed (the loop made progress since)
    n.progress()
    n.status("level 1 — mitigation")
    n.stopping()
    msgs = recv_all(srv)
    assert msgs == ["READY=1\nSTATUS=slots 3/41 | 120 msg/s", "WATCHDOG=1", "STATUS=level 1 ? mitigation", "STOPPING=1"]
    assert not n.broken
    srv.close()


def test_no_progress_no_ping(tmp_path, monkeypatch):
    path = tmp_path / "n.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", "1000")
    n = Notifier()
    n.ready()
    # no progress() calls: nothing but READY may arrive, whatever time passes
    assert recv_all(srv) == ["READY=1"]
    srv.close()


def test_broken_socket_is_logged_once(tmp_path, monkeypatch):
    buf = io.StringIO()
    setup_logging("t", "INFO", stream=buf)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "missing.sock"))
    n = Notifier()
    n.ready()
    n.status("x")
    n.stopping()
    lines = [json.loads(x) for x in buf.getvalue().splitlines()]
    errors = [x for x in lines if x["level"] == "ERROR"]
    assert len(errors) == 1 and "NOTIFY_SOCKET" in errors[0]["msg"] and n.broken
    logging.getLogger().handlers.clear()


def test_without_systemd_it_is_silent(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = Notifier()
    n.ready()
    n.progress()
    assert not n.enabled and not n.broken
