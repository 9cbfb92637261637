"""Typed, read-only views of the config, one per section, for the programs that read it.

Defaults live in the schema only (observer/schemas/config/): every view is built from a table with the
schema's defaults filled in (config.section), so no field here has a default of its own and a program
never restates one. A view's field names are the schema's keys (a test holds them in step).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, ClassVar, Self, TypeVar

from observer.core.config import section

T = TypeVar("T")


def _build(cls: type[T], table: dict) -> T:
    """cls from the table's keys of the same names; arrays become tuples (a view is read-only)."""
    return cls(**{f.name: tuple(table[f.name]) if isinstance(table[f.name], list) else table[f.name]
                  for f in dataclasses.fields(cls)})


class _Section:
    """A view of the config table at PATH, whose fields are that table's keys."""

    PATH: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_config(cls, cfg: dict) -> Self:
        return _build(cls, section(cfg, *cls.PATH))


@dataclass(frozen=True)
class TradingWindow:
    """A collector's daily window in market time ("HH:MM"), shifted like the session on late-open days.

    Built per track today ([windows].<track>); its users only ask for its span on a day, so building it
    from a market's sessions instead changes from_config, not them.
    """

    start: str
    end: str

    @classmethod
    def from_config(cls, cfg: dict, track: str) -> TradingWindow:
        return _build(cls, section(cfg, "windows", track))

    def span(self, calendar: Any, day: date) -> tuple[datetime, datetime]:
        """(start, end) on `day` as aware datetimes, shifted by the calendar's late open/close."""
        return calendar.window(day, self.start, self.end)

    def __str__(self) -> str:
        return f"{self.start}-{self.end}"


@dataclass(frozen=True)
class TrackAConfig(_Section):
    """[track_a]: the REST poller."""

    PATH = ("track_a",)

    provider: str
    interval_minutes: int
    workers: int
    max_symbols: int


@dataclass(frozen=True)
class AnomalyConfig(_Section):
    """[track_b.anomaly]: the anomaly-day rules (the streamer judges them live, the audit after the close)."""

    PATH = ("track_b", "anomaly")

    reconnects: int
    disconnected_s: float
    silence_s: float
    silences: int
    scalp_rate_pct: float
    scalp_rate_s: float
    cpu_pct: float
    cpu_s: float
    disk_pct: float


@dataclass(frozen=True)
class TrackBConfig:
    """[track_b]: the streamer's slots, pacing and limits (its triggers and mitigation tables are read by
    collect.triggers and collect.mitigation)."""

    provider: str
    slots: int
    channels: tuple[str, ...]
    connections: int
    registrations_per_connection: int
    min_hold_s: float
    cooldown_s: float
    reallocate_interval_s: float
    queue_max: int
    manual_override_file: str
    expected_symbols: tuple[str, ...]
    fill_idle_slots: bool
    pause_after_s: float
    recording_rate_window_s: float
    anomaly: AnomalyConfig

    @classmethod
    def from_config(cls, cfg: dict) -> TrackBConfig:
        t = section(cfg, "track_b")
        flat = {f.name: t[f.name] for f in dataclasses.fields(cls) if f.name in t}
        return _build(cls, {**flat, "recording_rate_window_s": t["recording_rate"]["window_s"],
                            "anomaly": AnomalyConfig.from_config(cfg)})


@dataclass(frozen=True)
class GapfillConfig(_Section):
    """[gapfill]: the after-close gap detection and backfill."""

    PATH = ("gapfill",)

    provider: str
    tracks: tuple[str, ...]
    silence_s: float
    no_frames_s: float
    merge_rows: int
    max_calls_per_gap: int
    minute_bars: bool
    run_audit: bool


@dataclass(frozen=True)
class AuditConfig(_Section):
    """[audit]: the daily quality report's targets."""

    PATH = ("audit",)

    track_a_target_pct: float
    track_b_target_pct: float
    completeness_target_pct: float


@dataclass(frozen=True)
class WatchdogConfig(_Section):
    """[watchdog]: what the watchdog watches and when it acts."""

    PATH = ("watchdog",)

    interval_s: float
    track_a: bool
    providers: tuple[str, ...]
    heartbeat_stale_s: float
    no_data_s: float
    track_a_no_data_s: float
    start_grace_s: float
    expected_late_s: float
    crash_loop_restarts: int
    crash_loop_minutes: float
    flap_reconnects: int
    flap_window_s: float
    reconnects_per_day: int
    disk_alert_pct: float
    retention_cooldown_s: float
    backup_deadline: str
    alert_repeat_s: float
    journal_lines: int
    programs_dir: str


@dataclass(frozen=True)
class DeployGuardConfig(_Section):
    """[preflight.deploy_guard]: the market-hours time lock install and deploy scripts ask."""

    PATH = ("preflight", "deploy_guard")

    kr_start: str
    kr_end: str
    us_market: bool
    us_start: str
    us_end: str


@dataclass(frozen=True)
class PreflightConfig:
    """[preflight]: the 08:30 checks' thresholds (host, self-tests, a provider's own checks) and the deploy
    guard."""

    providers: tuple[str, ...]
    programs_dir: str
    python: str
    self_test_timeout_s: float
    test_symbol: str
    ws_answer_s: float
    token_valid_until: str
    token_wait_s: float
    skew_warn_s: float
    skew_fail_s: float
    skew_samples: int
    disk_warn_pct: float
    disk_fail_pct: float
    disk_min_free_mb: float
    disk_probe_kb: int
    fsync_warn_ms: float
    memory_warn_mb: float
    memory_fail_mb: float
    load_warn_per_cpu: float
    load_fail_per_cpu: float
    service_user: str
    units: tuple[str, ...]
    deploy_guard: DeployGuardConfig

    @classmethod
    def from_config(cls, cfg: dict) -> PreflightConfig:
        return _build(cls, {**section(cfg, "preflight"), "deploy_guard": DeployGuardConfig.from_config(cfg)})


__all__ = ["AnomalyConfig", "AuditConfig", "DeployGuardConfig", "GapfillConfig", "PreflightConfig", "TrackAConfig",
           "TrackBConfig", "TradingWindow", "WatchdogConfig"]
