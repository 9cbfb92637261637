"""KRX calendar against KRX's published 2026 schedule, late opens, config adjustments, properties."""

from __future__ import annotations

import json
from datetime import date, datetime, time, timedelta
from importlib import resources

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from observer.core.calendar import LateOpen, NotATradingDay
from observer.core.clock import KST, UTC
from observer.markets import calendar_from_config
from observer.markets import krx as calmod
from observer.markets.krx import CSAT_DATES, KrxCalendar

CAL = KrxCalendar()

# KRX 2026 closed weekdays (증권·파생상품시장 휴장일). Source: KRX market holiday page
# (global.krx.co.kr ... GLB0501110000.jsp, "2026" tab) as published Dec 2025, which listed 16 days;
# Constitution Day 07-17 was added after the Public Holidays Act amendment (promulgated
# 2026-02-10) made it a public holiday again, giving the 17 days KRX lists now. Cross-checked
# with KRX press coverage (the 2026 holiday list; 2025-12 year-end notice) and with
# holidays 0.109 financial calendar XKRX.
KRX_2026_CLOSED = {
    date(2026, 1, 1): "New Year's Day",
    date(2026, 2, 16): "Korean New Year",  # 설날 연휴 (day before)
    date(2026, 2, 17): "Korean New Year",
    date(2026, 2, 18): "Korean New Year",  # (second day)
    date(2026, 3, 2): "Independence Movement Day",  # substitute for Sun 03-01
    date(2026, 5, 1): "Labor Day",  # 근로자의 날 / 노동절
    date(2026, 5, 5): "Children's Day",
    date(2026, 5, 25): "Buddha's Birthday",  # substitute for Sun 05-24
    date(2026, 6, 3): "Local Election Day",  # 제9회 전국동시지방선거
    date(2026, 7, 17): "Constitution Day",  # 제헌절, public holiday again from 2026
    date(2026, 8, 17): "Liberation Day",  # substitute for Sat 08-15
    date(2026, 9, 24): "Chuseok",  # day before; 09-26 (2nd day) is a Saturday, no substitute
    date(2026, 9, 25): "Chuseok",
    date(2026, 10, 5): "National Foundation Day",  # substitute for Sat 10-03
    date(2026, 10, 9): "Hangul Day",
    date(2026, 12, 25): "Christmas Day",
    date(2026, 12, 31): "year-end closing",  # 연말 휴장일
}

ORDINARY_2026 = [
    date(2026, 1, 5), date(2026, 2, 13), date(2026, 2, 19), date(2026, 3, 3), date(2026, 4, 15),
    date(2026, 5, 6), date(2026, 6, 2), date(2026, 6, 4), date(2026, 7, 16), date(2026, 8, 14),
    date(2026, 9, 23), date(2026, 9, 28), date(2026, 10, 2), date(2026, 10, 6), date(2026, 11, 20),
    date(2026, 12, 24), date(2026, 12, 30),
]


def kst(y, mo, d, h=0, mi=0, s=0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=KST)


# --- 2026 against KRX's list ------------------------------------------------------------------


@pytest.mark.parametrize("day,name", sorted(KRX_2026_CLOSED.items()))
def test_krx_2026_closed_day(day, name):
    assert not CAL.is_trading_day(day)
    reason = CAL.closed_reason(day)
    assert name in reason
    assert reason == "year-end closing" or reason.startswith("holiday: ")


def test_2026_closed_weekdays_are_exactly_krx_list():
    closed = {d for d in _days(date(2026, 1, 1), date(2026, 12, 31)) if d.weekday() < 5 and not CAL.is_trading_day(d)}
    assert closed == set(KRX_2026_CLOSED)
    # 261 weekdays in 2026 minus 17 closures
    assert len(CAL.trading_days(date(2026, 1, 1), date(2026, 12, 31))) == 244


@pytest.mark.parametrize("day", ORDINARY_2026)
def test_ordinary_2026_trading_day(day):
    assert CAL.is_trading_day(day)
    assert CAL.closed_reason(day) is None


def test_weekend_reason():
    assert CAL.closed_reason(date(2026, 9, 26)) == "weekend"  # Chuseok's 2nd day on a Saturday
    assert CAL.closed_reason(date(2026, 3, 1)) == "weekend"


def test_pinned_closures_survive_a_holidays_release_that_knows_nothing(monkeypatch):
    # An older `holidays` (pyproject allows >=0.60) may not know 2026's new holidays; the
    # KRX-only rules and pinned dates must still close them.
    monkeypatch.setattr(calmod.holidays, "country_holidays", lambda *a, **k: {})
    bare = KrxCalendar()
    for d in (date(2026, 5, 1), date(2026, 6, 3), date(2026, 7, 17), date(2026, 12, 31)):
        assert not bare.is_trading_day(d), d
    assert bare.closed_reason(date(2025, 5, 1)) == "holiday: Labor Day"  # KRX-only before 2026


