"""Kiwoom OAuth state (providers.md §2.1, §2.5): `au10001` token issue, `au10002` revoke, and the check of a
bearer token on REST calls and the WebSocket LOGIN. Token times run on the market clock; app keys appear
outside as `key_id` labels only.

The reference names no issuance limit, so every request gets a new token (earlier ones stay valid until they
expire or are revoked). It names credential codes 8001/8002/8011/8012 and token codes 8003/8005/...; which
text goes with which is not confirmed, so a bad key or secret is 8001 and every token problem 8005 (the code
the official client answers by refreshing its token), with texts marked as the simulator's.
"""

from __future__ import annotations

import secrets
import time

from observer.core.clock import KST, from_ns
from observer.sim.auth import Auth, Token

OK_MSG = "정상적으로 처리되었습니다"
E_CREDENTIALS = {"return_code": 8001, "return_msg": "App Key와 Secret Key 검증에 실패했습니다 (simulator)"}
E_TOKEN = {"return_code": 8005, "return_msg": "Token이 유효하지 않습니다 (simulator)"}


class KiwoomAuth(Auth):
    """Tokens of one Kiwoom app key each (the KIS Auth's key labels, stats and fault handling, Kiwoom's
    issue/revoke/check). There are no approval keys: `fault_approvals` hits nothing."""

    def issue(self, body: dict) -> tuple[int, dict]:
        app_key, secret = body.get("appkey"), body.get("secretkey")
        now = self.market.now_ns()
        with self.lock:
            self.stats["token_requests"] += 1
            if body.get("grant_type") != "client_credentials" or not self.app_ok(app_key, secret):
                self.stats["bad_appkey"] += 1
                return 200, E_CREDENTIALS
            token = secrets.token_urlsafe(64)
            t = Token(app_key, now, now + int(self.cfg.token_lifetime * 1e9))
            self.tokens[token] = t
            self.latest[app_key] = token
            self.stats["tokens_issued"] += 1
            self._count(app_key, "tokens_issued")
        self.truth.line("auth", {"event": "token_issued", "app_key_id": self.key_id(app_key),
                                 "t_ms": self.market.market_ms(), "ns": time.time_ns()})
        return 200, {"expires_dt": from_ns(t.expires_mt_ns, KST).strftime("%Y%m%d%H%M%S"), "token_type": "bearer",
                     "token": token, "return_code": 0, "return_msg": OK_MSG}

    def revoke(self, body: dict) -> tuple[int, dict]:
        with self.lock:
            if not self.app_ok(body.get("appkey"), body.get("secretkey")):
                self.stats["bad_appkey"] += 1
                return 200, E_CREDENTIALS
            t = self.tokens.get(str(body.get("token")))
            if t is None or t.state == "invalid" or t.app_key != body.get("appkey"):
                return 200, E_TOKEN
            t.state = "invalid"
            self.stats["revoked"] += 1
        return 200, {"return_code": 0, "return_msg": OK_MSG}

    def token_app_key(self, token: str | None) -> tuple[str | None, dict | None]:
        """(the token's app key, None) if it may be used now, else (None, the error body)."""
        if not token:
            return None, E_TOKEN
        with self.lock:
            t = self.tokens.get(token)
            if t is None or t.state != "ok" or self.market.now_ns() >= t.expires_mt_ns:
                return None, E_TOKEN
            return t.app_key, None

    def bearer_app_key(self, authorization: str | None) -> tuple[str | None, dict | None]:
        if not authorization or not authorization.lower().startswith("bearer "):
            return None, E_TOKEN
        return self.token_app_key(authorization[7:].strip())
