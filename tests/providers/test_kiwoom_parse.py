"""Kiwoom WebSocket decoder: conformance against the reference samples (expected values read from the
protocol reference and the sample text, not from the decoder), the guard, the UNCONFIRMED choices, and
hostile input (never an exception, always an error kind)."""

from __future__ import annotations

import json
from datetime import date

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from observer.core.clock import kst_ns
from observer.core.contracts import check, explain
from observer.providers.base import BOOK, TRADES
from observer.providers.kiwoom import protocol
from observer.providers.kiwoom.parse import (
    KiwoomFrameDecoder,
    login_message,
    register_message,
    remove_message,
)

from .conftest import SAMPLES

RECV = 1_789_971_000_000_000_000  # 2026-09-21 15:10 KST
DAY = date(2026, 9, 21)
RAW = (SAMPLES / "kiwoom_examples.json").read_text(encoding="utf-8")
SAMPLE = json.loads(RAW)


def text(obj) -> str:
    return json.dumps(obj, ensure_ascii=False)


def decode(msg, **kw):
    return KiwoomFrameDecoder(**kw).decode(msg if isinstance(msg, str) else text(msg), RECV)


def valid(rec: dict) -> dict:
    check(rec)
    assert explain(rec) == [], explain(rec)
    return rec


# -- conformance: every sample ------------------------------------------------------------------
def test_0b_trade_sample_field_by_field():
    d = decode(SAMPLE["ws_real_0B_trimmed"], trading_date=DAY)
    assert d.ok and d.kind == "data" and d.tr_id == "0B" and d.count == 1
    (r,) = d.records
    valid(r)
    assert (r["provider"], r["market"], r["symbol"]) == ("kiwoom", "krx", "000810")
    assert r["exch_ns"] == kst_ns(DAY, "135622")          # FID 20 "135622", KST
    assert r["price"] == 686000                           # FID 10 "+686000": sign is a direction
    assert r["qty"] == 3 and r["side"] == "buy"           # FID 15 "+3": + = buyer-initiated
    assert r["cum_vol"] == 98232                          # FID 13
    assert r["extra"]["prev_close"] == 686000 - 25000     # FID 11 "+25000": up 25000 on the previous close
    assert r["cum_value"] is None and r["recv_ns"] == RECV and r["quality"] == "normal"
    assert (r["bid"], r["ask"], r["open"], r["high"], r["low"], r["phase"]) == (None,) * 6  # trimmed sample


def test_0d_book_sample_field_by_field():
    d = decode(SAMPLE["ws_real_0D"], trading_date=DAY)
    assert d.ok and d.kind == "data" and d.tr_id == "0D"
    (b,) = d.records
    valid(b)
    assert (b["provider"], b["market"], b["symbol"]) == ("kiwoom", "krx", "000020")
    assert b["exch_ns"] == kst_ns(DAY, "135622")  # FID 21
    # FIDs 41-50 ask prices with FIDs 61-70 sizes; 51-60 bid prices with 71-80 sizes, best first
    assert b["asks"] == [[6500, 20], [6510, 244], [6520, 72], [6530, 352], [6540, 47], [6550, 108],
                         [6560, 729], [6570, 718], [6580, 333], [6590, 1720]]
    assert b["bids"] == [[6490, 2], [6480, 714], [6470, 47], [6460, 1887], [6440, 30], [6410, 742],
                         [6400, 4977], [6390, 16855], [6380, 1361], [6370, 132]]
    assert (b["total_ask"], b["total_bid"]) == (4343, 26747)  # FIDs 121/125
    # the reference: in this real sample the 10-level sums equal FIDs 121 and 125
    assert sum(q for _, q in b["asks"]) == b["total_ask"] and sum(q for _, q in b["bids"]) == b["total_bid"]
    assert "auction" not in b and b.get("flags") is None and b["cum_vol"] is None


