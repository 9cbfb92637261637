"""The alert table: every alert key a program raises, its severity, its condition, who raises it and
whether a WARNING of it is sent to Telegram by default (docs/alerts.md). The single source: programs
raise alerts only under the KEY_* constants below, `alerts.warning_keys`'s default is derived from
the `routed` column, and tests/telemetry/test_alert_table.py fails when a program raises a key this
table does not know or the table lists a key no program raises.

Importing it (and the observer.telemetry.alerts package around it) never imports telegram: collectors use it freely.
"""

from __future__ import annotations

from dataclasses import dataclass

# -- the design's table (design §4: "Alerts") -------------------------------------------------
KEY_TRACK_A_RATE = "track_a_rate"
KEY_TRACK_B_RATE = "track_b_rate"
KEY_RECONNECTS = "reconnects"
KEY_BACKUP = "backup"
KEY_DISK = "disk"
KEY_CPU = "cpu"
# -- the design's CRITICAL events that page (§4: reconnect policy, store) ---------------------
KEY_WS_DOWN = "ws_down"
KEY_STORE_ERROR = "store_error"
# -- ours -------------------------------------------------------------------------------------
KEY_WS_FLAPPING = "ws_flapping"
KEY_BACKUP_MISSING = "backup_missing"
KEY_RETENTION = "retention"
KEY_PREFLIGHT_FAIL = "preflight_fail"
KEY_PREFLIGHT_WARN = "preflight_warn"
KEY_CRASH_LOOP = "crash_loop"
KEY_RESTART = "restart"
KEY_CANNOT_RESTART = "cannot_restart"
KEY_OOM = "oom"
KEY_DAILY_SUMMARY = "daily_summary"
# -- raised from other branches (their raisers land separately) -------------------------------
KEY_BACKUP_MANIFEST_INVALID = "backup_manifest_invalid"
KEY_CREDENTIALS_REFUSED = "credentials_refused"
KEY_UNIVERSE_FALLBACK = "universe_fallback"


@dataclass(frozen=True)
class AlertRow:
    key: str
    severity: str          # the severity it is raised with (disk: CRITICAL when emergency retention fails)
    condition: str
    raised_by: str         # program(s)
    routed: bool           # sent to Telegram by default (CRITICAL/ERROR always are; this decides WARNINGs)
    rules: tuple[str, ...] = ()   # Prometheus rules in config/monitoring/ that mirror it


TABLE: tuple[AlertRow, ...] = (
    AlertRow(KEY_TRACK_A_RATE, "WARNING", "Track A collection rate < 95 % for 10 min (alerts.track_a_rate_*)",
             "observer-track-a", True, ("ObserverTrackARateLow",)),
    AlertRow(KEY_TRACK_B_RATE, "WARNING", "Track B recording rate < 90 % for 5 min (alerts.track_b_rate_*)",
             "observer-track-b", True, ("ObserverTrackBRateLow",)),
    AlertRow(KEY_RECONNECTS, "WARNING", "> 20 WebSocket reconnects in the day (watchdog.reconnects_per_day)",
             "observer-watchdog", True, ("ObserverReconnectsHigh",)),
    AlertRow(KEY_BACKUP, "CRITICAL", "the backup run failed", "observer-backup", True,
             ("ObserverBackupFailed", "ObserverBackupMissing")),
    AlertRow(KEY_DISK, "WARNING", "disk of data_dir > 80 % (emergency retention; CRITICAL when it fails)",
             "observer-watchdog", True, ("ObserverDiskFull",)),
    AlertRow(KEY_CPU, "WARNING", "host CPU > 90 % for 10 min (alerts.cpu_*)", "observer-watchdog", True,
             ("ObserverCpuHigh",)),
    AlertRow(KEY_WS_DOWN, "CRITICAL", "WebSocket down 5 min: scalp recording paused, anomaly day "
             "(track_b.pause_after_s)", "observer-track-b", True),
    AlertRow(KEY_STORE_ERROR, "CRITICAL", "the store cannot write (full disk, EIO); once per outage",
             "observer-track-a, observer-track-b", True),
    AlertRow(KEY_WS_FLAPPING, "WARNING", "≥ 5 WebSocket reconnects in 10 min (watchdog.flap_*)",
             "observer-watchdog", True),
    AlertRow(KEY_BACKUP_MISSING, "ERROR", "the trading day's backup package missing at 22:00",
             "observer-watchdog", True),
    AlertRow(KEY_RETENTION, "CRITICAL", "the retention run failed or is blocked", "observer-retention", True),
    AlertRow(KEY_PREFLIGHT_FAIL, "CRITICAL", "a preflight check failed", "observer-preflight", True),
    AlertRow(KEY_PREFLIGHT_WARN, "WARNING", "a preflight check warned (daily summary only)",
             "observer-preflight", False),
    AlertRow(KEY_CRASH_LOOP, "CRITICAL", "a unit failed K times in M min or hit its start limit",
             "observer-watchdog", True),
    AlertRow(KEY_RESTART, "ERROR", "the watchdog restarted a stuck or silent collector", "observer-watchdog", True),
    AlertRow(KEY_CANNOT_RESTART, "CRITICAL", "a collector needs a restart the watchdog cannot make",
             "observer-watchdog", True),
    AlertRow(KEY_OOM, "ERROR", "a unit was killed by the OOM killer", "observer-watchdog", True),
    AlertRow(KEY_DAILY_SUMMARY, "INFO", "the day's summary after alerts.daily_summary_at (always sent)",
             "observer-watchdog", True),
    # raisers land from other branches (retention/pull, the collectors and gap-filler, the universe manager)
    AlertRow(KEY_BACKUP_MANIFEST_INVALID, "WARNING", "a backup manifest or receipt is invalid; the day is kept",
             "observer-retention, observer-backup-pull", True),
    AlertRow(KEY_CREDENTIALS_REFUSED, "CRITICAL", "the broker refused the app key/secret (names the account)",
             "observer-track-a, observer-track-b, observer-gap-filler", True),
    AlertRow(KEY_UNIVERSE_FALLBACK, "WARNING", "the stock master download/parse failed; last good copy used",
             "observer-track-a (universe manager)", True),
)

BY_KEY: dict[str, AlertRow] = {r.key: r for r in TABLE}
# every KEY_* constant of this module, name -> key (the static scan of lib resolves call sites with it)
CONSTANTS: dict[str, str] = {n: v for n, v in globals().items() if n.startswith("KEY_") and isinstance(v, str)}


def routed_warning_keys() -> list[str]:
    """The default of alerts.warning_keys: the table's WARNING keys marked routed."""
    return [r.key for r in TABLE if r.severity == "WARNING" and r.routed]


def known(key: str) -> bool:
    return key.split(":", 1)[0] in BY_KEY


class Sustained:
    """A condition that must hold for `for_s` seconds before it fires, once per episode.

    update(now_s, bad) -> True on the update where `bad` has held for for_s (timestamps from the
    caller's clock); a good update ends the episode, so a new one can fire again."""

    def __init__(self, for_s: float):
        self.for_s = float(for_s)
        self.since: float | None = None
        self.fired = False

    def update(self, now_s: float, bad: bool) -> bool:
        if not bad:
            self.since, self.fired = None, False
            return False
        if self.since is None:
            self.since = now_s
        if not self.fired and now_s - self.since >= self.for_s:
            self.fired = True
            return True
        return False

    def held_s(self, now_s: float) -> float:
        return 0.0 if self.since is None else now_s - self.since