# --- year-end closing -------------------------------------------------------------------------


def test_dec_31_closed():
    assert CAL.closed_reason(date(2026, 12, 31)) == "year-end closing"
    assert CAL.closed_reason(date(2027, 12, 31)) == "year-end closing"
    assert CAL.previous_trading_day(date(2027, 1, 1)) == date(2026, 12, 30)


@pytest.mark.parametrize("closed,last_open", [
    (date(2022, 12, 30), date(2022, 12, 29)),  # Dec 31 a Saturday: KRX closed Fri 12-30
    (date(2023, 12, 29), date(2023, 12, 28)),  # Dec 31 a Sunday: KRX closed Fri 12-29
])
def test_year_end_closing_moves_to_last_weekday(closed, last_open):
    assert CAL.closed_reason(closed) == "year-end closing"
    assert CAL.is_trading_day(last_open)
    assert CAL.previous_trading_day(date(closed.year + 1, 1, 2)) == last_open


# --- sessions and late opens ------------------------------------------------------------------


def test_regular_session():
    s = CAL.session(date(2026, 11, 20))
    assert (s.open, s.close) == (kst(2026, 11, 20, 9), kst(2026, 11, 20, 15, 30))
    assert s.open_shift == s.close_shift == timedelta(0)
    assert s.late_open_reason is None
    assert CAL.window(date(2026, 11, 20), "09:30", "15:00") == (kst(2026, 11, 20, 9, 30), kst(2026, 11, 20, 15))


def test_first_trading_day_2026_opens_at_10():
    d = date(2026, 1, 2)
    s = CAL.session(d)
    assert (s.open, s.close) == (kst(2026, 1, 2, 10), kst(2026, 1, 2, 15, 30))
    assert (s.open_shift, s.close_shift) == (timedelta(hours=1), timedelta(0))
    assert "first trading day" in s.late_open_reason
    assert CAL.window(d, "09:00", "15:30") == (kst(2026, 1, 2, 10), kst(2026, 1, 2, 15, 30))
    assert CAL.window(d, "09:30", "15:00") == (kst(2026, 1, 2, 10, 30), kst(2026, 1, 2, 15))


def test_first_trading_day_after_new_year_weekend():
    # 2027-01-01 is a Friday holiday; the opening ceremony moves to Monday 01-04.
    assert CAL.next_trading_day(date(2026, 12, 30)) == date(2027, 1, 4)
    assert CAL.session(date(2027, 1, 4)).open == kst(2027, 1, 4, 10)
    assert CAL.session(date(2027, 1, 5)).open == kst(2027, 1, 5, 9)


def test_csat_2026_shifts_whole_session():
    d = date(2026, 11, 19)
    s = CAL.session(d)
    assert (s.open, s.close) == (kst(2026, 11, 19, 10), kst(2026, 11, 19, 16, 30))
    assert s.open_shift == s.close_shift == timedelta(hours=1)
    assert "CSAT" in s.late_open_reason
    assert CAL.window(d, "09:30", "15:00") == (kst(2026, 11, 19, 10, 30), kst(2026, 11, 19, 16))
    assert CAL.window(d, "09:00", "15:30") == (s.open, s.close)


def test_csat_2025():
    s = CAL.session(date(2025, 11, 13))
    assert (s.open, s.close) == (kst(2025, 11, 13, 10), kst(2025, 11, 13, 16, 30))


def test_csat_table_days_are_trading_days():
    for year, d in CSAT_DATES.items():
        assert d.year == year
        assert CAL.is_trading_day(d), d


def test_session_on_closed_day_raises():
    with pytest.raises(NotATradingDay) as e:
        CAL.session(date(2026, 9, 25))
    assert "Chuseok" in e.value.reason
    with pytest.raises(NotATradingDay):
        CAL.window(date(2026, 9, 26), "09:00", "15:30")


def test_is_market_open():
    assert not CAL.is_market_open(kst(2026, 11, 19, 9, 30))
    assert CAL.is_market_open(kst(2026, 11, 19, 10))
    assert CAL.is_market_open(kst(2026, 11, 19, 16, 29, 59))
    assert not CAL.is_market_open(kst(2026, 11, 19, 16, 30))
    assert CAL.is_market_open(kst(2026, 11, 20, 9))
    assert not CAL.is_market_open(kst(2026, 11, 20, 15, 30))
    assert not CAL.is_market_open(kst(2026, 9, 25, 11))
    # UTC input: 2026-11-20 00:30 UTC = 09:30 KST
    assert CAL.is_market_open(datetime(2026, 11, 20, 0, 30, tzinfo=UTC))
    with pytest.raises(ValueError):
        CAL.is_market_open(datetime(2026, 11, 20, 10))


