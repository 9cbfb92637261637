"""Kiwoom WebSocket of the simulator with websocket-client: LOGIN, REG/REMOVE by group, REAL 0B/0D frames of
the samples' shape carrying exactly the market's trades and books, PING and its echo, SYSTEM before a close."""

import websocket

from tests.support import wait_for

from .kis import read_jsonl
from .kiwoom import SAMPLES, KRest, KWs, elements, num

KW = {"providers": ["kis", "kiwoom"], "kiwoom_rate_limit": 200}


def _busiest(sim, n=1):
    return [s.code for s in sorted(sim.universe.symbols, key=lambda s: s.rank) if s.active][:n]


def _connect(sim) -> tuple[KWs, KRest]:
    urls = sim.urls()["kiwoom"]
    k = KRest(urls["rest"])
    k.login()
    ws = KWs(urls["ws"])
    ack = ws.login(k.token)
    assert ack == SAMPLES["ws_login_ok"]
    return ws, k


def test_reg_real_frames_are_the_markets_trades_and_books(make_sim):
    sim = make_sim(**KW)
    (code,) = _busiest(sim)
    ws, _ = _connect(sim)
    ack = ws.reg([code], ["0B", "0D"])
    assert ack["return_code"] == 0 and set(SAMPLES["ws_reg_ok"]) <= set(ack)
    ws.until(lambda m: len(elements(ws.got, "0B", code)) >= 40 and len(elements(ws.got, "0D", code)) >= 40, 30,
             "40 trades and 40 books")
    ws.close()
    wait_for(lambda: sim.stats()["kiwoom"]["ws"]["closed"] == 1, 10, what="the close")
    sim.truth.flush()
    gt = sim.cfg.ground_truth
    # the shape of the samples
    s0b, s0d = SAMPLES["ws_real_0B_trimmed"]["data"][0], SAMPLES["ws_real_0D"]["data"][0]
    trades, books = elements(ws.got, "0B", code), elements(ws.got, "0D", code)
    assert all(set(e) == set(s0b) and e["name"] == s0b["name"] and set(s0b["values"]) <= set(e["values"])
               for e in trades)
    assert all(set(e) == set(s0d) and e["name"] == s0d["name"] and set(s0d["values"]) <= set(e["values"])
               for e in books)
    for b in books:
        v = b["values"]
        assert sum(int(v[str(f)]) for f in range(61, 71)) == int(v["121"])
        assert sum(int(v[str(f)]) for f in range(71, 81)) == int(v["125"])
    # exactly the market's events of the registration window, in order, once each
    (sub0b,) = [s for s in read_jsonl(f"{gt}/kiwoom/subscriptions.jsonl") if s["tr_id"] == "0B"]
    (sub0d,) = [s for s in read_jsonl(f"{gt}/kiwoom/subscriptions.jsonl") if s["tr_id"] == "0D"]
    (close,) = [c for c in read_jsonl(f"{gt}/kiwoom/connections.jsonl") if c["event"] == "close"]
    truth_t = [t for t in read_jsonl(f"{gt}/trades.jsonl") if t["symbol"] == code
               and sub0b["from_t_ms"] < t["t_ms"] <= close["until_t_ms"]]
    side = {"buy": "+", "sell": "-", "auction": ""}
    got = [(e["values"]["20"], num(e["values"]["10"]), e["values"]["15"], int(e["values"]["13"])) for e in trades]
    assert got == [(t["time"], t["price"], f"{side[t['side']]}{t['qty']}", t["acml_vol"]) for t in truth_t][:len(got)]
    truth_b = [b for b in read_jsonl(f"{gt}/books.jsonl") if b["symbol"] == code
               and sub0d["from_t_ms"] < b["t_ms"] <= close["until_t_ms"]]
    got_b = [(e["values"]["21"], [num(e["values"][str(41 + i)]) for i in range(10)],
              [int(e["values"][str(71 + i)]) for i in range(10)]) for e in books]
    assert got_b == [(b["time"], b["askp"], b["bidq"]) for b in truth_b][:len(got_b)]
    (sent,) = [s for s in read_jsonl(f"{gt}/kiwoom/sent.jsonl") if s["final"]]
    assert sent["sent"]["0B"][code]["records"] == len(truth_t)
    assert sent["sent"]["0D"][code]["records"] == len(truth_b)
    # KIS's ground truth saw no Kiwoom connection
    assert read_jsonl(f"{gt}/connections.jsonl") == []


