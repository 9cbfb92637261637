"""The one place the lifecycle programs report a failure or a warning: an event in the tree and a
Telegram alert through the outbox (server side), or a log line (the PC has no tree)."""

from __future__ import annotations

from observer.alerts.table import KEY_BACKUP, KEY_BACKUP_MANIFEST_INVALID, KEY_RETENTION
from observer.core.logging import get_logger

log = get_logger("observer.lifecycle")

# the failure event a program reports -> the alert key it raises (observer.alerts.table)
FAILURE_KEYS = {"backup": KEY_BACKUP, "retention": KEY_RETENTION}


def raise_alert(store, cfg: dict, key: str, severity: str, text: str, **context) -> None:
    """An alert through the outbox (never raises: a failing alert path must not hide what it reports)."""
    try:
        from observer.alerts import Alerter
        from observer.core.secrets import load_secrets

        alerter = Alerter(store.root, cfg, load_secrets(cfg), program=store.program, store=store)
        alerter.alert(key, severity, text[:1000], **context)
        alerter.close(timeout_s=10)
    except Exception:
        log.exception("alert could not be raised", extra={"key": key})


def notify_failure(store, event: str, cfg: dict | None = None, **fields) -> None:
    """Record a failure as a CRITICAL `event` (with store) or a CRITICAL log line (without); with the
    config, also raise a CRITICAL alert."""
    if store is None:
        log.critical(event, extra={"event_fields": fields})
        return
    store.events().emit(event, "CRITICAL", **fields)
    if cfg is None:
        return
    detail = fields.get("error") or fields.get("why") or ""
    raise_alert(store, cfg, FAILURE_KEYS.get(event, event), "CRITICAL", f"{event} failed: {detail}",
                **{k: v for k, v in fields.items() if k in ("date", "action", "disk_pct")})


def notify_invalid(store, cfg: dict | None, invalid: list[tuple[str, str]]) -> None:
    """Report packages whose manifest or receipt is invalid ((YYYYMMDD, why) each; the days are kept):
    one WARNING `backup_manifest_invalid` event per day (or log line without a store) and one alert
    naming them all."""
    if not invalid:
        return
    if store is None:
        for day, why in invalid:
            log.warning(KEY_BACKUP_MANIFEST_INVALID, extra={"event_fields": {"date": day, "why": why}})
        return
    for day, why in invalid:
        store.events().emit(KEY_BACKUP_MANIFEST_INVALID, "WARNING", date=day, why=why[:2000])
    if cfg is not None:
        text = (f"{len(invalid)} backup package(s) with an invalid manifest or receipt; kept, not deleted: "
                + "; ".join(f"{d}: {w}" for d, w in invalid[:10]))
        raise_alert(store, cfg, KEY_BACKUP_MANIFEST_INVALID, "WARNING", text, days=[d for d, _ in invalid])
