"""Kiwoom WebSocket stream (the shared session + the Kiwoom protocol) against a scripted WebSocket server on
127.0.0.1 and the scripted REST token server of test_kiwoom_rest: LOGIN first and its answer awaited, REG
acknowledged, PING echoed exactly, REAL data decoded, SYSTEM notice -> reconnect with everything re-sent,
a refused token replaced once, refused credentials fatal."""

from __future__ import annotations

import json
import threading
import time

import orjson
import pytest

from observer.core.clock import Clock
from observer.core.contracts import check
from observer.providers.base import BOOK, TRADES, AuthError
from observer.providers.kiwoom.rest import KiwoomRest
from observer.providers.kiwoom.ws import KiwoomConnection, KiwoomStream
from observer.store.store import Store
from tests.support import wait_for
from tests.support.wsscript import Conn, ScriptedWsServer

from .test_kis_ws_sim import Sink
from .test_kiwoom_rest import OK, server  # noqa: F401  (the REST token server fixture)

SYM = "005930"
WCFG = {"backoff_s": [0.1, 0.2], "backoff_reset_s": 1.0, "poll_s": 0.05, "connect_timeout_s": 2.0}


def real(sym: str = SYM, qty: str = "+10", cum: int = 1000) -> str:
    return json.dumps({"trnm": "REAL", "data": [{"type": "0B", "name": "주식체결", "item": sym, "values": {
        "20": time.strftime("%H%M%S"), "10": "-71500", "11": "-500", "15": qty, "13": str(cum)}}]})


class Broker:
    """The scripted server side: which tokens log in, what REG answers, and what it does after."""

    def __init__(self, good_tokens=("TOKEN1",), login_code: int = 8005, reg_code: int = 0):
        self.good_tokens = set(good_tokens)
        self.login_code = login_code
        self.reg_code = reg_code
        self.logged_in: dict[int, float] = {}  # connection number -> when the LOGIN answer went out
        self.lock = threading.Lock()
        self.ws = ScriptedWsServer(self.on_message)

    def on_message(self, conn: Conn, text: str) -> None:
        msg = json.loads(text)
        trnm = msg.get("trnm")
        if trnm == "LOGIN":
            time.sleep(0.2)  # a slow answer: nothing may be registered before it
            if msg.get("token") in self.good_tokens:
                conn.send(json.dumps({"trnm": "LOGIN", "return_code": 0, "return_msg": "", "sor_yn": "N"}))
                self.logged_in[conn.number] = time.monotonic()
            else:
                conn.send(json.dumps({"trnm": "LOGIN", "return_code": self.login_code, "return_msg": "토큰 오류"}))
        elif trnm == "REG":
            conn.send(json.dumps({"trnm": "REG", "return_code": self.reg_code, "return_msg": ""}))
            if self.reg_code == 0:
                for item in msg["data"][0]["item"]:
                    if "0B" in msg["data"][0]["type"]:
                        conn.send(real(item))

    def logins(self) -> list[str]:
        return [orjson.loads(t)["token"] for c in self.ws.conns for t in c.texts() if '"LOGIN"' in t]


@pytest.fixture
def events_store(tree):
    s = Store(tree, program="test", provider="kiwoom")
    yield s
    s.close()


def kiwoom_events(store: Store, kind: str) -> list[dict]:
    out = []
    for f in sorted((store.root / "system" / "events" / "kiwoom").glob("*.jsonl")):
        out += [e for e in map(orjson.loads, f.read_bytes().splitlines()) if e["event"] == kind]
    return out


@pytest.fixture
def make(server, tmp_path, events_store):  # noqa: F811
    made = []

    def build(broker: Broker, **wcfg):
        for i in range(1, 5):  # tokens valid all day: a new one only when the server refused the last
            server.add("au10001", {**OK, "token": f"TOKEN{i}", "token_type": "bearer", "expires_dt": "20991231000000"})
        rest = KiwoomRest(server.url, app_key="APPKEY-0001", secret_key="SECRET-0001", state_dir=tmp_path,
                          clock=Clock(), rate_per_s=1000.0)
        sink = Sink()
        conn = KiwoomConnection(ws_url=broker.ws.url, rest=rest, account="main", wcfg={**WCFG, **wcfg},
                                clock=Clock(), sink=sink, events=events_store.events("kiwoom"))
        stream = KiwoomStream([conn])
        made.append((stream, broker))
        return stream, sink

    yield build
    for stream, broker in made:
        stream.stop()
        broker.ws.stop()


def test_login_first_then_registrations_data_and_ping(make, events_store):
    broker = Broker()
    stream, sink = make(broker)
    stream.subscribe(SYM, TRADES)
    stream.subscribe(SYM, BOOK)
    stream.start()
    wait_for(lambda: sink.records("trade"), 10, what="a trade from the REAL message")
    conn = broker.ws.conns[0]
    texts = conn.texts()
    assert orjson.loads(texts[0]) == {"trnm": "LOGIN", "token": "TOKEN1"}
    regs = [(t, orjson.loads(m)) for t, m in conn.received if '"REG"' in m]
    assert sorted((m["data"][0]["item"], m["data"][0]["type"], m["refresh"]) for _, m in regs) == [
        ([SYM], ["0B"], "1"), ([SYM], ["0D"], "1")]
    assert all(t > broker.logged_in[1] for t, _ in regs)  # nothing registered before the LOGIN answer
    (rec,) = sink.records("trade")
    check(rec)
    assert (rec["provider"], rec["symbol"], rec["price"], rec["qty"], rec["side"]) == ("kiwoom", SYM, 71500, 10, "buy")
    assert rec["session_id"].startswith("kiwoom-main-")
    wait_for(lambda: stream.acked_ns(SYM, TRADES) and stream.acked_ns(SYM, BOOK), 5, what="both REG answers")
    assert stream.stats()["connections"]["main"]["connected"]
    ping = '{"trnm":"PING", "x": 1}'  # odd spacing: echoed byte for byte, not re-encoded
    conn.send(ping)
    wait_for(lambda: ping in conn.texts(), 5, what="the PING echoed")
    assert stream.stats()["pingpongs"] == 1 and stream.stats()["reconnects"] == 0


