"""The watchdog's life: passes every watchdog.interval_s until a signal, with the alert outbox drained, the
daily summary sent and the metrics written after each pass. What one pass checks is observer.heal.watchdog."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

from observer.core.clock import Clock
from observer.core.config import host_id
from observer.core.exitcodes import EXIT_OK, EXIT_PROBLEMS
from observer.core.logging import get_logger
from observer.core.notify import Notifier
from observer.core.secrets import SecretsError, load_secrets
from observer.heal.watchdog import Watchdog
from observer.markets import calendar_from_config
from observer.store.store import Store
from observer.telemetry.alerts.notifier import ProgramAlerts
from observer.telemetry.alerts.summary import daily_summary_due, send_daily_summary
from observer.telemetry.metrics import MetricsWriter


def run(program: str, cfg: dict, clock: Clock, root: Path, *, dry_run: bool = False, once: bool = False,
        interval: float | None = None) -> int:
    """Watch until SIGTERM/SIGINT (or one pass with `once`); the exit code (with `once`: 1 when the pass
    found something to act on)."""
    log = get_logger(program)
    try:
        secrets = load_secrets(cfg)
    except SecretsError as e:
        log.error("secrets unreadable: alerts are only logged", extra={"error": str(e)})
        secrets = {}
    store = Store(root, clock=clock, program=program, provider="system", host=host_id(cfg))
    alerts = None if dry_run else ProgramAlerts(store, cfg, program, secrets=secrets, close_s=5)
    wd = Watchdog(cfg, clock, calendar_from_config(cfg), store=store, alerts=alerts, dry_run=dry_run,
                  out=sys.stdout if (dry_run or once) else None)
    notifier = Notifier()
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    interval = interval or float(cfg["watchdog"]["interval_s"])
    metrics = MetricsWriter.from_config(root, "watchdog", cfg, clock=clock)
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
                due = daily_summary_due(cfg, clock)
                if due is not None and not once:
                    try:
                        send_daily_summary(root, cfg, secrets, due, clock=clock)
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
            if once:
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
    return EXIT_PROBLEMS if once and any(f.what != "note" for f in found) else EXIT_OK
