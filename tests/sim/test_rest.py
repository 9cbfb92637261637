"""KIS REST of the simulator with a real HTTP client: auth, envelopes, limits, consistency with ground truth."""

import io
import json
import time
import zipfile
from email.utils import parsedate_to_datetime
from pathlib import Path

from observer.sim.market import hhmmss
from observer.sim.master import MEMBER, ZIP_NAME
from tests.support import wait_for

from .kis import Rest, read_jsonl

SAMPLES = Path(__file__).resolve().parent.parent / "fixtures" / "samples"  # real captured KIS messages


def _active(sim, k=0):
    return [s.code for s in sim.universe.symbols if s.active][k]


def _quietest(sim):
    return min((s for s in sim.universe.symbols if s.active), key=lambda s: s.rate).code


def test_token_issuance_limit_and_reuse(make_sim):
    sim = make_sim(token_issue_interval=20)  # 20 market s = 1 real s at speed 20
    c = Rest(sim.rest_url)
    r = c.issue()
    assert r.status_code == 200
    body = r.json()
    assert body.keys() == json.loads((SAMPLES / "kis_control_messages.json").read_text())["tokenP_response_200"].keys()
    assert body["token_type"] == "Bearer" and 86300 < body["expires_in"] <= 86400
    time.strptime(body["access_token_token_expired"], "%Y-%m-%d %H:%M:%S")
    r2 = c.issue()
    assert r2.status_code == 403
    assert r2.json() == {"error_description": "접근토큰 발급 잠시 후 다시 시도하세요(1분당 1회)", "error_code": "EGW00133"}
    t0 = sim.now_ns()
    wait_for(lambda: sim.now_ns() - t0 > 21e9, 10, what="the issuance window to pass")
    r3 = c.issue()
    assert r3.status_code == 200 and r3.json()["access_token"] == body["access_token"]  # same token within 6 h
    a = sim.stats()["auth"]
    assert (a["token_requests"], a["tokens_issued"], a["tokens_reused"], a["issue_rejected"]) == (3, 1, 1, 1)


def test_app_key_checks(make_sim):
    sim = make_sim(app_key="THE-KEY", app_secret="THE-SECRET")
    bad = Rest(sim.rest_url, "OTHER", "THE-SECRET").issue()
    assert bad.status_code == 403 and bad.json() == {"error_description": "유효하지 않은 AppKey입니다.",
                                                     "error_code": "EGW00103"}
    assert Rest(sim.rest_url, "", "x").issue().status_code == 403
    good = Rest(sim.rest_url, "THE-KEY", "THE-SECRET")
    assert good.issue().status_code == 200
    # Approval takes the secret as "secretkey", not "appsecret"
    r = good.post("/oauth2/Approval", {"grant_type": "client_credentials", "appkey": "THE-KEY",
                                       "appsecret": "THE-SECRET"})
    assert r.status_code == 403
    assert len(good.approval()) >= 32


def test_quotation_auth_errors_and_revoke(make_sim):
    sim = make_sim()
    c = Rest(sim.rest_url)
    code = _active(sim)
    r = c.get("inquire-price", FID_COND_MRKT_DIV_CODE="J", FID_INPUT_ISCD=code)  # no token yet
    assert r.status_code == 500 and r.json()["msg_cd"] == "EGW00121" and r.json()["rt_cd"] == "1"
    c.issue()
    ok = c.get("inquire-price", FID_COND_MRKT_DIV_CODE="J", FID_INPUT_ISCD=code)
    assert ok.status_code == 200 and ok.json()["rt_cd"] == "0" and ok.headers["tr_id"] == "FHKST01010100"
    wrong_tr = c.get("inquire-price", tr_id="FHKST01010400", FID_COND_MRKT_DIV_CODE="J", FID_INPUT_ISCD=code)
    assert wrong_tr.json()["rt_cd"] == "1"
    other_key = c.get("inquire-price", headers={"appkey": "SOMEONE-ELSE"}, FID_COND_MRKT_DIV_CODE="J",
                      FID_INPUT_ISCD=code)
    assert other_key.json()["msg_cd"] == "EGW00121"
    assert c.get("inquire-price", FID_COND_MRKT_DIV_CODE="J", FID_INPUT_ISCD="999999").json()["rt_cd"] == "1"
    rv = c.post("/oauth2/revokeP", {"appkey": c.app_key, "appsecret": c.app_secret, "token": c.token})
    assert rv.json() == {"code": 200, "message": "접근토큰 폐기에 성공하였습니다"}
    again = c.post("/oauth2/revokeP", {"appkey": c.app_key, "appsecret": c.app_secret, "token": c.token})
    assert again.json()["error_code"] == "EGW00121"
    assert c.get("inquire-price", FID_COND_MRKT_DIV_CODE="J", FID_INPUT_ISCD=code).json()["msg_cd"] == "EGW00121"


