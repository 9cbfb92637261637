"""What every collector does at start and stop: secrets, calendar, store, provider, signals."""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass
from datetime import date

from observer.core.calendar import Calendar
from observer.core.clock import Clock
from observer.core.config import data_dir, host_id
from observer.core.exitcodes import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from observer.core.notify import Notifier
from observer.core.secrets import Secrets, load_secrets
from observer.markets import calendar_from_config
from observer.providers.base import Provider, get_provider
from observer.store.store import EventLog, Store
from observer.store.writer import Durability
from observer.telemetry.alerts.notifier import SEND_NOW_S, ProgramAlerts
from observer.telemetry.alerts.table import KEY_CREDENTIALS_REFUSED


@dataclass
class Runtime:
    store: Store
    provider: Provider
    secrets: Secrets
    calendar: Calendar
    notifier: Notifier
    stop: threading.Event


def open_runtime(cfg: dict, clock: Clock, provider_name: str, program: str) -> Runtime:
    secrets = load_secrets(cfg)
    store = Store(data_dir(cfg), durability=Durability.from_config(cfg), clock=clock,
                  program=program, provider=provider_name, host=host_id(cfg))
    store.start_flusher()
    provider = get_provider(provider_name, cfg, secrets, store, clock)
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    clock.stop_on(stop)  # every wait below (issuance limit, rate limiter, backoff) ends on a signal
    return Runtime(store, provider, secrets, calendar_from_config(cfg, provider.market), Notifier(), stop)


def stand_down(rt: Runtime, day: date, ev: EventLog) -> str | None:
    """On a day the market is closed: the `standing_down` event, and the reason (the caller exits 0).
    None on a trading day. Every program that opens a runtime asks this before its day's work."""
    if rt.calendar.is_trading_day(day):
        return None
    reason = rt.calendar.closed_reason(day)
    ev.emit("collector", "INFO", state="standing_down", reason=f"{day}: not a {rt.calendar.market_name} trading day ({reason})")
    return reason


def run_collector(cfg: dict, clock: Clock, provider_name: str, program: str, body) -> int:
    """What both collectors do around their day: open the runtime (secrets, store, provider,
    signals), stand down on a day the market is closed, turn refused credentials into a clear exit, and
    always leave the tree durable. `body(rt, day, events)` does the day's work and returns the exit code."""
    import sys

    from observer.core.clock import Stopped
    from observer.core.logging import get_logger
    from observer.core.secrets import SecretsError
    from observer.providers.base import AuthError

    log = get_logger(program)
    try:
        rt = open_runtime(cfg, clock, provider_name, program)
    except (SecretsError, ValueError) as e:
        print(f"{program}: {e}", file=sys.stderr)
        return EXIT_USAGE
    day = clock.today_kst()
    ev = rt.store.events(provider_name)
    try:
        reason = stand_down(rt, day, ev)
        if reason is not None:
            rt.notifier.ready(f"standing down: {day} is not a trading day ({reason})")
            return EXIT_OK
        return body(rt, day, ev)
    except AuthError as e:
        account = getattr(e, "account", None) or ", ".join(
            str(a.get("name")) for a in rt.provider.pcfg.get("accounts") or []) or "?"
        log.error("broker refused the credentials", extra={"error": str(e), "account": account})
        ev.emit("collector", "CRITICAL", state="stopped", reason=f"credentials refused ({account}): {e}"[:500])
        ProgramAlerts(rt.store, cfg, program, send_s=SEND_NOW_S).alert(
            KEY_CREDENTIALS_REFUSED, "CRITICAL", f"{program}: {provider_name} refused the credentials of account "
            f"{account!r} ({e}); fix the app key/secret and restart", account=account)
        return EXIT_FAILED
    except Stopped:  # a signal ended a wait deep down: a normal stop
        ev.emit("collector", "INFO", state="stopped", reason="signal")
        return EXIT_OK
    finally:
        rt.notifier.stopping()
        rt.store.close()


