"""KRX (Korea Exchange): the market definition, and its trading calendar (which days trade, and when
the regular session runs).

How a day is decided (docs/calendar.md has the sources and the 2026 table):

1. Saturday/Sunday -> closed ("weekend").
2. A Korean public holiday from the `holidays` package (KR, public category: lunar holidays,
   substitute holidays, election days, temporary holidays) -> closed ("holiday: <name>").
   KRX's business rules close the market on every day the public-holiday regulation names.
3. KRX-only closures kept here as data (KRX_RULE_CLOSURES, KRX_PINNED_CLOSURES) and the
   year-end closing on the last weekday of December -> closed.
4. Config `calendar.extra_closed` -> closed ("config"); config `calendar.extra_open` reopens a
   day the library wrongly calls a holiday (a missed session is worse than an idle collector).

Late-open days shift the regular 09:00-15:30 session; the shifts are data (LateOpen values),
chosen by precedence: config `calendar.late_open` > CSAT table > first trading day of the year.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta

import holidays

from observer.core.calendar import CONFIG_REASON, Adjustments, LateOpen, NotATradingDay, Session
from observer.core.calendar import as_date as _as_date
from observer.core.clock import KST, kst_datetime
from observer.markets import Market, register_market

CODE = "krx"
NAME = "KRX"

REGULAR_OPEN = "09:00"
REGULAR_CLOSE = "15:30"

# A loop over calendar days that finds no trading day within this many days means a broken
# config (e.g. a whole year in extra_closed), not a long holiday; fail instead of spinning.
_MAX_SEARCH_DAYS = 400


# --- Late-open rules (data) -------------------------------------------------------------------

# Opening ceremony: regular session 10:00-15:30 (close unchanged). KRX notices e.g. for 2024-01-02,
# 2025-01-02, 2026-01-02.
FIRST_TRADING_DAY = LateOpen(timedelta(hours=1), timedelta(0), "first trading day of the year")

# College Scholastic Ability Test (수능): the whole session moves one hour, 10:00-16:30, so
# candidates' commute is not jammed. KRX has done this every exam day since the 1990s.
CSAT = LateOpen(timedelta(hours=1), timedelta(hours=1), "college scholastic ability test (CSAT)")

# Exam days by calendar year (the exam for 학년도 N is held in year N-1). The Ministry of
# Education fixes each date ~2 years ahead; add the next one here (or via config late_open).
CSAT_DATES: Mapping[int, date] = {
    2019: date(2019, 11, 14),
    2020: date(2020, 12, 3),  # postponed by COVID-19
    2021: date(2021, 11, 18),
    2022: date(2022, 11, 17),
    2023: date(2023, 11, 16),
    2024: date(2024, 11, 14),
    2025: date(2025, 11, 13),  # 2026학년도; KRX 10:00-16:30
    2026: date(2026, 11, 19),  # 2027학년도; date announced by the Ministry of Education
    2027: date(2027, 11, 18),  # 2028학년도; announced; KRX confirms its hours ~a week before
}

# --- KRX closures beyond the public-holiday list (data) ---------------------------------------

# (month, day, name, first year, last year or None). Workers' Day was a paid day off for private
# employees but not a public holiday until 2026; KRX closed on it regardless (KRX rules list
# "Workers' Day" next to holidays). From 2026 it is also a public holiday; keeping the rule open
# ended costs nothing and protects against an older `holidays` release.
KRX_RULE_CLOSURES: tuple[tuple[int, int, str, int, int | None], ...] = (
    (5, 1, "Labor Day", 1994, None),
)

# Closures on KRX's published 2026 list that only recent `holidays` releases know (Constitution
# Day was reinstated by the Feb 2026 amendment of the Public Holidays Act; exchange_calendars
# 4.13.2 misses the 2026-06-03 local election). Pinned so an older `holidays` cannot reopen them.
KRX_PINNED_CLOSURES: Mapping[date, str] = {
    date(2026, 6, 3): "Local Election Day",
    date(2026, 7, 17): "Constitution Day",
}

YEAR_END_REASON = "year-end closing"
WEEKEND_REASON = "weekend"


class KrxCalendar:
    """KRX trading days and regular-session times. Thread-safe; years are computed on first use."""

    market_name = NAME

    def __init__(
        self,
        extra_closed: Iterable[date] = (),
        extra_late_open: Mapping[date, LateOpen] | None = None,
        *,
        extra_open: Iterable[date] = (),
    ):
        self._extra_closed = frozenset(_as_date(d) for d in extra_closed)
        self._extra_open = frozenset(_as_date(d) for d in extra_open)
        clash = self._extra_closed & self._extra_open
        if clash:
            raise ValueError(f"dates both extra_closed and extra_open: {sorted(d.isoformat() for d in clash)}")
        self._extra_late_open = {_as_date(d): lo for d, lo in (extra_late_open or {}).items()}
        for d, lo in self._extra_late_open.items():
            _check_late_open(d, lo)
        self._lock = threading.Lock()
        self._years: dict[int, dict[date, str]] = {}

    # --- day classification ---

    def closed_reason(self, d: date) -> str | None:
        """Why KRX is closed on `d`, or None on a trading day."""
        d = _as_date(d)
        closures = self._closures(d.year)  # first, so an unsupported year fails on any day
        if d.weekday() >= 5:
            return WEEKEND_REASON
        if d in self._extra_open:
            return None
        return closures.get(d)

    def is_trading_day(self, d: date) -> bool:
        return self.closed_reason(d) is None

    def previous_trading_day(self, d: date) -> date:
        """The last trading day strictly before `d`."""
        return self._step(_as_date(d), -1)

    def next_trading_day(self, d: date) -> date:
        """The first trading day strictly after `d`."""
        return self._step(_as_date(d), 1)

    def trading_days(self, start: date, end: date) -> list[date]:
        """Trading days in [start, end], both inclusive; empty if start > end."""
        start, end = _as_date(start), _as_date(end)
        out = []
        d = start
        while d <= end:
            if self.is_trading_day(d):
                out.append(d)
            d += timedelta(days=1)
        return out

    # --- sessions ---

    def late_open(self, d: date) -> LateOpen | None:
        """The shift that applies to trading day `d`, or None for a regular session."""
        d = _as_date(d)
        if d in self._extra_late_open:
            return self._extra_late_open[d]
        if CSAT_DATES.get(d.year) == d:
            return CSAT
        if d == self._first_trading_day(d.year):
            return FIRST_TRADING_DAY
        return None

    def session(self, d: date) -> Session:
        d = _as_date(d)
        reason = self.closed_reason(d)
        if reason is not None:
            raise NotATradingDay(d, reason, NAME)
        lo = self.late_open(d)
        open_shift = lo.open_shift if lo else timedelta(0)
        close_shift = lo.close_shift if lo else timedelta(0)
        return Session(
            day=d,
            open=kst_datetime(d, REGULAR_OPEN) + open_shift,
            close=kst_datetime(d, REGULAR_CLOSE) + close_shift,
            open_shift=open_shift,
            close_shift=close_shift,
            late_open_reason=lo.reason if lo else None,
        )

    def window(self, d: date, start: str, end: str) -> tuple[datetime, datetime]:
        """A config window ("HH:MM", "HH:MM") on day `d` in KST, shifted like the session.

        The start moves with the open and the end with the close, so a window that sits inside
        the regular session stays inside the shifted one (Track B 09:30-15:00 -> 10:30-16:00 on
        CSAT day, 10:30-15:00 on the first trading day). A short window that the shifts turn
        inside out (09:00-09:30 when only the open moves) gets no time that day: a zero-length
        window at its shifted start, held inside the session, so a collector loop just ends.
        """
        s = self.session(d)
        lo_dt = kst_datetime(s.day, start) + s.open_shift
        hi_dt = kst_datetime(s.day, end) + s.close_shift
        if kst_datetime(s.day, end) <= kst_datetime(s.day, start):
            raise ValueError(f"window {start}-{end}: end must be after start")
        if hi_dt <= lo_dt:
            lo_dt = hi_dt = min(max(lo_dt, s.open), s.close)
        return lo_dt, hi_dt

    def is_market_open(self, when: datetime) -> bool:
        """True while the (shifted) regular session runs: open <= when < close."""
        if when.tzinfo is None:
            raise ValueError(f"naive datetime {when!r}: give a time zone (KST or UTC)")
        local = when.astimezone(KST)
        if not self.is_trading_day(local.date()):
            return False
        s = self.session(local.date())
        return s.open <= local < s.close

    # --- internals ---

    def _step(self, origin: date, step: int) -> date:
        d = origin
        for _ in range(_MAX_SEARCH_DAYS):
            d += timedelta(days=step)
            if self.is_trading_day(d):
                return d
        raise RuntimeError(f"no KRX trading day within {_MAX_SEARCH_DAYS} days of {origin.isoformat()}")

    def _first_trading_day(self, year: int) -> date:
        d = date(year, 1, 1)
        while not self.is_trading_day(d):
            d += timedelta(days=1)
        return d

    def _closures(self, year: int) -> dict[date, str]:
        """Weekday closures of one year -> reason, computed once per year."""
        got = self._years.get(year)
        if got is not None:
            return got
        with self._lock:
            got = self._years.get(year)
            if got is None:
                got = self._build_year(year)
                self._years[year] = got
            return got

    def _build_year(self, year: int) -> dict[date, str]:
        # Outside the library's range it returns no holidays at all; refuse rather than guess.
        lo, hi = supported_years()
        if not lo <= year <= hi:
            raise ValueError(f"year {year} outside the KRX calendar's range {lo}-{hi}")
        out: dict[date, str] = {}
        # en_US names make reasons readable in logs and events ("holiday: Chuseok").
        kr = holidays.country_holidays("KR", years=year, language="en_US")
        for d, name in sorted(kr.items()):
            if d.weekday() < 5:
                out[d] = f"holiday: {name}"
        for month, day, name, first, last in KRX_RULE_CLOSURES:
            d = date(year, month, day)
            if first <= year and (last is None or year <= last) and d.weekday() < 5:
                out.setdefault(d, f"holiday: {name}")
        for d, name in KRX_PINNED_CLOSURES.items():
            if d.year == year:
                out.setdefault(d, f"holiday: {name}")
        # Year-end closing: Dec 31, or the last weekday before it when Dec 31 falls on a weekend
        # or holiday (KRX closed Fri 2022-12-30 and Fri 2023-12-29). Config closures do not move it.
        d = date(year, 12, 31)
        while d.weekday() >= 5 or d in out:
            d -= timedelta(days=1)
        out[d] = YEAR_END_REASON
        for d in self._extra_closed:
            if d.year == year:
                out.setdefault(d, CONFIG_REASON)
        return out


def supported_years() -> tuple[int, int]:
    """First and last year the calendar can answer for (the holiday library's range); --date is checked against it."""
    return holidays.KR.start_year, holidays.KR.end_year


def _check_late_open(d: date, lo: LateOpen) -> None:
    opens = kst_datetime(d, REGULAR_OPEN) + lo.open_shift
    closes = kst_datetime(d, REGULAR_CLOSE) + lo.close_shift
    if closes <= opens:
        raise ValueError(f"late_open {d.isoformat()}: session {opens.time()}-{closes.time()} is empty")
    if closes.date() != d or opens.date() != d:
        raise ValueError(f"late_open {d.isoformat()}: shifts move the session off its day")


def calendar(adjustments: Adjustments | None = None) -> KrxCalendar:
    """The calendar with config's adjustments (observer.core.calendar.adjustments_from_config)."""
    if adjustments is None:
        return KrxCalendar()
    return KrxCalendar(extra_closed=adjustments.extra_closed, extra_late_open=adjustments.late_open,
                       extra_open=adjustments.extra_open)


MARKET = register_market(Market(
    code=CODE, name=NAME, tz=KST, session=(REGULAR_OPEN, REGULAR_CLOSE), universe="kr_stocks",
    venues=("KOSPI", "KOSDAQ", "KONEX"), build_calendar=calendar, years=supported_years))


def session_phase(hour: int, minute: int) -> str:
    """The session phase a stream sees by KST clock time, which its silence limits (ws.stall_s,
    ws.stale_s) are keyed by: preopen < 09:00, continuous 09:00-15:20, auction 15:20-15:30 (the closing
    call), after."""
    hm = hour * 100 + minute
    if hm < 900:
        return "preopen"
    if hm < 1520:
        return "continuous"
    if hm < 1530:
        return "auction"
    return "after"
