"""The one place the lifecycle programs report a failure: a CRITICAL event in the tree and a Telegram
alert through the outbox (server side), or a CRITICAL log line (the PC has no tree)."""

from __future__ import annotations

from observer.alerts_table import KEY_BACKUP, KEY_RETENTION
from observer.core.logging import get_logger

log = get_logger("observer.lifecycle")

# the failure event a program reports -> the alert key it raises (observer.alerts_table)
FAILURE_KEYS = {"backup": KEY_BACKUP, "retention": KEY_RETENTION}


def notify_failure(store, event: str, cfg: dict | None = None, **fields) -> None:
    """Record a failure as a CRITICAL `event` (with store) or a CRITICAL log line (without); with the
    config, also raise a CRITICAL alert (never raises: a failing alert path must not hide the failure)."""
    if store is None:
        log.critical(event, extra={"event_fields": fields})
        return
    store.events().emit(event, "CRITICAL", **fields)
    if cfg is None:
        return
    try:
        from observer.alerts import Alerter
        from observer.core.secrets import load_secrets

        detail = fields.get("error") or fields.get("why") or ""
        alerter = Alerter(store.root, cfg, load_secrets(cfg), program=store.program, store=store)
        alerter.alert(FAILURE_KEYS.get(event, event), "CRITICAL", f"{event} failed: {detail}"[:1000],
                      **{k: v for k, v in fields.items() if k in ("date", "action", "disk_pct")})
        alerter.close(timeout_s=10)
    except Exception:
        log.exception("alert for a failure could not be raised", extra={"event": event})
