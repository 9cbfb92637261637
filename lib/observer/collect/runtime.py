"""What every collector does at start and stop: secrets, calendar, store, provider, signals."""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass

from observer.cli import Context
from observer.core.calendar import KrxCalendar, calendar_from_config
from observer.core.config import data_dir, host_id
from observer.core.notify import Notifier
from observer.core.secrets import Secrets, load_secrets
from observer.providers.base import Provider, get_provider
from observer.store.store import Store
from observer.store.writer import Durability


@dataclass
class Runtime:
    store: Store
    provider: Provider
    secrets: Secrets
    calendar: KrxCalendar
    notifier: Notifier
    stop: threading.Event


def open_runtime(ctx: Context, provider_name: str, program: str) -> Runtime:
    secrets = load_secrets(ctx.cfg)
    store = Store(data_dir(ctx.cfg), durability=Durability.from_config(ctx.cfg), clock=ctx.clock,
                  program=program, provider=provider_name, host=host_id(ctx.cfg))
    store.start_flusher()
    provider = get_provider(provider_name, ctx.cfg, secrets, store, ctx.clock)
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return Runtime(store, provider, secrets, calendar_from_config(ctx.cfg), Notifier(), stop)
