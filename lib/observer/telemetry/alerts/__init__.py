"""Alerts: Telegram for CRITICAL and listed WARNINGs, an outbox that survives restarts, a daily summary.

    table.py     the alert table: every key, its severity, condition and raiser (the single source)
    outbox.py    Alerter: the outbox file's state machine (route, throttle, claim, retry, expire), its lock
                 and the background sender thread
    transport.py the Telegram sender (python-telegram-bot, imported on the first send only)
    summary.py   the daily summary
    notifier.py  ProgramAlerts: the one interface programs raise alerts through

This package re-exports what programs import; importing it never imports telegram.
"""

from observer.telemetry.alerts.notifier import SEND_NOW_S, ProgramAlerts
from observer.telemetry.alerts.outbox import (
    ALERT_TABLE,
    EXPIRED,
    NOT_ROUTED,
    SEVERITIES,
    THROTTLED,
    Alerter,
    alerts_config,
    format_text,
    key_name,
)
from observer.telemetry.alerts.summary import daily_summary_due, send_daily_summary, summarize_day
from observer.telemetry.alerts.table import (
    BY_KEY,
    CONSTANTS,
    KEY_BACKUP,
    KEY_BACKUP_MANIFEST_INVALID,
    KEY_BACKUP_MISSING,
    KEY_CANNOT_RESTART,
    KEY_CPU,
    KEY_CRASH_LOOP,
    KEY_CREDENTIALS_REFUSED,
    KEY_DAILY_SUMMARY,
    KEY_DISK,
    KEY_OOM,
    KEY_PREFLIGHT_FAIL,
    KEY_PREFLIGHT_WARN,
    KEY_RECONNECTS,
    KEY_RESTART,
    KEY_RETENTION,
    KEY_STORE_ERROR,
    KEY_TRACK_A_RATE,
    KEY_TRACK_B_RATE,
    KEY_UNIVERSE_FALLBACK,
    KEY_WS_DOWN,
    KEY_WS_FLAPPING,
    TABLE,
    AlertRow,
    Sustained,
    known,
    routed_warning_keys,
)

__all__ = [
    "ALERT_TABLE", "BY_KEY", "CONSTANTS", "EXPIRED", "NOT_ROUTED", "SEVERITIES", "TABLE", "THROTTLED",
    "AlertRow", "Alerter", "ProgramAlerts", "SEND_NOW_S", "Sustained",
    "alerts_config", "daily_summary_due", "format_text", "key_name", "known", "routed_warning_keys",
    "send_daily_summary", "summarize_day",
    "KEY_BACKUP", "KEY_BACKUP_MANIFEST_INVALID", "KEY_BACKUP_MISSING", "KEY_CANNOT_RESTART", "KEY_CPU",
    "KEY_CRASH_LOOP", "KEY_CREDENTIALS_REFUSED", "KEY_DAILY_SUMMARY", "KEY_DISK", "KEY_OOM", "KEY_PREFLIGHT_FAIL",
    "KEY_PREFLIGHT_WARN", "KEY_RECONNECTS", "KEY_RESTART", "KEY_RETENTION", "KEY_STORE_ERROR", "KEY_TRACK_A_RATE",
    "KEY_TRACK_B_RATE", "KEY_UNIVERSE_FALLBACK", "KEY_WS_DOWN", "KEY_WS_FLAPPING",
]
