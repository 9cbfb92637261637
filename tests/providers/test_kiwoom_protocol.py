"""Kiwoom REST protocol: request shapes, the return-code table, paging over synthetic pages, tick rows
kept by position and merged by counting, minute bars, token and quote replies."""

from __future__ import annotations

from datetime import date

import pytest

from observer.core.clock import kst_ns
from observer.core.contracts import check
from observer.providers.base import ApiError, AuthError, ProviderError, RateLimitedError
from observer.providers.kiwoom import protocol as p

RECV = 1_789_971_000_000_000_000
DAY = date(2025, 9, 17)


# -- requests ------------------------------------------------------------------------------------
def test_request_shapes():
    r = p.token_request("KEY", "SECRET")
    assert (r.path, r.api_id) == ("/oauth2/token", "au10001")
    assert r.body == {"grant_type": "client_credentials", "appkey": "KEY", "secretkey": "SECRET"}
    assert r.headers() == {"Content-Type": "application/json;charset=UTF-8", "api-id": "au10001"}
    r = p.revoke_request("KEY", "SECRET", "TOK")
    assert (r.path, r.api_id, r.body) == ("/oauth2/revoke", "au10002", {"appkey": "KEY", "secretkey": "SECRET",
                                                                        "token": "TOK"})
    r = p.tick_chart_request("005930_NX")
    assert (r.path, r.api_id) == ("/api/dostk/chart", "ka10079")
    assert r.body == {"stk_cd": "005930_NX", "tic_scope": "1", "upd_stkpc_tp": "1"}
    h = r.headers("TOK", "NEXT123")
    assert h["authorization"] == "Bearer TOK" and h["cont-yn"] == "Y" and h["next-key"] == "NEXT123"
    assert "cont-yn" not in r.headers("TOK") and "next-key" not in r.headers("TOK")
    r = p.minute_chart_request("005930", scope="5", adjusted=False, base_dt="20250917")
    assert (r.api_id, r.body) == ("ka10080", {"stk_cd": "005930", "tic_scope": "5", "upd_stkpc_tp": "0",
                                              "base_dt": "20250917"})
    assert p.quote_request("005930").body == {"stk_cd": "005930"}
    for bad in (lambda: p.tick_chart_request("005930", scope="2"), lambda: p.minute_chart_request("005930", scope="2"),
                lambda: p.minute_chart_request("005930", base_dt="2025-09-17")):
        with pytest.raises(ValueError):
            bad()


# -- return codes -> errors ----------------------------------------------------------------------
def body(code, msg="msg") -> dict:
    return {"return_code": code, "return_msg": msg}


CASES = [
    # (HTTP status, body, error class or None, text the message must hold)
    (200, body(0), None, ""),
    (200, body("0"), None, ""),
    (200, body(1700, "허용된 요청 개수를 초과하였습니다"), RateLimitedError, "return_code 1700"),
    (429, {"return_code": 5, "return_msg": "허용된 API 요청 개수를 초과하였습니다. 유량=5"}, RateLimitedError, "HTTP 429"),
    (429, None, RateLimitedError, "HTTP 429"),
    (401, {}, p.TokenRejected, "HTTP 401"),
    *[(200, body(c), p.TokenRejected, f"return_code {c}") for c in (8003, 8005, 8006, 8009, 8015, 8016)],
    (200, body(8031), p.TokenRejected, "real/paper server mismatch"),  # the official client refreshes once
    (200, body(8103), p.TokenRejected, "device or IP address not registered"),
    *[(200, body(c), AuthError, f"return_code {c} msg (app key/secret refused)") for c in (8001, 8002, 8011, 8012)],
    (200, body(8030), AuthError, "return_code 8030 msg (real/paper server mismatch)"),
    *[(200, body(c), AuthError, f"return_code {c} msg (device or IP address not registered)")
      for c in (8010, 8040, 8050)],
    (403, {}, AuthError, "HTTP 403"),
    *[(200, body(c), p.UnknownSymbolError, f"return_code {c}") for c in (1901, 1902)],
    *[(200, body(c), ApiError, "request input refused") for c in (1501, 1510, 1517, 1687, 8020)],
    (500, body(0), p.ServerError, "HTTP 500"),
    (502, None, p.ServerError, "HTTP 502"),
    (200, body(9999), ApiError, "return_code 9999"),
    (200, {}, ApiError, "reply has no return_code"),
    (200, "not an object", ApiError, "reply has no return_code"),
    (404, {}, ApiError, "HTTP 404"),
]


