"""The one place preflight and the watchdog hand an alert to observer.alerts.

`AlertSink(root, cfg, secrets, program).alert(key, severity, text, **context)` forwards to
`observer.alerts.Alerter` (outbox, Telegram, dedup/throttle, daily summary). Every alert is also
logged (journald keeps it, even when no alerter can be built from a broken alert config or queueing
fails) and recorded in `.sent` (tests read it). Sending never raises into the caller.
"""

from __future__ import annotations

import logging
from pathlib import Path

from observer.core.logging import get_logger

log = get_logger(__name__)
_LEVEL = {"INFO": logging.INFO, "WARNING": logging.WARNING, "ERROR": logging.ERROR, "CRITICAL": logging.CRITICAL}


def _make_alerter(root: Path, cfg: dict, secrets, program: str):
    try:
        from observer.alerts import Alerter  # outbox + Telegram
    except ImportError:
        return None
    try:
        return Alerter(root, cfg, secrets, program=program)
    except Exception as e:  # a broken alert config must not stop preflight or the watchdog
        log.error("alerts unavailable; alerts are only logged", extra={"error": f"{type(e).__name__}: {e}"[:300]})
        return None


class AlertSink:
    def __init__(self, root: Path, cfg: dict, secrets, program: str, *, enabled: bool = True):
        self.program = program
        self.sent: list[dict] = []
        self._a = _make_alerter(Path(root), cfg, secrets, program) if enabled else None

    def alert(self, key: str, severity: str, text: str, **context) -> None:
        self.sent.append({"key": key, "severity": severity, "text": text, **context})
        log.log(_LEVEL.get(severity, logging.WARNING), "alert", extra={"alert_key": key, "severity": severity,
                                                                       "text": text[:2000]})
        if self._a is None:
            return
        try:
            self._a.alert(key, severity, text, **context)
        except Exception as e:
            log.error("alert not queued", extra={"alert_key": key, "error": f"{type(e).__name__}: {e}"[:300]})

    def drain(self, timeout_s: float = 5) -> dict:
        """Retry what the outbox still holds (this program's and every other program's alerts)."""
        if self._a is None:
            return {}
        try:
            return self._a.drain(timeout_s=timeout_s)
        except Exception as e:
            log.error("alerts drain failed", extra={"error": f"{type(e).__name__}: {e}"[:300]})
            return {}

    def undelivered(self) -> int | None:
        if self._a is None:
            return None
        try:
            return int(self._a.stats().get("undelivered", 0))
        except Exception:
            return None

    def close(self) -> None:
        if self._a is None:
            return
        for step in ("drain", "close"):
            try:
                getattr(self._a, step)()
            except Exception as e:
                log.error(f"alerts {step} failed", extra={"error": f"{type(e).__name__}: {e}"[:300]})
