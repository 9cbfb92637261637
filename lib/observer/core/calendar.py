"""What the core knows of a trading calendar: its shape, and how config adjusts it.

A market (observer.markets.<code>) owns its calendar: which days trade and when its regular session
runs. The programs ask the configured market (`calendar.market`) for it through
observer.markets.calendar_from_config() and speak to it only through the Calendar protocol below; the types a calendar answers with
(Session, LateOpen, NotATradingDay) live here so no caller imports a market.

Config adjusts any market's calendar the same way ([calendar], docs/calendar.md): `extra_closed`
closes days, `extra_open` reopens days the rules wrongly close, `late_open` shifts a day's session.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Protocol

from observer.core.config import section

CONFIG_REASON = "config"


class NotATradingDay(ValueError):
    """Asked for the session of a day the market does not trade; `reason` says why."""

    def __init__(self, day: date, reason: str, market: str = ""):
        self.day = day
        self.reason = reason
        self.market = market
        what = f"a {market} trading day" if market else "a trading day"
        super().__init__(f"{day.isoformat()} is not {what} ({reason})")


@dataclass(frozen=True)
class LateOpen:
    """How a day's session moves: open and close are each shifted later by these amounts."""

    open_shift: timedelta
    close_shift: timedelta
    reason: str


@dataclass(frozen=True)
class Session:
    """One day's regular session in market time (open inclusive, close exclusive)."""

    day: date
    open: datetime
    close: datetime
    open_shift: timedelta
    close_shift: timedelta
    late_open_reason: str | None


class Calendar(Protocol):
    """What the core asks a market's calendar (each observer.markets.<code> has one)."""

    market_name: str  # how messages name its market ("not a <market_name> trading day")

    def closed_reason(self, d: date) -> str | None: ...
    def is_trading_day(self, d: date) -> bool: ...
    def previous_trading_day(self, d: date) -> date: ...
    def next_trading_day(self, d: date) -> date: ...
    def trading_days(self, start: date, end: date) -> list[date]: ...
    def late_open(self, d: date) -> LateOpen | None: ...
    def session(self, d: date) -> Session: ...
    def window(self, d: date, start: str, end: str) -> tuple[datetime, datetime]: ...
    def is_market_open(self, when: datetime) -> bool: ...


@dataclass(frozen=True)
class Adjustments:
    """The [calendar] table, parsed: what config changes on top of a market's built-in rules."""

    extra_closed: tuple[date, ...]
    extra_open: tuple[date, ...]
    late_open: Mapping[date, LateOpen]


def as_date(d) -> date:
    if isinstance(d, datetime):
        raise TypeError(f"want a date, got a datetime {d!r}")
    if isinstance(d, date):
        return d
    if isinstance(d, str):
        return date.fromisoformat(d)
    raise TypeError(f"want a date or 'YYYY-MM-DD', got {d!r}")


def adjustments_from_config(cfg: dict) -> Adjustments:
    """Read the whole config dict's `calendar` table.

    Keys (all optional): extra_closed = ["YYYY-MM-DD", ...], extra_open = ["YYYY-MM-DD", ...],
    late_open = [{date = "YYYY-MM-DD", open_shift_minutes = 60, close_shift_minutes = 0,
    reason = "..."}]. Errors name the key, as the config loader does.
    """
    table = section(cfg or {}, "calendar")  # the schema's defaults, [[late_open]] entries' included

    def day(value, key: str) -> date:
        try:
            return as_date(value)
        except (TypeError, ValueError) as e:
            raise ValueError(f"calendar.{key}: bad date {value!r}: want 'YYYY-MM-DD' ({e})") from None

    closed = tuple(day(v, f"extra_closed[{i}]") for i, v in enumerate(table["extra_closed"]))
    opened = tuple(day(v, f"extra_open[{i}]") for i, v in enumerate(table["extra_open"]))
    late: dict[date, LateOpen] = {}
    for i, item in enumerate(table["late_open"]):
        key = f"late_open[{i}]"
        if not isinstance(item, Mapping) or "date" not in item:
            raise ValueError(f"calendar.{key}: want a table with at least date = 'YYYY-MM-DD', got {item!r}")
        d = day(item["date"], f"{key}.date")
        if d in late:
            raise ValueError(f"calendar.{key}.date: {d.isoformat()} given twice")
        late[d] = LateOpen(
            open_shift=timedelta(minutes=int(item["open_shift_minutes"])),
            close_shift=timedelta(minutes=int(item["close_shift_minutes"])),
            reason=str(item["reason"] or CONFIG_REASON),
        )
    return Adjustments(extra_closed=closed, extra_open=opened, late_open=late)


__all__ = ["Adjustments", "Calendar", "CONFIG_REASON", "LateOpen", "NotATradingDay", "Session",
           "adjustments_from_config", "as_date"]
