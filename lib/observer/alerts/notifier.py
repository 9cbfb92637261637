"""How a program raises alerts: ProgramAlerts wraps the outbox's Alerter for a collector (built on the
first alert), and is the store's store_error hook."""

from __future__ import annotations

import threading
from collections.abc import Mapping

from observer.alerts.outbox import Alerter, alerts_config
from observer.alerts.table import KEY_STORE_ERROR
from observer.core.clock import Clock
from observer.core.logging import get_logger
from observer.store import paths

log = get_logger("observer.alerts")


class ProgramAlerts:
    """The alerts of a collector: the Alerter (and its sender thread) is built on the first alert only,
    so a quiet run costs nothing; secrets are read then (a broken secrets file leaves the alert pending
    in the outbox). Also the store's store_error hook and the sustained-rate rule of the table."""

    def __init__(self, store, cfg: Mapping, program: str, clock: Clock | None = None):
        self.store = store
        self.cfg = cfg
        self.program = program
        self.clock = clock or store.clock
        self.acfg = alerts_config(cfg)
        self._a: Alerter | None = None
        self._mu = threading.Lock()
        self.raised: list[str] = []      # keys raised (STATUS/tests)
        self._tls = threading.local()

    def alert(self, key: str, severity: str, text: str, **context) -> None:
        try:
            with self._mu:
                if self._a is None:
                    from observer.core.secrets import SecretsError, load_secrets

                    try:
                        secrets = load_secrets(self.cfg)
                    except (SecretsError, OSError) as e:
                        log.error("secrets unreadable: the alert waits in the outbox", extra={"error": str(e)[:300]})
                        secrets = {}
                    self._a = Alerter(self.store.root, dict(self.cfg), secrets, program=self.program,
                                      clock=self.clock, store=self.store)
                a = self._a
            self.raised.append(key)
            a.alert(key, severity, text, **context)
        except Exception:  # an alert never takes the collector down
            log.exception("alert failed", extra={"alert_key": key})

    def store_error(self, fields: Mapping) -> None:
        """Store.on_store_error: a writer reported a store_error (once per outage per file; the alert key's
        throttle makes it one message). Runs inside the failing writer's lock: the outbox's own failure
        is not alerted through the outbox (that would re-enter its writer), the others' are."""
        outbox = str(paths.alerts_file(self.store.root, paths.day_of(self.clock.now_ns())).parent)
        if str(fields.get("file", "")).startswith(outbox) or getattr(self._tls, "busy", False):
            return
        self._tls.busy = True
        try:
            self._store_error(fields)
        finally:
            self._tls.busy = False

    def _store_error(self, fields: Mapping) -> None:
        self.alert(KEY_STORE_ERROR, "CRITICAL",
                   f"{self.program}: the store cannot write ({fields.get('errno', '?')}: {fields.get('error', '')}); "
                   "records are held in memory while it lasts, then counted as lost and marked",
                   file=str(fields.get("file", ""))[-200:])

    def close(self, timeout_s: float = 1) -> None:
        """Short: the collector's stop budget is 5 s; what is not sent by then waits in the outbox and
        the watchdog's drain takes it over after claim_timeout_s."""
        with self._mu:
            a, self._a = self._a, None
        if a is not None:
            a.close(timeout_s)


class OneShotAlerts(ProgramAlerts):
    """ProgramAlerts for a rare alert (a refused credential, a universe fallback): each alert is given
    send_s to go out; what is not sent by then stays pending for the next drain of any program."""

    def __init__(self, store, cfg: Mapping, program: str, *, send_s: float = 10.0):
        super().__init__(store, cfg, program)
        self.send_s = send_s

    def alert(self, key: str, severity: str, text: str, **context) -> None:
        super().alert(key, severity, text, **context)
        self.close(self.send_s)

