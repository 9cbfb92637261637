"""sd_notify for long-running programs: READY, STATUS, WATCHDOG, STOPPING.

WATCHDOG=1 is sent only from progress(), which the main loop calls after it has really done work
(a sweep step, a batch written): a stuck loop stops pinging and systemd kills it. There is no
free-running ping thread on purpose — that would keep a hung collector "alive".

The timer programs (gap-filler, backup, retention, preflight, the PC's backup-pull) run as
Type=notify too: they send READY when their real work starts and call the module-level progress()
from the library code where work is really done (a page fetched, a compressed block written, a
day examined, a check finished), so a hung transfer or a stuck loop is killed within WatchdogSec
instead of holding the unit for hours. progress() is cheap (a clock read) and thread-safe.

sdnotify silently swallows send errors; a broken NOTIFY_SOCKET would then turn into a watchdog
kill with no explanation. This wrapper raises inside sdnotify (debug=True), catches, and logs the
problem once, loudly.
"""

from __future__ import annotations

import os
import threading
import time

import sdnotify

from observer.core.logging import get_logger

log = get_logger(__name__)


class Notifier:
    def __init__(self):
        self.socket_path = os.environ.get("NOTIFY_SOCKET", "")
        self.enabled = bool(self.socket_path)
        self._n = None
        self._broken = False
        self.sent: list[str] = []  # last messages, for tests and STATUS introspection
        usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        pid = os.environ.get("WATCHDOG_PID")
        if pid and pid != str(os.getpid()):
            usec = 0
        # ping twice per watchdog period, as sd_watchdog_enabled(3) recommends
        self.watchdog_interval = usec / 2e6 if usec else 0.0
        self._last_ping = 0.0
        self._lock = threading.Lock()  # progress() is called from worker threads too
        if self.enabled:
            try:
                self._n = sdnotify.SystemdNotifier(debug=True)
            except Exception as e:
                self._fail(e)

    def _fail(self, e: Exception) -> None:
        if not self._broken:
            self._broken = True
            log.error("NOTIFY_SOCKET is set but unusable: systemd will not see READY/WATCHDOG "
                      "(expect a start timeout or a watchdog kill)",
                      extra={"notify_socket": self.socket_path, "error": f"{type(e).__name__}: {e}"})

    def _send(self, msg: str) -> bool:
        with self._lock:
            self.sent = (self.sent + [msg])[-20:]
            if not self.enabled or self._n is None:
                return False
            try:
                self._n.notify(msg)
                return True
            except Exception as e:
                self._fail(e)
                return False

    def ready(self, status: str | None = None) -> None:
        self._send("READY=1" + (f"\nSTATUS={_clean(status)}" if status else ""))
        self._last_ping = time.monotonic()

    def status(self, text: str) -> None:
        self._send(f"STATUS={_clean(text)}")

    def progress(self) -> None:
        """The main loop made progress: ping the watchdog if due."""
        if not self.watchdog_interval:
            return
        now = time.monotonic()
        with self._lock:
            if now - self._last_ping < self.watchdog_interval:
                return
            self._last_ping = now
        self._send("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> None:
        self._send("STOPPING=1" + (f"\nSTATUS={_clean(status)}" if status else ""))

    @property
    def broken(self) -> bool:
        return self._broken


_default: Notifier | None = None
_default_lock = threading.Lock()


def default() -> Notifier:
    """The process's notifier, made on first use: library code pings through it without being handed one."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Notifier()
        return _default


def ready(status: str | None = None) -> None:
    default().ready(status)


def progress() -> None:
    """Real work was just done (see the module docstring): ping the watchdog if due."""
    default().progress()


def _clean(text: str) -> str:
    # sdnotify encodes latin-1 and a newline would start a new assignment
    return text.replace("\n", " ").encode("latin-1", "replace").decode("latin-1")
