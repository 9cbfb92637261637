"""Kiwoom REST client over real HTTP on 127.0.0.1: a scripted server answers each api-id from a queue
and records every request (path, headers, body). The clock is manual, so pacing and backoff take no time."""

from __future__ import annotations

import json
import threading
from collections import defaultdict, deque
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from observer.core.clock import ManualClock, kst_ns
from observer.core.contracts import check
from observer.providers.base import AuthError, RateLimitedError
from observer.providers.kiwoom.protocol import UnknownSymbolError
from observer.providers.kiwoom.rest import KiwoomRest

START = kst_ns(date(2025, 9, 17), "153500")
OK = {"return_code": 0, "return_msg": "정상적으로 처리되었습니다"}


class Script:
    def __init__(self):
        self.replies: dict[str, deque] = defaultdict(deque)
        self.seen: list[tuple[str, dict, dict]] = []
        self.tokens = 0

    def add(self, api_id: str, body, status: int = 200, headers: dict | None = None):
        self.replies[api_id].append((status, body, headers or {}))

    def reply(self, api_id: str):
        if api_id == "au10001" and not self.replies[api_id]:  # a fresh token on every issuance by default
            self.tokens += 1
            return 200, {**OK, "token": f"TOKEN{self.tokens}", "token_type": "bearer",
                         "expires_dt": "20250918090000"}, {}
        return self.replies[api_id].popleft()

    def calls(self, api_id: str) -> list[tuple[dict, dict]]:
        return [(h, b) for a, h, b in self.seen if a == api_id]


@pytest.fixture
def server():
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            n = int(self.headers.get("content-length", "0"))
            body = json.loads(self.rfile.read(n) or b"{}")
            headers = {k.lower(): v for k, v in self.headers.items()}
            api_id = headers.get("api-id", "")
            script.seen.append((api_id, headers, body))
            status, reply, extra = script.reply(api_id)
            data = reply if isinstance(reply, bytes) else json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json;charset=UTF-8")
            self.send_header("api-id", api_id)
            for k, v in extra.items():
                self.send_header(k, v)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a):
            return None

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    script.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield script
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def client(server, tmp_path):
    c = KiwoomRest(server.url, app_key="APPKEY-0001", secret_key="SECRET-0001", state_dir=tmp_path,
                   clock=ManualClock(START), timeouts=(2.0, 5.0), backoff_base_s=0.1)
    yield c
    c.close()


def tick(t: str, qty: str) -> dict:
    return {"cur_prc": "+78900", "trde_qty": qty, "cntr_tm": "20250917" + t, "open_pric": "78900",
            "high_pric": "78900", "low_pric": "78900", "pred_pre": "500", "pred_pre_sig": "5"}


def test_tick_chart_pages_with_next_key_and_one_token(server, client):
    server.add("ka10079", {**OK, "stk_cd": "005930", "stk_tic_chart_qry": [tick("131940", "1"), tick("131939", "2")]},
               headers={"cont-yn": "Y", "next-key": "20250917131939000123"})
    server.add("ka10079", {**OK, "stk_cd": "005930", "stk_tic_chart_qry": [tick("131939", "2"), tick("131938", "9")]},
               headers={"cont-yn": "N", "next-key": ""})
    t0 = client.clock.now_ns()
    trades, pages, bad = client.tick_trades("005930")
    assert pages.complete and pages.pages == 2 and bad == []
    for t in trades:
        check(t)
    assert [(t["qty"], t["extra"]["pos"]) for t in trades] == [(9, 0), (2, 0), (2, 1), (1, 0)]
    (tok_h, tok_b), = server.calls("au10001")
    assert tok_b == {"grant_type": "client_credentials", "appkey": "APPKEY-0001", "secretkey": "SECRET-0001"}
    assert "authorization" not in tok_h
    (h1, b1), (h2, b2) = server.calls("ka10079")
    assert b1 == b2 == {"stk_cd": "005930", "tic_scope": "1", "upd_stkpc_tp": "1"}  # the same body repeated
    assert h1["authorization"] == h2["authorization"] == "Bearer TOKEN1"
    assert "cont-yn" not in h1 and (h2["cont-yn"], h2["next-key"]) == ("Y", "20250917131939000123")
    assert client.clock.now_ns() - t0 >= 0.2 * 1e9  # the pause between pages


