"""observer-retention: delete days whose backup receipt is verified (daily after backup; on demand from
the watchdog when the disk is > 80 % full). See docs/backup.md."""

from __future__ import annotations

from observer import cli
from observer.lifecycle import retention as rt
from observer.lifecycle.retention_run import PROGRAM, run


def main(argv=None) -> int:
    p = cli.make_parser(PROGRAM, "Delete days whose backup the PC has verified (pulled.json): 3 days, 7 for anomaly "
                        "days, 10 at most; earlier under disk pressure; never a day without a verified receipt.",
                        dry_run=True)
    p.add_argument("--data-dir", metavar="PATH", help="the tree (default: data_dir from the config)")
    p.add_argument("--disk-pct", type=float, metavar="PCT",
                   help="act as if the disk were PCT %% full (drills: rehearse the pressure/emergency path)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    args = p.parse_args(argv)
    ctx = cli.start(PROGRAM, args, tree=cli.TREE_READ if args.dry_run else cli.TREE_WRITE)
    root = ctx.root
    disk = None
    if args.disk_pct is not None:
        real = rt.Disk.of(root)
        disk = rt.Disk(real.total, int(real.total * args.disk_pct / 100))
    return run(root, ctx.cfg, ctx.clock, dry_run=args.dry_run, disk=disk, as_json=args.json)
