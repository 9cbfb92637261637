"""Trigger engine: each trigger's math, ranking, fillers, the live manual override file, latest_snapshots."""

import os
from datetime import date

import orjson
import pytest

from observer.collect.triggers import (
    TRIGGERS,
    Candidate,
    TriggerEngine,
    latest_snapshots,
    manual_override_path,
    parse_manual,
    rank,
)
from observer.core.clock import NS, ManualClock, kst_ns
from observer.core.config import validate_config
from observer.store import paths

DAY = date(2026, 3, 10)
T0 = kst_ns(DAY, "090000")


def at(hhmmss: str) -> int:
    return kst_ns(DAY, hhmmss)


def snap(sym, sweep_ns, price, cum_vol, high=None, low=None, prev_close=10000.0, cum_value=None, **kw):
    r = {"v": 1, "kind": "snapshot", "provider": "kis", "market": "krx", "symbol": sym, "exch_ns": None,
         "recv_ns": sweep_ns + 5 * NS, "quality": "normal", "price": float(price), "cum_vol": cum_vol,
         "high": high, "low": low, "prev_close": prev_close, "cum_value": cum_value, "sweep_ns": sweep_ns,
         "track": "A"}
    r.update(kw)
    return r


def rank_row(sym, rnk, price, cum_vol, recv_ns, avrg_vol=None, prdy_vol=None):
    extra = {"rank": rnk, "name": sym}
    if avrg_vol is not None:
        extra["avrg_vol"] = str(avrg_vol)
    if prdy_vol is not None:
        extra["prdy_vol"] = str(prdy_vol)
    return {"v": 1, "kind": "snapshot", "provider": "kis", "market": "krx", "symbol": sym, "exch_ns": None,
            "recv_ns": recv_ns, "quality": "normal", "price": float(price), "cum_vol": cum_vol,
            "sweep_ns": recv_ns, "extra": extra}


@pytest.fixture
def cfg(tmp_path):
    return validate_config({"data_dir": str(tmp_path / "data")})


@pytest.fixture
def clock():
    return ManualClock(T0)


def engine(cfg, clock, **triggers):
    if triggers:
        cfg = {**cfg, "track_b": {**cfg["track_b"], "triggers": {**cfg["track_b"]["triggers"], **triggers}}}
    return TriggerEngine(cfg, clock)


def feed_sweeps(e, sym, vols, price=10000.0, start="091000", prices=None):
    """One sweep every 10 min from `start`; vols are per-interval volumes (first = cum at first sweep)."""
    cum = 0
    t = kst_ns(DAY, start)
    for i, v in enumerate(vols):
        cum += v
        p = prices[i] if prices else price
        e.observe_snapshots([snap(sym, t + i * 600 * NS, p, cum)])
    return t + (len(vols) - 1) * 600 * NS


# -- volume surge ---------------------------------------------------------------------------------
def test_volume_surge_against_own_recent_intervals(cfg, clock):
    e = engine(cfg, clock)
    last = feed_sweeps(e, "005930", [50_000, 100_000, 100_000, 100_000, 500_000])
    c = e.candidates(last + 10 * NS)
    assert [x.symbol for x in c] == ["005930"]
    assert c[0].trigger == "volume_surge"
    assert c[0].score == pytest.approx(5.0 / 3.0, rel=1e-3)
    assert "5.0x" in c[0].reason


def test_no_surge_below_ratio_or_without_baseline_or_illiquid(cfg, clock):
    e = engine(cfg, clock)
    last = feed_sweeps(e, "A", [50_000, 100_000, 100_000, 250_000])        # 2.5x < 3x
    feed_sweeps(e, "B", [50_000, 500_000])                                 # one interval: no baseline yet
    feed_sweeps(e, "C", [50, 100, 100, 100, 5_000], price=1000.0)          # 50x but 5 M KRW traded
    assert e.candidates(last + NS) == []