# --- navigation -------------------------------------------------------------------------------


def test_previous_next_across_chuseok():
    assert CAL.next_trading_day(date(2026, 9, 23)) == date(2026, 9, 28)
    assert CAL.previous_trading_day(date(2026, 9, 28)) == date(2026, 9, 23)
    assert CAL.next_trading_day(date(2026, 9, 25)) == date(2026, 9, 28)
    # Chuseok week then the National Foundation Day substitute and Hangul Day
    assert CAL.trading_days(date(2026, 9, 23), date(2026, 10, 9)) == [
        date(2026, 9, 23), date(2026, 9, 28), date(2026, 9, 29), date(2026, 9, 30), date(2026, 10, 1),
        date(2026, 10, 2), date(2026, 10, 6), date(2026, 10, 7), date(2026, 10, 8),
    ]


def test_previous_next_across_seollal():
    assert CAL.next_trading_day(date(2026, 2, 13)) == date(2026, 2, 19)
    assert CAL.previous_trading_day(date(2026, 2, 19)) == date(2026, 2, 13)


def test_trading_days_edges():
    assert CAL.trading_days(date(2026, 11, 20), date(2026, 11, 20)) == [date(2026, 11, 20)]
    assert CAL.trading_days(date(2026, 11, 21), date(2026, 11, 22)) == []
    assert CAL.trading_days(date(2026, 11, 23), date(2026, 11, 20)) == []


# --- config -----------------------------------------------------------------------------------


def test_extra_closed_from_config():
    cal = calendar_from_config({"calendar": {"extra_closed": ["2026-11-20", "2026-12-30"]}})
    assert cal.closed_reason(date(2026, 11, 20)) == "config"
    assert cal.next_trading_day(date(2026, 11, 19)) == date(2026, 11, 23)
    assert cal.previous_trading_day(date(2027, 1, 4)) == date(2026, 12, 29)
    # a config closure never moves the year-end closing
    assert cal.closed_reason(date(2026, 12, 31)) == "year-end closing"
    # the built-in reason wins when config repeats a holiday
    cal2 = calendar_from_config({"calendar": {"extra_closed": ["2026-09-25"]}})
    assert "Chuseok" in cal2.closed_reason(date(2026, 9, 25))


def test_late_open_from_config_defaults_and_override():
    cal = calendar_from_config({"calendar": {"late_open": [
        {"date": "2026-12-30"},
        {"date": "2026-11-19", "open_shift_minutes": 0, "close_shift_minutes": 0, "reason": "exam shift cancelled"},
        {"date": "2026-12-29", "open_shift_minutes": 30, "close_shift_minutes": -30, "reason": "drill"},
    ]}})
    s = cal.session(date(2026, 12, 30))
    assert (s.open, s.close, s.late_open_reason) == (kst(2026, 12, 30, 10), kst(2026, 12, 30, 15, 30), "config")
    s = cal.session(date(2026, 11, 19))
    assert (s.open, s.close, s.late_open_reason) == (kst(2026, 11, 19, 9), kst(2026, 11, 19, 15, 30), "exam shift cancelled")
    assert cal.window(date(2026, 12, 29), "09:30", "15:00") == (kst(2026, 12, 29, 10), kst(2026, 12, 29, 14, 30))
    # built-ins untouched elsewhere
    assert cal.session(date(2026, 1, 2)).open == kst(2026, 1, 2, 10)


def test_extra_open_from_config_reopens_a_holiday():
    cal = calendar_from_config({"calendar": {"extra_open": ["2026-06-03", "2026-06-06"]}})
    assert cal.is_trading_day(date(2026, 6, 3))
    assert not cal.is_trading_day(date(2026, 6, 6))  # a weekend stays closed even if listed


def test_calendar_from_config_without_section():
    assert calendar_from_config({}).is_trading_day(date(2026, 11, 20))
    assert calendar_from_config({"calendar": {}}).closed_reason(date(2026, 12, 31)) == "year-end closing"


@pytest.mark.parametrize("section,needle", [
    ({"extra_closed": ["2026-02-30"]}, "calendar.extra_closed[0]"),
    ({"extra_open": [20260603]}, "calendar.extra_open[0]"),
    ({"late_open": [{"open_shift_minutes": 60}]}, "calendar.late_open[0]"),
    ({"late_open": [{"date": "2026-11-19"}, {"date": "2026-11-19"}]}, "calendar.late_open[1].date"),
    ({"late_open": [{"date": "2026-11-18", "open_shift_minutes": 240, "close_shift_minutes": -240}]}, "empty"),
    ({"extra_closed": ["2026-06-03"], "extra_open": ["2026-06-03"]}, "both"),
])
def test_config_errors_name_the_key(section, needle):
    with pytest.raises(ValueError) as e:
        calendar_from_config({"calendar": section})
    assert needle in str(e.value)


