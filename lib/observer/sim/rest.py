"""KIS REST on 127.0.0.1: OAuth (tokenP, Approval, revokeP) and the quotation calls, with KIS envelopes,
error bodies and limits (providers.md §1.2–1.5). Sees the market, its faults and its OAuth state only
through what it is given (interfaces.py)."""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections import deque
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from observer.core.clock import UTC, from_ns
from observer.sim.auth import E_APPKEY
from observer.sim.httpserver import ThreadedServer

log = logging.getLogger("observer.sim.rest")

QUOTE_PREFIX = "/uapi/domestic-stock/v1/quotations/"
MASTER_PREFIX = "/common/master/"  # the stock master files (public, no account): sim/master.py
TR_BY_PATH = {
    "inquire-price": "FHKST01010100",
    "inquire-asking-price-exp-ccn": "FHKST01010200",
    "inquire-time-itemconclusion": "FHPST01060000",
    "inquire-time-itemchartprice": "FHKST03010200",
    "inquire-daily-price": "FHKST01010400",
    "inquire-daily-itemchartprice": "FHKST03010100",
    "search-info": "CTPF1604R",
    "volume-rank": "FHPST01710000",
}
OK = {"rt_cd": "0", "msg_cd": "MCA00000", "msg1": "정상처리 되었습니다."}
E_RATE = {"rt_cd": "1", "msg_cd": "EGW00201", "msg1": "초당 거래건수를 초과하였습니다."}
# invented by the simulator (the reference has no text for these); the SIM prefix says so
E_TR_ID = {"rt_cd": "1", "msg_cd": "SIM00001", "msg1": "tr_id 헤더가 경로와 맞지 않습니다 (simulator)"}
E_SYMBOL = {"rt_cd": "1", "msg_cd": "SIM00002", "msg1": "종목코드를 찾을 수 없습니다 (simulator)"}
E_PARAM = {"rt_cd": "1", "msg_cd": "SIM00003", "msg1": "입력값이 올바르지 않습니다 (simulator)"}
MAX_BODY = 1 << 20  # a request body larger than this is refused unread


class RateLimiter:
    """Per app key: at most `limit` accepted calls in any sliding 1-second window of real time."""

    def __init__(self, limit: float):
        self.limit = limit
        self.lock = threading.Lock()
        self.windows: dict[str, deque] = {}

    def allow(self, app_key: str) -> bool:
        if self.limit <= 0:
            return True
        now = time.monotonic()
        with self.lock:
            w = self.windows.setdefault(app_key, deque())
            while w and now - w[0] >= 1.0:
                w.popleft()
            if len(w) >= self.limit:
                return False
            w.append(now)
            return True


class SimHandler(BaseHTTPRequestHandler):
    """What every provider's REST handler shares: the market-time Date header, the JSON body, the slow and 5xx
    faults of its provider and the provider's reply latency (`server.latency`, real seconds)."""

    protocol_version = "HTTP/1.1"
    sys_version = ""

    server: RestServer

    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        pass

    def date_time_string(self, timestamp=None):
        skew = self.server.faults.first("clock_skew")
        ns = self.server.market.now_ns() + (int(float(skew.spec["skew"]) * 1e9) if skew else 0)
        return format_datetime(from_ns(ns, UTC).replace(microsecond=0), usegmt=True)

    def _send(self, status: int, data: bytes, content_type: str, headers: dict | None = None) -> None:
        if self.server.latency > 0:
            time.sleep(self.server.latency)
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            self.close_connection = True

    def _body(self) -> dict | None:
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            n = -1
        if n < 0 or n > MAX_BODY:
            return None
        raw = self.rfile.read(n) if n else b""
        try:
            d = json.loads(raw or b"{}")
        except ValueError:
            return None
        return d if isinstance(d, dict) else None

    def _faults(self, oauth: bool) -> bool:
        """Apply slow/5xx faults; True when a reply was already sent."""
        srv = self.server
        slow = srv.faults.first("rest_slow")
        if slow and (not oauth or slow.spec.get("scope") == "all"):
            slow.hits += 1
            time.sleep(float(slow.spec["delay"]))
        f5 = srv.faults.first("rest_5xx")
        if f5 and (not oauth or f5.spec.get("scope") == "all"):
            f5.hits += 1
            srv.counters.count("rest_5xx")
            status = int(f5.spec.get("status", 500))
            self._send(status, {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
                                504: "Gateway Timeout"}.get(status, "Server Error").encode(), "text/plain")
            return True
        return False


    def _limited(self, kid: str, app_key: str | None) -> bool:
        """Over a limit (counted for `kid`): a rate-limit storm is in force, or `app_key` went over its rate."""
        srv = self.server
        count_key = srv.counters.count_key
        if srv.faults.first("rate_limit_storm"):
            count_key(kid, "rate_limited")
            count_key(kid, "storm")
            return True
        if app_key and not srv.limiter.allow(app_key):
            count_key(kid, "rate_limited")
            return True
        return False


