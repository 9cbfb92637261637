"""Market definitions: each market (an exchange and its venues) declares its calendar, regular session,
time zone and universe name in observer.markets.<code> and registers itself here.

The core names no market: it asks get_market(code) for the code a provider serves
(Provider.markets) or the one config chooses (`calendar.market`, configured_market()). A code comes
from config, so it is checked (observer.core.plugins) before its module is imported.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import tzinfo

from observer.core import plugins
from observer.core.calendar import Adjustments, Calendar, adjustments_from_config
from observer.core.config import section


@dataclass(frozen=True)
class Market:
    code: str                        # the records' `market` field and file names ("krx")
    name: str                        # how messages name it ("not a KRX trading day")
    tz: tzinfo                       # the market's local time: sessions, windows, trading dates
    session: tuple[str, str]         # regular session ("HH:MM", "HH:MM") local, before late-open shifts
    universe: str                    # the day's universe file: universe/YYYYMMDD_<universe>.json
    venues: tuple[str, ...]          # venues (boards) whose instruments it lists
    build_calendar: Callable[[Adjustments | None], Calendar]
    years: Callable[[], tuple[int, int]]

    def calendar(self, adjustments: Adjustments | None = None) -> Calendar:
        """Its trading calendar, with config's adjustments (None: the built-in rules alone)."""
        return self.build_calendar(adjustments)

    def supported_years(self) -> tuple[int, int]:
        """First and last year its calendar can answer for."""
        return self.years()


_REGISTRY: dict[str, Market] = {}
_lock = threading.Lock()


def register_market(market: Market) -> Market:
    with _lock:
        _REGISTRY[market.code] = market
    return market


def get_market(code: str) -> Market:
    """The market registered as `code`, importing observer.markets.<code> first; ValueError when unknown."""
    if code not in _REGISTRY:
        plugins.load("markets", code, "market")
    try:
        return _REGISTRY[code]
    except KeyError:
        raise ValueError(f"observer.markets.{code} registers no market {code!r}") from None


def configured_market(cfg: dict) -> Market:
    """The market config chooses (`calendar.market`): the programs that serve one market and own no provider."""
    return get_market(section(cfg or {}, "calendar")["market"])


def calendar_from_config(cfg: dict, market: str | None = None) -> Calendar:
    """`market`'s calendar (None: the configured one, `calendar.market`) with the config's adjustments."""
    m = configured_market(cfg) if market is None else get_market(market)
    return m.calendar(adjustments_from_config(cfg))


def supported_years() -> tuple[int, int]:
    """First and last year every installed market's calendar can answer for; --date is checked against it."""
    ranges = [m.supported_years() for m in all_markets()]
    return max(lo for lo, _ in ranges), min(hi for _, hi in ranges)


def all_markets() -> list[Market]:
    """Every installed market (each module imported)."""
    return [get_market(code) for code in plugins.installed("markets")]


__all__ = ["Market", "all_markets", "calendar_from_config", "configured_market", "get_market", "register_market",
           "supported_years"]
