"""Faults with both brokers served: one naming kiwoom hits Kiwoom only, one naming none hits both; data faults
garble Kiwoom's messages and are logged in Kiwoom's own ground truth; the latency setting is Kiwoom's own."""

import json
import time

import pytest
import requests
import websocket

from .kis import Rest, Ws, read_jsonl, sub_msg
from .kiwoom import KRest, KWs, elements

KW = {"providers": ["kis", "kiwoom"], "kiwoom_rate_limit": 200}


def _busiest(sim) -> str:
    return min((s for s in sim.universe.symbols if s.active), key=lambda s: s.rank).code


def _both(sim, code):
    """A KIS and a Kiwoom connection, each registered for the busiest symbol's trades."""
    kis = Ws(sim.ws_url)
    kis.send(sub_msg(Rest(sim.rest_url).approval(), "H0STCNT0", code))
    kis.control("OPSP0000")
    urls = sim.urls()["kiwoom"]
    k = KRest(urls["rest"])
    k.login()
    kw = KWs(urls["ws"])
    assert kw.login(k.token)["return_code"] == 0
    assert kw.reg([code], ["0B"])["return_code"] == 0
    return kis, kw, k


def _closed(kw: KWs) -> bool:
    try:
        while True:
            kw.recv()
    except (websocket.WebSocketConnectionClosedException, ConnectionError, OSError):
        return True


def test_a_fault_naming_kiwoom_hits_kiwoom_only(make_sim):
    sim = make_sim(**KW)
    code = _busiest(sim)
    kis, kw, k = _both(sim, code)
    kis_rest = Rest(sim.rest_url)
    kis_rest.issue()
    r = sim.apply_fault({"kind": "ws_close_abrupt", "provider": "kiwoom"})
    assert r["affected"] == 1
    assert _closed(kw)
    n = len(kis.frames)
    kis.until(lambda m: len(kis.frames) > n + 3, 20, "KIS frames after the fault")  # KIS goes on
    sim.apply_fault({"kind": "rate_limit_storm", "provider": "kiwoom", "duration": 600})
    r = k.call("/api/dostk/stkinfo", "ka10001", {"stk_cd": code})
    assert r.status_code == 429 and r.json()["return_code"] == 1700
    assert kis_rest.price(code)["rt_cd"] == "0"
    sim.clear_faults()
    sim.apply_fault({"kind": "token_invalidate", "provider": "kiwoom"})
    assert k.call("/api/dostk/stkinfo", "ka10001", {"stk_cd": code}).json()["return_code"] == 8005
    assert kis_rest.price(code)["rt_cd"] == "0"
    k.login()  # a new token works
    assert k.call("/api/dostk/stkinfo", "ka10001", {"stk_cd": code}).json()["return_code"] == 0
    sim.truth.flush()
    gt = sim.cfg.ground_truth
    closes = [c for c in read_jsonl(f"{gt}/kiwoom/connections.jsonl") if c["event"] == "close"]
    assert [c["cause"] for c in closes] == ["fault:ws_close_abrupt"]
    assert [c for c in read_jsonl(f"{gt}/connections.jsonl") if c["event"] == "close"] == []
    assert {f["spec"].get("provider") for f in read_jsonl(f"{gt}/faults.jsonl") if f["event"] == "start"} == {"kiwoom"}
    kis.close()


def test_a_fault_naming_no_provider_hits_both(make_sim):
    sim = make_sim(**KW)
    code = _busiest(sim)
    kis, kw, k = _both(sim, code)
    assert sim.apply_fault({"kind": "ws_close_abrupt"})["affected"] == 2
    assert _closed(kw)
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError, OSError)):
        kis.until(lambda m: False, 10, "the close")
    kis_rest = Rest(sim.rest_url)
    kis_rest.issue()
    sim.apply_fault({"kind": "rate_limit_storm", "duration": 600})
    assert k.call("/api/dostk/stkinfo", "ka10001", {"stk_cd": code}).status_code == 429
    assert kis_rest.get("inquire-price", FID_COND_MRKT_DIV_CODE="J", FID_INPUT_ISCD=code).json()["msg_cd"] == "EGW00201"


def test_kiwoom_is_refused_as_a_fault_target_when_not_served(make_sim):
    sim = make_sim()
    r = requests.post(sim.control_url + "/fault", json={"kind": "ws_stall", "provider": "kiwoom"}, timeout=10)
    assert r.status_code == 400 and "kiwoom" in r.text


def test_malformed_frames_on_kiwoom_are_logged_in_its_ground_truth(make_sim):
    sim = make_sim(**KW)
    code = _busiest(sim)
    kis, kw, _ = _both(sim, code)
    sim.apply_fault({"kind": "ws_malformed", "provider": "kiwoom", "count": 3, "mode": "truncate",
                     "duration": 600})
    bad = []

    def take() -> bool:
        m = kw.ws.recv()
        try:
            json.loads(m)
        except ValueError:
            bad.append(m)
        return len(bad) >= 3

    deadline = time.monotonic() + 20
    while not take():
        assert time.monotonic() < deadline, "three truncated messages"
    sim.truth.flush()
    gt = sim.cfg.ground_truth
    frames = [f for f in read_jsonl(f"{gt}/kiwoom/faults.jsonl") if f["event"] == "frame"]
    assert len(frames) == 3 and all(f["tr_id"] == "0B" and f["acml_vols"] for f in frames)
    assert [f for f in read_jsonl(f"{gt}/faults.jsonl") if f["event"] == "frame"] == []  # none on KIS
    kis.close()
    kw.close()


def test_kiwoom_latency_is_its_own(make_sim):
    sim = make_sim(kiwoom_latency_ms=600, **KW)
    code = _busiest(sim)
    k = KRest(sim.urls()["kiwoom"]["rest"])
    t0 = time.monotonic()
    k.login()
    assert time.monotonic() - t0 >= 0.6
    kis_rest = Rest(sim.rest_url)
    kis_rest.issue()
    t0 = time.monotonic()
    kis_rest.price(code)
    assert time.monotonic() - t0 < 0.6  # KIS has no latency of its own here
    kw = KWs(sim.urls()["kiwoom"]["ws"])
    t0 = time.monotonic()
    kw.login(k.token)
    assert time.monotonic() - t0 >= 0.6  # the ack waited in the queue too
    kw.reg([code], ["0B"])
    kw.until(lambda m: elements([m], "0B"), 20, "a trade")
    kw.close()