class KisHandler(SimHandler):
    server_version = "SimKIS/1.0"

    def _reply(self, status: int, body, tr_id: str | None = None, text: bool = False) -> None:
        data = body.encode() if text else json.dumps(body, ensure_ascii=False).encode()
        headers = {"tr_id": tr_id, "tr_cont": "D"} if tr_id else {}
        headers["gt_uid"] = secrets.token_hex(16)
        self._send(status, data, "text/plain" if text else "application/json; charset=UTF-8", headers)

    def do_POST(self):  # noqa: N802 - stdlib name
        srv = self.server
        path = urlsplit(self.path).path
        body = self._body()
        if self._faults(oauth=True):
            return
        if body is None:
            self._reply(400, E_APPKEY)
            return
        if path == "/oauth2/tokenP":
            status, out = srv.auth.issue(body)
        elif path == "/oauth2/Approval":
            status, out = srv.auth.approval(body)
        elif path == "/oauth2/revokeP":
            status, out = srv.auth.revoke(body)
        else:
            self._reply(404, {"error_code": "404", "error_description": "not found"})
            return
        srv.counters.count(f"post {path} {status}")
        self._reply(status, out)

    def _master(self, name: str) -> None:
        srv = self.server
        f = srv.faults.first("master_bad")
        if f:
            f.hits += 1
        status, data = srv.masters.serve(name, f.spec["mode"] if f else None)
        srv.counters.count(f"master {name} {status}")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/zip" if status == 200 else "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            self.close_connection = True

    def do_GET(self):  # noqa: N802 - stdlib name
        srv = self.server
        u = urlsplit(self.path)
        if u.path.startswith(MASTER_PREFIX):
            self._master(u.path[len(MASTER_PREFIX):])
            return
        if not u.path.startswith(QUOTE_PREFIX):
            self._reply(404, {"error_code": "404", "error_description": "not found"})
            return
        name = u.path[len(QUOTE_PREFIX):]
        want_tr = TR_BY_PATH.get(name)
        h = self.headers
        tr_id = h.get("tr_id", "")
        app_key = h.get("appkey")
        kid = srv.auth.key_id(app_key) if app_key else "-"
        count_key = srv.counters.count_key
        count_key(kid, "requests")
        if self._faults(oauth=False):
            return
        if self._limited(kid, app_key):
            self._reply(500, E_RATE, tr_id)
            return
        err = srv.auth.check(h.get("authorization"), app_key, h.get("appsecret"))
        if err is not None:
            count_key(kid, err["msg_cd"])
            self._reply(500, err, tr_id)
            return
        if want_tr is None:
            self._reply(404, {"error_code": "404", "error_description": "not found"})
            return
        if tr_id != want_tr:
            count_key(kid, "bad_tr_id")
            self._reply(500, E_TR_ID, tr_id)
            return
        q = {k: v[0] for k, v in parse_qs(u.query, keep_blank_values=True).items()}
        try:
            out = srv.quotes.answer(name, q)
        except KeyError:
            out = E_SYMBOL
        except ValueError:
            out = E_PARAM
        count_key(kid, "ok" if out.get("rt_cd") == "0" else out.get("msg_cd", "error"))
        srv.counters.count(f"tr {tr_id}")
        self._reply(200, out, tr_id)


class RestServer(ThreadedServer):
    """One provider's HTTP server: `handler` serves it, `parts` (market, faults, auth, counters, ...) are what
    the handler may reach through `self.server`; `latency` (real seconds) delays every reply."""

    request_queue_size = 64

    def __init__(self, host: str, port: int, *, handler=KisHandler, latency: float = 0.0, **parts):
        self.latency = latency
        for k, v in parts.items():
            setattr(self, k, v)
        super().__init__(host, port, handler, name="sim-http-{port}")
