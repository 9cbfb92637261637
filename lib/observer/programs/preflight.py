"""observer-preflight: everything the trading day needs, checked before the open; and the deploy guard."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from observer import cli
from observer.core import notify
from observer.core.calendar import calendar_from_config
from observer.core.config import ConfigError, host_id, load_config, validate_config
from observer.core.logging import get_logger
from observer.core.secrets import SecretsError, load_secrets

PROGRAM = "observer-preflight"
log = get_logger(PROGRAM)
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
    from observer.telemetry.alerts.notifier import ProgramAlerts
    from observer.telemetry.alerts.table import KEY_PREFLIGHT_FAIL, KEY_PREFLIGHT_WARN
    from observer.heal.preflight import Preflight, format_table, summary_text
    from observer.store.store import Store
    from observer.store.writer import StoreError

    notify.ready("checking")  # the watchdog runs from here (systemd unit)
    root = cfg["data_dir"]
    only = {x.strip() for x in args.only.split(",") if x.strip()} if args.only else None
    if config_error:  # every other check would test the defaults, not the config that is in use
        only = {"config"}
    # the event and the alert's outbox go into the tree only when it is there (never created here:
    # with a broken config, root is the default data_dir)
    tree_ok = os.path.isdir(root)
    store = Store(root, clock=clock, program=PROGRAM, provider="system", host=host_id(cfg)) if tree_ok else None
    try:
        secrets = load_secrets(cfg)
    except SecretsError:
        secrets = None  # the secrets check reports why
    pf = Preflight(cfg, clock, config_error=config_error, systemd=args.systemd or bool(os.environ.get("INVOCATION_ID")),
                   run_all=args.all or bool(config_error), only=only, secrets=secrets, store=store)
    rep = pf.run()
    day = rep.day.strftime("%Y%m%d")
    try:
        if store is None:
            log.error("preflight event not written: no tree", extra={"data_dir": root})
        elif rep.skipped_day:
            nxt = rep.checks[-1].detail.get("next_trading_day", "")
            store.events("system").emit("trading_day_skipped", "INFO", date=day, reason=rep.skipped_day,
                                        next_trading_day=nxt)
        else:
            sev = {"ok": "INFO", "warn": "WARNING", "fail": "CRITICAL"}[rep.verdict]
            store.events("system").emit("preflight", sev, verdict=rep.verdict, date=day, counts=rep.counts(),
                                        duration_s=round(rep.duration_s, 2), checks=[c.as_dict() for c in rep.checks])
    except (StoreError, OSError) as e:  # a read-only or full tree is in the table (disk_write) already
        log.error("preflight event not written", extra={"error": str(e)})
    if tree_ok and not args.no_alert and not rep.skipped_day and rep.verdict != "ok":
        alerts = ProgramAlerts(store, cfg, PROGRAM, secrets=pf.secrets if pf.secrets is not None else {}, close_s=5)
        text = summary_text(rep, host_id(cfg))
        if rep.verdict == "fail":
            alerts.alert(f"{KEY_PREFLIGHT_FAIL}:{day}", "CRITICAL", text, date=day,
                         failed=[c.name for c in rep.failed()])
        else:  # warnings: not paged, they go into the day's summary
            alerts.alert(f"{KEY_PREFLIGHT_WARN}:{day}", "WARNING", text, date=day, daily_summary=True,
                         warned=[c.name for c in rep.warned()])
        alerts.close()
    if store is not None:
        try:
            store.close()
        except (StoreError, OSError) as e:
            log.error("preflight event not written", extra={"error": str(e)})
    if args.json:
        print(json.dumps({"date": day, "verdict": rep.verdict, "skipped_day": rep.skipped_day,
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
