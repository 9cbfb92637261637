"""Mitigation levels from injected load (incl. hysteresis), rates per level, recording rate, anomaly rules."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from observer.collect.mitigation import (
    AnomalyTracker,
    MitigationController,
    RecordingRate,
    book_hz,
    book_interval_s,
    rotation_minutes,
)
from observer.core.clock import NS, ManualClock
from observer.core.config import ConfigError, validate_config

T0 = 1_773_100_000 * NS


def ctl(**mit):
    cfg = validate_config({"track_b": {"mitigation": mit}})
    return MitigationController(cfg, ManualClock(T0))


def run(c, seconds, every=5, start=0, cpu=10.0, mem=10.0, fsync=1.0, lag=0.01):
    """Feed samples every `every` s for `seconds` s from T0+start; returns [(t_s, change)] for changes."""
    out = []
    for t in range(start, start + seconds, every):
        ch = c.observe(T0 + t * NS, cpu, mem, fsync, lag)
        if ch:
            out.append((t, ch))
    return out


def test_rates_per_level():
    assert [book_interval_s(lvl) for lvl in (0, 1, 2)] == [0.5, 1.0, 2.0]
    assert [book_hz(lvl) for lvl in (0, 1, 2)] == [2.0, 1.0, 0.5]
    assert [rotation_minutes(lvl) for lvl in (0, 1, 2)] == [10, 30, 60]
    with pytest.raises(ValueError):
        book_interval_s(3)
    c = ctl()
    assert (c.level, c.book_interval_s, c.rotation_minutes) == (0, 0.5, 10)


def test_level_1_only_after_the_sustained_window():
    c = ctl()
    ch = run(c, 400, cpu=85)
    assert ch[0][0] == 300 and ch[0][1][:2] == (1, 0)
    assert "cpu >= 80%" in ch[0][1][2] and "300 s" in ch[0][1][2]
    assert len(ch) == 1 and c.level == 1 and (c.book_interval_s, c.rotation_minutes) == (1.0, 30)


def test_straight_to_level_2_and_each_metric_counts():
    for kw, needle in (({"cpu": 95}, "cpu"), ({"mem": 96}, "memory"), ({"fsync": 1200}, "fsync"),
                       ({"lag": 6}, "event lag")):
        c = ctl()
        ch = run(c, 305, **kw)
        assert [x[1][:2] for x in ch] == [(2, 0)], kw
        assert needle in ch[0][1][2]
    for kw in ({"mem": 90}, {"fsync": 600}, {"lag": 3}):
        c = ctl()
        assert [x[1][:2] for x in run(c, 305, **kw)] == [(1, 0)], kw


def test_brief_spikes_do_not_engage():
    c = ctl()
    for t in range(0, 1200, 5):
        spike = t % 60 == 0                      # 1 sample in 12 at 99 %
        assert c.observe(T0 + t * NS, 99 if spike else 20, 20, 1, 0) is None
    assert c.level == 0


def test_hysteresis_steps_down_only_after_a_clear_window():
    c = ctl()
    assert [x[1][:2] for x in run(c, 305, cpu=95)] == [(2, 0)]
    # load falls into the level-1 band: level 2 holds until its condition has been clear a window
    ch = run(c, 600, start=305, cpu=85)
    assert [x[1][:2] for x in ch] == [(1, 2)]
    t_down = ch[0][0]
    assert 305 + 0.8 * 300 - 5 <= t_down <= 305 + 300
    assert "clear" in ch[0][1][2]
    # load gone: back to 0 only after level 1 is clear for a window
    ch = run(c, 600, start=905, cpu=10)
    assert [x[1][:2] for x in ch] == [(0, 1)] and ch[0][0] >= 905 + 0.8 * 300 - 5
    assert c.level == 0


def test_level_holds_in_the_band_between_engage_and_clear():
    c = ctl()
    run(c, 305, cpu=85)
    assert c.level == 1
    # half the samples above 80 %: not clear (<= 20 % above) -> stays 1; not engaged for 2 either
    for t in range(305, 2000, 5):
        assert c.observe(T0 + t * NS, 95 if t % 10 == 0 else 50, 10, 1, 0) is None
    assert c.level == 1


def test_strict_fraction_and_short_window_from_config():
    c = ctl(window_s=10, sustained_fraction=1.0)
    ch = run(c, 30, every=1, cpu=85)
    assert ch[0][0] == 10 and c.level == 1
    # strict: one sample at the threshold anywhere in the window blocks the step down
    for t in range(30, 60):
        assert c.observe(T0 + t * NS, 85 if t % 8 == 0 else 10, 10, 1, 0) is None
    assert c.level == 1                           # last sample above: t = 56
    ch = run(c, 20, every=1, start=60, cpu=10)
    assert [(t, x[:2]) for t, x in ch] == [(67, (0, 1))]     # first window [t-10, t] without it


def test_unknown_metrics_are_skipped():
    c = ctl(window_s=10)
    for t in range(0, 30):
        c.observe(T0 + t * NS, None, None, 2000, None)
    assert c.level == 2


def test_bad_mitigation_config():
    with pytest.raises(ConfigError):
        validate_config({"track_b": {"mitigation": {"cpu_pct": [80]}}})
    with pytest.raises(ConfigError):
        validate_config({"track_b": {"mitigation": {"sustained_fraction": 0.2}}})
    with pytest.raises(ValueError, match="level-1"):
        ctl(cpu_pct=[95, 90])


# -- recording rate -------------------------------------------------------------------------------------
def test_recording_rate_full_half_and_none():
    r = RecordingRate(window_s=60, interval_s=0.5)
    assert r.rate(0, T0) is None
    r.subscribe(0, T0)
    r.subscribe(1, T0)
    for i in range(1, 121):                       # 2 Hz for 60 s
        r.record(0, T0 + i * NS // 2)
        if i % 2 == 0:
            r.record(1, T0 + i * NS // 2)
    now = T0 + 60 * NS
    assert r.expected(0, now) == pytest.approx(120)
    assert r.rate(0, now) == 1.0
    assert r.rate(1, now) == pytest.approx(0.5)
    assert r.overall(now) == pytest.approx(0.75)
    assert r.rates(now) == {0: 1.0, 1: pytest.approx(0.5)}
    assert r.rate(2, now) is None


def test_recording_rate_follows_level_changes_and_unsubscribe():
    r = RecordingRate(window_s=60, interval_s=0.5)
    r.subscribe(0, T0)
    r.set_interval(T0 + 30 * NS, 2.0)             # level 2 after 30 s: 60 + 15 samples expected
    assert r.expected(0, T0 + 60 * NS) == pytest.approx(75)
    r.unsubscribe(0, T0 + 60 * NS)
    assert r.expected(0, T0 + 90 * NS) == pytest.approx(15)   # window 30..90: 30 s at 0.5 Hz
    assert r.expected(0, T0 + 200 * NS) == 0 and r.rate(0, T0 + 200 * NS) is None
    r.subscribe(0, T0 + 200 * NS)
    for i in range(1, 16):
        r.record(0, T0 + 200 * NS + 2 * i * NS)
    assert r.rate(0, T0 + 230 * NS) == 1.0
    r.forget(0)
    assert r.rates(T0 + 230 * NS) == {}


@settings(max_examples=60, deadline=None)
@given(recs=st.lists(st.integers(0, 120_000), max_size=300), interval=st.sampled_from([0.5, 1.0, 2.0]))
def test_recording_rate_is_a_fraction(recs, interval):
    r = RecordingRate(window_s=60, interval_s=interval)
    r.subscribe(3, T0)
    for ms in sorted(recs):
        r.record(3, T0 + ms * 1_000_000)
    now = T0 + 120 * NS
    v = r.rate(3, now)
    assert v is not None and 0.0 <= v <= 1.0
    o = r.overall(now)
    assert o == v


# -- anomaly day ---------------------------------------------------------------------------------------
def test_reconnects_rule_fires_once():
    a = AnomalyTracker(validate_config({}))
    for _ in range(19):
        assert a.reconnect(T0) == []
    assert not a.anomaly
    got = a.reconnect(T0)
    assert len(got) == 1 and "20 WebSocket reconnects" in got[0]
    assert a.reconnect(T0) == [] and a.anomaly and a.reasons == got


def test_disconnected_ten_minutes_in_total():
    a = AnomalyTracker()
    a.disconnected(T0)
    assert a.connected(T0 + 300 * NS) == []
    a.disconnected(T0 + 1000 * NS)
    assert a.tick(T0 + 1299 * NS) == []
    got = a.tick(T0 + 1300 * NS)                 # 5 + 5 min, still disconnected
    assert got and "10.0 min" in got[0]
    assert a.disconnected_s(T0 + 1300 * NS) == pytest.approx(600)


def test_two_silences_of_sixty_seconds():
    a = AnomalyTracker()
    assert a.activity(T0) == [] and a.activity(T0 + 59 * NS) == []
    assert a.activity(T0 + 130 * NS) == []       # first silence (71 s)
    assert a.silence(30, T0) == []               # too short
    got = a.silence(61, T0 + 200 * NS)
    assert got and "2 silences" in got[0] and a.silences == 2


def test_scalp_rate_below_97_percent_for_five_minutes():
    a = AnomalyTracker()
    for t in range(0, 300, 10):
        assert a.scalp_rate(T0 + t * NS, 0.96) == []
    assert a.scalp_rate(T0 + 299 * NS, 0.99) == []   # recovered: the clock restarts
    for t in range(300, 600, 10):
        assert a.scalp_rate(T0 + t * NS, 0.5) == []
    got = a.scalp_rate(T0 + 600 * NS, 0.5)
    assert got and "97%" in got[0]
    b = AnomalyTracker()
    for t in range(0, 1000, 10):
        assert b.scalp_rate(T0 + t * NS, None) == [] and b.scalp_rate(T0 + t * NS, 0.97) == []


def test_cpu_ten_minutes_disk_and_flag_and_observe():
    a = AnomalyTracker(validate_config({"track_b": {"anomaly": {"cpu_s": 60}}}))
    assert a.observe(T0, cpu_pct=90, disk_pct=50, scalp_rate=1.0) == []
    got = a.observe(T0 + 60 * NS, cpu_pct=86, disk_pct=81, scalp_rate=1.0)
    assert len(got) == 2 and any("CPU" in g for g in got) and any("disk 81.0%" in g for g in got)
    assert a.disk(T0, 80.0) == []                 # already fired; and 80 % is not > 80 %
    got = a.flag("scalp recording paused: 5 min of connection failure", T0)
    assert got and a.flag("scalp recording paused: 5 min of connection failure", T0) == []
    assert len(a.reasons) == 3


def test_state_survives_a_restart():
    a = AnomalyTracker()
    for _ in range(15):
        a.reconnect(T0)
    a.disconnected(T0)
    a.silence(70, T0)
    d = a.to_dict(T0 + 500 * NS)
    b = AnomalyTracker.from_dict(d)
    assert (b.reconnects, b.silences, b.disconnected_s(T0)) == (15, 1, 500)
    for _ in range(4):
        assert b.reconnect(T0) == []
    assert b.reconnect(T0)
    b.disconnected(T0)
    assert b.tick(T0 + 100 * NS)
