"""KIS REST on 127.0.0.1: OAuth (tokenP, Approval, revokeP) and the quotation calls, with KIS envelopes,
error bodies and limits (providers.md §1.2–1.5)."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
import threading
import time
import uuid
from collections import deque
from datetime import timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from observer.core.clock import KST, UTC, from_ns

if TYPE_CHECKING:
    from observer.sim.server import Simulator

log = logging.getLogger("observer.sim.rest")

QUOTE_PREFIX = "/uapi/domestic-stock/v1/quotations/"
MASTER_PREFIX = "/common/master/"  # the stock master files (public, no account): sim/master.py
TR_BY_PATH = {
    "inquire-price": "FHKST01010100",
    "inquire-asking-price-exp-ccn": "FHKST01010200",
    "inquire-time-itemconclusion": "FHPST01060000",
    "inquire-time-itemchartprice": "FHKST03010200",
    "inquire-daily-price": "FHKST01010400",
    "volume-rank": "FHPST01710000",
}
OK = {"rt_cd": "0", "msg_cd": "MCA00000", "msg1": "정상처리 되었습니다."}
E_RATE = {"rt_cd": "1", "msg_cd": "EGW00201", "msg1": "초당 거래건수를 초과하였습니다."}
E_EXPIRED = {"rt_cd": "1", "msg_cd": "EGW00123", "msg1": "기간이 만료된 token 입니다."}
E_INVALID = {"rt_cd": "1", "msg_cd": "EGW00121", "msg1": "유효하지 않은 token 입니다."}
E_INVALID_OAUTH = {"error_description": "유효하지 않은 token 입니다.", "error_code": "EGW00121"}
E_ISSUE = {"error_description": "접근토큰 발급 잠시 후 다시 시도하세요(1분당 1회)", "error_code": "EGW00133"}
E_APPKEY = {"error_description": "유효하지 않은 AppKey입니다.", "error_code": "EGW00103"}
E_APPKEY_RT = {"rt_cd": "1", "msg_cd": "EGW00103", "msg1": "유효하지 않은 AppKey입니다."}
# invented by the simulator (the reference has no text for these); the SIM prefix says so
E_TR_ID = {"rt_cd": "1", "msg_cd": "SIM00001", "msg1": "tr_id 헤더가 경로와 맞지 않습니다 (simulator)"}
E_SYMBOL = {"rt_cd": "1", "msg_cd": "SIM00002", "msg1": "종목코드를 찾을 수 없습니다 (simulator)"}
E_PARAM = {"rt_cd": "1", "msg_cd": "SIM00003", "msg1": "입력값이 올바르지 않습니다 (simulator)"}


class Token:
    __slots__ = ("app_key", "issued_mt_ns", "expires_mt_ns", "state")

    def __init__(self, app_key: str, issued: int, expires: int):
        self.app_key = app_key
        self.issued_mt_ns = issued
        self.expires_mt_ns = expires
        self.state = "ok"  # ok | expired | invalid (the last two set by faults)


class Auth:
    """Access tokens, approval keys, issuance limits. Token times run on the market clock."""

    def __init__(self, sim: Simulator):
        self.sim = sim
        cfg = sim.cfg
        self.app_key = cfg.app_key
        self.app_secret = cfg.app_secret
        self.lock = threading.Lock()
        self.tokens: dict[str, Token] = {}
        self.latest: dict[str, str] = {}  # app key → newest token
        self.last_issue_ns: dict[str, int] = {}
        self.approvals: dict[str, str] = {}  # approval key → app key
        self.key_ids: dict[str, str] = {}
        self.stats = {"token_requests": 0, "tokens_issued": 0, "tokens_reused": 0, "issue_rejected": 0,
                      "bad_appkey": 0, "approvals": 0, "revoked": 0, "approvals_invalidated": 0}
        self.per_key: dict[str, dict[str, int]] = {}

    def key_id(self, app_key: str | None) -> str | None:
        """A stable non-secret label for an app key (stats and ground truth never carry the key)."""
        if app_key is None:
            return None
        kid = self.key_ids.get(app_key)
        if kid is None:
            kid = "k" + hashlib.sha256(app_key.encode()).hexdigest()[:10]
            self.key_ids[app_key] = kid
        return kid

    def _count(self, app_key: str, what: str) -> None:
        d = self.per_key.setdefault(self.key_id(app_key), {})
        d[what] = d.get(what, 0) + 1

    def app_ok(self, app_key, app_secret) -> bool:
        if not isinstance(app_key, str) or not isinstance(app_secret, str) or not app_key or not app_secret:
            return False
        if self.app_key is not None and app_key != self.app_key:
            return False
        return self.app_secret is None or app_secret == self.app_secret

    def issue(self, body: dict) -> tuple[int, dict]:
        app_key, secret = body.get("appkey"), body.get("appsecret")
        now = self.sim.now_ns()
        with self.lock:
            self.stats["token_requests"] += 1
            if body.get("grant_type") != "client_credentials" or not self.app_ok(app_key, secret):
                self.stats["bad_appkey"] += 1
                return 403, E_APPKEY
            self._count(app_key, "token_requests")
            last = self.last_issue_ns.get(app_key)
            if last is not None and now - last < self.sim.cfg.token_issue_interval * 1e9:
                self.stats["issue_rejected"] += 1
                self._count(app_key, "issue_rejected")
                self.sim.truth.line("auth", {"event": "token_rejected", "app_key_id": self.key_id(app_key),
                                             "t_ms": self.sim.market_ms(), "ns": time.time_ns()})
                return 403, E_ISSUE
            self.last_issue_ns[app_key] = now
            # "a request within 6 h of the last issuance returns the same token" (OAuth document)
            cur = self.tokens.get(self.latest.get(app_key, ""))
            reuse = self.sim.cfg.token_reuse_hours * 3600e9
            if cur is not None and cur.state == "ok" and now - cur.issued_mt_ns < reuse and now < cur.expires_mt_ns:
                token, t = self.latest[app_key], cur
                self.stats["tokens_reused"] += 1
                self._count(app_key, "tokens_reused")
                event = "token_reused"
            else:
                token = self._jwt(app_key, now)
                t = Token(app_key, now, now + int(self.sim.cfg.token_lifetime * 1e9))
                self.tokens[token] = t
                self.latest[app_key] = token
                self.stats["tokens_issued"] += 1
                self._count(app_key, "tokens_issued")
                event = "token_issued"
        self.sim.truth.line("auth", {"event": event, "app_key_id": self.key_id(app_key),
                                     "t_ms": self.sim.market_ms(), "ns": time.time_ns()})
        remaining = max(0, (t.expires_mt_ns - now) // 1_000_000_000)
        expires = from_ns(t.expires_mt_ns, KST).strftime("%Y-%m-%d %H:%M:%S")
        return 200, {"access_token": token, "access_token_token_expired": expires, "token_type": "Bearer",
                     "expires_in": int(remaining)}

    def _jwt(self, app_key: str, now: int) -> str:
        def b64(d: dict) -> str:
            return base64.urlsafe_b64encode(json.dumps(d, separators=(",", ":")).encode()).rstrip(b"=").decode()

        payload = {"sub": "token", "aud": self.key_id(app_key), "prdt_cd": "", "iss": "unogw", "exp":
                   int((now + self.sim.cfg.token_lifetime * 1e9) // 1e9), "iat": now // 1_000_000_000,
                   "jti": secrets.token_hex(8)}
        return f"{b64({'typ': 'JWT', 'alg': 'HS512'})}.{b64(payload)}.{secrets.token_urlsafe(64)}"

    def approval(self, body: dict) -> tuple[int, dict]:
        app_key, secret = body.get("appkey"), body.get("secretkey")
        with self.lock:
            if body.get("grant_type") != "client_credentials" or not self.app_ok(app_key, secret):
                self.stats["bad_appkey"] += 1
                return 403, E_APPKEY
            key = str(uuid.uuid4())
            self.approvals[key] = app_key
            self.stats["approvals"] += 1
            self._count(app_key, "approvals")
        return 200, {"approval_key": key}

    def approval_app_key(self, approval_key) -> str | None:
        if not isinstance(approval_key, str):
            return None
        return self.approvals.get(approval_key)

    def revoke(self, body: dict) -> tuple[int, dict]:
        with self.lock:
            t = self.tokens.get(str(body.get("token")))
            if t is None or t.state == "invalid" or t.app_key != body.get("appkey"):
                return 403, E_INVALID_OAUTH
            t.state = "invalid"
            self.stats["revoked"] += 1
        return 200, {"code": 200, "message": "접근토큰 폐기에 성공하였습니다"}

    def check(self, authorization: str | None, app_key: str | None, app_secret: str | None) -> dict | None:
        """None if the call may proceed, else the error body."""
        if not self.app_ok(app_key, app_secret):
            return E_APPKEY_RT
        if not authorization or not authorization.startswith("Bearer "):
            return E_INVALID
        with self.lock:
            t = self.tokens.get(authorization[7:].strip())
            if t is None or t.state == "invalid" or t.app_key != app_key:
                return E_INVALID
            if t.state == "expired" or self.sim.now_ns() >= t.expires_mt_ns:
                return E_EXPIRED
        return None

    def fault_tokens(self, state: str, reset_issue_limit: bool) -> int:
        with self.lock:
            n = 0
            for t in self.tokens.values():
                if t.state == "ok":
                    t.state = state
                    n += 1
            if reset_issue_limit:
                self.last_issue_ns.clear()
        return n

    def fault_approvals(self, app_key: str | None = None) -> int:
        """Forget every approval key issued so far (of `app_key` only, if given): the next subscribe
        that offers one gets OPSP0011; keys issued afterwards work."""
        with self.lock:
            gone = [k for k, owner in self.approvals.items() if app_key is None or owner == app_key]
            for k in gone:
                del self.approvals[k]
            self.stats["approvals_invalidated"] += len(gone)
        return len(gone)


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


class KisHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "SimKIS/1.0"
    sys_version = ""

    @property
    def sim(self) -> Simulator:
        return self.server.sim  # type: ignore[attr-defined]

    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        pass

    def date_time_string(self, timestamp=None):
        ns = self.sim.now_ns() + int(self.sim.clock_skew_s() * 1e9)
        return format_datetime(from_ns(ns, UTC).replace(microsecond=0), usegmt=True)

    def _reply(self, status: int, body, tr_id: str | None = None, text: bool = False) -> None:
        data = body.encode() if text else json.dumps(body, ensure_ascii=False).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain" if text else "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            if tr_id:
                self.send_header("tr_id", tr_id)
                self.send_header("tr_cont", "D")
            self.send_header("gt_uid", secrets.token_hex(16))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            self.close_connection = True

    def _body(self) -> dict | None:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            d = json.loads(raw or b"{}")
        except ValueError:
            return None
        return d if isinstance(d, dict) else None

    def _faults(self, oauth: bool) -> bool:
        """Apply slow/5xx faults; True when a reply was already sent."""
        sim = self.sim
        slow = sim.faults.first("rest_slow")
        if slow and (not oauth or slow.spec.get("scope") == "all"):
            slow.hits += 1
            time.sleep(float(slow.spec["delay"]))
        f5 = sim.faults.first("rest_5xx")
        if f5 and (not oauth or f5.spec.get("scope") == "all"):
            f5.hits += 1
            sim.count("rest_5xx")
            status = int(f5.spec.get("status", 500))
            self._reply(status, {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
                                 504: "Gateway Timeout"}.get(status, "Server Error"), text=True)
            return True
        return False

    def do_POST(self):  # noqa: N802 - stdlib name
        sim = self.sim
        path = urlsplit(self.path).path
        body = self._body()
        if self._faults(oauth=True):
            return
        if body is None:
            self._reply(400, E_APPKEY)
            return
        if path == "/oauth2/tokenP":
            status, out = sim.auth.issue(body)
        elif path == "/oauth2/Approval":
            status, out = sim.auth.approval(body)
        elif path == "/oauth2/revokeP":
            status, out = sim.auth.revoke(body)
        else:
            self._reply(404, {"error_code": "404", "error_description": "not found"})
            return
        sim.count(f"post {path} {status}")
        self._reply(status, out)

    def _master(self, name: str) -> None:
        f = self.sim.faults.first("master_bad")
        if f:
            f.hits += 1
        status, data = self.sim.masters.serve(name, f.spec["mode"] if f else None)
        self.sim.count(f"master {name} {status}")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/zip" if status == 200 else "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            self.close_connection = True

    def do_GET(self):  # noqa: N802 - stdlib name
        sim = self.sim
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
        kid = sim.auth.key_id(app_key) if app_key else "-"
        sim.count_key(kid, "requests")
        if self._faults(oauth=False):
            return
        if sim.faults.first("rate_limit_storm"):
            sim.count_key(kid, "rate_limited")
            sim.count_key(kid, "storm")
            self._reply(500, E_RATE, tr_id)
            return
        if app_key and not sim.limiter.allow(app_key):
            sim.count_key(kid, "rate_limited")
            self._reply(500, E_RATE, tr_id)
            return
        err = sim.auth.check(h.get("authorization"), app_key, h.get("appsecret"))
        if err is not None:
            sim.count_key(kid, err["msg_cd"])
            self._reply(500, err, tr_id)
            return
        if want_tr is None:
            self._reply(404, {"error_code": "404", "error_description": "not found"})
            return
        if tr_id != want_tr:
            sim.count_key(kid, "bad_tr_id")
            self._reply(500, E_TR_ID, tr_id)
            return
        q = {k: v[0] for k, v in parse_qs(u.query, keep_blank_values=True).items()}
        try:
            out = sim.quotes.answer(name, q)
        except KeyError:
            out = E_SYMBOL
        except ValueError:
            out = E_PARAM
        sim.count_key(kid, "ok" if out.get("rt_cd") == "0" else out.get("msg_cd", "error"))
        sim.count(f"tr {tr_id}")
        self._reply(200, out, tr_id)


class RestServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, sim: Simulator, host: str, port: int, handler=KisHandler):
        self.sim = sim
        super().__init__((host, port), handler)
        self.port = self.server_address[1]
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1},
                                       name=f"sim-http-{self.port}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def kst_text(ns: int) -> str:
    return (from_ns(ns, UTC) + timedelta(hours=9)).strftime("%Y%m%d%H%M%S")