def test_rate_limit_per_app_key(make_sim):
    sim = make_sim(rate_limit=5)
    a, b = Rest(sim.rest_url, "KEY-A", "S"), Rest(sim.rest_url, "KEY-B", "S")
    a.issue()
    b.issue()
    code = _active(sim)
    results = []
    t0 = time.monotonic()
    for _ in range(12):
        r = a.get("inquire-price", FID_COND_MRKT_DIV_CODE="J", FID_INPUT_ISCD=code)
        results.append((time.monotonic(), r.status_code, r.json()))
    assert time.monotonic() - t0 < 1.0, "the burst must fit in one second for this test to mean anything"
    ok = [x for x in results if x[1] == 200]
    limited = [x for x in results if x[1] == 500]
    assert len(ok) == 5 and len(limited) == 7
    assert limited[0][2] == {"rt_cd": "1", "msg_cd": "EGW00201", "msg1": "초당 거래건수를 초과하였습니다."}
    # the other app key has its own budget
    assert b.get("inquire-price", FID_COND_MRKT_DIV_CODE="J", FID_INPUT_ISCD=code).status_code == 200
    st = sim.stats()["per_app_key"][sim.auth.key_id("KEY-A")]
    assert st["rate_limited"] == 7 and st["requests"] == 12


def test_date_header_is_market_time(make_sim):
    sim = make_sim()
    c = Rest(sim.rest_url)
    r = c.issue()
    d = parsedate_to_datetime(r.headers["Date"]).timestamp()
    assert abs(d - sim.now_ns() / 1e9) < 3 * sim.cfg.speed


def test_conclusions_page_back_to_the_open_and_match_ground_truth(make_sim):
    sim = make_sim(start="09:04")
    c = Rest(sim.rest_url)
    c.issue()
    code = _quietest(sim)
    first = c.conclusions(code, "153000")  # a future time means "now"
    assert first["output2"][0]["stck_cntg_hour"] <= hhmmss(sim.market_ms())  # nothing from the future
    assert first["output1"].keys() == {"stck_prpr", "prdy_vrss", "prdy_vrss_sign", "prdy_ctrt", "acml_vol",
                                       "prdy_vol", "rprs_mrkt_kor_name"}
    rows, seen, hour = [], set(), "153000"
    for _ in range(200):
        page = c.conclusions(code, hour)["output2"]
        assert len(page) <= 30
        new = [r for r in page if (r["stck_cntg_hour"], r["acml_vol"]) not in seen]
        if not new:
            break
        for r in new:
            seen.add((r["stck_cntg_hour"], r["acml_vol"]))
        rows += new
        hour = page[-1]["stck_cntg_hour"]
    assert rows
    for newer, older in zip(rows, rows[1:], strict=False):
        assert int(newer["acml_vol"]) - int(newer["cnqn"]) == int(older["acml_vol"])
    assert int(rows[-1]["acml_vol"]) == int(rows[-1]["cnqn"])  # reached the opening trade
    gt_dir = sim.cfg.ground_truth
    sim.stop()
    truth = [t for t in read_jsonl(f"{gt_dir}/trades.jsonl") if t["symbol"] == code]
    got = [(r["stck_cntg_hour"], int(r["stck_prpr"]), int(r["cnqn"]), int(r["acml_vol"])) for r in reversed(rows)]
    assert got == [(t["time"], t["price"], t["qty"], t["acml_vol"]) for t in truth[: len(got)]]