def test_minute_bars(server, client):
    row = {"cntr_tm": "20250917131900", "cur_prc": "-78900", "trde_qty": "120", "acc_trde_qty": "99000",
           "open_pric": "78800", "high_pric": "+79000", "low_pric": "78700"}
    server.add("ka10080", {**OK, "stk_min_pole_chart_qry": [row]}, headers={"cont-yn": "N"})
    bars, pages, _ = client.minute_bars("005930", scope="1", base_dt="20250917")
    (b,) = bars
    check(b)
    assert (b["close"], b["volume"], b["cum_vol"], b["minutes"]) == (78900, 120, 99000, 1)
    assert server.calls("ka10080")[0][1]["base_dt"] == "20250917"


def test_rate_limit_in_either_form_backs_off_and_retries(server, client):
    server.add("ka10001", {"return_code": 1700, "return_msg": "허용된 요청 개수를 초과하였습니다"})
    server.add("ka10001", {"return_code": 5, "return_msg": "허용된 API 요청 개수를 초과하였습니다. 유량=5"}, status=429)
    server.add("ka10001", {**OK, "cur_prc": "-160400", "pred_pre": "-8700"})
    t0 = client.clock.now_ns()
    snap = client.current_price("005930")
    check(snap)
    assert snap["price"] == 160400 and snap["prev_close"] == 169100
    assert client.stats["rate_limited"] == 2 and len(server.calls("ka10001")) == 3
    assert client.clock.now_ns() - t0 >= 0.75 * 1e9 * (1 + 2) * 0.99  # penalties 1 s then 2 s, jitter >= 0.75


def test_rate_limit_gives_up_after_the_retries(server, tmp_path):
    c = KiwoomRest(server.url, app_key="K", secret_key="S", state_dir=tmp_path, clock=ManualClock(START),
                   rl_max_retries=2)
    for _ in range(3):
        server.add("ka10001", {"return_code": 1700, "return_msg": "x"})
    with pytest.raises(RateLimitedError, match="1700"):
        c.current_price("005930")
    c.close()


def test_token_refused_once_gets_one_new_token(server, client):
    server.add("ka10001", {"return_code": 8005, "return_msg": "토큰이 유효하지 않습니다"})
    server.add("ka10001", {**OK, "cur_prc": "100"})
    assert client.current_price("005930")["price"] == 100
    auths = [h["authorization"] for h, _ in server.calls("ka10001")]
    assert auths == ["Bearer TOKEN1", "Bearer TOKEN2"] and client.stats["token_refreshes"] == 1


def test_token_refused_twice_is_an_auth_error_naming_the_code(server, client):
    server.add("ka10001", {"return_code": 8005, "return_msg": "x"})
    server.add("ka10001", {"return_code": 8005, "return_msg": "x"})
    with pytest.raises(AuthError, match="8005.*again after a new token"):
        client.current_price("005930")
    assert server.tokens == 2 and len(server.calls("ka10001")) == 2


@pytest.mark.parametrize("code, why", [(8001, "app key/secret refused"), (8050, "device or IP address not registered"),
                                       (8030, "real/paper server mismatch")])
def test_credential_codes_are_auth_errors_never_retried(server, client, code, why):
    server.add("ka10001", {"return_code": code, "return_msg": "거부"})
    with pytest.raises(AuthError, match=f"return_code {code} .*{why}"):
        client.current_price("005930")
    assert len(server.calls("ka10001")) == 1


def test_token_endpoint_refusal_is_an_auth_error(server, client):
    server.add("au10001", {"return_code": 8001, "return_msg": "등록되지 않은 앱키"})
    with pytest.raises(AuthError, match="au10001.*8001"):
        client.current_price("005930")
    assert server.calls("ka10001") == []


def test_server_errors_are_retried_then_unknown_symbol_is_an_api_error(server, client):
    server.add("ka10001", b"<html>bad gateway</html>", status=502)
    server.add("ka10001", {"return_code": 1901, "return_msg": "종목코드가 없습니다"})
    with pytest.raises(UnknownSymbolError, match="1901"):
        client.current_price("999999")
    assert len(server.calls("ka10001")) == 2 and client.stats["retries"] == 1


def test_revoke_gives_the_token_back(server, client):
    client.revoke()  # no token yet: nothing sent
    assert server.seen == []
    client.token()
    server.add("au10002", OK)
    client.revoke()
    (_, b), = server.calls("au10002")
    assert b == {"appkey": "APPKEY-0001", "secretkey": "SECRET-0001", "token": "TOKEN1"}


def test_an_expiring_token_is_replaced(server, client):
    assert client.token() == "TOKEN1"
    client.clock.set(kst_ns(date(2025, 9, 18), "085930"))  # 30 s before expires_dt (KST)
    assert client.token() == "TOKEN2"
