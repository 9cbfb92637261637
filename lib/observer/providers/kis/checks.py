"""What observer-preflight checks for KIS before the open (KisProvider.preflight_checks): the token,
one real REST call, the clock against the server's Date header, and one WebSocket test subscription.

Everything goes through the provider's own clients: the REST client (one issuance attempt, no blocking
retries: preflight must finish) with its token cache, and the WebSocket client's connect. The 1-per-minute
issuance limit is respected: a cached token valid past preflight.token_valid_until is never replaced,
and no token is asked for when the limit would make preflight wait longer than preflight.token_wait_s.
"""

from __future__ import annotations

import os
import re
import time
from datetime import datetime

import requests

from observer.core.checks import Check, CheckContext, NamedCheck, http_date_ns, skew_check
from observer.core.clock import KST, NS, kst_datetime
from observer.core.settings import PreflightConfig
from observer.providers.base import ProviderError
from observer.providers.kis.rest import QUOT, TOKEN_CODES, TR_PRICE, KisRest, urls
from observer.providers.kis.wsprobe import probe

FIX_CREDS = "check KIS_APP_KEY / KIS_APP_SECRET in the secrets file and the app's status on the KIS portal"


class KisChecks:
    """The checks of one preflight run. They share what they learn: the token check's REST call is the
    REST check's answer, and its Date header is one of the clock check's samples."""

    def __init__(self, provider, ctx: CheckContext):
        self.provider = provider
        self.ctx = ctx
        self.s = PreflightConfig.from_config(ctx.cfg)
        self.clock = ctx.clock
        self._rest: KisRest | None = None
        self.token: str | None = None
        self.reply: dict | None = None  # the one REST call's outcome
        self.samples: list[tuple[int, int, int]] = []  # (local before, local after, server Date) ns

    def named(self) -> list[NamedCheck]:
        n = self.provider.name
        return [(f"token:{n}", self.check_token), (f"rest:{n}", self.check_rest),
                (f"clock:{n}", self.check_clock), (f"websocket:{n}", self.check_websocket)]

    # -- plumbing ----------------------------------------------------------------------------------
    def _client(self) -> KisRest:
        """The first account's REST client; ProviderError when its keys are missing or the URLs unknown."""
        if self._rest is None:
            self._rest = self.provider.new_rest(self.provider.accounts()[0], auth_attempts=1)
        return self._rest

    def _need_ns(self) -> int:
        return int(kst_datetime(self.ctx.day, self.s.token_valid_until).timestamp()) * NS

    def _obtain_token(self, rest: KisRest, invalid: str | None) -> tuple[str | None, str]:
        """Ask for a new token, honouring the issuance limit; (token, '') or (None, why not)."""
        cache = rest.auth.token_cache
        wait = cache.next_request_in_s()
        limit = self.s.token_wait_s
        if wait > limit:
            return None, (f"the issuance limit (1 token per {cache.min_interval_s:g} s) allows the next "
                          f"request only in {wait:.0f} s (> preflight.token_wait_s {limit:g})")
        try:
            return rest.auth.token(invalid=invalid), ""
        except ProviderError as e:
            return None, str(e)[:300]

    def _call(self, rest: KisRest, token: str) -> dict:
        """One real REST call (current price of the test symbol) with this exact token, no retries."""
        sym = self.s.test_symbol
        t0n = self.clock.now_ns()
        t0 = time.monotonic()
        try:
            status, body, headers = rest.request_once(QUOT + "inquire-price", TR_PRICE, rest._params(sym), token=token)
        except requests.RequestException as e:
            return {"ok": False, "net": True, "error": f"{type(e).__name__}: {_short_net(e)}"}
        t1n = self.clock.now_ns()
        ms = round((time.monotonic() - t0) * 1000)
        try:
            self.samples.append((t0n, t1n, http_date_ns(headers["Date"])))
        except (KeyError, ValueError, TypeError):
            pass  # no usable Date header: the clock check samples on its own
        code = str(body.get("msg_cd") or body.get("error_code") or "")
        msg = str(body.get("msg1") or body.get("error_description") or "")[:120]
        out = body.get("output") if isinstance(body.get("output"), dict) else {}
        ok = status == 200 and str(body.get("rt_cd", "")) == "0" and bool(out)
        return {"ok": ok, "net": False, "status": status, "code": code, "msg": msg, "ms": ms,
                "price": out.get("stck_prpr"), "symbol": sym}

    # -- the checks ---------------------------------------------------------------------------------
    def check_token(self) -> Check:
        name = f"token:{self.provider.name}"
        try:
            rest = self._client()
        except ProviderError as e:
            return Check(name, "fail", str(e)[:400], FIX_CREDS)
        cache = rest.auth.token_cache
        need = self._need_ns()
        need_txt = self.s.token_valid_until
        cached = cache.peek()
        now = self.clock.now_ns()
        notes = []
        if cached and cached.get("value") and cached.get("expires_ns", 0) > need:
            token = cached["value"]
            notes.append(f"cached token valid until {_kst(cached['expires_ns'])} (past {need_txt}); none requested")
        else:
            why = ("no cached token" if not (cached and cached.get("value")) else
                   f"cached token expires {_kst(cached.get('expires_ns', 0))}, before {need_txt}"
                   if cached.get("expires_ns", 0) > now else "cached token expired")
            token, err = self._obtain_token(rest, cached.get("value") if cached and cached.get("value") else None)
            if token is None:
                return Check(name, "fail", f"{why}, and no new one could be obtained: {err}", FIX_CREDS)
            notes.append(f"{why}: obtained a new one")
        # the broker is the judge: one real call with exactly this token
        res = self.reply = self._call(rest, token)
        if not res["ok"] and not res["net"] and res.get("code") in TOKEN_CODES:
            refused = f"the broker refuses the token ({res['code']} {res['msg']})".rstrip()
            new, err = self._obtain_token(rest, token)
            if new is None:
                return Check(name, "fail", f"{refused}, and no new one could be obtained: {err}", FIX_CREDS,
                             {"code": res["code"]})
            token = new
            res = self.reply = self._call(rest, token)
            if not res["ok"] and res.get("code") in TOKEN_CODES:
                return Check(name, "fail", f"{refused}; the new token is refused too ({res['code']})", FIX_CREDS)
            notes = [f"{refused}: obtained a new one"]
        self.token = token
        c = cache.peek() or {}
        exp = c.get("expires_ns", 0) if c.get("value") == token else 0
        if res["net"]:
            return Check(name, "warn", "; ".join(notes) + "; not verified: the broker is unreachable",
                         "see the rest check")
        if exp and exp <= need:
            return Check(name, "warn", "; ".join(notes) + f"; but it expires {_kst(exp)}, before {need_txt}",
                         "the collectors will refresh it; check token.refresh_ahead_s")
        verdict = "warn" if any("refuses" in n for n in notes) else "ok"
        return Check(name, verdict, "; ".join(notes) + ("; accepted by the broker" if res["ok"] else ""),
                     "" if verdict == "ok" else "the cached token was revoked or expired early: watch for repeats")

    def check_rest(self) -> Check:
        name = f"rest:{self.provider.name}"
        res = self.reply
        if res is None:
            if not self.token:
                return Check(name, "skip", "no token (see the token check)", "")
            res = self.reply = self._call(self._client(), self.token)
        where = f"{self._client().base_url} inquire-price {res.get('symbol', '')}"
        if res["net"]:
            return Check(name, "fail", f"{where}: {res['error']}",
                         "check the network / DNS / firewall to the broker (curl -v the URL)")
        if not res["ok"]:
            return Check(name, "fail", f"{where}: HTTP {res['status']} {res.get('code', '')} {res.get('msg', '')}".rstrip(),
                         "read the broker's message; a 5xx is the broker's side (retry later)")
        return Check(name, "ok", f"{where}: HTTP 200 in {res['ms']} ms, price {res.get('price')}",
                     detail={"ms": res["ms"]})

    def check_clock(self) -> Check:
        """Samples of the server's Date header (HEAD requests spread over a second, plus the REST call's)."""
        name = f"clock:{self.provider.name}"
        try:
            base = urls(self.provider.pcfg)[0]
        except ProviderError as e:
            return Check(name, "fail", str(e)[:400], "set providers.kis.rest_url")
        n = self.s.skew_samples
        errors = []
        with requests.Session() as sess:
            for i in range(n):
                t0 = self.clock.now_ns()
                try:
                    r = sess.head(base + "/", timeout=(3.05, 5))
                    t1 = self.clock.now_ns()
                    if r.headers.get("Date"):
                        self.samples.append((t0, t1, http_date_ns(r.headers["Date"])))
                except (requests.RequestException, ValueError, TypeError) as e:
                    errors.append(f"{type(e).__name__}")
                if i < n - 1:
                    time.sleep(1.0 / n)  # spread the samples over one second of the Date header's resolution
        return skew_check(name, self.samples, source=base, errors=errors,
                          warn_s=self.s.skew_warn_s, fail_s=self.s.skew_fail_s)

    def check_websocket(self) -> Check:
        name = f"websocket:{self.provider.name}"
        hb = _live_heartbeat_age(self.ctx.root, f"track-b@{self.provider.name}")
        if hb is not None and hb < 10:
            return Check(name, "skip", f"observer-track-b@{self.provider.name} is streaming (heartbeat {hb:.0f} s "
                         "old): a probe would compete for the app key's WebSocket session", "")
        pc = self.provider.pcfg  # the [providers.kis] table with the schema's defaults
        wcfg = pc["ws"]
        try:
            rest = self._client()
            ws_url = urls(pc)[1] + wcfg["path"]
        except ProviderError as e:
            return Check(name, "fail", str(e)[:400], FIX_CREDS)
        return probe(name, rest.auth, ws_url, self.s.test_symbol, self.s.ws_answer_s, wcfg["connect_timeout_s"],
                     wcfg["tcp_user_timeout_ms"], pc["custtype"])


def _short_net(e: Exception) -> str:
    s = str(e)
    m = re.search(r"\[Errno -?\d+\] ([^'\")]+)", s)
    if m:
        return m.group(1).strip()
    if "Read timed out" in s:
        return "no reply (read timed out)"
    return s[:160]


def _kst(ns: int) -> str:
    return datetime.fromtimestamp(ns / NS, tz=KST).strftime("%m-%d %H:%M KST")


def _live_heartbeat_age(root, name: str) -> float | None:
    """Age in seconds of a running program's heartbeat; None when there is none or its process is gone."""
    from observer.store import paths
    from observer.store.state import read_json

    try:
        hb = read_json(paths.heartbeat_file(root, name))
    except (OSError, ValueError):
        return None
    if not hb or "wall_ns" not in hb:
        return None
    try:
        os.kill(int(hb.get("pid", 0)), 0)
    except (OSError, ValueError):
        return None  # that process is gone
    return (time.time_ns() - int(hb["wall_ns"])) / NS
