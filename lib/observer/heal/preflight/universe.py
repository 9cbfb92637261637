"""Preflight's universe row: the day's universe snapshot exists, or is created now from the provider's
listing files (the collectors cannot choose symbols without it)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from observer.collect.universe import UniverseError, ensure_universe, universe_name
from observer.core.calendar import Calendar
from observer.core.checks import Check
from observer.core.clock import Clock, yyyymmdd
from observer.core.config import section
from observer.core.secrets import SecretsError
from observer.providers.base import Provider, ProviderError
from observer.store import paths
from observer.store.state import read_json
from observer.telemetry.alerts.notifier import SEND_NOW_S, ProgramAlerts


def check_universe(root: Path, day: date, cfg: dict, calendar: Calendar, clock: Clock, store,
                   provider: Provider | None, program: str) -> Check:
    """`provider`: the one whose listing files the universe comes from; `program`: who raises its alerts."""
    name = provider.name if provider is not None else section(cfg, "track_a")["provider"]
    path = paths.universe_file(root, day, universe_name(name))
    if path.exists():
        u = read_json(path) or {}
        return Check("universe", "ok", f"{path.name} exists ({len(u.get('symbols', []))} symbols)")
    if store is None or provider is None:
        return Check("universe", "skip", "no store to create it in", "")
    try:
        uni = ensure_universe(root, day, provider.rest(), cfg, calendar, store.events(provider.name), clock,
                              provider.name, source=provider,
                              alerts=ProgramAlerts(store, cfg, program, send_s=SEND_NOW_S))
    except (UniverseError, ProviderError, OSError, SecretsError) as e:
        return Check("universe", "fail", f"no universe for {yyyymmdd(day)}: {e}"[:400],
                     "check the stock listing download (or universe.candidates_file) and the REST check; "
                     "the collectors cannot choose symbols")
    n = len(uni.get("symbols", []))
    fb = (uni.get("source") or {}).get("fallback_from")
    if fb:
        return Check("universe", "warn", f"{path.name} created now ({n} symbols) from the listing files kept on "
                     f"{fb}: today's download failed", "see the universe event for why")
    if uni.get("date") not in (None, yyyymmdd(day), day.isoformat()):
        return Check("universe", "warn", f"today's could not be created; using {uni.get('date')}'s ({n} symbols)",
                     "see the universe event for why")
    return Check("universe", "ok", f"{path.name} created now ({n} symbols)")
