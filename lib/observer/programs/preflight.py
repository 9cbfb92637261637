"""observer-preflight: everything the trading day needs, checked before the open; and the deploy guard."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from observer import cli
from observer.core.calendar import calendar_from_config
from observer.core.config import ConfigError, load_config, validate_config

PROGRAM = "observer-preflight"
EXIT_OK, EXIT_WARN, EXIT_FAIL = 0, 1, 2


def main(argv=None) -> int:
    p = cli.make_parser(PROGRAM, "Check everything the trading day needs (config, secrets, every program's imports, "
                        "token, REST, WebSocket, clock skew, disk, memory, CPU, universe, units) and print a table. "
                        "Exit 0 ok, 1 warnings, 2 failures (any failure also sends a CRITICAL alert). On a day KRX "
                        "does not trade: a trading_day_skipped event and exit 0.")
    p.add_argument("--deploy-guard", action="store_true",
                   help="only answer the market-hours time lock: exit 1 (with the reason) during KR market hours "
                        "(and US hours when configured), 0 otherwise; OBSERVER_CLOCK injects the time")
    p.add_argument("--systemd", action="store_true",
                   help="also check the units (is-enabled / is-failed); implied when run by systemd (INVOCATION_ID)")
    p.add_argument("--all", action="store_true", help="run every check even on a day KRX does not trade")
    p.add_argument("--only", metavar="NAMES", help="comma-separated checks to run (e.g. disk,memory,websocket)")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of the table")
    p.add_argument("--no-alert", action="store_true", help="do not send alerts (the event is still written)")
    args = p.parse_args(argv)

    if args.self_test or args.check_config:
        cli.start(PROGRAM, args)  # exits
    # the config is itself a check: load it here so a broken one is a row in the table, not a crash
    config_path, args.config = args.config, None
    ctx = cli.start(PROGRAM, args, need_config=False)
    args.config = config_path
    config_error = None
    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        config_error = str(e)
        cfg = validate_config({})
    if args.log_level is None and not config_error:
        from observer.core.logging import setup_logging
        setup_logging(PROGRAM, cfg["log"]["level"])

    if args.deploy_guard:
        from observer.heal.preflight import deploy_guard
        if config_error:
            print(f"{PROGRAM}: config error, refusing to be safe: {config_error}", file=sys.stderr)
            return EXIT_FAIL
        locked, msg = deploy_guard(cfg, ctx.clock, calendar_from_config(cfg))
        print(msg)
        return 1 if locked else 0
    if not config_error:
        # the disk checks report a tree that is there but unusable; a data_dir that is missing or not a
        # directory is a config mistake, and preflight must not create a tree there by probing it
        problem = cli.check_tree(Path(cfg["data_dir"]), cli.TREE_EXISTS)
        if problem is not None:
            print(f"{PROGRAM}: {problem[1]}", file=sys.stderr)
            return EXIT_FAIL
    return run(cfg, ctx.clock, args, config_error)


def run(cfg: dict, clock, args, config_error: str | None) -> int:
    from observer.heal.preflight import format_table
    from observer.heal.preflight_run import run_checks

    only = {x.strip() for x in args.only.split(",") if x.strip()} if args.only else None
    rep = run_checks(PROGRAM, cfg, clock, config_error=config_error, only=only, alert=not args.no_alert,
                     systemd=args.systemd or bool(os.environ.get("INVOCATION_ID")), run_all=args.all)
    if args.json:
        print(json.dumps({"date": rep.day.strftime("%Y%m%d"), "verdict": rep.verdict, "skipped_day": rep.skipped_day,
                          "checks": [c.as_dict() for c in rep.checks]}, indent=1, ensure_ascii=False))
    else:
        try:
            width = os.get_terminal_size(sys.stdout.fileno()).columns
        except OSError:
            width = 160
        print(format_table(rep, width))
    if rep.verdict == "fail" and not rep.skipped_day:  # the table is on stdout; the verdict in one line here
        print(f"{PROGRAM}: FAIL: " + "; ".join(f"{c.name}: {cli.one_line(c.reason)[:200]}" for c in rep.failed()),
              file=sys.stderr)
    return 0 if rep.skipped_day else rep.exit_code
