"""KIS frame decoder: conformance against the real sample frames, the guard, and hypothesis properties."""

from __future__ import annotations

import json
from datetime import date

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from observer.core.clock import kst, kst_ns
from observer.core.contracts import check
from observer.providers.base import BOOK, TRADES
from observer.providers.kis.parse import KisFrameDecoder, subscribe_message

from .conftest import SAMPLES, sample_frames

RECV = 1_790_000_000_000_000_000
CNT = dict(sample_frames("kis_h0stcnt0_frames.txt"))
ASP = dict(sample_frames("kis_h0stasp0_frames.txt"))


def decode(frame: str, **kw):
    return KisFrameDecoder(**kw).decode(frame, RECV)


def test_samples_present():
    assert set(CNT) == {"cnt_official_20230612", "cnt_3rec_20250730", "cnt_47f_20260922"}
    assert set(ASP) == {"asp_official_093730", "asp_62f_20260720", "asp_000660_auction"}


def test_official_trade_frame_fields():
    d = decode(CNT["cnt_official_20230612"])
    assert d.ok and d.kind == "data" and d.tr_id == "H0STCNT0"
    (r,) = d.records
    check(r)
    assert r["symbol"] == "005930" and r["price"] == 71900 and r["qty"] == 1
    assert r["cum_vol"] == 3052507 and r["cum_value"] == 219853241700
    assert (r["bid"], r["ask"], r["open"], r["high"], r["low"]) == (71800, 71900, 72100, 72400, 71700)
    assert r["side"] == "buy" and r["phase"] == "20" and r["quality"] == "normal"
    assert r["exch_ns"] == kst_ns(date(2023, 6, 12), "093354")
    assert r["recv_ns"] == RECV
    assert r["extra"]["prev_close"] == 72000 and r["extra"]["hour_cls"] == "0"
    assert "trailing" not in r["extra"]


def test_three_record_frame_width_from_count_and_volume_chain():
    d = decode(CNT["cnt_3rec_20250730"])
    assert d.ok and len(d.records) == 3
    for r in d.records:
        check(r)
    qty = [r["qty"] for r in d.records]
    acml = [r["cum_vol"] for r in d.records]
    assert qty == [1, 2, 75] and [r["side"] for r in d.records] == ["sell", "sell", "buy"]
    # ACML_VOL(n) = ACML_VOL(n-1) + CNTG_VOL(n) inside the multi-record frame
    assert acml[1] == acml[0] + qty[1] and acml[2] == acml[1] + qty[2]
    assert {r["exch_ns"] for r in d.records} == {kst_ns(date(2025, 7, 30), "094751")}


def test_47_field_trade_keeps_trailing_field():
    d = decode(CNT["cnt_47f_20260922"])
    assert d.ok
    (r,) = d.records
    check(r)
    assert r["extra"]["trailing"] == ["2"] and r["price"] == 277750 and r["qty"] == 5


def test_book_59_and_62_fields():
    d = decode(ASP["asp_official_093730"], trading_date=date(2023, 6, 12))
    (b,) = d.records
    check(b)
    assert b["asks"][0] == [71900, 91918] and b["bids"][0] == [71800, 95221] and len(b["asks"]) == 10
    assert sum(q for _, q in b["asks"]) == b["total_ask"] == 1159362
    assert sum(q for _, q in b["bids"]) == b["total_bid"] == 2095167
    assert b["exch_ns"] == kst_ns(date(2023, 6, 12), "093730") and "auction" not in b and "extra" not in b
    d = decode(ASP["asp_62f_20260720"])
    (b,) = d.records
    check(b)
    assert b["extra"]["mid_prc"] == "244250" and "trailing" not in b["extra"]
    assert (b["asks"][0][0] + b["bids"][0][0]) / 2 == int(b["extra"]["mid_prc"])


def test_closing_auction_book():
    (b,) = decode(ASP["asp_000660_auction"]).records
    check(b)
    assert b["phase"] == "A" and len(b["asks"]) == 3 and len(b["bids"]) == 3
    assert b["auction"] == {"price": 959000, "qty": 259810}
    assert b["quality"] == "normal"


