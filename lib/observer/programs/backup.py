"""observer-backup: package a day into backup/YYYYMMDD (timer 21:00). See docs/backup.md."""

from __future__ import annotations

import json
import sys
from datetime import date, datetime, timedelta

from observer import cli
from observer.core import notify
from observer.core.clock import kst_datetime, yyyymmdd
from observer.core.config import host_id, section
from observer.core.settings import TradingWindow
from observer.lifecycle import layout
from observer.lifecycle.backup import BackupBusy, BackupError, BackupOptions, Result, package_day
from observer.lifecycle.notify import notify_failure
from observer.store.store import Store

PROGRAM = "observer-backup"


def collection_end(cfg: dict, day: date) -> datetime:
    """When the day's last collection window ends (KST), shifted like the session on late-open days."""
    wins = [TradingWindow.from_config(cfg, track) for track in section(cfg, "windows")]
    ends = []
    cal = None
    try:
        from observer.core.calendar import calendar_from_config

        cal = calendar_from_config(cfg)
        if not cal.is_trading_day(day):
            cal = None
    except Exception:  # calendar unavailable or the year unsupported: the config times still apply
        cal = None
    for w in wins:
        if cal is not None:
            try:
                ends.append(w.span(cal, day)[1])
                continue
            except ValueError:
                pass
        ends.append(kst_datetime(day, w.end))
    return max(ends)


def _event_fields(r: Result) -> dict:
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


def main(argv=None) -> int:
    p = cli.make_parser(PROGRAM, "Package one day of the tree into backup/YYYYMMDD: one tar.gz per partition and "
                        "a manifest (sizes, SHA-256, record counts); built aside, verified by re-reading, then "
                        "renamed into place. Re-running an unchanged day does nothing.")
    p.add_argument("--date", type=cli.date_arg, metavar="YYYYMMDD",
                   help="the day to package (default: today once the collection windows are over, else yesterday)")
    p.add_argument("--force", action="store_true", help="rebuild even if a verified package exists")
    p.add_argument("--data-dir", metavar="PATH", help="the tree (default: data_dir from the config)")
    p.add_argument("--level", type=int, choices=range(1, 10), metavar="1-9", help="gzip level (config backup.level)")
    p.add_argument("--workers", type=int, help="compression threads (config backup.workers; 0 = one per CPU)")
    p.add_argument("--limit-mb-s", type=float, help="read rate limit in MB/s (config backup.limit_mb_s)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(argv)
    ctx = cli.start(PROGRAM, args, tree=cli.TREE_WRITE)
    cfg = ctx.cfg
    root = ctx.root
    b = cfg["backup"]
    opts = BackupOptions(args.level or b["level"], b["workers"] if args.workers is None else args.workers,
                         b["block_mb"] << 20, b["limit_mb_s"] if args.limit_mb_s is None else args.limit_mb_s)
    now = ctx.clock.now_kst()
    today = now.date()
    margin = timedelta(minutes=b["after_window_minutes"])
    cutoff = collection_end(cfg, today) + margin
    if args.date:
        day = args.date
        if day > today:
            print(f"{PROGRAM}: {yyyymmdd(day)} is in the future (today is {yyyymmdd(today)} KST)", file=sys.stderr)
            return cli.EXIT_USAGE
    else:
        day = today if now >= cutoff else today - timedelta(days=1)
    notify.ready(f"packaging {yyyymmdd(day)}")  # the watchdog runs from here (systemd unit)
    store = Store(root, program=PROGRAM, provider="system", clock=ctx.clock, host=host_id(cfg))
    try:
        if day == today and now < cutoff:
            msg = (f"refusing to package today ({yyyymmdd(day)}) before the collectors are done: the last window "
                   f"ends {cutoff - margin:%H:%M} KST, packaging is allowed from {cutoff:%H:%M} KST "
                   f"(now {now:%H:%M}); run again later or give --date for an earlier day")
            print(f"{PROGRAM}: {msg}", file=sys.stderr)
            store.events().emit("backup", "WARNING", date=yyyymmdd(day), ok=False, action="refused", reason=msg)
            return cli.EXIT_PROBLEMS
        results = []
        try:
            results.append(package_day(root, day, opts=opts, force=args.force, host=host_id(cfg), clock=ctx.clock))
            if not args.date:
                # earlier packages whose day got new or longer files (late events) are re-packaged, so
                # retention can delete them after the PC pulls again (only the changed archives move)
                for d in layout.package_days(root):
                    if d != day:
                        r = package_day(root, d, opts=opts, host=host_id(cfg), clock=ctx.clock, only_if_packaged=True)
                        if r.action != "noop":
                            results.append(r)
        except BackupBusy as e:
            print(f"{PROGRAM}: {e}", file=sys.stderr)
            return cli.EXIT_PROBLEMS
        except BackupError as e:
            print(f"{PROGRAM}: FAILED: {e}", file=sys.stderr)
            notify_failure(store, "backup", cfg, date=yyyymmdd(day), ok=False, action="failed", error=str(e)[:2000])
            return cli.EXIT_FAILED
        for r in results:
            fields = _event_fields(r)
            store.events().emit("backup", "WARNING" if r.problems else "INFO", **fields)
            if args.json:
                print(json.dumps(fields))
            else:
                t = r.manifest["totals"] if r.manifest else None
                size = f", {t['files']} files, {t['data_bytes'] / 1e6:.1f} MB -> {t['archive_bytes'] / 1e6:.1f} MB" if t else ""
                print(f"{PROGRAM}: {yyyymmdd(r.day)}: {r.action}{size} in {r.seconds:.1f}s"
                      + (f" ({r.reason})" if r.reason else ""))
            for prob in r.problems:
                print(f"{PROGRAM}: {yyyymmdd(r.day)}: problem: {prob}", file=sys.stderr)
        return cli.EXIT_OK
    finally:
        store.close()