def test_refused_registration_is_reported_and_never_acked(make, events_store):
    broker = Broker(reg_code=1901)
    stream, sink = make(broker)
    stream.subscribe(SYM, TRADES)
    stream.start()
    wait_for(lambda: kiwoom_events(events_store, "subscription_error"), 10, what="the refusal reported")
    (e,) = kiwoom_events(events_store, "subscription_error")
    assert (e["code"], e["symbol"], e["tr_id"], e["account"]) == ("1901", SYM, "0B", "main")
    assert stream.acked_ns(SYM, TRADES) is None


def test_system_notice_ends_the_session_and_everything_is_resent(make, events_store):
    broker = Broker()
    stream, sink = make(broker)
    stream.subscribe(SYM, TRADES)
    stream.start()
    wait_for(lambda: sink.records("trade"), 10, what="first trade")
    broker.ws.conns[0].send(json.dumps({"trnm": "SYSTEM", "code": "R10001", "message": "연결을 종료합니다"}))
    wait_for(lambda: stream.stats()["reconnects"] == 1, 10, what="a reconnect after the SYSTEM notice")
    wait_for(lambda: len(sink.records("trade")) == 2, 10, what="data on the new connection")
    (ev,) = kiwoom_events(events_store, "reconnect")
    assert ev["cause"] == "system_notice" and ev["session_id"].endswith("-2")
    (notice,) = kiwoom_events(events_store, "subscription_error")
    assert notice["code"] == "SYSTEM R10001" and notice["severity"] == "WARNING"
    gaps = kiwoom_events(events_store, "gap_marker")
    assert [(g["symbol"], g["channel"], g["cause"], g["recoverable"]) for g in gaps] == [
        (SYM, TRADES, "ws_system_notice", True)]
    second = broker.ws.conns[1].texts()
    assert orjson.loads(second[0])["trnm"] == "LOGIN" and orjson.loads(second[1])["trnm"] == "REG"
    assert broker.logins() == ["TOKEN1", "TOKEN1"]  # a notice is no reason for a new token


def test_refused_token_is_replaced_once(make, server, events_store):  # noqa: F811
    broker = Broker(good_tokens=("TOKEN2",))
    stream, sink = make(broker)
    stream.subscribe(SYM, TRADES)
    stream.start()
    wait_for(lambda: sink.records("trade"), 10, what="data after the token was replaced")
    assert broker.logins() == ["TOKEN1", "TOKEN2"]
    assert len(server.calls("au10001")) == 2
    assert stream.fatal() is None
    (err,) = kiwoom_events(events_store, "subscription_error")
    assert err["code"] == "8005" and "TOKEN" not in json.dumps(err)
    assert [e["cause"] for e in kiwoom_events(events_store, "reconnect")] == ["token_refused"]


def test_token_refused_again_after_a_new_one_is_fatal(make, server):  # noqa: F811
    broker = Broker(good_tokens=())
    stream, sink = make(broker)
    stream.subscribe(SYM, TRADES)
    stream.start()
    err = wait_for(stream.fatal, 10, what="a fatal error")
    assert isinstance(err, AuthError) and "again after a new token" in str(err) and err.account == "main"
    assert broker.logins() == ["TOKEN1", "TOKEN2"]  # one refresh, no more
    wait_for(lambda: not stream.connections[0]._thread or not stream.connections[0]._thread.is_alive(), 5,
             what="the session thread to end")
    assert len(broker.ws.conns) == 2


def test_refused_credentials_at_login_are_fatal_at_once(make):
    broker = Broker(good_tokens=(), login_code=8001)
    stream, sink = make(broker)
    stream.subscribe(SYM, TRADES)
    stream.start()
    err = wait_for(stream.fatal, 10, what="a fatal error")
    assert "8001" in str(err) and "app key/secret refused" in str(err)
    assert broker.logins() == ["TOKEN1"]


def test_refused_credentials_at_the_token_endpoint_are_fatal(make, server):  # noqa: F811
    server.add("au10001", {"return_code": 8001, "return_msg": "appkey 오류"}, status=200)
    broker = Broker()
    stream, sink = make(broker)
    stream.subscribe(SYM, TRADES)
    stream.start()
    err = wait_for(stream.fatal, 10, what="a fatal error")
    assert isinstance(err, AuthError) and "8001" in str(err)
    assert broker.ws.conns == []  # never connected without a token
    assert stream.stats()["connect_failures"] == 1


def test_login_never_answered_is_a_timeout_and_retried(make, events_store):
    broker = Broker()
    silent = {"n": 0}
    answer = broker.on_message

    def mute_first_login(conn, text):
        if conn.number == 1:
            silent["n"] += 1
            return
        answer(conn, text)

    broker.ws.on_message = mute_first_login
    stream, sink = make(broker, connect_timeout_s=0.5)
    stream.subscribe(SYM, TRADES)
    stream.start()
    wait_for(lambda: sink.records("trade"), 10, what="data on the second connection")
    assert silent["n"] == 1 and [c.texts()[0] for c in broker.ws.conns][:1] == ['{"trnm":"LOGIN","token":"TOKEN1"}']
    assert [e["cause"] for e in kiwoom_events(events_store, "reconnect")] == ["login_timeout"]