def test_login_and_reg_answers():
    d = decode(SAMPLE["ws_login_ok"])
    assert d.kind == "control" and d.ok and d.tr_id == "LOGIN"
    assert d.control == {"trnm": "LOGIN", "return_code": 0, "return_msg": "", "ok": True}
    d = decode(SAMPLE["ws_reg_ok"])
    assert d.kind == "control" and d.control["trnm"] == "REG" and d.control["ok"] is True


def test_ping_is_echoed_byte_for_byte():
    for frame in (text(SAMPLE["ws_ping_shape"]), '{"trnm":"PING"}', '{ "trnm" : "PING", "x": [1, 2] }'):
        d = decode(frame)
        assert d.kind == "pingpong" and d.ok and d.control["reply"] == frame


def test_client_messages_match_the_samples():
    assert json.loads(login_message("<access token>")) == SAMPLE["ws_login_request"]
    assert json.loads(register_message(["005930"], ["0B"])) == SAMPLE["ws_reg_request"]
    assert json.loads(remove_message(["005930"], ["0B"])) == SAMPLE["ws_remove_request"]
    assert json.loads(register_message(["005930"], ["0B"], keep_existing=False))["refresh"] == "0"
    with pytest.raises(ValueError):
        register_message([], ["0B"])


def test_tick_chart_sample_two_identical_seconds_stay_two_trades():
    body = SAMPLE["ka10079_response_example"]
    assert protocol.classify("ka10079", 200, body) is None
    trades, bad = protocol.trades_from_tick_rows(body["stk_cd"], body["stk_tic_chart_qry"], RECV)
    assert bad == []
    for t in trades:
        valid(t)
    t0 = kst_ns(date(2025, 9, 17), "131939")  # cntr_tm 20250917131939
    # rows are newest first: the 200 row is the older one
    assert [(t["exch_ns"], t["price"], t["qty"], t["extra"]["pos"]) for t in trades] == [
        (t0, 78900, 200, 0), (t0, 78900, 143, 1)]
    assert all(t["side"] == "none" and t["quality"] == "recovered" and t["track"] == "R" for t in trades)


def test_every_sample_through_the_decoder():
    """Every sample, through the real decoder, gets the kind its shape says; a sample added to the file
    must be added here. The client's requests are not answers (no return_code: never ok); the ka10079
    reply is REST, not a WebSocket message (its fields are checked above through protocol.py)."""
    kinds = {"ka10079_response_example": "invalid", "ws_login_request": "control", "ws_login_ok": "control",
             "ws_reg_request": "control", "ws_reg_ok": "control", "ws_remove_request": "control",
             "ws_real_0B_trimmed": "data", "ws_real_0D": "data", "ws_ping_shape": "pingpong"}
    assert set(SAMPLE) == set(kinds)
    for name, msg in SAMPLE.items():
        d = decode(msg)
        assert d.kind == kinds[name], (name, d)
        if d.kind == "control":
            assert d.control["ok"] is name.endswith("_ok"), (name, d.control)
        for r in d.records:
            valid(r)
    assert "token" not in str(decode(SAMPLE["ws_login_request"]).control)  # a LOGIN's token is never copied


# -- normalisation and guard ----------------------------------------------------------------------
def real(*elements) -> str:
    return text({"trnm": "REAL", "data": list(elements)})


def trade_el(item="005930", **values) -> dict:
    v = {"20": "093012", "10": "-71500", "11": "-500", "15": "-7", "13": "1000"}
    v.update(values)
    return {"type": "0B", "name": "주식체결", "item": item, "values": {k: x for k, x in v.items() if x is not None}}


def book_el(item="005930", **values) -> dict:
    v = dict(SAMPLE["ws_real_0D"]["data"][0]["values"])
    v.update(values)
    return {"type": "0D", "item": item, "values": {k: x for k, x in v.items() if x is not None}}


def test_sell_side_down_price_and_unsigned_quantity():
    (r,) = decode(real(trade_el()), trading_date=DAY).records
    assert r["price"] == 71500 and r["qty"] == 7 and r["side"] == "sell" and r["extra"]["prev_close"] == 72000
    (r,) = decode(real(trade_el(**{"15": "7"}))).records
    assert r["side"] == "none"


