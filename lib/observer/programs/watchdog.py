"""observer-watchdog: restarts stuck or silent collectors, stops crash loops, guards the disk and the backup."""

from __future__ import annotations

from observer import cli

PROGRAM = "observer-watchdog"


def main(argv=None) -> int:
    p = cli.make_parser(PROGRAM, "Watch the collectors through the tree (heartbeats, newest records, events) and "
                        "systemd (unit states, journal): restart a stuck or silent collector inside its window, "
                        "stop restarting a crash loop (CRITICAL alert with its error), alert on WebSocket flapping, "
                        "a full disk (and start an emergency retention run) and a missing backup.", dry_run=True)
    p.add_argument("--once", action="store_true", help="one pass, then exit (exit 1 when it found something)")
    p.add_argument("--interval", type=float, metavar="S", help="seconds between passes (default watchdog.interval_s)")
    args = p.parse_args(argv)
    ctx = cli.start(PROGRAM, args, tree=cli.TREE_WRITE)
    from observer.heal.watchdog_run import run  # after the config: --help and --check-config stay light

    return run(PROGRAM, ctx.cfg, ctx.clock, ctx.root, dry_run=args.dry_run, once=args.once, interval=args.interval)
