"""The simulator's frames obey every structural rule the real sample frames obey (and the rules hold on the samples)."""

import json
from pathlib import Path

import pytest

from observer.sim import market
from observer.sim.encode import asp_record, cnt_record, data_frame

from .conformance import check_asp_record, check_cnt_frame
from .kis import records

SAMPLES = Path(__file__).resolve().parent.parent / "fixtures" / "samples"  # real captured KIS messages


def sample_frames(name: str) -> list[str]:
    return [ln for ln in (SAMPLES / name).read_text().splitlines() if ln and not ln.startswith("#")]


def test_rules_hold_on_the_real_samples():
    cnt = sample_frames("kis_h0stcnt0_frames.txt")
    asp = sample_frames("kis_h0stasp0_frames.txt")
    assert len(cnt) == 3 and len(asp) == 3
    for f in cnt:
        tr, recs = records(f)
        assert tr == "H0STCNT0"
        check_cnt_frame(recs)
    for f in asp:
        tr, recs = records(f)
        assert tr == "H0STASP0"
        for r in recs:
            check_asp_record(r)


def test_rules_catch_a_broken_frame():
    f = sample_frames("kis_h0stcnt0_frames.txt")[1]
    tr, recs = records(f)
    recs[1][13] = str(int(recs[1][13]) + 1)  # ACML_VOL off by one
    with pytest.raises(AssertionError):
        check_cnt_frame(recs)


@pytest.fixture(scope="module")
def day():
    """A full simulated day of a few active symbols."""
    uni = market.Universe(seed=3, n=200, active=30)
    out = []
    for info in [i for i in uni.symbols if i.active][6:9]:
        s = market.SymbolSim(info, 3, "20260316")
        s.advance(market.T_CLOSE + 1000)
        out.append((info, s.take()))
    return out


@pytest.mark.parametrize("cnt_fields", [46, 47])
def test_sim_trade_frames_conform(day, cnt_fields):
    n = multi = 0
    for info, evs in day:
        trades = [e for e in evs if isinstance(e, market.TradeEv)]
        groups: dict[int, list] = {}
        for e in trades:
            groups.setdefault(e.group, []).append(e)
        for g in groups.values():
            frame = data_frame("H0STCNT0", [cnt_record(e, info, "20260316", cnt_fields) for e in g])
            tr, recs = records(frame)
            assert all(len(r) == cnt_fields for r in recs)
            check_cnt_frame(recs)
            for r in recs:
                p = int(r[2])
                assert info.lower <= p <= info.upper and p % market.tick_size(p) == 0
            n += 1
            multi += len(g) > 1
    assert n > 1000 and multi > 20  # multi-record frames happen


@pytest.mark.parametrize("asp_fields", [59, 62, 63])
def test_sim_book_frames_conform(day, asp_fields):
    hours = set()
    for info, evs in day:
        for e in evs:
            if isinstance(e, market.BookEv):
                tr, recs = records(data_frame("H0STASP0", [asp_record(e, info, asp_fields)]))
                assert len(recs[0]) == asp_fields
                check_asp_record(recs[0])
                hours.add(recs[0][2])
    assert hours == {"0", "A", "B"}


def test_control_messages_have_the_sample_shapes():
    from observer.sim import encode

    ref = json.loads((SAMPLES / "kis_control_messages.json").read_text())
    ack = json.loads(encode.subscribe_ok("H0STASP0", "005930"))
    assert ack.keys() == ref["ws_subscribe_ack"].keys()
    assert ack["header"].keys() == ref["ws_subscribe_ack"]["header"].keys()
    assert ack["body"].keys() == ref["ws_subscribe_ack"]["body"].keys()
    assert len(ack["body"]["output"]["iv"]) == 16 and len(ack["body"]["output"]["key"]) == 32
    assert json.loads(encode.unsubscribe_ok("H0STCNT0", "005930")) == ref["ws_unsubscribe_ack"]
    assert json.loads(encode.already_subscribed("H0STCNT0", "005930")) == ref["ws_already_subscribed"]
    assert json.loads(encode.max_subscribe("H0STASP0", "000660")) == ref["ws_limit_exceeded"]
    pp = json.loads(encode.pingpong("20230502221924"))
    assert pp == ref["ws_pingpong"]