def test_minute_bars_daily_prices_and_volume_rank(make_sim):
    sim = make_sim(start="09:20", speed=1)
    c = Rest(sim.rest_url)
    c.issue()
    code = _active(sim, 3)
    bars = c.get("inquire-time-itemchartprice", FID_ETC_CLS_CODE="", FID_COND_MRKT_DIV_CODE="J",
                 FID_INPUT_ISCD=code, FID_INPUT_HOUR_1="120000", FID_PW_DATA_INCU_YN="Y").json()
    rows = bars["output2"]
    assert len(rows) == 21 and rows[0]["stck_cntg_hour"] == "092000" and rows[-1]["stck_cntg_hour"] == "090000"
    assert all(r["stck_bsop_date"] == "20260316" for r in rows)
    assert sum(int(r["cntg_vol"]) for r in rows) == int(bars["output1"]["acml_vol"])
    for r in rows:
        assert int(r["stck_lwpr"]) <= min(int(r["stck_oprc"]), int(r["stck_prpr"]))
        assert int(r["stck_hgpr"]) >= max(int(r["stck_oprc"]), int(r["stck_prpr"]))
    daily = c.get("inquire-daily-price", FID_COND_MRKT_DIV_CODE="J", FID_INPUT_ISCD=code, FID_PERIOD_DIV_CODE="D",
                  FID_ORG_ADJ_PRC="0").json()["output"]
    assert len(daily) == 30 and daily[0]["stck_bsop_date"] == "20260316"
    assert [d["stck_bsop_date"] for d in daily] == sorted((d["stck_bsop_date"] for d in daily), reverse=True)
    price = c.price(code)["output"]
    assert daily[1]["stck_clpr"] == price["stck_sdpr"]  # yesterday's close is today's reference price
    again = c.get("inquire-daily-price", FID_COND_MRKT_DIV_CODE="J", FID_INPUT_ISCD=code, FID_PERIOD_DIV_CODE="D",
                  FID_ORG_ADJ_PRC="0").json()["output"]
    assert again[1:] == daily[1:]
    rank = c.get("volume-rank", FID_COND_MRKT_DIV_CODE="J", FID_COND_SCR_DIV_CODE="20171", FID_INPUT_ISCD="0000",
                  FID_DIV_CLS_CODE="0", FID_BLNG_CLS_CODE="0", FID_TRGT_CLS_CODE="111111111",
                  FID_TRGT_EXLS_CLS_CODE="0000000000", FID_INPUT_PRICE_1="", FID_INPUT_PRICE_2="",
                  FID_VOL_CNT="", FID_INPUT_DATE_1="").json()["output"]
    assert len(rank) == 30 and [r["data_rank"] for r in rank] == [str(i) for i in range(1, 31)]
    vols = [int(r["acml_vol"]) for r in rank]
    assert vols == sorted(vols, reverse=True)
    active = {s.code for s in sim.universe.symbols if s.active}
    assert {r["mksc_shrn_iscd"] for r in rank[: len(active)]} == active


def test_before_the_open_prices_are_the_previous_close(make_sim):
    sim = make_sim(start="08:40", speed=1)
    c = Rest(sim.rest_url)
    c.issue()
    code = _active(sim)
    out = c.price(code)["output"]
    info = sim.universe.by_code[code]
    assert out["acml_vol"] == "0" and out["stck_prpr"] == str(info.prev_close) == out["stck_sdpr"]
    assert out["stck_mxpr"] == str(info.upper) and out["stck_llam"] == str(info.lower)
    assert c.conclusions(code, "090500")["output2"] == []


