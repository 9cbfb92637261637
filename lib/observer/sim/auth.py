"""KIS OAuth state: access tokens, approval keys, issuance limits (providers.md §1.2). Token times run on the
market clock; app keys appear outside as `key_id` labels only."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
import uuid
from typing import TYPE_CHECKING

from observer.core.clock import KST, from_ns

if TYPE_CHECKING:
    from observer.sim.config import SimConfig
    from observer.sim.interfaces import MarketView, Recorder

E_EXPIRED = {"rt_cd": "1", "msg_cd": "EGW00123", "msg1": "기간이 만료된 token 입니다."}
E_INVALID = {"rt_cd": "1", "msg_cd": "EGW00121", "msg1": "유효하지 않은 token 입니다."}
E_INVALID_OAUTH = {"error_description": "유효하지 않은 token 입니다.", "error_code": "EGW00121"}
E_ISSUE = {"error_description": "접근토큰 발급 잠시 후 다시 시도하세요(1분당 1회)", "error_code": "EGW00133"}
E_APPKEY = {"error_description": "유효하지 않은 AppKey입니다.", "error_code": "EGW00103"}
E_APPKEY_RT = {"rt_cd": "1", "msg_cd": "EGW00103", "msg1": "유효하지 않은 AppKey입니다."}


class Token:
    __slots__ = ("app_key", "issued_mt_ns", "expires_mt_ns", "state")

    def __init__(self, app_key: str, issued: int, expires: int):
        self.app_key = app_key
        self.issued_mt_ns = issued
        self.expires_mt_ns = expires
        self.state = "ok"  # ok | expired | invalid (the last two set by faults)


class Auth:
    """Access tokens, approval keys, issuance limits. Token times run on the market clock."""

    def __init__(self, cfg: SimConfig, market: MarketView, truth: Recorder):
        self.cfg = cfg
        self.market = market
        self.truth = truth
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
        now = self.market.now_ns()
        with self.lock:
            self.stats["token_requests"] += 1
            if body.get("grant_type") != "client_credentials" or not self.app_ok(app_key, secret):
                self.stats["bad_appkey"] += 1
                return 403, E_APPKEY
            self._count(app_key, "token_requests")
            last = self.last_issue_ns.get(app_key)
            if last is not None and now - last < self.cfg.token_issue_interval * 1e9:
                self.stats["issue_rejected"] += 1
                self._count(app_key, "issue_rejected")
                self.truth.line("auth", {"event": "token_rejected", "app_key_id": self.key_id(app_key),
                                             "t_ms": self.market.market_ms(), "ns": time.time_ns()})
                return 403, E_ISSUE
            self.last_issue_ns[app_key] = now
            # "a request within 6 h of the last issuance returns the same token" (OAuth document)
            cur = self.tokens.get(self.latest.get(app_key, ""))
            reuse = self.cfg.token_reuse_hours * 3600e9
            if cur is not None and cur.state == "ok" and now - cur.issued_mt_ns < reuse and now < cur.expires_mt_ns:
                token, t = self.latest[app_key], cur
                self.stats["tokens_reused"] += 1
                self._count(app_key, "tokens_reused")
                event = "token_reused"
            else:
                token = self._jwt(app_key, now)
                t = Token(app_key, now, now + int(self.cfg.token_lifetime * 1e9))
                self.tokens[token] = t
                self.latest[app_key] = token
                self.stats["tokens_issued"] += 1
                self._count(app_key, "tokens_issued")
                event = "token_issued"
        self.truth.line("auth", {"event": event, "app_key_id": self.key_id(app_key),
                                     "t_ms": self.market.market_ms(), "ns": time.time_ns()})
        remaining = max(0, (t.expires_mt_ns - now) // 1_000_000_000)
        expires = from_ns(t.expires_mt_ns, KST).strftime("%Y-%m-%d %H:%M:%S")
        return 200, {"access_token": token, "access_token_token_expired": expires, "token_type": "Bearer",
                     "expires_in": int(remaining)}

    def _jwt(self, app_key: str, now: int) -> str:
        def b64(d: dict) -> str:
            return base64.urlsafe_b64encode(json.dumps(d, separators=(",", ":")).encode()).rstrip(b"=").decode()

        payload = {"sub": "token", "aud": self.key_id(app_key), "prdt_cd": "", "iss": "unogw", "exp":
                   int((now + self.cfg.token_lifetime * 1e9) // 1e9), "iat": now // 1_000_000_000,
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
            if t.state == "expired" or self.market.now_ns() >= t.expires_mt_ns:
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
