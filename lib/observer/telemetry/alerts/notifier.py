"""The one interface programs raise alerts through: the collectors, preflight, the watchdog and the
lifecycle programs (backup, retention, pull).

    alerts = ProgramAlerts(store, cfg, "track-a")              # a long-running program
    alerts.alert(KEY_DISK, "WARNING", "data_dir 83 % full", used=0.83)
    alerts.drain()                                             # the watchdog: retry every program's alerts
    alerts.close()                                             # at exit, bounded by close_s

    ProgramAlerts(store, cfg, "backup", send_s=SEND_NOW_S).alert(...)  # a rare alert: sent now (up to 10 s)

The outbox's Alerter (and its sender thread) is built on first use only, so a quiet run costs nothing;
the secrets are read then unless given (unreadable secrets leave the alert pending in the outbox for
a later drain). Every alert is also a log line at its severity (journald keeps it). Nothing here ever
raises into the caller: a failing alert path must not hide what it reports, nor stop the program.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

from observer.core.clock import Clock
from observer.core.logging import get_logger
from observer.store import paths
from observer.telemetry.alerts.outbox import Alerter, alerts_config
from observer.telemetry.alerts.table import KEY_STORE_ERROR

log = get_logger("observer.telemetry.alerts")
SEND_NOW_S = 10.0   # send_s of a rare alert: it goes out now, the caller waits at most this long
_LEVEL = {"INFO": logging.INFO, "WARNING": logging.WARNING, "ERROR": logging.ERROR, "CRITICAL": logging.CRITICAL}


def _err(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:300]


class ProgramAlerts:
    """One per program (thread-safe). store: the program's Store (outbox lines and alert_delivery
    events go through it; its clock is the alerts' clock unless one is given). secrets: the loaded
    secrets, or None to read them on first use. send_s: give every alert up to send_s to go out before
    alert() returns (a one-shot program, or a rare alert in a collector). close_s: what close() gives
    the sender by default; a collector keeps it at 1 s inside its 5 s stop budget: what is not sent
    waits in the outbox, and the watchdog's drain takes it over after alerts.claim_timeout_s."""

    def __init__(self, store, cfg: Mapping, program: str, *, clock: Clock | None = None, secrets=None,
                 send_s: float | None = None, close_s: float = 1.0):
        self.store = store
        self.cfg = cfg
        self.program = program
        self.clock = clock or store.clock
        self.acfg = alerts_config(cfg)   # thresholds of the sustained conditions the collectors evaluate
        self.send_s = send_s
        self.close_s = close_s
        self._secrets = secrets
        self._a: Alerter | None = None
        self._mu = threading.Lock()
        self.raised: list[str] = []      # keys raised, in order (STATUS lines, tests)
        self._tls = threading.local()

    def _alerter(self) -> Alerter:
        with self._mu:
            if self._a is None:
                secrets = self._secrets
                if secrets is None:
                    from observer.core.secrets import SecretsError, load_secrets

                    try:
                        secrets = load_secrets(self.cfg)
                    except (SecretsError, OSError) as e:
                        log.error("secrets unreadable: alerts wait in the outbox", extra={"error": str(e)[:300]})
                        secrets = {}
                self._a = Alerter(self.store.root, dict(self.cfg), secrets, program=self.program,
                                  clock=self.clock, store=self.store)
            return self._a

    def alert(self, key: str, severity: str, text: str, **context) -> None:
        self.raised.append(key)
        try:
            log.log(_LEVEL.get(str(severity).upper(), logging.WARNING), "alert",
                    extra={"alert_key": key, "severity": severity, "text": str(text)[:2000]})
            self._alerter().alert(key, severity, text, **context)
        except Exception:  # an alert never takes its program down
            log.exception("alert failed", extra={"alert_key": key})
            return
        if self.send_s is not None:
            self.close(self.send_s)  # what is not sent by then stays pending for the next drain anywhere

    def drain(self, timeout_s: float = 5) -> dict:
        """Retry what the outbox still holds: this program's and every other program's alerts."""
        try:
            return self._alerter().drain(timeout_s=timeout_s)
        except Exception as e:
            log.error("alerts drain failed", extra={"error": _err(e)})
            return {}

    def undelivered(self) -> int | None:
        """Alerts of any program not delivered yet (None: the outbox cannot be read)."""
        try:
            return int(self._alerter().stats().get("undelivered", 0))
        except Exception:
            return None

    def store_error(self, fields: Mapping) -> None:
        """Store.on_store_error: a writer reported a store_error (once per outage per file; the alert key's
        throttle makes it one message). Runs inside the failing writer's lock: the outbox's own failure
        is not alerted through the outbox (that would re-enter its writer), the others' are."""
        outbox = str(paths.alerts_file(self.store.root, paths.day_of(self.clock.now_ns())).parent)
        if str(fields.get("file", "")).startswith(outbox) or getattr(self._tls, "busy", False):
            return
        self._tls.busy = True
        try:
            self.alert(KEY_STORE_ERROR, "CRITICAL",
                       f"{self.program}: the store cannot write ({fields.get('errno', '?')}: "
                       f"{fields.get('error', '')}); records are held in memory while it lasts, then counted "
                       "as lost and marked", file=str(fields.get("file", ""))[-200:])
        finally:
            self._tls.busy = False

    def close(self, timeout_s: float | None = None) -> None:
        """Send what is queued for up to timeout_s (default close_s), then stop the sender. A later
        alert() builds a new one."""
        with self._mu:
            a, self._a = self._a, None
        if a is None:
            return
        try:
            a.close(self.close_s if timeout_s is None else timeout_s)
        except Exception as e:
            log.error("alerts close failed", extra={"error": _err(e)})