def test_remove_by_group_and_refresh(make_sim):
    sim = make_sim(kiwoom_ping_interval=0.3, **KW)
    a, b = _busiest(sim, 2)
    ws, _ = _connect(sim)
    assert ws.reg([a], ["0B"], grp="1")["return_code"] == 0
    assert ws.reg([b], ["0B"], grp="2")["return_code"] == 0
    ws.until(lambda m: elements([m], "0B", b), 20, f"a trade of {b}")
    ws.send({"trnm": "REMOVE", "grp_no": "2"})  # the whole group
    assert ws.reply("REMOVE")["return_code"] == 0
    n = len(ws.got)
    ws.reply("PING")  # our ack precedes any later frame: nothing of b after it
    ws.until(lambda m: elements(ws.got[n:], "0B", a), 20, f"a trade of {a} after the REMOVE")
    assert not elements(ws.got[n:], "0B", b)
    # refresh "0" replaces group 1's registrations
    assert ws.reg([b], ["0B"], grp="1", refresh="0")["return_code"] == 0
    n = len(ws.got)
    ws.until(lambda m: elements(ws.got[n:], "0B", b), 20, f"a trade of {b}")
    ws.send({"trnm": "REMOVE", "grp_no": "1", "data": [{"item": [b], "type": ["0B"]}]})
    assert ws.reply("REMOVE")["return_code"] == 0
    n = len(ws.got)
    ws.reply("PING")
    ws.reply("PING")
    assert not elements(ws.got[n:], "0B")
    sim.truth.flush()
    subs = read_jsonl(f"{sim.cfg.ground_truth}/kiwoom/subscriptions.jsonl")
    assert [(s["event"], s["symbol"], s["grp_no"]) for s in subs] == [
        ("subscribe", a, "1"), ("subscribe", b, "2"), ("unsubscribe", b, "2"), ("subscribe", b, "1"),
        ("unsubscribe", a, "1"), ("unsubscribe", b, "1")]
    ws.close()


def test_ping_is_echoed_and_counted(make_sim):
    sim = make_sim(kiwoom_ping_interval=0.2, **KW)
    ws, _ = _connect(sim)
    for _ in range(3):
        ping = ws.reply("PING")
        assert ping == SAMPLES["ws_ping_shape"]
        ws.send(ping)
    conn = wait_for(lambda: [c for c in sim.stats()["kiwoom"]["ws"]["connections"] if c["pongs_received"] >= 3],
                    10, what="three echoes counted")
    assert conn[0]["pingpong_sent"] >= 3
    assert sim.stats()["ws"]["connections"] == []  # none of it on KIS
    ws.close()


def test_login_and_registration_errors(make_sim):
    sim = make_sim(**KW)
    (code,) = _busiest(sim)
    urls = sim.urls()["kiwoom"]
    ws = KWs(urls["ws"])
    ws.send({"trnm": "REG", "grp_no": "1", "refresh": "1", "data": [{"item": [code], "type": ["0B"]}]})
    assert ws.reply("REG")["return_code"] != 0  # not logged in
    bad = ws.login("not-a-token")
    assert bad["return_code"] == 8005
    ws.reply("SYSTEM")
    closed = False
    try:
        ws.recv()
    except (websocket.WebSocketConnectionClosedException, ConnectionError):
        closed = True
    assert closed
    ws, _ = _connect(sim)
    assert ws.reg(["999999"], ["0B"])["return_code"] == 1901
    assert ws.reg([code], ["0Z"])["return_code"] == 1501
    ws.send({"trnm": "REG", "grp_no": "1", "data": [{"item": code, "type": "0B"}]})
    assert ws.reply("REG")["return_code"] == 1501  # item and type are arrays
    assert sim.stats()["kiwoom"]["ws"]["login_failed"] == 1
    ws.close()


def test_server_stop_sends_system_then_close(make_sim):
    sim = make_sim(**KW)
    ws, _ = _connect(sim)
    sim.stop()
    ws.reply("SYSTEM")
    closes = [c for c in read_jsonl(f"{sim.cfg.ground_truth}/kiwoom/connections.jsonl") if c["event"] == "close"]
    assert [c["cause"] for c in closes] == ["server_stop"]
    ws.close()