def test_book_date_from_trades_else_recv_date():
    dec = KisFrameDecoder()
    (b,) = dec.decode(ASP["asp_62f_20260720"], RECV).records
    assert b["exch_ns"] == kst_ns(kst(RECV).date(), "150526")  # no trade yet: the receive date (KST)
    dec.decode(CNT["cnt_47f_20260922"], RECV)  # a trade teaches the trading date
    (b,) = dec.decode(ASP["asp_62f_20260720"], RECV).records
    assert b["exch_ns"] == kst_ns(date(2026, 9, 22), "150526")
    dec.set_trading_date(date(2026, 7, 20))  # the client's explicit date wins
    (b,) = dec.decode(ASP["asp_62f_20260720"], RECV).records
    assert b["exch_ns"] == kst_ns(date(2026, 7, 20), "150526")


def _replace(frame: str, idx: int, value: str) -> str:
    head, payload = frame.rsplit("|", 1)
    f = payload.split("^")
    f[idx] = value
    return head + "|" + "^".join(f)


@pytest.mark.parametrize("frame,why", [
    ("0|H0STCNT0|001|005930^093354^71900", "fewer than the 46 required"),
    ("0|H0STCNT0|002|" + "^".join(["1"] * 93), "not a multiple"),
    ("0|H0STCNT0|xyz|" + "^".join(["1"] * 46), "not a positive number"),
    ("0|H0STCNT0|000|" + "^".join(["1"] * 46), "not a positive number"),
    ("0|H0STCNT0", "parts"),
    ("", "empty"),
    ("hello", "not a KIS frame"),
    ("{not json", "not JSON"),
])
def test_invalid_frames_are_errors(frame, why):
    d = decode(frame)
    assert not d.ok and not d.records and any(why in e for e in d.errors), d.errors


def test_non_numeric_field_named():
    d = decode(_replace(CNT["cnt_official_20230612"], 2, "71,900"))
    assert not d.records and "STCK_PRPR" in d.errors[0]
    d = decode(_replace(CNT["cnt_official_20230612"], 1, "9335"))
    assert not d.records and "STCK_CNTG_HOUR" in d.errors[0]
    d = decode(_replace(ASP["asp_official_093730"], 30, "x"))
    assert not d.records and "ASKP_RSQN8" in d.errors[0]


def test_one_bad_record_does_not_lose_the_others():
    f = CNT["cnt_3rec_20250730"]
    head, payload = f.rsplit("|", 1)
    fields = payload.split("^")
    fields[46 + 2] = "abc"  # second record's price
    d = decode(head + "|" + "^".join(fields))
    assert len(d.records) == 2 and len(d.errors) == 1 and "record 2/3" in d.errors[0]


def test_encrypted_and_unsupported_frames_reported_not_parsed():
    d = decode("1|H0STCNI0|001|U2FsdGVkX1+abcdefghijklmnop==")
    assert d.kind == "encrypted" and not d.records and d.errors
    d = decode("0|H0STANC0|001|005930^090000^1")
    assert d.kind == "unsupported" and not d.records


def test_guard_rejects_what_cannot_be_real():
    d = decode(_replace(CNT["cnt_official_20230612"], 2, "0"))
    assert not d.records and d.rejects[0][1] == "price <= 0"
    d = decode(_replace(CNT["cnt_official_20230612"], 12, "0"))
    assert not d.records and "quantity" in d.rejects[0][1]
    d = decode(CNT["cnt_official_20230612"], subscribed={TRADES: {"000660"}, BOOK: set()})
    assert not d.records and "never subscribed" in d.rejects[0][1]
    d = decode(CNT["cnt_official_20230612"], subscribed={TRADES: {"005930"}, BOOK: set()})
    assert len(d.records) == 1 and not d.rejects


def test_guard_flags_crossed_and_locked_book_outside_auctions_only():
    crossed = _replace(ASP["asp_62f_20260720"], 13, "245000")  # BIDP1 > ASKP1 (244500)
    (b,) = decode(crossed).records
    assert b["quality"] == "degraded" and b["flags"] == ["crossed_book"]
    check(b)
    locked = _replace(ASP["asp_62f_20260720"], 13, "244500")
    (b,) = decode(locked).records
    assert b["flags"] == ["locked_book"]
    in_auction = _replace(_replace(crossed, 2, "A"), 1, "152522")
    (b,) = decode(in_auction).records
    assert b["quality"] == "normal" and "flags" not in b
    preopen = _replace(crossed, 1, "085500")
    (b,) = decode(preopen).records
    assert "flags" not in b