def test_optional_trade_fids():
    el = trade_el(**{"16": "+71000", "17": "+72500", "18": "-70900", "27": "+71600", "28": "-71500",
                     "290": "2", "228": "101.5", "9081": "1", "12": "-0.69"})
    (r,) = decode(real(el)).records
    valid(r)
    assert (r["open"], r["high"], r["low"], r["ask"], r["bid"], r["phase"]) == (71000, 72500, 70900, 71600, 71500, "2")
    assert r["extra"]["strength"] == "101.5" and r["extra"]["exchange"] == "1" and r["extra"]["change_rate"] == "-0.69"


def test_cum_value_unit_is_a_choice():
    el = trade_el(**{"14": "+5120"})
    (r,) = decode(real(el)).records
    assert r["cum_value"] is None and r["extra"]["fid14"] == 5120
    (r,) = decode(real(el), cum_value_unit=1_000_000).records
    assert r["cum_value"] == 5_120_000_000 and "fid14" not in r["extra"]
    with pytest.raises(ValueError):
        KiwoomFrameDecoder(cum_value_unit=0)


@pytest.mark.parametrize("item, symbol, market, flags", [
    ("005930", "005930", "krx", None), ("005930_NX", "005930", "nxt", None), ("005930_AL", "005930", "sor", None),
    ("005930_ZZ", "005930_ZZ", "krx", ["unknown_item_suffix"]),
])
def test_item_suffix_names_the_market(item, symbol, market, flags):
    (r,) = decode(real(trade_el(item))).records
    valid(r)
    assert (r["symbol"], r["market"], r.get("flags")) == (symbol, market, flags)
    assert r["quality"] == ("degraded" if flags else "normal")


def test_several_elements_one_bad_does_not_lose_the_others():
    d = decode(real(trade_el("005930"), trade_el("000660", **{"15": None}), book_el("000020"),
                    {"type": "0A", "item": "005930", "values": {}}))
    assert d.kind == "data" and d.tr_id == "REAL" and d.count == 2
    assert [(r["kind"], r["symbol"]) for r in d.records] == [("trade", "005930"), ("book", "000020")]
    assert any("element 2/4" in e and "FID 15 missing" in e for e in d.errors), d.errors
    assert any("element 4/4" in e and "'0A' is not decoded" in e for e in d.errors), d.errors


def test_empty_levels_are_dropped_and_an_empty_book_rejected():
    empty = {f: "-0" for f in ("46", "47", "48", "49", "50")} | {f: "0" for f in ("66", "67", "68", "69", "70")}
    (b,) = decode(real(book_el(**empty))).records
    assert [p for p, _ in b["asks"]] == [6500, 6510, 6520, 6530, 6540] and len(b["bids"]) == 10
    nothing = {str(f): "0" for f in range(41, 81)}
    d = decode(real(book_el(**nothing)))
    assert d.records == [] and d.rejects[0][1] == "book has no price > 0"
    auction = decode(real(book_el(**nothing, **{"23": "+6500", "24": "1200"}))).records[0]
    assert auction["auction"] == {"price": 6500, "qty": 1200} and auction["asks"] == []


def test_missing_level_fid_is_an_error_unless_told_otherwise():
    d = decode(real(book_el(**{"45": None})))
    assert d.kind == "invalid" and d.records == [] and any("FID 45 missing" in e for e in d.errors)
    (b,) = decode(real(book_el(**{"45": None})), require_all_levels=False).records
    assert [p for p, _ in b["asks"]] == [6500, 6510, 6520, 6530, 6550, 6560, 6570, 6580, 6590]


def test_crossed_book_flagged_unless_an_auction_price_is_published():
    crossed = {"51": "+6510"}
    (b,) = decode(real(book_el(**crossed))).records
    assert b["flags"] == ["crossed_book"] and b["quality"] == "degraded"
    (b,) = decode(real(book_el(**{"51": "+6500"}))).records
    assert b["flags"] == ["locked_book"]
    (b,) = decode(real(book_el(**crossed, **{"23": "6505", "24": "10"}))).records
    assert "flags" not in b


