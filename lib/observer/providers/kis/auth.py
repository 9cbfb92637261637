"""KIS credentials shared between processes: the REST access token and the WebSocket approval key.

Issuing a token is limited (1 per minute, HTTP 403 EGW00133) and every issuance notifies the
account holder, so a token is requested only when no valid one is cached. The cache is a 0600 JSON
file under state/; every decision to issue is taken while holding flock on a lock file beside it,
so two processes that start together issue one token, and the second reads the first's.

Files are named by a hash of (base URL, app key): the key itself never appears in a file name,
and a paper token is never offered to the real server.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import orjson
import requests

from observer.core.clock import KST, NS, Clock, to_ns
from observer.core.config import with_defaults
from observer.core.logging import get_logger
from observer.core.redact import register_secret
from observer.providers.base import AuthError, ProviderError
from observer.store.fs import PRIVATE_MODE, ensure_dir, locked
from observer.store.state import write_bytes_atomic

log = get_logger(__name__)


def key_hash(base_url: str, app_key: str) -> str:
    return hashlib.sha256(f"{base_url}\n{app_key}".encode()).hexdigest()[:16]


def rest_timeouts(pcfg: dict) -> tuple[float, float]:
    """(connect, read) seconds of a REST request, from providers.kis.timeouts."""
    t = with_defaults(pcfg, "providers", "kis")["timeouts"]
    return float(t["connect_s"]), float(t["read_s"])


class CachedCredential:
    """A secret with an expiry, cached on disk and shared under flock.

    fetch(urgent) -> (value, expires_ns) performs the issuance; it is called only under the lock, only
    when the cache holds nothing usable (urgent=True: wait out limits and retry) or the value is due
    for a refresh ahead of expiry (urgent=False: one attempt, no waiting - a valid value is in hand, and
    every process needing the credential waits on this lock), and never sooner than min_interval_s
    after the previous request (by any process) for this key.
    """

    def __init__(self, path: Path, fetch: Callable[[bool], tuple[str, int]], clock: Clock, *, what: str,
                 min_interval_s: float, refresh_ahead_s: float, safety_s: float = 60.0,
                 on_issue: Callable[[str, str], None] | None = None):
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")
        self._fetch = fetch
        self.clock = clock
        self.what = what
        self.min_interval_s = min_interval_s
        self.refresh_ahead_s = refresh_ahead_s
        self.safety_s = safety_s
        self.on_issue = on_issue
        self._mem: dict | None = None
        self.issued = 0  # issuances by this process
        ensure_dir(path.parent)

    def _read(self) -> dict | None:
        try:
            c = orjson.loads(self.path.read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError, OSError):
            return None
        if not isinstance(c, dict):
            return None
        if c.get("value"):
            register_secret(c["value"])
        return c

    def peek(self) -> dict | None:
        """What the cache holds now ({value, expires_ns, requested_ns, ...}), issuing nothing; None when
        there is no readable cache. For a caller that decides itself whether to ask (preflight)."""
        return self._read()

    def next_request_in_s(self) -> float:
        """Seconds until the issuance limit lets any process ask again for this key (<= 0: now)."""
        c = self._read() or {}
        return (c.get("requested_ns", 0) + self.min_interval_s * NS - self.clock.now_ns()) / NS

    def _usable(self, c: dict | None, now: int, invalid: str | None) -> bool:
        return bool(c and c.get("value") and c["value"] != invalid
                    and c.get("expires_ns", 0) - self.safety_s * NS > now)

    def _refresh_due(self, c: dict, now: int) -> bool:
        return (c["expires_ns"] - self.refresh_ahead_s * NS < now
                and now - c.get("requested_ns", 0) > max(self.min_interval_s, 600) * NS)

    def get(self, invalid: str | None = None) -> str:
        """A valid value. `invalid`: the value the server just refused (expired/invalid): never return it."""
        now = self.clock.now_ns()
        m = self._mem
        if self._usable(m, now, invalid) and not self._refresh_due(m, now):
            return m["value"]
        # another process may hold the lock through a 61 s issuance wait: with a stop event on the
        # clock the wait ends (Stopped) as soon as the program is told to stop
        with locked(self.lock_path, stop_event=self.clock.stop_event):
            c = self._read()
            now = self.clock.now_ns()
            if self._usable(c, now, invalid) and not self._refresh_due(c, now):
                self._mem = c
                return c["value"]
            try:
                fresh = self._issue(c, invalid)
            except ProviderError as e:
                if self._usable(c, self.clock.now_ns(), invalid):  # refresh-ahead failed: keep the valid one
                    log.warning(f"{self.what} refresh failed; keeping the cached one until it expires",
                                extra={"error": str(e)[:200]})
                    self._mem = self._read() or c  # with the attempt time: no new attempt for 10 min
                    return c["value"]
                raise
            self._mem = fresh
            return fresh["value"]

    def _issue(self, cached: dict | None, invalid: str | None) -> dict:
        last = (cached or {}).get("requested_ns", 0)
        wait = (last + self.min_interval_s * NS - self.clock.now_ns()) / NS
        if wait > 0:
            log.info(f"waiting {wait:.1f} s before requesting a new {self.what} (issuance limit)")
            self.clock.sleep(wait)
        now = self.clock.now_ns()
        urgent = not self._usable(cached, now, invalid)
        record = dict(cached or {})
        record["requested_ns"] = now
        try:
            value, expires_ns = self._fetch(urgent)
        except BaseException:
            # remember the attempt so no process asks again within the limit
            write_bytes_atomic(self.path, orjson.dumps(record), mode=PRIVATE_MODE)
            raise
        register_secret(value)
        record.update({"value": value, "expires_ns": expires_ns, "issued_ns": now, "requested_ns": now})
        write_bytes_atomic(self.path, orjson.dumps(record), mode=PRIVATE_MODE)
        self.issued += 1
        if self.on_issue:
            self.on_issue(self.what, "invalidated" if invalid else ("refresh" if cached and cached.get("value") else "none cached"))
        return record


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
        self.token_cache = CachedCredential(Path(state_dir, f"kis_token_{h}.json"), self._fetch_token, clock,
                                            what="access token", min_interval_s=token_min_interval_s,
                                            refresh_ahead_s=token_refresh_ahead_s, on_issue=on_issue)
        self.approval_cache = CachedCredential(Path(state_dir, f"kis_approval_{h}.json"), self._fetch_approval,
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
