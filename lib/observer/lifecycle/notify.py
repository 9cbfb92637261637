"""How the lifecycle programs (backup, retention, pull) report a failure or a warning: an event in the
tree and an alert sent now through observer.telemetry.alerts' ProgramAlerts (server side), or a log line (the PC
has no tree)."""

from __future__ import annotations

from observer.core.logging import get_logger
from observer.telemetry.alerts.notifier import SEND_NOW_S, ProgramAlerts
from observer.telemetry.alerts.table import KEY_BACKUP, KEY_BACKUP_MANIFEST_INVALID, KEY_RETENTION

log = get_logger("observer.lifecycle")

# the failure event a program reports -> the alert key it raises (observer.telemetry.alerts.table)
FAILURE_KEYS = {"backup": KEY_BACKUP, "retention": KEY_RETENTION}


def _alerts(store, cfg: dict) -> ProgramAlerts:
    # a one-shot program: the alert is given SEND_NOW_S to go out, the rest waits for the watchdog's drain
    return ProgramAlerts(store, cfg, store.program, send_s=SEND_NOW_S)


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
    _alerts(store, cfg).alert(FAILURE_KEYS.get(event, event), "CRITICAL", f"{event} failed: {detail}"[:1000],
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
        _alerts(store, cfg).alert(KEY_BACKUP_MANIFEST_INVALID, "WARNING", text[:1000], days=[d for d, _ in invalid])
