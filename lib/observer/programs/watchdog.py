"""observer-watchdog: restarts stuck or silent collectors, stops crash loops, guards the disk and the backup."""

from __future__ import annotations

import signal
import sys
import threading

from observer import cli
from observer.core.calendar import calendar_from_config
from observer.core.config import host_id
from observer.core.logging import get_logger
from observer.core.notify import Notifier
from observer.core.secrets import SecretsError, load_secrets

PROGRAM = "observer-watchdog"
log = get_logger(PROGRAM)


def main(argv=None) -> int:
    p = cli.make_parser(PROGRAM, "Watch the collectors through the tree (heartbeats, newest records, events) and "
                        "systemd (unit states, journal): restart a stuck or silent collector inside its window, "
                        "stop restarting a crash loop (CRITICAL alert with its error), alert on WebSocket flapping, "
                        "a full disk (and start an emergency retention run) and a missing backup.", dry_run=True)
    p.add_argument("--once", action="store_true", help="one pass, then exit (exit 1 when it found something)")
    p.add_argument("--interval", type=float, metavar="S", help="seconds between passes (default watchdog.interval_s)")
    args = p.parse_args(argv)
    ctx = cli.start(PROGRAM, args, tree=cli.TREE_WRITE)
    from observer.telemetry.alerts.notifier import ProgramAlerts
    from observer.telemetry.alerts.summary import daily_summary_due, send_daily_summary
    from observer.heal.watchdog import Watchdog
    from observer.telemetry.metrics import MetricsWriter
    from observer.store.store import Store

    cfg = ctx.cfg
    root = ctx.root
    try:
        secrets = load_secrets(cfg)
    except SecretsError as e:
        log.error("secrets unreadable: alerts are only logged", extra={"error": str(e)})
        secrets = {}
    store = Store(root, clock=ctx.clock, program=PROGRAM, provider="system", host=host_id(cfg))
    alerts = None if args.dry_run else ProgramAlerts(store, cfg, PROGRAM, secrets=secrets, close_s=5)
    wd = Watchdog(cfg, ctx.clock, calendar_from_config(cfg), store=store, alerts=alerts, dry_run=args.dry_run,
                  out=sys.stdout if (args.dry_run or args.once) else None)
    notifier = Notifier()
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    interval = args.interval or float(cfg["watchdog"]["interval_s"])
    metrics = MetricsWriter.from_config(root, "watchdog", cfg, clock=ctx.clock)
    for c in wd.collectors:  # counters exist from the start (a rate() over them needs the zero)
        metrics.inc("observer_watchdog_restarts_total", 0, unit=c.unit)
    found = []
    try:
        while True:
            found = wd.run_pass()
            if alerts is not None:
                # the always-on program retries every program's undelivered alerts and sends the
                # day's summary once it is due (send_daily_summary is idempotent)
                alerts.drain()
                due = daily_summary_due(cfg, ctx.clock)
                if due is not None and not args.once:
                    try:
                        send_daily_summary(root, cfg, secrets, due, clock=ctx.clock)
                    except Exception:
                        log.exception("daily summary failed")
                metrics.set("observer_alerts_undelivered", alerts.undelivered())
            for f in found:
                if f.what == "restart" and f.done:
                    metrics.inc("observer_watchdog_restarts_total", 1, unit=f.subject)
            bk = wd.backup_status()  # the backup is a oneshot: its outcome is published from here
            if bk["ok"] is not None:
                metrics.set("observer_backup_last_status", 1 if bk["ok"] else 0)
            if bk["success_s"] is not None:
                metrics.set("observer_backup_last_success_timestamp_seconds", bk["success_s"])
            metrics.sample_system()
            metrics.maybe_write()
            if args.once:
                break
            if wd.passes == 1:
                notifier.ready(f"watching {', '.join(c.unit for c in wd.collectors)}")
            acted = [f for f in found if f.what != "note"]
            notifier.status(f"pass {wd.passes}: " + ("; ".join(f"{f.what} {f.subject}" for f in acted)[:200]
                                                      if acted else "all quiet"))
            notifier.progress()  # only after a completed pass: a hung watchdog is killed by systemd
            if stop.wait(interval):
                break
    finally:
        notifier.stopping()
        if alerts is not None:
            alerts.close()
        store.close()
    return (1 if [f for f in found if f.what != "note"] else 0) if args.once else 0
