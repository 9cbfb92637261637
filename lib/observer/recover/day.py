"""The gap-filler's day after the close: backfill what the broker can still give, then the quality report."""

from __future__ import annotations

from datetime import date

from observer.core.clock import Clock
from observer.core.logging import get_logger
from observer.providers.base import Provider, ProviderError
from observer.recover.audit import build_quality, write_quality
from observer.recover.gapfill import GapFiller
from observer.store.store import EventLog, Store

log = get_logger(__name__)


def fill_day(store: Store, provider: Provider, ev: EventLog, *, cfg: dict, clock: Clock, calendar, day: date,
             provider_name: str, audit: bool, progress: bool | None) -> tuple[dict, dict | None]:
    """Find and mark the day's gaps, backfill the recoverable ones into recovered/ and, with `audit`,
    write reports/YYYYMMDD/quality.*; the `collector` started/stopped events frame it.
    Returns (the gap-filler's summary, the quality report or None)."""
    ev.emit("collector", "INFO", state="started", reason=f"gap-filler for {day:%Y%m%d}")
    try:
        rest = provider.rest()
    except ProviderError as e:
        log.error("no REST client; gaps are detected and marked only", extra={"error": str(e)})
        rest = None
    gf = GapFiller(store=store, rest=rest, cfg=cfg, clock=clock, day=day, provider=provider_name,
                   market=provider.market or None, calendar=calendar, progress=progress)
    summary = gf.run()
    reason = (f"{summary['recovered_trades']} trades recovered in {summary['calls']} calls; "
              f"{summary['markers_emitted']} new markers; {summary['unrecoverable_holes']} holes unrecoverable; "
              f"{summary['failed_jobs']} jobs failed")
    q = None
    if audit:
        q = build_quality(store.root, day, cfg, provider=provider_name, clock=clock, calendar=calendar)
        write_quality(store.root, day, q)
    ev.emit("collector", "INFO" if not summary["failed_jobs"] else "WARNING", state="stopped", reason=reason)
    return summary, q
