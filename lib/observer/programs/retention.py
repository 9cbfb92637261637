"""observer-retention: delete days whose backup receipt is verified (daily after backup; on demand from
the watchdog when the disk is > 80 % full). See docs/backup.md."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from observer import cli
from observer.core import notify
from observer.core.clock import yyyymmdd
from observer.core.config import host_id
from observer.lifecycle import retention as rt
from observer.lifecycle.notify import notify_failure
from observer.store.store import Store

PROG = "observer-retention"


def run(root: Path, cfg: dict, clock, *, dry_run: bool = False, disk: rt.Disk | None = None,
        out=sys.stdout, as_json: bool = False) -> int:
    notify.ready("planning")  # the watchdog runs from here (systemd unit)
    policy = rt.Policy.from_config(cfg)
    today = clock.today_kst()
    states, inv, manifests = rt.day_states(root)
    disk = disk or rt.Disk.of(root)
    pl = rt.plan(today, states, disk, policy)
    if as_json:
        print(json.dumps({"today": today.isoformat(), "disk_pct": round(disk.pct, 2),
                          "projected_pct": round(pl.projected_pct, 2), "pressure": pl.pressure,
                          "critical": pl.critical,
                          "deletions": [{"date": yyyymmdd(d.day), "partition": d.partition, "bytes": d.bytes,
                                         "why": d.why, "early": d.early} for d in pl.deletions],
                          "blocked": [{"date": yyyymmdd(d), "why": w, "bytes": n} for d, w, n in pl.blocked],
                          "overdue": [yyyymmdd(d) for d in pl.overdue], "dry_run": dry_run}), file=out)
    else:
        print("\n".join(pl.lines()) + ("\n(dry run: nothing deleted)" if dry_run else ""), file=out)
    if dry_run:
        return cli.EXIT_PROBLEMS if pl.critical else cli.EXIT_OK
    store = Store(root, program=PROG, provider="system", clock=clock, host=host_id(cfg))
    try:
        def emit(severity: str, **fields):
            store.events().emit("retention", severity, **fields)

        try:
            rt.execute(root, pl, inv, manifests, emit)
        except OSError as e:
            notify_failure(store, "retention", cfg, date=yyyymmdd(today), action="failed", error=str(e))
            return cli.EXIT_FAILED
        blocking = [{"date": yyyymmdd(d), "why": w, "bytes": n} for d, w, n in pl.blocked]
        for d in pl.overdue:
            why = next(w for dd, w, _ in pl.blocked if dd == d)
            emit("ERROR", date=yyyymmdd(d), action="overdue",
                 why=f"older than max_keep_days={policy.max_keep_days} but kept: {why}")
        if pl.critical:
            notify_failure(store, "retention", cfg, date=yyyymmdd(today), action="blocked",
                           why="disk critically full and nothing more may be deleted without a verified receipt",
                           disk_pct=round(disk.pct, 2), projected_pct=round(pl.projected_pct, 2), blocking=blocking)
            print(f"{PROG}: CRITICAL: disk {disk.pct:.1f}% used; blocked by: "
                  + (", ".join(f"{b['date']} ({b['why']})" for b in blocking) or "nothing (no day data left)"),
                  file=sys.stderr)
            return cli.EXIT_PROBLEMS
        return cli.EXIT_OK
    finally:
        store.close()


def main(argv=None) -> int:
    p = cli.make_parser(PROG, "Delete days whose backup the PC has verified (pulled.json): 3 days, 7 for anomaly "
                        "days, 10 at most; earlier under disk pressure; never a day without a verified receipt.",
                        dry_run=True)
    p.add_argument("--data-dir", metavar="PATH", help="the tree (default: data_dir from the config)")
    p.add_argument("--disk-pct", type=float, metavar="PCT",
                   help="act as if the disk were PCT %% full (drills: rehearse the pressure/emergency path)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    args = p.parse_args(argv)
    ctx = cli.start(PROG, args)
    root = Path(args.data_dir or ctx.cfg["data_dir"])
    if not root.is_dir():
        print(f"{PROG}: {root}: not a directory", file=sys.stderr)
        return cli.EXIT_USAGE
    disk = None
    if args.disk_pct is not None:
        real = rt.Disk.of(root)
        disk = rt.Disk(real.total, int(real.total * args.disk_pct / 100))
    return run(root, ctx.cfg, ctx.clock, dry_run=args.dry_run, disk=disk, as_json=args.json)