def test_repeated_sweep_is_ignored_and_new_day_resets(cfg, clock):
    e = engine(cfg, clock)
    batch = [snap("A", at("091000"), 10000, 1000)]
    e.observe_snapshots(batch)
    e.observe_snapshots(batch)
    e.observe_snapshots([snap("A", at("090000"), 10000, 500)])           # older sweep: ignored
    assert len(e._intervals["A"]) == 0
    e.observe_snapshots([snap("A", at("092000"), 10000, 3000)])
    assert len(e._intervals["A"]) == 1
    nxt = kst_ns(date(2026, 3, 11), "091000")
    e.observe_snapshots([snap("A", nxt, 10000, 10)])
    assert len(e._intervals["A"]) == 0


def test_volume_surge_by_pace_from_volume_rank(cfg, clock):
    e = engine(cfg, clock)
    now = at("100000")   # 60 of 390 min: a normal day (avrg 3.9 M) would have traded 600 k
    e.observe_volume_rank([rank_row("A", 1, 5000, 1_800_000, now, avrg_vol=3_900_000),
                           rank_row("B", 2, 5000, 700_000, now, prdy_vol=3_900_000)])
    c = e.candidates(now)
    real = [x for x in c if not x.filler]
    assert [x.symbol for x in real] == ["A"]
    assert real[0].score == pytest.approx(1.5)          # 3.0x pace / 2.0 threshold
    assert "avrg_vol" in real[0].reason
    assert [x.symbol for x in c if x.filler] == ["B"]


def test_pace_not_judged_in_first_ten_minutes_and_session_shift(cfg, clock):
    e = engine(cfg, clock)
    early = at("090500")
    e.observe_volume_rank([rank_row("A", 1, 5000, 5_000_000, early, avrg_vol=3_900_000)])
    assert not [x for x in e.candidates(early) if not x.filler]
    # a late-open day (10:00 open): at 10:05 still inside the first 10 min
    e2 = engine(cfg, clock)
    e2.set_session(at("100000"), at("163000"))
    t = at("100500")
    e2.observe_volume_rank([rank_row("A", 1, 5000, 5_000_000, t, avrg_vol=3_900_000)])
    assert not [x for x in e2.candidates(t) if not x.filler]


# -- trade velocity ---------------------------------------------------------------------------------
def test_trade_velocity_from_track_b_counts(cfg, clock):
    e = engine(cfg, clock)
    t = at("100000")
    for s in range(600):                      # 1 trade/s = 60/min baseline for 10 min
        e.observe_trades("A", 1, t + s * NS)
    for s in range(600, 660):                 # then 5 trades/s
        e.observe_trades("A", 5, t + s * NS)
    c = e.candidates(t + 659 * NS)
    assert len(c) == 1 and c[0].trigger == "trade_velocity"
    assert c[0].score == pytest.approx(300 / 60 / 2.0, rel=0.05)
    # quiet symbol: fast relative to its baseline but below the floor of 30 trades/min
    for s in range(660):
        e.observe_trades("Q", 1 if s >= 600 and s % 3 == 0 else 0, t + s * NS)
    assert [x.symbol for x in e.candidates(t + 659 * NS)] == ["A"]
    e.forget_trades("A")
    assert e.candidates(t + 659 * NS) == []


def test_trade_velocity_needs_a_baseline(cfg, clock):
    e = engine(cfg, clock)
    t = at("100000")
    for s in range(90):
        e.observe_trades("A", 10, t + s * NS)
    assert e.candidates(t + 89 * NS) == []


# -- volatility ------------------------------------------------------------------------------------
def test_volatility_spike_by_return_and_by_range(cfg, clock):
    e = engine(cfg, clock)
    last = feed_sweeps(e, "A", [1, 1, 1, 1], prices=[10000, 10020, 10000, 10300])   # 0.2 %, then 3 %
    c = e.candidates(last)
    assert c[0].trigger == "volatility_spike" and c[0].score == pytest.approx(3.0 / 1.5, rel=1e-2)
    # range jump: high-low widens from 100 to 400 (3 % of prev close 10000)
    e.observe_snapshots([snap("R", at("091000"), 10000, 1, high=10050, low=9950)])
    e.observe_snapshots([snap("R", at("092000"), 10010, 2, high=10300, low=9900)])
    r = [x for x in e.candidates(at("092000")) if x.symbol == "R"][0]
    assert r.trigger == "volatility_spike" and "range" in r.reason and r.score == pytest.approx(1.5)


