"""observer-backup: package a day into backup/YYYYMMDD (timer 21:00). See docs/backup.md."""

from __future__ import annotations

import json
import sys

from observer import cli
from observer.core import notify
from observer.core.clock import yyyymmdd
from observer.core.config import host_id
from observer.lifecycle.backup import BackupBusy, BackupError, BackupOptions
from observer.lifecycle.backup_day import Cutoff, event_fields, package_with_changed, summary_line
from observer.lifecycle.notify import notify_failure
from observer.store.store import Store

PROGRAM = "observer-backup"


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
    cutoff = Cutoff.of(cfg, now)
    if args.date and args.date > cutoff.today:
        print(f"{PROGRAM}: {yyyymmdd(args.date)} is in the future (today is {yyyymmdd(cutoff.today)} KST)",
              file=sys.stderr)
        return cli.EXIT_USAGE
    day = args.date or cutoff.default_day(now)
    notify.ready(f"packaging {yyyymmdd(day)}")  # the watchdog runs from here (systemd unit)
    store = Store(root, program=PROGRAM, provider="system", clock=ctx.clock, host=host_id(cfg))
    try:
        msg = cutoff.too_early(day, now)
        if msg is not None:
            print(f"{PROGRAM}: {msg}", file=sys.stderr)
            store.events().emit("backup", "WARNING", date=yyyymmdd(day), ok=False, action="refused", reason=msg)
            return cli.EXIT_PROBLEMS
        try:
            results = package_with_changed(root, day, opts=opts, force=args.force, host=host_id(cfg),
                                           clock=ctx.clock, earlier=not args.date)
        except BackupBusy as e:
            print(f"{PROGRAM}: {e}", file=sys.stderr)
            return cli.EXIT_PROBLEMS
        except BackupError as e:
            print(f"{PROGRAM}: FAILED: {e}", file=sys.stderr)
            notify_failure(store, "backup", cfg, date=yyyymmdd(day), ok=False, action="failed", error=str(e)[:2000])
            return cli.EXIT_FAILED
        for r in results:
            fields = event_fields(r)
            store.events().emit("backup", "WARNING" if r.problems else "INFO", **fields)
            print(json.dumps(fields) if args.json else f"{PROGRAM}: {summary_line(r)}")
            for prob in r.problems:
                print(f"{PROGRAM}: {yyyymmdd(r.day)}: problem: {prob}", file=sys.stderr)
        return cli.EXIT_OK
    finally:
        store.close()
