"""Kiwoom REST of the simulator with a raw client: tokens, current price, the tick chart paged to its end and
equal to the market's trades (the same ones KIS serves), minute bars, the rate limit and input errors."""

import json
import subprocess
import sys
from pathlib import Path

from observer.core.clock import ManualClock, kst_ns, parse_yyyymmdd
from observer.sim import SimProcess
from tests.support import wait_for

from .conftest import DATE
from .kis import Rest, read_jsonl
from .kiwoom import SAMPLES, KRest, num

BIN = Path(__file__).resolve().parents[2] / "bin"
KW = {"providers": ["kis", "kiwoom"], "kiwoom_rate_limit": 200}


def _frozen(make_sim, at_s: int, **kw):
    """A simulator with both providers on a market clock that stands still at `at_s` seconds after midnight,
    its pump caught up (so trades.jsonl holds every trade up to now)."""
    clock = ManualClock(kst_ns(parse_yyyymmdd(DATE), "000000") + at_s * 1_000_000_000)
    sim = make_sim(clock=clock, **{**KW, **kw})
    wait_for(lambda: sim.dispatched_ms >= at_s * 1000, 10, what="the pump to catch up")
    sim.truth.flush()
    return sim


def _busiest(sim) -> str:
    return min((s for s in sim.universe.symbols if s.active), key=lambda s: s.rank).code


def test_default_serves_kis_only(make_sim):
    sim = make_sim()
    assert set(sim.urls()) == {"rest", "ws", "control"}
    assert "kiwoom" not in sim.stats()


def test_token_issue_revoke_and_bad_credentials(make_sim):
    sim = make_sim(app_key="KW-APPKEY-1", app_secret="KW-SECRET-1", **KW)
    urls = sim.urls()
    assert urls["kis"] == {"rest": urls["rest"], "ws": urls["ws"]} and urls["kiwoom"]["rest"] != urls["rest"]
    k = KRest(urls["kiwoom"]["rest"])
    r = k.issue()
    d = r.json()
    assert r.status_code == 200 and d["return_code"] == 0 and d["token_type"] == "bearer"
    assert len(d["expires_dt"]) == 14 and d["expires_dt"] > DATE + "090000"
    bad = k.issue(secret="wrong").json()
    assert bad["return_code"] == 8001 and "token" not in bad
    code = _busiest(sim)
    assert k.call("/api/dostk/stkinfo", "ka10001", {"stk_cd": code}).json()["return_code"] == 0
    rv = k.s.post(urls["kiwoom"]["rest"] + "/oauth2/revoke", headers={"api-id": "au10002"}, timeout=10,
                  json={"appkey": k.app_key, "secretkey": k.secret, "token": k.token}).json()
    assert rv["return_code"] == 0
    assert k.call("/api/dostk/stkinfo", "ka10001", {"stk_cd": code}).json()["return_code"] == 8005
    assert k.call("/api/dostk/stkinfo", "ka10001", {"stk_cd": code}, token="no-such-token").json()["return_code"] == 8005
    st = sim.stats()
    assert st["kiwoom"]["auth"]["tokens_issued"] == 1 and st["kiwoom"]["auth"]["revoked"] == 1
    assert st["auth"]["token_requests"] == 0  # KIS saw none of it
    sim.truth.flush()
    auth = read_jsonl(f"{sim.cfg.ground_truth}/kiwoom/auth.jsonl")
    assert [a["event"] for a in auth] == ["token_issued"] and "KW-APPKEY-1" not in str(auth)


def test_current_price_is_the_one_market(make_sim):
    sim = _frozen(make_sim, 9 * 3600 + 5 * 60)
    code = _busiest(sim)
    k = KRest(sim.urls()["kiwoom"]["rest"])
    k.login()
    d = k.call("/api/dostk/stkinfo", "ka10001", {"stk_cd": code}).json()
    kis = Rest(sim.rest_url)
    kis.issue()
    out = kis.price(code)["output"]
    assert num(d["cur_prc"]) == int(out["stck_prpr"]) and int(d["trde_qty"]) == int(out["acml_vol"])
    assert num(d["high_pric"]) == int(out["stck_hgpr"]) and int(d["base_pric"]) == int(out["stck_sdpr"])
    assert d["cur_prc"][0] == ("+" if int(out["prdy_vrss"]) > 0 else "-" if int(out["prdy_vrss"]) < 0 else d["cur_prc"][0])
    assert k.call("/api/dostk/stkinfo", "ka10001", {"stk_cd": "999999"}).json()["return_code"] == 1901