def test_volatility_not_fired_when_usual_for_the_symbol(cfg, clock):
    e = engine(cfg, clock)
    last = feed_sweeps(e, "A", [1, 1, 1, 1], prices=[10000, 10200, 10000, 10200])   # 2 % every time
    assert e.candidates(last) == []


def test_stale_observations_make_no_candidate(cfg, clock):
    e = engine(cfg, clock)
    last = feed_sweeps(e, "A", [50_000, 100_000, 100_000, 500_000])
    assert e.candidates(last + 1200 * NS)
    assert e.candidates(last + 1300 * NS) == []


# -- ranking -----------------------------------------------------------------------------------------
def test_priority_order_then_score_and_one_candidate_per_symbol(cfg, clock, tmp_path):
    e = engine(cfg, clock)
    manual = manual_override_path(cfg)
    manual.parent.mkdir(parents=True)
    manual.write_text("M1\nM2\nV\n")
    # V: volume surge (weak) AND volatility (strong) -> listed once, as volume_surge
    feed_sweeps(e, "V", [50_000, 100_000, 100_000, 400_000], prices=[10000, 10010, 10000, 10800])
    # S: strong volatility only; W: weak volatility only
    feed_sweeps(e, "S", [1, 1, 1, 1], prices=[10000, 10010, 10000, 11000])
    last = feed_sweeps(e, "W", [1, 1, 1, 1], prices=[10000, 10010, 10000, 10200])
    t = last
    for s in range(660):
        e.observe_trades("T", 1 if s < 600 else 5, t - 659 * NS + s * NS)
    c = e.candidates(t)
    assert [(x.symbol, x.trigger) for x in c] == [
        ("V", "volume_surge"), ("T", "trade_velocity"), ("S", "volatility_spike"),
        ("W", "volatility_spike"), ("M1", "manual"), ("M2", "manual")]
    assert [TRIGGERS.index(x.trigger) for x in c] == sorted(TRIGGERS.index(x.trigger) for x in c)


def test_candidate_rejects_unknown_trigger_and_rank_helper():
    with pytest.raises(ValueError):
        Candidate("A", "rumour", 1.0, "")
    cs = [Candidate("B", "manual", 9, ""), Candidate("F", "volume_surge", 0.9, "", filler=True),
          Candidate("A", "volatility_spike", 1, ""), Candidate("C", "volatility_spike", 2, "")]
    assert [c.symbol for c in rank(cs)] == ["C", "A", "B", "F"]


def test_fillers_come_last_and_can_be_switched_off(cfg, clock):
    t = at("100000")
    rows = [rank_row(s, i + 1, 5000, 100_000, t, avrg_vol=3_900_000) for i, s in enumerate("XYZ")]
    e = engine(cfg, clock)
    e.observe_volume_rank(rows)
    c = e.candidates(t)
    assert [(x.symbol, x.filler) for x in c] == [("X", True), ("Y", True), ("Z", True)]
    assert all(x.score < 1 for x in c)
    cfg2 = {**cfg, "track_b": {**cfg["track_b"], "fill_idle_slots": False}}
    e2 = TriggerEngine(cfg2, clock)
    e2.observe_volume_rank(rows)
    assert e2.candidates(t) == []
    # a newer rank list replaces the old one for fillers
    e.observe_volume_rank(rows[:1])
    assert [x.symbol for x in e.candidates(t)] == ["X"]


# -- manual override -----------------------------------------------------------------------------------
def test_parse_manual():
    codes, problems = parse_manual("# operator list\n005930  # Samsung\n\n  000660\n005930\nbad code!\n")
    assert codes == ["005930", "000660"]
    assert len(problems) == 1 and "line 6" in problems[0]