def test_period_chart_windows_pages_and_periods(make_sim):
    sim = make_sim(start="09:20", speed=1)
    c = Rest(sim.rest_url)
    c.issue()
    code = _active(sim, 2)

    def chart(d1, d2, period="D", iscd=code):
        return c.get("inquire-daily-itemchartprice", FID_COND_MRKT_DIV_CODE="J", FID_INPUT_ISCD=iscd,
                     FID_INPUT_DATE_1=d1, FID_INPUT_DATE_2=d2, FID_PERIOD_DIV_CODE=period,
                     FID_ORG_ADJ_PRC="1").json()

    daily = c.get("inquire-daily-price", FID_COND_MRKT_DIV_CODE="J", FID_INPUT_ISCD=code, FID_PERIOD_DIV_CODE="D",
                  FID_ORG_ADJ_PRC="0").json()["output"]
    body = chart("00000101", "20260316")  # no lower bound: the newest 100 rows
    rows = body["output2"]
    assert body["rt_cd"] == "0" and body["output1"]["stck_shrn_iscd"] == code
    assert len(rows) == 100 and rows[0]["stck_bsop_date"] == "20260316"
    assert [r["stck_bsop_date"] for r in rows] == sorted((r["stck_bsop_date"] for r in rows), reverse=True)
    keys = ("stck_bsop_date", "stck_oprc", "stck_hgpr", "stck_lwpr", "stck_clpr", "acml_vol", "prdy_vrss",
            "prdy_vrss_sign")
    # the same history as FHKST01010400 (today's bar aside: it grows between the two calls)
    assert [{k: r[k] for k in keys} for r in rows[1:30]] == [{k: d[k] for k in keys} for d in daily[1:30]]
    # paging back: the next page ends the day before the oldest row, and a window bounds both ends
    older = chart("00000101", rows[-1]["stck_bsop_date"])["output2"]
    assert older[0] == rows[-1] and len(older) == 100
    window = chart("20260302", "20260306")["output2"]
    assert [r["stck_bsop_date"] for r in window] == ["20260306", "20260305", "20260304", "20260303", "20260302"]
    assert chart("20260314", "20260315")["output2"] == []  # a weekend
    weeks = chart("20260223", "20260316", "W")["output2"]
    assert [r["stck_bsop_date"] for r in weeks] == ["20260316", "20260313", "20260306", "20260227"]
    assert weeks[1]["acml_vol"] == str(sum(int(r["acml_vol"]) for r in rows if "20260309" <= r["stck_bsop_date"]
                                           <= "20260313"))
    years = chart("00000101", "20260316", "Y")["output2"]
    assert [r["stck_bsop_date"][:4] for r in years] == ["2026", "2025"]
    for bad in (chart("2026031", "20260316"), chart("20260301", "20260316", "X"),
                chart("20260301", "20260316", iscd="999999")):
        assert bad["rt_cd"] == "1"


def test_search_info_names_the_listing(make_sim):
    sim = make_sim(start="09:20", speed=1)
    c = Rest(sim.rest_url)
    c.issue()
    info = sim.universe.by_code["000660"]
    out = c.get("search-info", PDNO="000660", PRDT_TYPE_CD="300").json()
    assert out["rt_cd"] == "0"
    o = out["output"]
    assert (o["pdno"], o["shtn_pdno"], o["prdt_type_cd"], o["prdt_abrv_name"], o["prdt_name120"]) == \
        ("000660", "000660", "300", info.name, info.name)
    # the standard code the master file lists for it (code 9 chars, then the standard code 12)
    zipped = c.s.get(sim.rest_url + "/common/master/" + ZIP_NAME[info.market], timeout=10)
    with zipfile.ZipFile(io.BytesIO(zipped.content)) as zf:
        lines = zf.read(MEMBER[info.market]).splitlines()
    assert next(ln[9:21] for ln in lines if ln.startswith(b"000660")).decode().strip() == o["std_pdno"]
    assert c.get("search-info", PDNO="999999", PRDT_TYPE_CD="300").json()["msg_cd"] == "SIM00002"
    assert c.get("search-info", PDNO="000660", PRDT_TYPE_CD="512").json()["msg_cd"] == "SIM00003"
