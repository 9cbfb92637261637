"""KIS credentials shared between processes: the REST access token and the WebSocket approval key.

Issuing a token is limited (1 per minute, HTTP 403 EGW00133) and every issuance notifies the
account holder, so a token is requested only when no valid one is cached. Both live in the shared
credential cache (providers/credcache.py: a 0600 file under state/, issuance decided under flock);
this module is KIS's issuance protocol: tokenP and Approval, their replies and refusals. Files are
named kis_token_<hash>.json / kis_approval_<hash>.json by a hash of (base URL, app key).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import requests

from observer.core.clock import KST, NS, Clock, to_ns
from observer.core.config import with_defaults
from observer.core.logging import get_logger
from observer.core.redact import register_secret
from observer.providers.base import AuthError, ProviderError
from observer.providers.credcache import CredentialCache, key_hash

log = get_logger(__name__)


def rest_timeouts(pcfg: dict) -> tuple[float, float]:
    """(connect, read) seconds of a REST request, from providers.kis.timeouts."""
    t = with_defaults(pcfg, "providers", "kis")["timeouts"]
    return float(t["connect_s"]), float(t["read_s"])


def parse_token_reply(body: dict, now_ns: int) -> tuple[str, int]:
    token = body.get("access_token")
    if not token or not isinstance(token, str):
        raise AuthError("tokenP reply has no access_token")
    expires = None
    if isinstance(body.get("expires_in"), (int, float)) and body["expires_in"] > 0:
        expires = now_ns + int(body["expires_in"]) * NS
    text = body.get("access_token_token_expired")
    if expires is None and isinstance(text, str):
        try:
            expires = to_ns(datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=KST))
        except ValueError:
            pass
    if expires is None:
        expires = now_ns + 23 * 3600 * NS
    return token, expires


class KisAuth:
    """Access token + approval key for one app key on one server."""

    @classmethod
    def from_config(cls, pcfg: dict, *, base_url: str, app_key: str, app_secret: str, state_dir: Path,
                    clock: Clock, **kw) -> KisAuth:
        """The one constructor from the providers.kis config (timeouts, token.*); kw: session, on_issue,
        max_attempts (or timeouts) of this caller."""
        tk = with_defaults(pcfg, "providers", "kis")["token"]
        kw.setdefault("timeouts", rest_timeouts(pcfg))
        return cls(base_url=base_url, app_key=app_key, app_secret=app_secret, state_dir=state_dir, clock=clock,
                   token_min_interval_s=float(tk["min_interval_s"]),
                   token_refresh_ahead_s=float(tk["refresh_ahead_s"]),
                   approval_ttl_s=float(tk["approval_ttl_s"]), **kw)

    def __init__(self, *, base_url: str, app_key: str, app_secret: str, state_dir: Path, clock: Clock,
                 session: requests.Session | None = None, timeouts: tuple[float, float] = (3.05, 10.0),
                 token_min_interval_s: float = 61.0, token_refresh_ahead_s: float = 3600.0,
                 approval_ttl_s: float = 82800.0, approval_min_interval_s: float = 5.0,
                 max_attempts: int = 4, on_issue: Callable[[str, str], None] | None = None):
        if not app_key or not app_secret:
            raise AuthError("KIS app key/secret missing (see providers.kis.accounts in the config)")
        register_secret(app_key)
        register_secret(app_secret)
        self.base_url = base_url.rstrip("/")
        self.app_key = app_key
        self.app_secret = app_secret
        self.clock = clock
        self.session = session or requests.Session()
        self.timeouts = timeouts
        self.max_attempts = max_attempts
        self.approval_ttl_s = approval_ttl_s
        # the broker's definitive refusal of this key/secret (4xx other than the issuance limit): asking
        # again cannot succeed, and each attempt waits out the issuance limit, so every later request for
        # a credential fails at once with the same reason
        self.refused: str | None = None
        h = key_hash(self.base_url, app_key)
        self.token_cache = CredentialCache(Path(state_dir, f"kis_token_{h}.json"), self._fetch_token, clock,
                                           what="access token", min_interval_s=token_min_interval_s,
                                           refresh_ahead_s=token_refresh_ahead_s, on_issue=on_issue)
        self.approval_cache = CredentialCache(Path(state_dir, f"kis_approval_{h}.json"), self._fetch_approval,
                                              clock, what="approval key", min_interval_s=approval_min_interval_s,
                                              refresh_ahead_s=3600.0, on_issue=on_issue)

    def token(self, invalid: str | None = None) -> str:
        if self.refused:
            raise AuthError(self.refused)
        return self.token_cache.get(invalid)

    def approval_key(self, invalid: str | None = None) -> str:
        if self.refused:
            raise AuthError(self.refused)
        return self.approval_cache.get(invalid)

    def _post(self, path: str, body: dict, what: str, urgent: bool = True) -> dict:
        """POST an OAuth request. urgent=False (a valid credential is still cached): one attempt, no
        waiting on EGW00133, 5xx or network errors - the caller keeps the valid one and tries later."""
        url = self.base_url + path
        attempts = self.max_attempts if urgent else 1
        for attempt in range(1, attempts + 1):
            try:
                r = self.session.post(url, json=body, timeout=self.timeouts,
                                      headers={"content-type": "application/json; charset=utf-8"})
            except (requests.ConnectionError, requests.Timeout) as e:
                if attempt == attempts:
                    raise ProviderError(f"{what}: {path} unreachable after {attempt} attempts: {type(e).__name__}") from None
                self.clock.sleep(min(30.0, 0.5 * 2 ** attempt) * random.uniform(0.5, 1.0))
                continue
            try:
                reply = r.json()
            except ValueError:
                reply = {}
            if not isinstance(reply, dict):
                reply = {}
            code = str(reply.get("error_code") or reply.get("msg_cd") or "")
            if r.status_code == 200 and not code.startswith("EGW"):
                return reply
            if code == "EGW00133":  # issuance limit: 1 per minute
                if not urgent:
                    raise ProviderError(f"{what}: issuance refused (EGW00133, 1 per minute); the cached one is kept")
                if attempt == attempts:
                    raise AuthError(f"{what}: issuance still refused (EGW00133) after {attempt} attempts")
                log.warning(f"{what}: EGW00133 (1 per minute); waiting 61 s")
                self.clock.sleep(61.0)
                continue
            if r.status_code >= 500:  # the broker is unwell: not a refusal of the credentials
                if attempt == attempts:
                    raise ProviderError(f"{what}: {path} HTTP {r.status_code} {code} after {attempt} attempts".rstrip())
                self.clock.sleep(min(30.0, 0.5 * 2 ** attempt) * random.uniform(0.5, 1.0))
                continue
            desc = str(reply.get("error_description") or reply.get("msg1") or "")[:200]
            self.refused = f"{what}: {path} refused: HTTP {r.status_code} {code} {desc}".rstrip()
            raise AuthError(self.refused)
        raise AuthError(f"{what}: no reply")  # pragma: no cover

    def _fetch_token(self, urgent: bool = True) -> tuple[str, int]:
        body = self._post("/oauth2/tokenP", {"grant_type": "client_credentials", "appkey": self.app_key,
                                             "appsecret": self.app_secret}, "access token", urgent)
        token, expires = parse_token_reply(body, self.clock.now_ns())
        register_secret(token)
        return token, expires

    def _fetch_approval(self, urgent: bool = True) -> tuple[str, int]:
        body = self._post("/oauth2/Approval", {"grant_type": "client_credentials", "appkey": self.app_key,
                                               "secretkey": self.app_secret}, "approval key", urgent)
        key = body.get("approval_key")
        if not key or not isinstance(key, str):
            raise AuthError("Approval reply has no approval_key")
        register_secret(key)
        return key, self.clock.now_ns() + int(self.approval_ttl_s * NS)