def test_manual_file_picked_up_live_after_mtime_change(cfg, clock):
    e = engine(cfg, clock)
    p = manual_override_path(cfg)
    assert str(p).endswith("data/state/manual_slots.txt")
    assert e.manual_symbols() == []                      # missing file: none
    p.parent.mkdir(parents=True)
    p.write_text("005930\n")
    assert e.manual_symbols() == ["005930"]
    st = os.stat(p)
    p.write_text("000660\n")                             # same inode and size ...
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert e.manual_symbols() == ["005930"]              # ... and same mtime: indistinguishable, cached
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))   # the save moved mtime: re-read
    assert e.manual_symbols() == ["000660"]
    reloads = e.manual_reloads
    assert e.manual_symbols() == ["000660"] and e.manual_reloads == reloads   # unchanged: not re-read
    p.write_text("000660\n035720 # Kakao\n??\n")
    assert e.manual_symbols() == ["000660", "035720"]
    assert e.manual_errors and "line 3" in e.manual_errors[0]
    c = e.candidates(T0)
    assert [(x.symbol, x.trigger) for x in c] == [("000660", "manual"), ("035720", "manual")]
    p.unlink()
    assert e.manual_symbols() == []


def test_manual_path_absolute_and_disabled(tmp_path):
    cfg = validate_config({"data_dir": str(tmp_path), "track_b": {"manual_override_file": "/etc/x/m.txt"}})
    assert str(manual_override_path(cfg)) == "/etc/x/m.txt"
    cfg = validate_config({"data_dir": str(tmp_path), "track_b": {"manual_override_file": ""}})
    assert manual_override_path(cfg) is None
    assert TriggerEngine(cfg, ManualClock(T0)).manual_symbols() == []


# -- latest_snapshots ---------------------------------------------------------------------------------
def _write(path, recs, torn=b""):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as f:
        for r in recs:
            f.write(orjson.dumps(r) + b"\n")
        f.write(torn)


def test_latest_snapshots_newest_sweep_across_hour_files(tree):
    s1, s2, s3 = at("094000"), at("095000"), at("095959")
    f9 = paths.swing_file(tree, "kis", "krx", s1)
    f10 = paths.swing_file(tree, "kis", "krx", at("100000"))
    _write(f9, [snap("A", s1, 100, 1), snap("B", s1, 100, 1)])
    _write(f9, [snap("A", s2, 101, 2), snap("B", s2, 101, 2)])
    # a sweep straddling the hour: part in 09_00, part in 10_00, plus a rank row and a gap record
    _write(f9, [snap("A", s3, 102, 3)])
    _write(f10, [snap("B", s3 - NS + NS, 103, 4), rank_row("Z", 1, 5, 5, at("100001")),
                 snap("C", s3, 100, 1, quality="gap")], torn=b'{"v": 1, "kind": "snap')
    got = latest_snapshots(tree, "kis", "krx", DAY)
    assert sorted((r["symbol"], r["price"]) for r in got) == [("A", 102.0), ("B", 103.0)]
    assert latest_snapshots(tree, "kis", "krx", date(2026, 3, 11)) == []
    assert latest_snapshots(tree, "kiwoom", "krx", DAY) == []


def test_engine_fed_from_the_tree_each_cycle(tree, cfg, clock):
    """The streamer's loop: latest_snapshots() every cycle; a sweep seen again adds nothing."""
    e = engine(cfg, clock)
    cum = 0
    for i, v in enumerate([50_000, 100_000, 100_000, 100_000, 600_000]):
        cum += v
        t = at("091000") + i * 600 * NS
        _write(paths.swing_file(tree, "kis", "krx", t), [snap("A", t, 10000, cum)])
        for _ in range(3):
            e.observe_snapshots(latest_snapshots(tree, "kis", "krx", DAY))
    c = e.candidates(t)
    assert c and c[0].trigger == "volume_surge" and c[0].score == pytest.approx(2.0, rel=1e-3)
