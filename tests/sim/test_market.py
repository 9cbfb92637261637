"""The market model: determinism, chunk-invariance, KRX rules, sessions."""

import random

import pytest

from observer.sim import market
from observer.sim.market import BookEv, TradeEv


def test_krx_tick_sizes_and_limits():
    assert [market.tick_size(p) for p in (1999, 2000, 4999, 5000, 19990, 20000, 49950, 50000, 199900, 200000,
                                          499500, 500000)] == [1, 5, 5, 10, 10, 50, 50, 100, 100, 500, 500, 1000]
    assert market.tick_up(1999) == 2000 and market.tick_down(2000) == 1999 and market.tick_down(2005) == 2000
    # the inquire-price sample: stck_sdpr 128500 → stck_llam 90000, stck_mxpr 167000
    assert market.daily_limits(128500) == (90000, 167000)
    assert market.dec2(-100 * 100, 72000) == "-0.14" and market.dec2(-1, 1000000) == "0.00"


def test_universe_is_deterministic_and_prefix_stable():
    a = market.Universe(seed=5, n=2500, active=60)
    b = market.Universe(seed=5, n=2500, active=60)
    c = market.Universe(seed=5, n=300, active=60)
    assert a.symbols == b.symbols
    assert [s.code for s in c.symbols] == [s.code for s in a.symbols[:300]]
    assert len({s.code for s in a.symbols}) == 2500
    assert all(len(s.code) == 6 and s.code.isdigit() for s in a.symbols)
    assert sum(s.active for s in a.symbols) == 60
    closes = [s.prev_close for s in a.symbols]
    assert any(p < 4000 for p in closes) and sum(p >= 4000 for p in closes) > 1500
    assert all(s.lower <= s.prev_close <= s.upper for s in a.symbols)
    rates = sorted(s.rate for s in a.symbols if s.active)
    assert rates[-1] > 10 * rates[0]  # busy and quiet symbols
    assert market.Universe(seed=6, n=50, active=5).symbols != market.Universe(seed=5, n=50, active=5).symbols


def _day(seed, info, steps=None):
    s = market.SymbolSim(info, seed, "20260316")
    if steps is None:
        s.advance(market.T_CLOSE + 1000)
    else:
        for t in steps:
            s.advance(t)
    return s.take()


@pytest.fixture(scope="module")
def uni():
    return market.Universe(seed=11, n=100, active=20)


def test_generation_does_not_depend_on_how_time_is_sliced(uni):
    info = [s for s in uni.symbols if s.active][7]
    end = 9 * market.HOUR + 20 * market.MIN
    whole = _day(11, info, [end])
    rng = random.Random(1)
    t, steps = market.T_PREOPEN - 5000, []
    while t < end:
        t += rng.choice((1, 7, 250, 999, 60_000))
        steps.append(t)
    steps[-1] = end
    assert len(whole) > 1000 and _day(11, info, steps) == whole
    assert _day(12, info, [end]) != whole


def test_a_day_follows_the_sessions_and_the_rules(uni):
    for info in [s for s in uni.symbols if s.active][11:13]:
        evs = _day(11, info)
        trades = [e for e in evs if type(e) is TradeEv]
        books = [e for e in evs if type(e) is BookEv]
        ts = [e.t for e in evs]
        assert ts == sorted(ts)
        first, last = trades[0], trades[-1]
        assert first.ccld == "3" and market.T_OPEN <= first.t < market.T_OPEN + 30_000
        assert last.ccld == "3" and last.t == market.T_CLOSE
        assert all(market.T_OPEN <= e.t < market.T_CLOSE_AUCTION for e in trades[:-1])
        acml = 0
        for e in trades:
            assert e.acml_vol == acml + e.qty and e.qty > 0
            acml = e.acml_vol
            assert info.lower <= e.price <= info.upper and e.price % market.tick_size(e.price) == 0
        assert [e.seq for e in trades] == list(range(1, len(trades) + 1))
        pre = [b for b in books if b.t < first.t]
        assert pre and all(b.hour_cls == "B" and b.antc_p > 0 for b in pre)
        cont = [b for b in books if first.t <= b.t < market.T_CLOSE_AUCTION]
        assert cont and all(b.hour_cls == "0" and b.bidp[0] < b.askp[0] for b in cont)
        auction = [b for b in books if market.T_CLOSE_AUCTION <= b.t < market.T_CLOSE]
        assert auction and all(b.hour_cls == "A" and b.antc_p > 0 for b in auction)
        assert last.price == auction[-1].antc_p and last.qty == auction[-1].antc_q
        for b in books:
            assert sum(b.askq) == b.tot_ask and sum(b.bidq) == b.tot_bid


def test_the_open_is_busier_than_mid_morning(uni):
    first10 = later10 = 0
    for info in [s for s in uni.symbols if s.active][8:]:
        s = market.SymbolSim(info, 11, "20260316")
        s.advance(10 * market.HOUR + 10 * market.MIN)
        first10 += s.trades_upto(market.T_OPEN + 10 * market.MIN)
        later10 += s.trades_upto(10 * market.HOUR + 10 * market.MIN) - s.trades_upto(10 * market.HOUR)
    assert first10 > 1.5 * later10


def test_inactive_symbols_do_not_trade(uni):
    info = [s for s in uni.symbols if not s.active][0]
    assert _day(11, info) == []