def test_tick_chart_pages_to_the_end_with_the_markets_trades(make_sim):
    sim = _frozen(make_sim, 9 * 3600 + 4 * 60, kiwoom_page_rows=250)
    code = _busiest(sim)
    k = KRest(sim.urls()["kiwoom"]["rest"])
    k.login()
    rows, pages = k.chart("ka10079", {"stk_cd": code, "tic_scope": "1", "upd_stkpc_tp": "1"})
    truth = [t for t in read_jsonl(f"{sim.cfg.ground_truth}/trades.jsonl") if t["symbol"] == code]
    assert len(truth) > 600 and pages == -(-len(truth) // 250)
    # every trade of the day so far, newest first, once each: the ground truth KIS's side is checked against
    assert [(r["cntr_tm"], int(r["cur_prc"]), int(r["trde_qty"])) for r in reversed(rows)] == \
        [(DATE + t["time"], t["price"], t["qty"]) for t in truth]
    # the sample's shape, the direction in pred_pre_sig
    sample = SAMPLES["ka10079_response_example"]
    assert all(set(r) == set(sample["stk_tic_chart_qry"][0]) for r in rows)
    prev = next(s for s in sim.universe.symbols if s.code == code).prev_close
    assert all(int(r["pred_pre"]) == abs(int(r["cur_prc"]) - prev) for r in rows)
    # KIS's time-sliced conclusions of the same second are the same trades
    kis = Rest(sim.rest_url)
    kis.issue()
    last = truth[-1]["time"]
    kis_rows = kis.conclusions(code, last)["output2"]
    assert [(r["stck_cntg_hour"], int(r["stck_prpr"]), int(r["cnqn"])) for r in kis_rows] == \
        [(r["cntr_tm"][8:], int(r["cur_prc"]), int(r["trde_qty"])) for r in rows[:len(kis_rows)]]
    # bars of 3 trades: the same volume in a third of the rows
    bars, _ = k.chart("ka10079", {"stk_cd": code, "tic_scope": "3", "upd_stkpc_tp": "1"})
    assert len(bars) == -(-len(truth) // 3) and sum(int(b["trde_qty"]) for b in bars) == truth[-1]["acml_vol"]


def test_tick_chart_paging_is_stable_while_the_day_goes_on(make_sim):
    """Pages asked for after the market moved still continue below the first page (no row twice, none lost)."""
    clock = ManualClock(kst_ns(parse_yyyymmdd(DATE), "000000") + (9 * 3600 + 180) * 1_000_000_000)
    sim = make_sim(clock=clock, kiwoom_page_rows=100, **KW)
    code = _busiest(sim)
    k = KRest(sim.urls()["kiwoom"]["rest"])
    k.login()
    body = {"stk_cd": code, "tic_scope": "1", "upd_stkpc_tp": "0"}
    r = k.call("/api/dostk/chart", "ka10079", body)
    first = r.json()["stk_tic_chart_qry"]
    clock.advance(30)  # trades happen between two pages
    key, rows = r.headers["next-key"], list(first)
    while key:
        r = k.call("/api/dostk/chart", "ka10079", body, key)
        rows += r.json()["stk_tic_chart_qry"]
        key = r.headers["next-key"] if r.headers["cont-yn"] == "Y" else None
    wait_for(lambda: sim.dispatched_ms >= (9 * 3600 + 210) * 1000, 10, what="the pump")
    sim.truth.flush()
    truth = [t for t in read_jsonl(f"{sim.cfg.ground_truth}/trades.jsonl") if t["symbol"] == code
             and t["t_ms"] <= (9 * 3600 + 180) * 1000]
    assert [(r["cntr_tm"][8:], int(r["cur_prc"])) for r in reversed(rows)] == [(t["time"], t["price"]) for t in truth]
    assert k.call("/api/dostk/chart", "ka10079", body, "99999999").json()["return_code"] == 1501


def test_minute_bars_are_the_markets_minutes(make_sim):
    sim = _frozen(make_sim, 9 * 3600 + 12 * 60 + 30)
    code = _busiest(sim)
    k = KRest(sim.urls()["kiwoom"]["rest"])
    k.login()
    rows, _ = k.chart("ka10080", {"stk_cd": code, "tic_scope": "1", "upd_stkpc_tp": "1", "base_dt": DATE})
    truth = [t for t in read_jsonl(f"{sim.cfg.ground_truth}/trades.jsonl") if t["symbol"] == code]
    bars: dict[str, list] = {}
    for t in truth:
        bars.setdefault(t["time"][:4] + "00", []).append(t)
    want = [(DATE + m, ts[0]["price"], max(x["price"] for x in ts), min(x["price"] for x in ts), ts[-1]["price"],
             sum(x["qty"] for x in ts), ts[-1]["acml_vol"]) for m, ts in sorted(bars.items(), reverse=True)]
    got = [(r["cntr_tm"], num(r["open_pric"]), num(r["high_pric"]), num(r["low_pric"]), num(r["cur_prc"]),
            int(r["trde_qty"]), int(r["acc_trde_qty"])) for r in rows]
    assert got == want and len(got) == 13  # 09:00 .. 09:12, the newest still forming
    # KIS's minute bars of the same minutes agree
    kis = Rest(sim.rest_url)
    kis.issue()
    kb = kis.get("inquire-time-itemchartprice", FID_ETC_CLS_CODE="", FID_COND_MRKT_DIV_CODE="J",
                 FID_INPUT_ISCD=code, FID_INPUT_HOUR_1="091230", FID_PW_DATA_INCU_YN="N").json()["output2"]
    kis_bars = {b["stck_cntg_hour"]: (int(b["stck_prpr"]), int(b["cntg_vol"])) for b in kb}
    assert all(kis_bars[g[0][8:]] == (g[4], g[5]) for g in got)
    fives, _ = k.chart("ka10080", {"stk_cd": code, "tic_scope": "5", "upd_stkpc_tp": "1"})
    assert [r["cntr_tm"][8:] for r in fives] == ["091000", "090500", "090000"]
    assert sum(int(r["trde_qty"]) for r in fives) == truth[-1]["acml_vol"]
    bad = k.call("/api/dostk/chart", "ka10080", {"stk_cd": code, "tic_scope": "2", "upd_stkpc_tp": "1"}).json()
    assert bad["return_code"] == 1501


def test_rate_limit_is_1700_http_429_per_provider(make_sim):
    sim = make_sim(**{**KW, "kiwoom_rate_limit": 3, "rate_limit": 50})
    code = _busiest(sim)
    k = KRest(sim.urls()["kiwoom"]["rest"])
    k.login()
    rs = [k.call("/api/dostk/stkinfo", "ka10001", {"stk_cd": code}) for _ in range(12)]
    limited = [r for r in rs if r.status_code == 429]
    assert limited and all(r.json()["return_code"] == 1700 for r in limited)
    assert all(r.json()["return_code"] == 0 for r in rs if r.status_code == 200)
    kis = Rest(sim.rest_url)
    kis.issue()
    assert all(kis.price(code)["rt_cd"] == "0" for _ in range(8))  # KIS's own limit, not Kiwoom's
    assert sim.stats()["kiwoom"]["per_app_key"][sim.providers["kiwoom"].key_id(k.app_key)]["rate_limited"] == len(limited)


def test_input_errors_name_what_is_wrong(make_sim):
    sim = make_sim(**KW)
    k = KRest(sim.urls()["kiwoom"]["rest"])
    k.login()
    code = _busiest(sim)
    r = k.call("/api/dostk/chart", "ka10001", {"stk_cd": code, "tic_scope": "1"}).json()
    assert r["return_code"] == 1501 and "api-id" in r["return_msg"]
    assert k.call("/api/dostk/chart", "ka10079", {"stk_cd": code + "_NX", "tic_scope": "1"}).json()["return_code"] == 1901
    r = k.s.post(sim.urls()["kiwoom"]["rest"] + "/api/dostk/chart", data=b"[1,2", timeout=10,
                 headers={"api-id": "ka10079", "authorization": f"Bearer {k.token}"}).json()
    assert r["return_code"] == 1501


def test_program_serves_kiwoom_when_asked(tmp_path):
    gt = tmp_path / "gt"
    args = ["--seed", "3", "--symbols", "50", "--active", "5", "--date", DATE, "--start", "09:10", "--speed", "10",
            "--providers", "kis,kiwoom", "--kiwoom-rate-limit", "50", "--ground-truth", str(gt)]
    with SimProcess(args, stderr_path=str(tmp_path / "err.log")) as p:
        ks = p.urls["kiwoom"]
        assert p.urls["kis"] == {"rest": p.rest, "ws": p.ws} and ks["rest"].startswith("http://127.0.0.1:")
        k = KRest(ks["rest"])
        k.login()
        code = json.loads((gt / "universe.json").read_text())[0]["symbol"]
        assert k.call("/api/dostk/stkinfo", "ka10001", {"stk_cd": code}).json()["return_code"] == 0
        assert json.loads((gt / "meta.json").read_text())["urls"]["kiwoom"] == ks
    assert (gt / "kiwoom" / "auth.jsonl").read_text().count("token_issued") == 1
    bad = subprocess.run([sys.executable, str(BIN / "observer-sim"), "--providers", "kiwoom"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "kis" in bad.stderr
    out = subprocess.run([sys.executable, str(BIN / "observer-sim"), "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert all(o in out for o in ("--providers", "--kiwoom-rest-port", "--kiwoom-ws-port", "--kiwoom-latency-ms",
                                  "--kiwoom-rate-limit"))