@pytest.mark.parametrize("status, reply, cls, said", CASES)
def test_return_code_table(status, reply, cls, said):
    err = p.classify("ka10079", status, reply)
    if cls is None:
        assert err is None
        return
    assert type(err) is cls and isinstance(err, ProviderError), err
    assert str(err).startswith("ka10079: ") and said in str(err), str(err)


def test_token_rejection_is_not_an_auth_error_and_refresh_codes_are_a_choice():
    assert not isinstance(p.classify("x", 200, body(8005)), AuthError)
    err = p.classify("x", 200, body(8103), refresh_codes=p.TOKEN_CODES)
    assert type(err) is AuthError and err.code == 8103 and "8103" in str(err)


# -- paging --------------------------------------------------------------------------------------
class Pages:
    """A scripted server: page i is (rows, cont-yn, next-key); records the key each fetch sent."""

    def __init__(self, *pages, header_case=str.lower):
        self.pages = list(pages)
        self.sent: list[str | None] = []
        self.case = header_case

    def __call__(self, key):
        self.sent.append(key)
        rows, cont, nk = self.pages[len(self.sent) - 1]
        return {"stk_tic_chart_qry": rows, "return_code": 0}, {self.case("cont-yn"): cont, self.case("next-key"): nk}


def row(t="131939", price="78900", qty="1") -> dict:
    return {"cur_prc": price, "trde_qty": qty, "cntr_tm": "20250917" + t}


def test_paging_follows_next_key_until_the_server_says_no_more():
    pause = []
    srv = Pages(([row(qty="3"), row(qty="2")], "Y", "K1"), ([row(qty="2")], "Y", "K2"), ([row("131938")], "N", ""),
                header_case=str.title)
    got = p.collect_pages(srv, "stk_tic_chart_qry", pause=lambda: pause.append(1))
    assert srv.sent == [None, "K1", "K2"] and got.pages == 3 and got.complete and got.stopped == ""
    assert [r["trde_qty"] for r in got.rows] == ["3", "2", "2", "1"]  # the repeated (131939, 2) is kept
    assert len(pause) == 2


@pytest.mark.parametrize("pages, stopped, sent", [
    ([([row()], "Y", "K1"), ([row()], "Y", "K1")], "repeated_key", [None, "K1"]),
    ([([row()], "Y", "K1"), ([], "Y", "K2")], "empty_page", [None, "K1"]),
    ([([row()], "Y", f"K{i}") for i in range(1, 6)], "max_pages", [None, "K1", "K2"]),
])
def test_paging_stops_incomplete_instead_of_looping(pages, stopped, sent):
    srv = Pages(*pages)
    got = p.collect_pages(srv, "stk_tic_chart_qry", max_pages=3)
    assert (got.complete, got.stopped, srv.sent) == (False, stopped, sent)


def test_cont_yn_without_a_key_ends_paging():
    assert p.next_key({"cont-yn": "Y", "next-key": "  "}) is None
    assert p.next_key({"Cont-Yn": "y", "Next-Key": "abc"}) == "abc"
    assert p.next_key({"cont-yn": "N", "next-key": "abc"}) is None
    assert p.next_key({}) is None


# -- tick rows: position and counting -------------------------------------------------------------
def test_identical_rows_are_separate_trades_by_position():
    rows = [row(qty="5"), row(qty="5"), row(qty="7"), row("131938", qty="5")]  # newest first
    trades, bad = p.trades_from_tick_rows("005930", rows, RECV)
    assert bad == []
    for t in trades:
        check(t)
    t38, t39 = kst_ns(DAY, "131938"), kst_ns(DAY, "131939")
    assert [(t["exch_ns"], t["qty"], t["extra"]["pos"]) for t in trades] == [
        (t38, 5, 0), (t39, 7, 0), (t39, 5, 1), (t39, 5, 2)]


