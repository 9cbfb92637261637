"""observer-preflight's run: the checks, then their `preflight` (or `trading_day_skipped`) event and, for
warnings or failures, the alert. The store is opened by open_store() and closed by close_store(), which
the program calls in a `finally`."""

from __future__ import annotations

import os

from observer.core import notify
from observer.core.clock import Clock
from observer.core.config import host_id
from observer.core.logging import get_logger
from observer.core.secrets import SecretsError, load_secrets
from observer.heal.preflight.runner import Preflight, Report
from observer.heal.preflight.table import summary_text
from observer.store.store import Store
from observer.store.writer import StoreError
from observer.telemetry.alerts.notifier import ProgramAlerts
from observer.telemetry.alerts.table import KEY_PREFLIGHT_FAIL, KEY_PREFLIGHT_WARN


def open_store(program: str, cfg: dict, clock: Clock) -> Store | None:
    """The store for the event and the alert's outbox, only when the tree is there: preflight never
    creates it (with a broken config, data_dir is the default one)."""
    root = cfg["data_dir"]
    if not os.path.isdir(root):
        return None
    return Store(root, clock=clock, program=program, provider="system", host=host_id(cfg))


def close_store(program: str, store: Store | None) -> None:
    if store is None:
        return
    try:
        store.close()
    except (StoreError, OSError) as e:
        get_logger(program).error("preflight event not written", extra={"error": str(e)})


def run_preflight(program: str, cfg: dict, clock: Clock, store: Store | None, *, config_error: str | None,
                  only: set[str] | None, systemd: bool, run_all: bool, alert: bool) -> Report:
    """Run the checks (only `config` when the config did not load: the others would test the defaults),
    write the event when there is a store and, with `alert`, raise the alert of a day with warnings or
    failures (a failure pages; warnings go into the daily summary). Returns the report."""
    log = get_logger(program)
    notify.ready("checking")  # the watchdog runs from here (systemd unit)
    if config_error:
        only = {"config"}
    try:
        secrets = load_secrets(cfg)
    except SecretsError:
        secrets = None  # the secrets row says why
    pf = Preflight(cfg, clock, config_error=config_error, systemd=systemd, run_all=run_all or bool(config_error),
                   only=only, secrets=secrets, store=store, program=program)
    rep = pf.run()
    day = rep.day.strftime("%Y%m%d")
    try:
        if store is None:
            log.error("preflight event not written: no tree", extra={"data_dir": cfg["data_dir"]})
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
    if store is not None and alert and not rep.skipped_day and rep.verdict != "ok":
        alerts = ProgramAlerts(store, cfg, program, secrets=pf.secrets if pf.secrets is not None else {}, close_s=5)
        text = summary_text(rep, host_id(cfg))
        if rep.verdict == "fail":
            alerts.alert(f"{KEY_PREFLIGHT_FAIL}:{day}", "CRITICAL", text, date=day,
                         failed=[c.name for c in rep.failed()])
        else:  # warnings: not paged, they go into the day's summary
            alerts.alert(f"{KEY_PREFLIGHT_WARN}:{day}", "WARNING", text, date=day, daily_summary=True,
                         warned=[c.name for c in rep.warned()])
        alerts.close()
    return rep
