"""observer-preflight: everything the trading day needs, checked before the open; and the deploy guard."""

from __future__ import annotations

import os
import sys

from observer import cli

PROGRAM = "observer-preflight"


def main(argv=None) -> int:
    p = cli.make_parser(PROGRAM, "Check everything the trading day needs (config, secrets, every program's imports, "
                        "token, REST, WebSocket, clock skew, disk, memory, CPU, universe, units) and print a table. "
                        "Exit 0 ok, 1 warnings only, 2 the config or the secrets are wrong, 3 another check failed "
                        "(any failure also sends a CRITICAL alert). On a day the market does not trade: a "
                        "trading_day_skipped event and exit 0.")
    p.add_argument("--deploy-guard", action="store_true",
                   help="only answer the market-hours time lock: exit 1 (with the reason) during KR market hours "
                        "(and US hours when configured), 0 otherwise, 2 on a broken config; OBSERVER_CLOCK "
                        "injects the time")
    p.add_argument("--systemd", action="store_true",
                   help="also check the units (is-enabled / is-failed); implied when run by systemd (INVOCATION_ID)")
    p.add_argument("--all", action="store_true", help="run every check even on a day the market does not trade")
    p.add_argument("--only", metavar="NAMES", help="comma-separated checks to run (e.g. disk,memory,websocket)")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of the table")
    p.add_argument("--no-alert", action="store_true", help="do not send alerts (the event is still written)")
    args = p.parse_args(argv)
    # the config is itself a check: a broken one is a row in the table (exit 2), not a refusal to start.
    # The guard does not use the tree; the checks need it to exist (preflight never creates it)
    ctx = cli.start(PROGRAM, args, config_as_check=True, tree=None if args.deploy_guard else cli.TREE_EXISTS)

    if args.deploy_guard:
        from observer.heal.preflight.guard import deploy_guard

        if ctx.config_error:
            print(f"{PROGRAM}: config error, refusing to be safe: {ctx.config_error}", file=sys.stderr)
            return cli.EXIT_USAGE
        locked, msg = deploy_guard(ctx.cfg, ctx.clock)
        print(msg)
        return cli.EXIT_PROBLEMS if locked else cli.EXIT_OK

    from observer.heal.preflight.run import close_store, open_store, run_preflight
    from observer.heal.preflight.table import fail_line, format_table, report_json

    only = {x.strip() for x in args.only.split(",") if x.strip()} if args.only else None
    store = open_store(PROGRAM, ctx.cfg, ctx.clock)
    try:
        rep = run_preflight(PROGRAM, ctx.cfg, ctx.clock, store, config_error=ctx.config_error, only=only,
                            systemd=args.systemd or bool(os.environ.get("INVOCATION_ID")), run_all=args.all,
                            alert=not args.no_alert)
    finally:
        close_store(PROGRAM, store)
    print(report_json(rep) if args.json else format_table(rep, _terminal_width()))
    line = fail_line(PROGRAM, rep)
    if line:  # the table is on stdout; the verdict in one line here
        print(line, file=sys.stderr)
    return rep.exit_code


def _terminal_width() -> int:
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns
    except OSError:
        return 160
