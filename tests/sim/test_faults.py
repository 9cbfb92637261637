"""Every fault kind, triggered through the control endpoint or a schedule file, seen by real clients."""

import json
import socket
import time

import pytest
import requests
import websocket

from observer.sim.faults import FaultBook, FaultError, load_schedule, validate
from observer.sim.market import hhmmss
from tests.support import wait_for

from .kis import Rest, Ws, read_jsonl, records, sub_msg


def _busy(sim, n=1):
    return [s.code for s in sorted(sim.universe.symbols, key=lambda s: s.rank) if s.active][:n]


def fault(sim, **spec):
    r = requests.post(sim.control_url + "/fault", json=spec, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()


def _subscribed(sim, codes, trs=("H0STCNT0",)):
    key = Rest(sim.rest_url).approval()
    ws = Ws(sim.ws_url)
    for c in codes:
        for tr in trs:
            ws.send(sub_msg(key, tr, c))
            ws.control("OPSP0000")
    return ws


class RawWs:
    """Just enough of a client to see exactly which frames (and whether a close frame) arrive."""

    def __init__(self, url: str):
        host, port = url[len("ws://"):].split(":")
        self.s = socket.create_connection((host, int(port)), timeout=5)
        self.s.sendall(b"GET /tryitout HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.s.recv(4096)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        assert b" 101 " in head.split(b"\r\n")[0]

    def send(self, text: str) -> None:
        p = text.encode()
        hdr = bytes((0x81, 0x80 | 126)) + len(p).to_bytes(2, "big") if len(p) >= 126 else bytes((0x81, 0x80 | len(p)))
        self.s.sendall(hdr + b"\0\0\0\0" + p)  # an all-zero mask leaves the payload as is

    def frames_until_eof(self, deadline: float):
        """(opcodes seen, True if the TCP stream ended)."""
        ops = []
        while time.monotonic() < deadline:
            while len(self.buf) >= 2:
                n = self.buf[1] & 0x7F
                off = 2
                if n == 126:
                    if len(self.buf) < 4:
                        break
                    n, off = int.from_bytes(self.buf[2:4], "big"), 4
                if len(self.buf) < off + n:
                    break
                ops.append(self.buf[0] & 0x0F)
                self.buf = self.buf[off + n:]
            try:
                chunk = self.s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                return ops, True
            if not chunk:
                return ops, True
            self.buf += chunk
        return ops, False


@pytest.mark.parametrize("rst", [False, True])
def test_close_without_close_frame(make_sim, rst):
    sim = make_sim(control_port=0)
    key = Rest(sim.rest_url).approval()
    raw = RawWs(sim.ws_url)
    raw.send(sub_msg(key, "H0STCNT0", _busy(sim)[0]))
    wait_for(lambda: sim.stats()["ws"]["subscribe"] == 1, 10, what="the subscription")
    out = fault(sim, kind="ws_close_abrupt", rst=rst)
    assert out["affected"] == 1
    ops, eof = raw.frames_until_eof(time.monotonic() + 5)
    assert eof and 8 not in ops and 1 in ops  # data and acks arrived, then the stream ended with no close frame
    sim.truth.flush()
    conns = read_jsonl(f"{sim.cfg.ground_truth}/connections.jsonl")
    assert any(c.get("cause") == "fault:ws_close_abrupt" for c in conns)


def test_stall_sends_nothing_then_resumes(make_sim):
    sim = make_sim(pingpong_interval=0.2, speed=30)
    ws = _subscribed(sim, _busy(sim))
    ws.until(lambda m: m.startswith("0|"), what="data")
    fault(sim, kind="ws_stall", duration_real=1.2)
    arrivals = [time.monotonic()]

    def pred(m):
        arrivals.append(time.monotonic())
        return arrivals[-1] - arrivals[-2] > 1.0  # silence (no data, no PINGPONG at 0.2 s), then data again

    ws.until(pred, timeout=6, what="a gap of >1 s followed by data again")
    ws.close()
    st = sim.stats()
    assert st["faults"]["active"] == []


def test_stall_without_duration_lasts_for_the_connection(make_sim):
    sim = make_sim(pingpong_interval=0.2, speed=30)
    ws = _subscribed(sim, _busy(sim))
    fault(sim, kind="ws_stall")
    wait_for(lambda: sim.stats()["ws"]["connections"][0]["dropped"].get("stall", 0) > 20, 10, what="frames withheld")
    ws.close()
    fresh = _subscribed(sim, _busy(sim))  # a new connection is not stalled
    fresh.until(lambda m: m.startswith("0|"), what="data on a new connection")
    fresh.close()


def test_refuse_connects_for_a_while(make_sim):
    sim = make_sim()
    fault(sim, kind="ws_refuse", duration_real=1.0)
    t0 = time.monotonic()
    with pytest.raises((OSError, websocket.WebSocketException)):
        websocket.create_connection(sim.ws_url, timeout=2)

    def connects():
        try:
            websocket.create_connection(sim.ws_url, timeout=2).close()
            return True
        except (OSError, websocket.WebSocketException):
            return False

    wait_for(connects, timeout=5, what="connects to work again", interval=0.05)
    assert time.monotonic() - t0 >= 0.9
    assert sim.stats()["ws"]["refused"] >= 1


def test_flap_drops_every_connection_after_a_few_seconds(make_sim):
    sim = make_sim()
    fault(sim, kind="ws_flap", duration_real=5, min_real=0.3, max_real=0.5)
    for _ in range(2):
        ws = _subscribed(sim, _busy(sim))
        t0 = time.monotonic()
        with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
            ws.until(lambda m: False, timeout=3, what="never")
        assert 0.2 <= time.monotonic() - t0 <= 1.0


def test_rest_faults(make_sim):
    sim = make_sim()
    c = Rest(sim.rest_url)
    c.issue()
    code = _busy(sim)[0]

    def status():
        return c.get("inquire-price", FID_COND_MRKT_DIV_CODE="J", FID_INPUT_ISCD=code)

    fault(sim, kind="rest_5xx", status=503, duration_real=0.6)
    assert status().status_code == 503
    wait_for(lambda: status().status_code == 200, 10, what="5xx to end")
    fault(sim, kind="rate_limit_storm", duration_real=0.6)
    r = status()
    assert r.status_code == 500 and r.json()["msg_cd"] == "EGW00201"
    wait_for(lambda: status().status_code == 200, 10, what="the storm to end")
    fault(sim, kind="rest_slow", delay=0.4, duration_real=1.0)
    t0 = time.monotonic()
    assert status().status_code == 200 and time.monotonic() - t0 >= 0.4
    fault(sim, kind="clock_skew", skew=3600, duration_real=30)
    from email.utils import parsedate_to_datetime

    d = parsedate_to_datetime(status().headers["Date"]).timestamp()
    assert 3500 < d - sim.now_ns() / 1e9 < 3700


@pytest.mark.parametrize("kind,code", [("token_expire", "EGW00123"), ("token_invalidate", "EGW00121")])
def test_token_faults_hold_until_a_new_token(make_sim, kind, code):
    sim = make_sim()
    c = Rest(sim.rest_url)
    c.issue()
    sym = _busy(sim)[0]
    assert c.price(sym)["rt_cd"] == "0"
    fault(sim, kind=kind, reset_issue_limit=True)
    r = c.get("inquire-price", FID_COND_MRKT_DIV_CODE="J", FID_INPUT_ISCD=sym)
    assert r.status_code == 500 and r.json()["msg_cd"] == code
    old = c.token
    assert c.issue().status_code == 200 and c.token != old
    assert c.price(sym)["rt_cd"] == "0"


def test_frame_faults(make_sim):
    sim = make_sim(speed=30)
    a, b = _busy(sim, 2)
    ws = _subscribed(sim, [a, b])
    ws.until(lambda m: m.startswith("0|"), what="data")
    fault(sim, kind="ws_malformed", count=5, symbol=a, tr_id="H0STCNT0")
    bad = []

    def collect_bad(m):
        if m.startswith("{"):
            return False
        try:
            tr, recs = records(m)
            for r in recs:
                int(r[2])
                assert len(r) == 46
        except (AssertionError, ValueError):
            bad.append(m)
        return len(bad) >= 5

    ws.until(collect_bad, timeout=10, what="5 malformed frames")
    assert any(m.startswith("1|") for m in bad)  # the "encrypted" one

    def acmls(sym, done, what, timeout=10.0):
        """Cumulative volumes of sym's trades, read until done(seen) holds."""
        seen = []

        def pred(m):
            if m.startswith("0|H0STCNT0|") and records(m)[1][0][0] == sym:
                seen.extend(int(r[13]) for r in records(m)[1])
            return done(seen)

        ws.until(pred, timeout=timeout, what=what)
        return seen

    # wait for the fault itself to show, not for a number of trades: under load the frames already
    # queued before the fault (any number of them) arrive first
    fault(sim, kind="ws_duplicate", count=3, symbol=b)
    # each duplicated frame repeats its records (cumulative volumes never repeat otherwise)
    acmls(b, lambda seq: len(seq) - len(set(seq)) >= 3, "3 duplicated trades of b", timeout=30)
    fault(sim, kind="ws_out_of_order", count=2, symbol=b)
    acmls(b, lambda seq: sum(1 for x, y in zip(seq, seq[1:], strict=False) if y < x) >= 2,
          "2 out-of-order swaps of b", timeout=30)
    start = hhmmss(fault(sim, kind="ws_drop_symbol", symbol=a, duration_real=30)["t_ms"])
    ws.frames.clear()
    acmls(b, lambda seq: len(seq) >= 30, "30 trades of b")
    # frames already on their way when the fault began may still arrive; nothing generated after it
    late = [f for f in ws.frames if f.startswith("0|") and records(f)[1][0][0] == a and records(f)[1][0][1] > start]
    assert not late
    ws.close()
    gt = sim.cfg.ground_truth
    sim.stop()
    lines = read_jsonl(f"{gt}/faults.jsonl")
    assert len([x for x in lines if x["kind"] == "ws_malformed" and x["event"] == "frame"]) == 5
    dropped = read_jsonl(f"{gt}/sent.jsonl")[-1]["dropped"]
    assert dropped["malformed"] >= 5 and dropped["drop_symbol"] > 0


def test_schedule_files_trigger_at_market_time(make_sim, tmp_path):
    js = tmp_path / "f.json"
    js.write_text(json.dumps({"faults": [{"kind": "rest_5xx", "at": "09:05:20", "duration": 20}]}))
    toml = tmp_path / "f.toml"
    toml.write_text('[[faults]]\nkind = "token_invalidate"\nat = "09:06:30"\n')
    assert load_schedule(str(toml))[0]["at_ms"] == (9 * 3600 + 6 * 60 + 30) * 1000
    sim = make_sim(start="09:05", speed=40, faults_file=str(js), faults=load_schedule(str(toml)))
    c = Rest(sim.rest_url)
    c.issue()
    code = _busy(sim)[0]

    def st():
        return c.get("inquire-price", FID_COND_MRKT_DIV_CODE="J", FID_INPUT_ISCD=code)

    wait_for(lambda: st().status_code == 500, timeout=5, what="the scheduled 5xx")
    assert sim.market_ms() >= (9 * 3600 + 5 * 60 + 20) * 1000
    wait_for(lambda: st().status_code == 200, timeout=5, what="the 5xx to end")
    wait_for(lambda: st().json().get("msg_cd") == "EGW00121", timeout=5, what="the scheduled invalidation")
    sim.truth.flush()
    lines = read_jsonl(f"{sim.cfg.ground_truth}/faults.jsonl")
    kinds = [(x["event"], x["kind"]) for x in lines]
    assert kinds[:3] == [("start", "rest_5xx"), ("end", "rest_5xx"), ("start", "token_invalidate")]
    assert lines[1]["t_ms"] - lines[0]["t_ms"] >= 20_000


def test_bad_faults_are_refused(make_sim, tmp_path):
    with pytest.raises(FaultError):
        validate({"kind": "no_such_fault"})
    with pytest.raises(FaultError):
        validate({"kind": "rest_5xx"})  # needs a duration
    with pytest.raises(FaultError):
        validate({"kind": "ws_drop_symbol", "duration": 5})
    p = tmp_path / "bad.json"
    p.write_text(json.dumps([{"kind": "ws_refuse", "duration": 5}]))
    with pytest.raises(FaultError):
        load_schedule(str(p))  # scheduled faults need "at"
    sim = make_sim()
    r = requests.post(sim.control_url + "/fault", json={"kind": "nope"}, timeout=5)
    assert r.status_code == 400 and "unknown fault kind" in r.json()["error"]


def test_a_fault_for_one_provider_is_seen_by_that_providers_view_only():
    book = FaultBook()
    kis, other = book.view("kis"), book.view("other")
    a = book.activate(validate({"kind": "ws_malformed", "count": 1, "provider": "other"}), 0)
    assert kis.first("ws_malformed") is None and kis.data_faults() == [] and not kis.data_active
    assert other.first("ws_malformed") is a and other.data_faults() == [a] and other.data_active
    b = book.activate(validate({"kind": "ws_duplicate", "count": 1}), 0)  # no provider: every provider's
    assert kis.data_faults() == [b] and other.data_faults() == [a, b] and kis.data_active
    book.expire_now(b)
    assert not kis.data_active and other.data_active
    with pytest.raises(FaultError, match="provider"):
        validate({"kind": "ws_duplicate", "provider": ""})


def test_faults_name_a_served_provider(make_sim):
    sim = make_sim()
    c = Rest(sim.rest_url)
    c.issue()
    code = _busy(sim)[0]
    r = requests.post(sim.control_url + "/fault", json={"kind": "rest_5xx", "duration_real": 30, "provider": "nosuch"},
                      timeout=5)
    assert r.status_code == 400 and "'nosuch' is not served here; served: kis" in r.json()["error"]
    assert c.get("inquire-price", FID_COND_MRKT_DIV_CODE="J", FID_INPUT_ISCD=code).status_code == 200
    fault(sim, kind="rest_5xx", status=503, duration_real=30, provider="kis")
    assert c.get("inquire-price", FID_COND_MRKT_DIV_CODE="J", FID_INPUT_ISCD=code).status_code == 503
