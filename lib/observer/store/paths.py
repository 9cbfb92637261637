"""Where everything lives in the data tree (design §3). The only place that spells a path.

All dates and hours in paths are KST (the exchange's day), whatever the host's time zone.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from pathlib import Path

from observer.core.clock import KST, NS, from_ns, yyyymmdd

PARTITIONS = ("swing", "scalp", "raw", "recovered", "system", "metrics", "universe", "state", "reports", "backup")
# partitions that hold one trading day's data, packaged by backup and deleted by retention
DAY_PARTITIONS = ("swing", "scalp", "raw", "recovered", "system", "reports")

_NAME = r"[a-z][a-z0-9_]*"
_DAY = r"(?P<day>\d{8})"
# relative path patterns of every JSONL file the tree may hold (observer-verify checks them)
FILE_PATTERNS: dict[str, re.Pattern[str]] = {
    "swing": re.compile(rf"^swing/{_NAME}/{_NAME}/{_DAY}/(?:[01]\d|2[0-3])_00\.jsonl$"),
    "scalp": re.compile(rf"^scalp/{_NAME}/{_NAME}/{_DAY}/(?:[01]\d|2[0-3])_[0-5]\d_[0-5]\d\.jsonl$"),
    "raw": re.compile(rf"^raw/{_NAME}/{_DAY}/(?:[01]\d|2[0-3])\.jsonl$"),
    "recovered": re.compile(rf"^recovered/{_NAME}/{_NAME}/{_DAY}/[A-Za-z0-9_.-]+\.jsonl$"),
    "events": re.compile(rf"^system/events/{_NAME}/{_DAY}\.jsonl$"),
    "overflow": re.compile(rf"^system/overflow/{_NAME}/{_DAY}_overflow\.jsonl$"),
    "alerts": re.compile(rf"^system/alerts/{_DAY}\.jsonl$"),
    "metrics": re.compile(rf"^metrics/{_DAY}\.jsonl$"),
}
# record kinds each kind of file may hold
FILE_KINDS: dict[str, tuple[str, ...]] = {
    "swing": ("snapshot",),
    "scalp": ("trade", "book"),
    "raw": ("raw",),
    "recovered": ("trade", "bar"),
    "events": ("event",),
    "overflow": ("overflow",),
    "alerts": ("alert",),
    "metrics": ("metric",),
}


def kst_dt(ns: int) -> datetime:
    return from_ns(ns, KST)


def day_of(ns: int) -> date:
    return kst_dt(ns).date()


def swing_file(root: Path, provider: str, market: str, ns: int) -> Path:
    t = kst_dt(ns)
    return Path(root, "swing", provider, market, yyyymmdd(t.date()), f"{t.hour:02d}_00.jsonl")


def scalp_file(root: Path, provider: str, market: str, start_ns: int) -> Path:
    t = kst_dt(start_ns)
    return Path(root, "scalp", provider, market, yyyymmdd(t.date()), f"{t:%H_%M_%S}.jsonl")


def raw_file(root: Path, provider: str, ns: int) -> Path:
    t = kst_dt(ns)
    return Path(root, "raw", provider, yyyymmdd(t.date()), f"{t.hour:02d}.jsonl")


def recovered_file(root: Path, provider: str, market: str, day: date, name: str) -> Path:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"bad recovered file name {name!r}")
    return Path(root, "recovered", provider, market, yyyymmdd(day), f"{name}.jsonl")


def events_file(root: Path, provider: str, day: date) -> Path:
    return Path(root, "system", "events", provider, f"{yyyymmdd(day)}.jsonl")


def overflow_file(root: Path, provider: str, day: date) -> Path:
    return Path(root, "system", "overflow", provider, f"{yyyymmdd(day)}_overflow.jsonl")


def alerts_file(root: Path, day: date) -> Path:
    return Path(root, "system", "alerts", f"{yyyymmdd(day)}.jsonl")


def metrics_file(root: Path, day: date) -> Path:
    return Path(root, "metrics", f"{yyyymmdd(day)}.jsonl")


def prom_file(root: Path) -> Path:
    return Path(root, "metrics", "observer.prom")


def prom_parts_dir(root: Path) -> Path:
    """metrics/.observer.parts/ — each program's share of observer.prom (not *.prom: node_exporter skips it)."""
    return Path(root, "metrics", ".observer.parts")


def universe_file(root: Path, day: date, universe: str) -> Path:
    """universe: the market's universe name (observer.markets.Market.universe)."""
    return Path(root, "universe", f"{yyyymmdd(day)}_{universe}.json")


def universe_sources_dir(root: Path, day: date) -> Path:
    """The files a day's universe was made from (the provider's listing files), kept for reproducibility."""
    return Path(root, "universe", yyyymmdd(day))


def state_dir(root: Path) -> Path:
    return Path(root, "state")


def unitctl_dir(root: Path) -> Path:
    """state/unitctl/ — restart requests (empty files named VERB:UNIT) from the watchdog to the root broker
    (observer.heal.unitctl; the broker is deploy/unitctl.sh, run by systemd/observer-unitctl.service on it)."""
    return Path(root, "state", "unitctl")


def watchdog_state_file(root: Path) -> Path:
    """state/watchdog.json — what the watchdog already restarted and reported (heal/watchdog.py)."""
    return Path(root, "state", "watchdog.json")


def gapfill_checkpoint_file(root: Path, provider: str, day: date) -> Path:
    """state/gapfill/<provider>_YYYYMMDD.json — the gap-filler's progress on one day (recover/gapfill.py)."""
    return Path(root, "state", "gapfill", f"{provider}_{yyyymmdd(day)}.json")


def reports_dir(root: Path, day: date) -> Path:
    return Path(root, "reports", yyyymmdd(day))


def quality_json_file(root: Path, day: date) -> Path:
    """reports/YYYYMMDD/quality.json — the day's audit (recover/audit.py); retention reads its anomaly flag."""
    return Path(reports_dir(root, day), "quality.json")


def quality_html_file(root: Path, day: date) -> Path:
    return Path(reports_dir(root, day), "quality.html")


def backup_dir(root: Path, day: date) -> Path:
    return Path(root, "backup", yyyymmdd(day))


def window_start_ns(ns: int, minutes: int) -> int:
    """Start of the `minutes`-long window (aligned to KST midnight) that contains ns."""
    t = kst_dt(ns)
    midnight = datetime(t.year, t.month, t.day, tzinfo=KST)
    mid_ns = int(midnight.timestamp()) * NS
    span = minutes * 60 * NS
    return mid_ns + (ns - mid_ns) // span * span


def classify(rel: str) -> tuple[str, str] | None:
    """('swing', 'YYYYMMDD') for a relative path of a known JSONL file, else None."""
    for kind, pat in FILE_PATTERNS.items():
        m = pat.match(rel)
        if m:
            return kind, m.group("day")
    return None


def heartbeat_file(root: Path, name: str) -> Path:
    """state/heartbeat/<name>.json — written by a collector's main loop, read by the watchdog."""
    if not re.fullmatch(r"[a-z][a-z0-9_@.-]*", name):
        raise ValueError(f"bad heartbeat name {name!r}")
    return Path(root, "state", "heartbeat", f"{name}.json")


def backup_root(root: Path) -> Path:
    """backup/ — one directory per packaged day."""
    return Path(root, "backup")