def test_guard_flags_price_beyond_daily_limit():
    f = CNT["cnt_official_20230612"]  # prev close = 71900 - (-100) = 72000: limits 50400 .. 93600
    beyond = _replace(_replace(f, 2, "95000"), 4, "23000")
    (r,) = decode(beyond).records
    assert r["quality"] == "degraded" and r["flags"] == ["beyond_limit"]
    at_limit = _replace(_replace(f, 2, "93600"), 4, "21600")
    (r,) = decode(at_limit).records
    assert r["quality"] == "normal"
    dec = KisFrameDecoder(trading_date=date(2023, 6, 12))
    dec.decode(f, RECV)
    (b,) = dec.decode(_replace(ASP["asp_official_093730"], 12, "99000"), RECV).records  # ASKP10 beyond +30 %
    assert "beyond_limit" in b["flags"]


def test_control_messages():
    msgs = json.loads((SAMPLES / "kis_control_messages.json").read_text())
    d = decode(json.dumps(msgs["ws_subscribe_ack"]))
    assert d.kind == "control" and d.control["msg_cd"] == "OPSP0000" and d.control["tr_key"] == "005930"
    assert d.control["output"]["key"] == "b3cbf02d19f564a0d2cbe5b1edcd5b6d"
    d = decode(json.dumps(msgs["ws_limit_exceeded"]))
    assert d.control["msg_cd"] == "OPSP0008" and d.control["rt_cd"] == "1"
    d = decode(json.dumps(msgs["ws_pingpong"]))
    assert d.kind == "pingpong" and d.ok


def test_subscribe_message_shape():
    msgs = json.loads((SAMPLES / "kis_control_messages.json").read_text())
    got = json.loads(subscribe_message("<approval_key>", "H0STCNT0", "005930"))
    assert got == msgs["ws_subscribe_request"]
    got = json.loads(subscribe_message("<approval_key>", "H0STCNT0", "005930", register=False))
    assert got == msgs["ws_unsubscribe_request"]


ALL = list(CNT.values()) + list(ASP.values())
_fast = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _assert_sane(d):
    assert d.kind in ("data", "control", "pingpong", "encrypted", "unsupported", "invalid")
    for r in d.records:
        check(r)
    for rec, reason, _ in d.rejects:
        assert reason and rec["kind"] in ("trade", "book")


@_fast
@given(st.text(max_size=400))
def test_random_text_never_raises(s):
    _assert_sane(KisFrameDecoder(subscribed={TRADES: set(), BOOK: set()}).decode(s, RECV))


@_fast
@given(st.sampled_from(ALL), st.integers(min_value=0, max_value=2000))
def test_truncated_frames_never_raise(frame, cut):
    _assert_sane(KisFrameDecoder().decode(frame[: cut % (len(frame) + 1)], RECV))


@_fast
@given(st.sampled_from(ALL), st.lists(st.tuples(st.integers(0, 10_000), st.characters()), min_size=1, max_size=8))
def test_garbled_frames_never_raise(frame, edits):
    s = list(frame)
    for pos, ch in edits:
        s[pos % len(s)] = ch
    _assert_sane(KisFrameDecoder().decode("".join(s), RECV))


@_fast
@given(st.sampled_from(list(CNT.values())), st.integers(1, 5), st.integers(0, 4))
def test_extra_trailing_fields_tolerated(frame, n_extra, _):
    head, payload = frame.rsplit("|", 1)
    _, tr, cnt = head.split("|")
    k = int(cnt)
    fields = payload.split("^")
    w = len(fields) // k
    recs = ["^".join(fields[i * w:(i + 1) * w] + [str(j) for j in range(n_extra)]) for i in range(k)]
    d = KisFrameDecoder().decode(f"0|{tr}|{cnt}|" + "^".join(recs), RECV)
    assert d.ok and len(d.records) == k
    for r in d.records:
        assert r["extra"]["trailing"][-n_extra:] == [str(j) for j in range(n_extra)]
