"""Kiwoom REST client: token, quote, tick and minute charts over requests, with pacing, retries and paging.

Errors (protocol.classify decides what a reply is):
- network errors and HTTP 5xx: retried with exponential backoff and jitter (max_attempts);
- rate limit (return_code 1700, or HTTP 429 in either body form): the shared bucket is pushed back
  (every process using the app key waits) and the call retried, up to rl_max_retries, then
  RateLimitedError;
- token refused (HTTP 401, a token code, or 8031/8103 as the official client treats them): one new
  token and one retry; a second refusal is an AuthError naming the code;
- credentials, real/paper mismatch, device/IP registration: AuthError naming the code, never retried;
- anything else: ApiError (UnknownSymbolError for 1901/1902) with the broker's code and message.
Every wait goes through the Clock, so a program's stop ends it. Tokens and keys are registered with the
redactor: they never reach a log.

The token is shared by every process using the app key on this server: the credential cache
(providers/credcache.py) keeps it in state_dir/kiwoom_token_<hash of URL and key>.json and issues one only
when none valid is cached, so processes starting together issue one token, and a refused token is
replaced once for all of them.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter

from observer.core.clock import Clock
from observer.core.ratelimit import TokenBucket, bucket_name
from observer.core.redact import register_secret
from observer.providers.base import ApiError, AuthError, ProviderError, RateLimitedError
from observer.providers.credcache import CredentialCache, key_hash
from observer.providers.kiwoom import protocol as p
from observer.store.fs import SharedRecord

DEFAULT_RATE_PER_S = 4.0  # the broker's limit is not published; community clients pace at 4-5/s
TOKEN_SAFETY_S = 60.0     # a token this close to its expiry is replaced before use
# the broker publishes no issuance limit: a second between requests keeps a refusal loop from hammering it
TOKEN_MIN_INTERVAL_S = 1.0
TOKEN_REFRESH_AHEAD_S = 3600.0  # a token this close to its expiry is replaced when convenient


class KiwoomRest:
    def __init__(self, base_url: str, *, app_key: str, secret_key: str, state_dir: Path, clock: Clock | None = None,
                 session: requests.Session | None = None, timeouts: tuple[float, float] = (3.05, 10.0),
                 rate_per_s: float = DEFAULT_RATE_PER_S, max_attempts: int = 5, backoff_base_s: float = 0.5,
                 backoff_max_s: float = 30.0, rl_max_retries: int = 20, rl_backoff_s: float = 1.0,
                 page_pause_s: float = 0.2, max_pages: int = 10,
                 refresh_codes: frozenset[int] = p.REFRESH_ONCE_CODES,
                 token_min_interval_s: float = TOKEN_MIN_INTERVAL_S,
                 token_refresh_ahead_s: float = TOKEN_REFRESH_AHEAD_S,
                 on_issue: Callable[[str, str], None] | None = None):
        if not base_url.startswith(("https://", "http://")):
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        if not app_key or not secret_key:
            raise AuthError("app key / secret key missing")
        register_secret(app_key)
        register_secret(secret_key)
        self.base_url = base_url.rstrip("/")
        self.app_key = app_key
        self.secret_key = secret_key
        self.clock = clock or Clock()
        self.timeouts = timeouts
        self.max_attempts = max_attempts
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.rl_max_retries = rl_max_retries
        self.rl_backoff_s = rl_backoff_s
        self.page_pause_s = page_pause_s
        self.max_pages = max_pages
        self.refresh_codes = refresh_codes
        self.session = session or requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=4, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.bucket = TokenBucket(SharedRecord(Path(state_dir, bucket_name("kiwoom", app_key + "\n" + self.base_url))),
                                  rate_per_s, 1.0, self.clock)
        self.token_cache = CredentialCache(Path(state_dir, f"kiwoom_token_{key_hash(self.base_url, app_key)}.json"),
                                           self._fetch_token, self.clock, what="access token",
                                           min_interval_s=token_min_interval_s, refresh_ahead_s=token_refresh_ahead_s,
                                           safety_s=TOKEN_SAFETY_S, on_issue=on_issue)
        self.stats = {"http_requests": 0, "rate_limited": 0, "retries": 0, "token_refreshes": 0, "tokens_issued": 0}

    def close(self) -> None:
        self.session.close()
        self.bucket.close()

    # -- plumbing ----------------------------------------------------------------------------
    def _sleep_backoff(self, attempt: int) -> None:
        self.clock.sleep(min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0))

    def _send(self, req: p.Request, token: str | None, next_key: str | None, max_attempts: int
              ) -> tuple[int, object, dict]:
        """One POST, network errors and 5xx retried up to max_attempts; (status, parsed body or None, headers)."""
        attempt = 0
        while True:
            self.bucket.acquire()
            self.stats["http_requests"] += 1
            try:
                r = self.session.post(self.base_url + req.path, json=req.body, headers=req.headers(token, next_key),
                                      timeout=self.timeouts)
            except (requests.ConnectionError, requests.Timeout) as e:
                attempt += 1
                if attempt >= max_attempts:
                    raise ProviderError(f"{req.api_id}: {type(e).__name__} after {attempt} attempts") from None
                self.stats["retries"] += 1
                self._sleep_backoff(attempt)
                continue
            try:
                body = r.json()
            except ValueError:
                body = None
            if r.status_code >= 500 and attempt + 1 < max_attempts:
                attempt += 1
                self.stats["retries"] += 1
                self._sleep_backoff(attempt)
                continue
            return r.status_code, body, dict(r.headers)

    def call(self, req: p.Request, next_key: str | None = None, *, authorized: bool = True,
             retry: bool = True) -> tuple[dict, dict]:
        """Send one request; (body, response headers) of a success, else the mapped ProviderError.
        retry=False: one attempt, no waiting on errors or the rate limit."""
        rl_hits = 0
        refused: str | None = None  # the token the server refused: the next one must differ
        while True:
            token = self.token(refused=refused) if authorized else None
            status, body, headers = self._send(req, token, next_key, self.max_attempts if retry else 1)
            err = p.classify(req.api_id, status, body, refresh_codes=self.refresh_codes)
            if err is None:
                return body, headers
            if isinstance(err, RateLimitedError):
                rl_hits += 1
                self.stats["rate_limited"] += 1
                if rl_hits > (self.rl_max_retries if retry else 0):
                    raise RateLimitedError(f"{err} still after {rl_hits} tries") from None
                self.bucket.penalize(min(10.0, self.rl_backoff_s * 2 ** (rl_hits - 1)) * random.uniform(0.75, 1.25))
                continue
            if isinstance(err, p.TokenRejected):
                if refused is not None or not authorized:
                    e = AuthError(f"{err}, again after a new token" if refused is not None else str(err))
                    e.code, e.status = err.code, err.status
                    raise e from None
                refused = token
                continue
            raise err

    # -- token -------------------------------------------------------------------------------
    def token(self, *, refused: str | None = None) -> str:
        """The access token, from the shared cache or issued when none valid is cached. `refused`: a token a
        server just refused (a call, the WebSocket LOGIN): never returned; when it is the cached one, one new
        token is issued (by whichever process asks first)."""
        if refused is not None:
            self.stats["token_refreshes"] += 1
        return self.token_cache.get(invalid=refused)

    def _fetch_token(self, urgent: bool = True) -> tuple[str, int]:
        """au10001, under the cache's lock. urgent=False (a valid token is cached, this is a refresh ahead of
        its expiry): one attempt, so the processes waiting on the lock are not held up by retries."""
        body, _ = self.call(p.token_request(self.app_key, self.secret_key), authorized=False, retry=urgent)
        token, expires = p.parse_token(body)
        register_secret(token)
        self.stats["tokens_issued"] += 1
        return token, expires

    def revoke(self) -> None:
        """au10002: give the cached token back (at the end of a day); nothing to do without one. Other
        processes using it then get a new one (a refused token is replaced)."""
        token = self.token_cache.discard()
        if token is None:
            return
        self.call(p.revoke_request(self.app_key, self.secret_key, token), authorized=False)

    # -- calls -------------------------------------------------------------------------------
    def current_price(self, stk_cd: str, *, sweep_ns: int | None = None) -> dict:
        req = p.quote_request(stk_cd)
        body, _ = self.call(req)
        try:
            return p.snapshot_from_quote(stk_cd, body, self.clock.now_ns(), sweep_ns)
        except ValueError as e:
            raise ApiError(f"{req.api_id} {stk_cd}: {e}") from None

    def pages(self, req: p.Request, list_name: str) -> p.Pages:
        return p.collect_pages(lambda key: self.call(req, key), list_name, max_pages=self.max_pages,
                               pause=lambda: self.clock.sleep(self.page_pause_s))

    def tick_trades(self, stk_cd: str, *, adjusted: bool = True, gap_id: str | None = None
                    ) -> tuple[list[dict], p.Pages, list]:
        """Every trade ka10079 gives (scope 1), oldest first: (trades, the pages read, rejected rows)."""
        pages = self.pages(p.tick_chart_request(stk_cd, scope="1", adjusted=adjusted), "stk_tic_chart_qry")
        trades, bad = p.trades_from_tick_rows(stk_cd, pages.rows, self.clock.now_ns(), gap_id=gap_id)
        return trades, pages, bad

    def minute_bars(self, stk_cd: str, *, scope: str = "1", adjusted: bool = True, base_dt: str | None = None
                    ) -> tuple[list[dict], p.Pages, list]:
        """ka10080 bars oldest first: (bars, the pages read, rejected rows)."""
        pages = self.pages(p.minute_chart_request(stk_cd, scope=scope, adjusted=adjusted, base_dt=base_dt),
                           "stk_min_pole_chart_qry")
        bars, bad = p.bars_from_minute_rows(stk_cd, pages.rows, self.clock.now_ns(), minutes=int(scope))
        return bars, pages, bad
