"""The one place the lifecycle programs report a failure.

Today: a CRITICAL event in the tree (server side) or a CRITICAL log line (the PC has no tree).
The alert issue hooks Telegram in here - one line - and every caller gets it.
"""

from __future__ import annotations

from observer.core.logging import get_logger

log = get_logger("observer.lifecycle")


def notify_failure(store, event: str, **fields) -> None:
    """Record a failure as a CRITICAL `event` (with store) or a CRITICAL log line (without)."""
    if store is not None:
        store.events().emit(event, "CRITICAL", **fields)
    else:
        log.critical(event, extra={"event_fields": fields})