def test_bad_tick_rows_are_rejected_with_a_reason_and_the_rest_kept():
    rows = [row(), {"cur_prc": "0", "trde_qty": "1", "cntr_tm": "20250917131939"}, "x",
            {"cur_prc": "+1", "trde_qty": "1", "cntr_tm": "2025091713"}, row(qty="-0")]
    trades, bad = p.trades_from_tick_rows("005930_AL", rows, RECV, gap_id="g1")
    assert len(trades) == 1 and trades[0]["market"] == "sor"
    assert trades[0]["provenance"] == {"source_call": "ka10079", "fetched_at_ns": RECV, "gap_id": "g1"}
    check(trades[0], "recovered")
    assert [why for _, why in bad] == ["trde_qty '-0' is not a positive number",
                                      "cntr_tm '2025091713' is not YYYYMMDDHHMMSS", "row is not an object",
                                      "cur_prc '0' is not a positive number"]


@pytest.mark.parametrize("have, fetched, missing", [
    ([], [5, 5], [5, 5]),
    ([5], [5, 5], [5]),          # recorded once, the chart has it twice: one is missing
    ([5, 5], [5, 5], []),
    ([5, 7], [5, 5, 7, 7, 9], [5, 7, 9]),
    ([5, 5, 5], [5], []),        # more recorded than the chart: nothing missing (never negative)
])
def test_missing_by_count(have, fetched, missing):
    t = kst_ns(DAY, "131939")

    def trade(q, i):
        return {"exch_ns": t, "price": 78900, "qty": q, "extra": {"pos": i}}

    fetched_recs = [trade(q, i) for i, q in enumerate(fetched)]
    got = p.missing_by_count([trade(q, 0) for q in have], fetched_recs)
    assert [r["qty"] for r in got] == missing
    assert all(any(r is f for f in fetched_recs) for r in got)


# -- minute bars, token, quote -----------------------------------------------------------------------
def test_minute_bars_oldest_first_one_per_time():
    def bar(t, c):
        return {"cntr_tm": "20250917" + t, "cur_prc": c, "trde_qty": "10", "acc_trde_qty": "1000",
                "open_pric": "+78800", "high_pric": "+79000", "low_pric": "-78700", "pred_pre": "-500",
                "pred_pre_sig": "5"}

    rows = [bar("132000", "-78900"), bar("131900", "+78850"), bar("131900", "+78850"), {"cntr_tm": "x"}]
    bars, bad = p.bars_from_minute_rows("005930", rows, RECV, minutes=1)
    for b in bars:
        check(b)
    assert [(b["exch_ns"], b["close"], b["open"], b["low"]) for b in bars] == [
        (kst_ns(DAY, "131900"), 78850, 78800, 78700), (kst_ns(DAY, "132000"), 78900, 78800, 78700)]
    assert bars[0]["volume"] == 10 and bars[0]["cum_vol"] == 1000 and len(bad) == 1


def test_token_reply():
    tok, exp = p.parse_token({"expires_dt": "20250918083000", "token_type": "bearer", "token": "T0K",
                              "return_code": 0, "return_msg": ""})
    assert tok == "T0K" and exp == kst_ns(date(2025, 9, 18), "083000")  # expires_dt is KST
    for bad in ({"token": "", "expires_dt": "20250918083000"}, {"token": "T"}, {"token": "T", "expires_dt": "20251318"},
                {"token": "T", "expires_dt": "20250231083000"}, None):
        with pytest.raises(AuthError):
            p.parse_token(bad)


def test_quote_snapshot():
    s = p.snapshot_from_quote("005930", {"cur_prc": "-160400", "pred_pre": "-8700", "trde_qty": "31734276",
                                         "open_pric": "+170000", "high_pric": "+170500", "low_pric": "-160000",
                                         "upl_pric": "+219700", "lst_pric": "-118300", "return_code": 0}, RECV)
    check(s)
    assert (s["price"], s["prev_close"], s["cum_vol"], s["open"], s["high"], s["low"]) == (
        160400, 169100, 31734276, 170000, 170500, 160000)
    assert (s["upper_limit"], s["lower_limit"], s["exch_ns"], s["sweep_ns"]) == (219700, 118300, None, RECV)
    assert p.snapshot_from_quote("005930", {"cur_prc": "100", "pred_pre": "5"}, RECV)["prev_close"] is None
    assert p.snapshot_from_quote("005930", {"cur_prc": "100", "pred_pre": "0"}, RECV)["prev_close"] == 100
    with pytest.raises(ValueError, match="cur_prc"):
        p.snapshot_from_quote("005930", {"cur_prc": "0"}, RECV)