def test_guard_rejects_what_cannot_be_real():
    for values, why in (({"10": "0"}, "price <= 0"), ({"15": "-0"}, "trade quantity <= 0"),
                        ({"15": "+0"}, "trade quantity <= 0")):
        d = decode(real(trade_el(**values)))
        assert d.records == [] and d.rejects[0][1] == why
    d = decode(real(book_el(**{"61": "-5"})))
    assert d.rejects[0][1] == "negative book size"


def test_never_subscribed_item_rejected():
    dec = KiwoomFrameDecoder(subscribed={TRADES: {"005930_NX"}, BOOK: set()})
    d = dec.decode(real(trade_el("005930_NX"), trade_el("005930"), book_el("005930_NX")), RECV)
    assert [r["market"] for r in d.records] == ["nxt"]
    assert [x[1] for x in d.rejects] == ["symbol never subscribed (0B)", "symbol never subscribed (0D)"]


def test_trading_date_defaults_to_the_kst_day_of_receipt():
    # 2026-09-21 00:30 KST is still 2026-09-20 in UTC
    recv = kst_ns(DAY, "003000")
    (r,) = KiwoomFrameDecoder().decode(real(trade_el(**{"20": "002959"})), recv).records
    assert r["exch_ns"] == kst_ns(DAY, "002959")


def test_control_answers_and_notices():
    d = decode({"trnm": "LOGIN", "return_code": 8005, "return_msg": "토큰이 유효하지 않습니다", "sor_yn": "Y"})
    assert d.kind == "control" and d.control["ok"] is False and d.control["return_code"] == 8005
    assert d.control["sor_yn"] == "Y" and d.control["return_msg"].startswith("토큰")
    assert decode({"trnm": "REG", "return_code": "0"}).control["ok"] is True
    for code in (None, True, "x", "", 0.0, [0]):
        assert decode({"trnm": "REMOVE", "return_code": code}).control["ok"] is False, code
    d = decode({"trnm": "SYSTEM", "code": "R10001", "message": "연결 종료"})
    assert d.kind == "control" and d.control["disconnect"] is True and d.control["code"] == "R10001"
    assert decode({"trnm": "SYSTEM"}, system_ends_connection=False).control["disconnect"] is False
    d = decode({"trnm": "CNSRLST"})
    assert d.kind == "unsupported" and d.errors
    d = decode(real({"type": "0A", "item": "005930", "values": {}}))
    assert d.kind == "unsupported"


# -- hostile input -------------------------------------------------------------------------------
HOSTILE = [
    ("", "empty message"),
    ('{"trnm":"REAL","data":[{"type":"0B"', "not JSON"),
    ("[1, 2]", "not an object"),
    ('"PING"', "not an object"),
    ('{"data": []}', "no trnm"),
    ('{"trnm": 5}', "no trnm"),
    ('{"trnm": "REAL"}', "no data list"),
    ('{"trnm": "REAL", "data": {}}', "no data list"),
    ('{"trnm": "REAL", "data": [7]}', "not an object"),
    (real({"type": "0B", "item": 5930, "values": {}}), "item is not a symbol"),
    (real({"type": "0B", "item": "A" * 41, "values": {}}), "item is not a symbol"),
    (real({"type": "0B", "item": "005930", "values": [1]}), "values is not an object"),
    (real(trade_el(**{"10": 71500})), "FID 10 is int, not a string"),
    (real(trade_el(**{"10": "7l500"})), "FID 10 is not a number"),
    (real(trade_el(**{"10": "1_000"})), "FID 10 is not a number"),
    (real(trade_el(**{"10": "٧١٥٠٠"})), "FID 10 is not a number"),
    (real(trade_el(**{"13": "9" * 25})), "FID 13 is beyond the 64-bit range"),
    (real(trade_el(**{"13": "9223372036854775808"})), "FID 13 is beyond the 64-bit range"),
    (real(trade_el(**{"15": "-" + "9" * 19})), "FID 15 is beyond the 64-bit range"),
    (real(trade_el(**{"20": None})), "FID 20 (time) missing"),
    (real(trade_el(**{"20": "250000"})), "FID 20 '250000' is not a time of day"),
    (real(trade_el(**{"20": "0930"})), "is not HHMMSS"),
    (real(trade_el(**{"10": None})), "FID 10 missing"),
    (real(book_el(**{"21": None})), "FID 21 (time) missing"),
    (real(book_el(**{"71": ""})), "FID 71 is not a number"),
]