def test_constructor_accepts_late_open_mapping():
    cal = KrxCalendar(extra_closed=[date(2026, 11, 20)],
                      extra_late_open={date(2026, 11, 23): LateOpen(timedelta(hours=1), timedelta(0), "x")})
    assert not cal.is_trading_day(date(2026, 11, 20))
    assert cal.session(date(2026, 11, 23)).open == kst(2026, 11, 23, 10)


def test_schema_fragment():
    schema = json.loads((resources.files("observer") / "schemas" / "config" / "calendar.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    v = jsonschema.Draft202012Validator(schema)
    good = {"extra_closed": ["2026-11-20"], "extra_open": [],
            "late_open": [{"date": "2026-11-19", "open_shift_minutes": 60, "close_shift_minutes": 60, "reason": "CSAT"}]}
    assert not list(v.iter_errors(good))
    assert not list(v.iter_errors({}))
    for bad in ({"extra_closd": []}, {"extra_closed": ["2026/11/20"]},
                {"late_open": [{"date": "2026-11-19", "open_shift": 60}]},
                {"late_open": [{"date": "2026-11-19", "open_shift_minutes": 1.5}]}):
        assert list(v.iter_errors(bad)), bad
    # the defaults the schema documents are the ones calendar_from_config applies
    item = schema["properties"]["late_open"]["items"]["properties"]
    s = calendar_from_config({"calendar": {"late_open": [{"date": "2026-11-23"}]}}).session(date(2026, 11, 23))
    assert s.open_shift == timedelta(minutes=item["open_shift_minutes"]["default"])
    assert s.close_shift == timedelta(minutes=item["close_shift_minutes"]["default"])
    assert s.late_open_reason == item["reason"]["default"]


# --- properties -------------------------------------------------------------------------------

DAYS = st.dates(min_value=date(2016, 1, 1), max_value=date(2035, 12, 31))


@settings(max_examples=300, deadline=None)
@given(DAYS)
def test_previous_next_relations(d):
    p, n = CAL.previous_trading_day(d), CAL.next_trading_day(d)
    assert p < d < n
    assert CAL.is_trading_day(p) and CAL.is_trading_day(n)
    assert CAL.trading_days(p + timedelta(days=1), d - timedelta(days=1)) == []
    assert CAL.trading_days(d + timedelta(days=1), n - timedelta(days=1)) == []
    if CAL.is_trading_day(d):
        assert CAL.next_trading_day(p) == d and CAL.previous_trading_day(n) == d
    else:
        assert CAL.next_trading_day(p) == n and CAL.previous_trading_day(n) == p
    assert (CAL.closed_reason(d) is None) == CAL.is_trading_day(d)
    if CAL.is_trading_day(d):
        assert d.weekday() < 5


_MINUTES = st.integers(min_value=9 * 60, max_value=15 * 60 + 30)


@settings(max_examples=300, deadline=None)
@given(DAYS, _MINUTES, _MINUTES)
def test_windows_inside_session(d, a, b):
    if a == b:
        return
    a, b = sorted((a, b))
    start, end = f"{a // 60:02d}:{a % 60:02d}", f"{b // 60:02d}:{b % 60:02d}"
    d = d if CAL.is_trading_day(d) else CAL.next_trading_day(d)
    s = CAL.session(d)
    lo, hi = CAL.window(d, start, end)
    assert s.open <= lo <= hi <= s.close
    assert lo.tzinfo is not None and hi.utcoffset() == timedelta(hours=9)
    if lo < hi:
        assert lo - datetime.combine(d, time(a // 60, a % 60), KST) == s.open_shift
        assert hi - datetime.combine(d, time(b // 60, b % 60), KST) == s.close_shift
        assert CAL.is_market_open(lo) and not CAL.is_market_open(s.close)
    else:
        # only a window the shifts turn inside out collapses
        assert s.open_shift != s.close_shift


def test_window_collapsed_by_shift_is_empty_not_an_error():
    d = date(2026, 1, 2)  # open +1h, close unchanged
    assert CAL.window(d, "09:00", "09:30") == (kst(2026, 1, 2, 10), kst(2026, 1, 2, 10))
    assert CAL.window(d, "15:20", "15:30") == (kst(2026, 1, 2, 15, 30), kst(2026, 1, 2, 15, 30))
    with pytest.raises(ValueError):
        CAL.window(date(2026, 11, 20), "15:00", "09:30")


def _days(a: date, b: date):
    while a <= b:
        yield a
        a += timedelta(days=1)


def test_year_outside_holiday_data_is_refused():
    with pytest.raises(ValueError):
        CAL.is_trading_day(date(2101, 1, 3))
    with pytest.raises(ValueError):
        CAL.closed_reason(date(1900, 1, 6))  # a Saturday
