"""Which day observer-backup packages and when: the last collection window's end, shifted like the session."""

from datetime import date

import pytest

from observer.core.clock import kst_datetime
from observer.lifecycle.backup_day import Cutoff, collection_end

CFG = {"windows": {"track_a": {"start": "09:00", "end": "15:30"}, "track_b": {"start": "09:30", "end": "15:00"}},
       "backup": {"after_window_minutes": 30}}


@pytest.mark.parametrize("day, end", [
    (date(2026, 3, 16), "15:30"),   # a regular Monday: Track A's end, the later one
    (date(2026, 1, 2), "15:30"),    # first trading day: only the open moves
    (date(2026, 11, 19), "16:30"),  # CSAT day: the close moves an hour, and the windows with it
    (date(2026, 3, 14), "15:30"),   # a Saturday: the configured times
    (date(2201, 3, 16), "15:30"),   # outside the calendar's years: the configured times, no error
])
def test_collection_end(day, end):
    assert collection_end(CFG, day) == kst_datetime(day, end)


def test_collection_end_without_windows_is_the_regular_close():
    assert collection_end({}, date(2026, 3, 16)) == kst_datetime(date(2026, 3, 16), "15:30")


def test_collection_end_follows_a_configured_late_open():
    cfg = {**CFG, "calendar": {"late_open": [{"date": "2026-03-16", "open_shift_minutes": 60,
                                              "close_shift_minutes": 45}]}}
    assert collection_end(cfg, date(2026, 3, 16)) == kst_datetime(date(2026, 3, 16), "16:15")


def test_only_value_errors_fall_back_to_the_configured_times():
    # only ValueError (a bad date, an unsupported year) falls back to the configured times; anything
    # else is a bug that must surface, not a silently wrong cutoff
    cfg = {**CFG, "calendar": {"extra_closed": ["not a date"]}}
    assert collection_end(cfg, date(2026, 3, 16)) == kst_datetime(date(2026, 3, 16), "15:30")
    with pytest.raises(TypeError):
        collection_end({**CFG, "calendar": {"late_open": [{"date": "2026-03-16", "open_shift_minutes": []}]}},
                       date(2026, 3, 16))


@pytest.mark.parametrize("now, default, refusal", [
    ("14:00", date(2026, 3, 15), True),    # before the last window's end + 30 min: yesterday by default
    ("15:59", date(2026, 3, 15), True),
    ("16:00", date(2026, 3, 16), False),   # from the cutoff on: today
])
def test_cutoff(now, default, refusal):
    day = date(2026, 3, 16)
    at = kst_datetime(day, now)
    c = Cutoff.of(CFG, at)
    assert c.allowed_from == kst_datetime(day, "16:00")
    assert c.default_day(at) == default
    msg = c.too_early(day, at)
    assert (msg is not None) == refusal
    if refusal:
        assert "refusing to package today (20260316)" in msg and "ends 15:30 KST" in msg and "from 16:00 KST" in msg
    assert c.too_early(date(2026, 3, 15), at) is None  # an earlier day may always be packaged