@pytest.mark.parametrize("frame, why", HOSTILE)
def test_hostile_messages_are_named_errors(frame, why):
    d = KiwoomFrameDecoder().decode(frame, RECV)
    assert d.kind == "invalid" and d.records == [] and not d.ok, d
    assert any(why in e for e in d.errors), d.errors
    assert not any(e.startswith("decoder error") for e in d.errors), d.errors  # the safety net is not the parser


def test_trading_date_before_1970_is_an_error():
    d = decode(real(trade_el()), trading_date=date(1950, 1, 2))
    assert d.kind == "invalid" and any("outside 1970-2262" in e for e in d.errors)


_fast = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FRAMES = [text(SAMPLE[k]) for k in ("ws_real_0B_trimmed", "ws_real_0D", "ws_login_ok", "ws_reg_ok", "ws_ping_shape")]


def _assert_sane(d):
    assert d.kind in ("data", "control", "pingpong", "unsupported", "invalid")
    for r in d.records:
        check(r)
    for rec, reason, _ in d.rejects:
        assert reason and rec["kind"] in ("trade", "book")
    assert not any(e.startswith("decoder error") for e in d.errors), d.errors


@_fast
@given(st.text(max_size=400))
def test_random_text_never_raises(s):
    _assert_sane(KiwoomFrameDecoder(subscribed={TRADES: set(), BOOK: set()}).decode(s, RECV))


@_fast
@given(st.sampled_from(FRAMES), st.integers(min_value=0, max_value=3000))
def test_truncated_messages_never_raise(frame, cut):
    _assert_sane(KiwoomFrameDecoder().decode(frame[: cut % (len(frame) + 1)], RECV))


@_fast
@given(st.sampled_from(FRAMES), st.lists(st.tuples(st.integers(0, 10_000), st.characters()), min_size=1, max_size=8))
def test_garbled_messages_never_raise(frame, edits):
    s = list(frame)
    for pos, ch in edits:
        s[pos % len(s)] = ch
    _assert_sane(KiwoomFrameDecoder().decode("".join(s), RECV))


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                    max_leaves=20)
FID_VALUE = (st.from_regex(r"\A[+-]?[0-9]{0,22}\Z") | st.integers(-(2 ** 70), 2 ** 70) | st.text(max_size=8)
             | st.none() | st.lists(st.integers(), max_size=2))


@_fast
@given(st.sampled_from(["0B", "0D", "0A", 5, None, ["0B"], {"0B": 1}]), JSON,
       st.dictionaries(st.sampled_from(["10", "11", "13", "14", "15", "20", "21", "23", "24", "41", "51", "61",
                                        "71", "121", "125"]), FID_VALUE, max_size=15), st.booleans())
def test_wrong_types_and_huge_numbers_never_raise(typ, item, over, base_book):
    el = book_el() if base_book else trade_el()
    el["values"].update(over)
    el["type"] = typ
    if not isinstance(item, dict):
        el["item"] = item if not isinstance(item, str) or item else "005930"
    _assert_sane(KiwoomFrameDecoder(require_all_levels=base_book).decode(real(el), RECV))


@_fast
@given(st.dictionaries(st.sampled_from(["trnm", "data", "return_code", "return_msg", "code", "message"]), JSON,
                       max_size=6), st.sampled_from(["REAL", "LOGIN", "REG", "REMOVE", "PING", "SYSTEM", None]))
def test_random_json_objects_never_raise(msg, trnm):
    if trnm is not None:
        msg["trnm"] = trnm
    _assert_sane(KiwoomFrameDecoder().decode(json.dumps(msg), RECV))
