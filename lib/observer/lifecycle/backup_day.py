"""observer-backup's day: which day to package, whether the collectors are done with it, packaging it
with the earlier days that changed since, and the `backup` event of each result. See docs/backup.md."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

from observer.core.calendar import Calendar
from observer.core.clock import Clock, kst_datetime, yyyymmdd
from observer.core.config import section
from observer.core.settings import TradingWindow
from observer.lifecycle import layout
from observer.lifecycle.backup import BackupOptions, Result, package_day
from observer.markets import calendar_from_config


def collection_end(cfg: dict, day: date, calendar: Calendar | None = None) -> datetime:
    """When the day's last collection window (`windows.*.end`) ends, KST, shifted like the session on
    late-open days. On a closed day, or one outside the calendar's years, the configured times apply."""
    cal = calendar
    try:
        cal = cal or calendar_from_config(cfg)
        if not cal.is_trading_day(day):
            cal = None
    except ValueError:  # a year outside the calendar's range (or a calendar table it cannot read)
        cal = None
    ends = []
    for w in (TradingWindow.from_config(cfg, track) for track in section(cfg, "windows")):
        if cal is not None:
            try:
                ends.append(w.span(cal, day)[1])
                continue
            except ValueError:  # an inverted window: its configured end still counts
                pass
        ends.append(kst_datetime(day, w.end))
    return max(ends)


@dataclass(frozen=True)
class Cutoff:
    """Today's packaging cutoff: the last window's end plus `backup.after_window_minutes`."""

    today: date
    window_end: datetime
    allowed_from: datetime

    @classmethod
    def of(cls, cfg: dict, now: datetime, calendar: Calendar | None = None) -> Cutoff:
        today = now.date()
        end = collection_end(cfg, today, calendar)
        return cls(today, end, end + timedelta(minutes=cfg["backup"]["after_window_minutes"]))

    def default_day(self, now: datetime) -> date:
        """Today once the collectors are done with it, else yesterday."""
        return self.today if now >= self.allowed_from else self.today - timedelta(days=1)

    def too_early(self, day: date, now: datetime) -> str | None:
        """Why `day` may not be packaged at `now` (it is today and a collector may still write), else None."""
        if day != self.today or now >= self.allowed_from:
            return None
        return (f"refusing to package today ({yyyymmdd(day)}) before the collectors are done: the last window "
                f"ends {self.window_end:%H:%M} KST, packaging is allowed from {self.allowed_from:%H:%M} KST "
                f"(now {now:%H:%M}); run again later or give --date for an earlier day")


def package_with_changed(root: Path, day: date, *, opts: BackupOptions, force: bool, host: str, clock: Clock,
                         earlier: bool) -> list[Result]:
    """Package `day`; with `earlier`, also re-package every earlier packaged day whose files grew or
    appeared since (late events), so retention can delete it after the PC pulls again (only the changed
    archives move). Raises BackupBusy/BackupError like package_day."""
    results = [package_day(root, day, opts=opts, force=force, host=host, clock=clock)]
    if earlier:
        for d in layout.package_days(root):
            if d != day:
                r = package_day(root, d, opts=opts, host=host, clock=clock, only_if_packaged=True)
                if r.action != "noop":
                    results.append(r)
    return results


def event_fields(r: Result) -> dict:
    """The fields of the `backup` event (and of --json) for one result."""
    f = {"date": yyyymmdd(r.day), "ok": True, "action": r.action, "seconds": round(r.seconds, 3)}
    if r.reason:
        f["reason"] = r.reason
    if r.problems:  # symlinks, FIFOs, odd names in the day's partitions: left out of the package
        f["problems"] = r.problems[:50]
        f["problems_count"] = len(r.problems)
    if r.path:
        f["path"] = str(r.path)
    m = r.manifest
    if m:
        f.update(archives=m["totals"]["archives"], files=m["totals"]["files"], records=m["totals"]["records"],
                 data_bytes=m["totals"]["data_bytes"], archive_bytes=m["totals"]["archive_bytes"],
                 gaps=m["gaps"], anomaly_day=m["anomaly_day"])
        try:
            f["manifest_sha256"] = (r.path / layout.MANIFEST_SHA).read_text().split()[0]
        except OSError:
            pass
    return f


def summary_line(r: Result) -> str:
    """One human line for a result: action, files and sizes, time."""
    t = r.manifest["totals"] if r.manifest else None
    size = f", {t['files']} files, {t['data_bytes'] / 1e6:.1f} MB -> {t['archive_bytes'] / 1e6:.1f} MB" if t else ""
    return f"{yyyymmdd(r.day)}: {r.action}{size} in {r.seconds:.1f}s" + (f" ({r.reason})" if r.reason else "")
