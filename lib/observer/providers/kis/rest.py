"""KIS REST client: quotations with a shared rate limit, cached token, retries, paging, normalisation.

Errors:
- network errors and 5xx: retried with exponential backoff and jitter (retry.max_attempts);
- EGW00201 (too many requests; HTTP 500 or 200): the shared bucket is pushed back (every process
  using the app key waits), the hit is counted and the call retried (retry.rate_limit_max_retries);
- EGW00123 / EGW00121 (token expired / invalid): one token refresh and one retry;
- EGW00103 (app key/secret refused, whatever the HTTP status): AuthError, never retried;
- other 4xx: not retried (AuthError for 401/403, ApiError otherwise), with the broker's message.
Every wait (limiter, backoff, token issuance) goes through the Clock, so a program's stop ends it.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter

from observer.core.clock import KST, NS, Clock, kst_ns, parse_yyyymmdd
from observer.core.config import with_defaults
from observer.core.logging import get_logger
from observer.core.ratelimit import TokenBucket, bucket_name
from observer.providers.base import (
    ApiError,
    AuthError,
    MarketRest,
    ProviderError,
    RateLimitedError,
    TickRecovery,
)
from observer.providers.kis.auth import KisAuth, rest_timeouts
from observer.store.fs import SharedRecord

log = get_logger(__name__)

QUOT = "/uapi/domestic-stock/v1/quotations/"
TR_PRICE = "FHKST01010100"
TR_ASKING = "FHKST01010200"
TR_TIME_CONCLUSION = "FHPST01060000"
TR_MINUTE_BARS = "FHKST03010200"
TR_DAILY = "FHKST01010400"
TR_VOLUME_RANK = "FHPST01710000"

RATE_LIMIT_CODE = "EGW00201"
TOKEN_CODES = ("EGW00123", "EGW00121")
APPKEY_CODE = "EGW00103"  # app key/secret refused: whatever the HTTP status, retrying cannot help

BASE_URLS = {
    "real": ("https://openapi.koreainvestment.com:9443", "ws://ops.koreainvestment.com:21000"),
    "paper": ("https://openapivts.koreainvestment.com:29443", "ws://ops.koreainvestment.com:31000"),
}
DEFAULT_RATE = {"real": 19.0, "paper": 2.0, "sim": 19.0}


def urls(pcfg: dict) -> tuple[str, str]:
    env = with_defaults(pcfg, "providers", "kis")["env"]
    rest, ws = BASE_URLS.get(env, ("", ""))
    rest = pcfg.get("rest_url") or rest
    ws = pcfg.get("ws_url") or ws
    if not rest or not ws:
        raise ProviderError(f"providers.kis.env = {env!r} needs rest_url and ws_url in the config")
    return rest.rstrip("/"), ws.rstrip("/")


def rate_per_s(pcfg: dict) -> float:
    r = pcfg.get("rate_limit_per_s")
    return float(r) if r else DEFAULT_RATE.get(with_defaults(pcfg, "providers", "kis")["env"], 2.0)


# -- normalisation helpers ----------------------------------------------------------------------
def _num(v):
    """KIS numeric string -> int/float; '' or None -> None; anything else raises ValueError."""
    if v is None:
        return None
    if isinstance(v, (int, float)):
        return v
    s = str(v).strip()
    if not s:
        return None
    try:
        return int(s)
    except ValueError:
        return float(s)


def _pos(v, name: str):
    x = _num(v)
    if x is None or x <= 0:
        raise ValueError(f"{name} {v!r} is not a positive number")
    return x


def _hhmmss(ns: int) -> str:
    t = datetime.fromtimestamp(ns / NS, KST)
    return f"{t:%H%M%S}"


def _kst_day(ns: int) -> date:
    return datetime.fromtimestamp(ns / NS, KST).date()


def _sec_back(hhmmss: str, seconds: int) -> str:
    t = datetime(2000, 1, 1, int(hhmmss[:2]), int(hhmmss[2:4]), int(hhmmss[4:6])) - timedelta(seconds=seconds)
    return "000000" if t.day != 1 else f"{t:%H%M%S}"


def _base(kind: str, symbol: str, exch_ns, recv_ns: int, quality: str = "normal") -> dict:
    return {"v": 1, "kind": kind, "provider": "kis", "market": "krx", "symbol": symbol, "exch_ns": exch_ns,
            "recv_ns": recv_ns, "quality": quality}


def snapshot_from_price(symbol: str, out: dict, recv_ns: int, sweep_ns: int | None = None) -> dict:
    """inquire-price `output` -> snapshot (no exchange timestamp in the reply: exch_ns None)."""
    price = _pos(out.get("stck_prpr"), "stck_prpr")
    vrss = _num(out.get("prdy_vrss"))
    rec = _base("snapshot", symbol, None, recv_ns)
    rec.update({
        "price": price, "open": _num(out.get("stck_oprc")), "high": _num(out.get("stck_hgpr")),
        "low": _num(out.get("stck_lwpr")),
        "prev_close": (price - vrss) if vrss is not None else _num(out.get("stck_sdpr")),
        "cum_vol": _num(out.get("acml_vol")), "cum_value": _num(out.get("acml_tr_pbmn")),
        "bid": _num(out.get("bidp")), "ask": _num(out.get("askp")),
        "upper_limit": _num(out.get("stck_mxpr")), "lower_limit": _num(out.get("stck_llam")),
        "halted": (out.get("temp_stop_yn") == "Y" or out.get("iscd_stat_cls_code") == "58")
        if out.get("temp_stop_yn") is not None or out.get("iscd_stat_cls_code") is not None else None,
        "sweep_ns": sweep_ns if sweep_ns is not None else recv_ns,
        "track": "A",
        "extra": {k: out[k] for k in ("stck_sdpr", "aspr_unit", "wghn_avrg_stck_prc", "vi_cls_code",
                                      "iscd_stat_cls_code", "temp_stop_yn", "prdy_ctrt") if k in out},
    })
    return rec


def trade_from_conclusion(symbol: str, row: dict, day: date, recv_ns: int) -> dict:
    """inquire-time-itemconclusion output2 row -> trade (quality recovered, track R)."""
    t = str(row.get("stck_cntg_hour", ""))
    price = _pos(row.get("stck_prpr", row.get("stck_pbpr")), "stck_prpr")
    rec = _base("trade", symbol, kst_ns(day, t), recv_ns, "recovered")
    rec.update({"price": price, "qty": _pos(row.get("cnqn"), "cnqn"), "cum_vol": _num(row.get("acml_vol")),
                "side": "none", "bid": _num(row.get("bidp")), "ask": _num(row.get("askp")), "track": "R",
                "extra": {"tday_rltv": row.get("tday_rltv"), "prdy_vrss": row.get("prdy_vrss")}})
    return rec


def bar_from_minute(symbol: str, row: dict, recv_ns: int, day: date) -> dict:
    d = parse_yyyymmdd(str(row["stck_bsop_date"])) if row.get("stck_bsop_date") else day
    rec = _base("bar", symbol, kst_ns(d, str(row.get("stck_cntg_hour", ""))), recv_ns, "recovered")
    rec.update({"open": _pos(row.get("stck_oprc"), "stck_oprc"), "high": _pos(row.get("stck_hgpr"), "stck_hgpr"),
                "low": _pos(row.get("stck_lwpr"), "stck_lwpr"), "close": _pos(row.get("stck_prpr"), "stck_prpr"),
                "volume": _num(row.get("cntg_vol")) or 0, "minutes": 1, "track": "R",
                "extra": {"acml_tr_pbmn": row.get("acml_tr_pbmn")}})
    return rec


def bar_from_daily(symbol: str, row: dict, recv_ns: int, period: str) -> dict:
    d = parse_yyyymmdd(str(row.get("stck_bsop_date", "")))
    rec = _base("bar", symbol, kst_ns(d, "000000"), recv_ns)
    rec.update({"open": _pos(row.get("stck_oprc"), "stck_oprc"), "high": _pos(row.get("stck_hgpr"), "stck_hgpr"),
                "low": _pos(row.get("stck_lwpr"), "stck_lwpr"), "close": _pos(row.get("stck_clpr"), "stck_clpr"),
                "volume": _num(row.get("acml_vol")) or 0, "cum_vol": _num(row.get("acml_vol")),
                "extra": {"period": period, **{k: row[k] for k in ("prdy_vrss", "prdy_ctrt", "frgn_ntby_qty",
                                                                   "flng_cls_code") if k in row}}})
    if period == "D":
        rec["minutes"] = 1440
    return rec


def snapshot_from_rank(row: dict, recv_ns: int) -> dict:
    symbol = str(row.get("mksc_shrn_iscd", ""))
    price = _pos(row.get("stck_prpr"), "stck_prpr")
    vrss = _num(row.get("prdy_vrss"))
    rec = _base("snapshot", symbol, None, recv_ns)
    rec.update({"price": price, "prev_close": (price - vrss) if vrss is not None else None,
                "cum_vol": _num(row.get("acml_vol")), "cum_value": _num(row.get("acml_tr_pbmn")),
                "sweep_ns": recv_ns,
                "extra": {"rank": _num(row.get("data_rank")), "name": row.get("hts_kor_isnm"),
                          **{k: row[k] for k in ("prdy_vol", "avrg_vol", "vol_inrt", "vol_tnrt", "prdy_ctrt",
                                                 "avrg_tr_pbmn", "lstn_stcn") if k in row}}})
    return rec


class KisRest(MarketRest):
    def __init__(self, pcfg: dict, *, app_key: str, app_secret: str, state_dir: Path, clock: Clock | None = None,
                 events=None, account: str = "main", auth_attempts: int | None = None):
        self.pcfg = pcfg = with_defaults(pcfg, "providers", "kis")
        self.clock = clock or Clock()
        self.events = events  # store.events("kis") or None
        self.account = account
        self.base_url, _ = urls(pcfg)
        self.timeouts = rest_timeouts(pcfg)
        r = pcfg["retry"]
        self.max_attempts = int(r["max_attempts"])
        self.backoff_base_s = float(r["base_s"])
        self.backoff_max_s = float(r["max_s"])
        self.rl_max_retries = int(r["rate_limit_max_retries"])
        self.rl_backoff_s = float(r["rate_limit_backoff_s"])
        self.page_rows = int(pcfg["page_rows"])
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=8, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.auth = KisAuth.from_config(pcfg, base_url=self.base_url, app_key=app_key, app_secret=app_secret,
                                        state_dir=state_dir, clock=self.clock, session=self.session,
                                        timeouts=self.timeouts, on_issue=self._on_issue,
                                        **({"max_attempts": auth_attempts} if auth_attempts else {}))
        self.bucket = TokenBucket(SharedRecord(Path(state_dir, bucket_name("kis", self.auth.app_key + "\n"
                                                                          + self.base_url))),
                                  rate_per_s(pcfg), float(pcfg["rate_limit_burst"]), self.clock)
        self.stats = {"calls": 0, "http_requests": 0, "rate_limited": 0, "retries": 0, "token_refreshes": 0,
                      "rejected_rows": 0}

    # -- plumbing ----------------------------------------------------------------------------
    def _emit(self, event: str, severity: str, **fields) -> None:
        if self.events is not None:
            try:
                self.events.emit(event, severity, **fields)
            except Exception:
                log.exception("event not emitted", extra={"event_kind": event})

    def _on_issue(self, what: str, reason: str) -> None:
        self._emit("credential_issued", "INFO", what=what, reason=reason, account=self.account)

    def _sleep_backoff(self, attempt: int) -> None:
        self.clock.sleep(min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0))

    def close(self) -> None:
        self.session.close()
        self.bucket.close()

    def _headers(self, token: str, tr_id: str) -> dict:
        return {"content-type": "application/json; charset=utf-8", "authorization": f"Bearer {token}",
                "appkey": self.auth.app_key, "appsecret": self.auth.app_secret, "tr_id": tr_id,
                "tr_cont": "", "custtype": self.pcfg["custtype"]}

    def request_once(self, path: str, tr_id: str, params: dict, *, token: str) -> tuple[int, dict, Mapping]:
        """One GET with exactly this token: no retry, no token refresh, so the broker's answer to this
        token is seen as it is (preflight's probe). Returns (HTTP status, body or {}, response headers);
        a network error raises requests.RequestException."""
        self.bucket.acquire()
        self.stats["calls"] += 1
        self.stats["http_requests"] += 1
        r = self.session.get(self.base_url + path, params=params, headers=self._headers(token, tr_id),
                             timeout=self.timeouts)
        try:
            body = r.json()
        except ValueError:
            body = None
        return r.status_code, body if isinstance(body, dict) else {}, r.headers  # case-insensitive

    def request(self, path: str, tr_id: str, params: dict) -> tuple[dict, dict]:
        """GET a quotation; returns (body, response headers). Raises ProviderError subclasses (an
        AuthError carries the account name in `account`)."""
        try:
            return self._request(path, tr_id, params)
        except AuthError as e:
            e.account = self.account
            raise

    def _request(self, path: str, tr_id: str, params: dict) -> tuple[dict, dict]:
        self.stats["calls"] += 1
        url = self.base_url + path
        attempt = 0
        rl_hits = 0
        refreshed = False
        while True:
            self.bucket.acquire()
            token = self.auth.token()
            self.stats["http_requests"] += 1
            try:
                r = self.session.get(url, params=params, headers=self._headers(token, tr_id), timeout=self.timeouts)
            except (requests.ConnectionError, requests.Timeout) as e:
                attempt += 1
                if attempt >= self.max_attempts:
                    raise ProviderError(f"{tr_id}: {type(e).__name__} after {attempt} attempts") from None
                self.stats["retries"] += 1
                self._sleep_backoff(attempt)
                continue
            try:
                body = r.json()
            except ValueError:
                body = None
            if not isinstance(body, dict):
                body = {}
            code = str(body.get("msg_cd") or body.get("error_code") or "")
            if code == RATE_LIMIT_CODE:
                rl_hits += 1
                self.stats["rate_limited"] += 1
                if rl_hits == 1 or rl_hits % 10 == 0:
                    self._emit("rate_limited", "WARNING", call=tr_id, http_status=r.status_code, hits=rl_hits,
                               account=self.account)
                if rl_hits > self.rl_max_retries:
                    raise RateLimitedError(f"{tr_id}: still EGW00201 after {rl_hits} tries")
                pause = min(10.0, self.rl_backoff_s * 2 ** (rl_hits - 1)) * random.uniform(0.75, 1.25)
                self.bucket.penalize(pause)
                continue
            if code == APPKEY_CODE:
                msg = str(body.get("msg1") or body.get("error_description") or "")[:200]
                raise AuthError(f"{tr_id}: app key/secret refused: HTTP {r.status_code} {code} {msg}".rstrip())
            if code in TOKEN_CODES:
                if refreshed:
                    raise AuthError(f"{tr_id}: token refused ({code}) again after a refresh")
                refreshed = True
                self.stats["token_refreshes"] += 1
                self.auth.token(invalid=token)
                continue
            if r.status_code >= 500:
                attempt += 1
                if attempt >= self.max_attempts:
                    raise ApiError(f"{tr_id}: HTTP {r.status_code} {code} after {attempt} attempts",
                                   code=code, status=r.status_code)
                self.stats["retries"] += 1
                self._sleep_backoff(attempt)
                continue
            msg = str(body.get("msg1") or body.get("error_description") or "")[:200]
            if r.status_code in (401, 403):
                raise AuthError(f"{tr_id}: HTTP {r.status_code} {code} {msg}".rstrip())
            if r.status_code >= 400:
                raise ApiError(f"{tr_id}: HTTP {r.status_code} {code} {msg}".rstrip(), code=code, status=r.status_code)
            if str(body.get("rt_cd", "")) != "0":
                raise ApiError(f"{tr_id}: rt_cd={body.get('rt_cd')!r} {code} {msg}".rstrip(), code=code,
                               status=r.status_code)
            return body, dict(r.headers)

    def _reject(self, call: str, symbol: str, err: Exception, row) -> None:
        self.stats["rejected_rows"] += 1
        self._emit("record_rejected", "WARNING", record_kind=call, reason=str(err)[:300], symbol=symbol)

    def _params(self, symbol: str, **more) -> dict:
        p = {"FID_COND_MRKT_DIV_CODE": self.pcfg["market_div"], "FID_INPUT_ISCD": symbol}
        p.update(more)
        return p

    # -- calls -------------------------------------------------------------------------------
    def current_price(self, symbol: str, *, sweep_ns: int | None = None) -> dict:
        body, _ = self.request(QUOT + "inquire-price", TR_PRICE, self._params(symbol))
        out = body.get("output")
        if not isinstance(out, dict):
            raise ApiError(f"{TR_PRICE} {symbol}: reply has no output object")
        try:
            return snapshot_from_price(symbol, out, self.clock.now_ns(), sweep_ns)
        except (ValueError, TypeError) as e:
            raise ApiError(f"{TR_PRICE} {symbol}: {e}") from None

    def best_quote(self, symbol: str) -> dict:
        """inquire-asking-price-exp-ccn output1 -> {bid, ask, bid_size, ask_size} of the best level (None
        where that side is empty: a price of 0 means no order on it)."""
        body, _ = self.request(QUOT + "inquire-asking-price-exp-ccn", TR_ASKING, self._params(symbol))
        out = body.get("output1")
        if not isinstance(out, dict):
            raise ApiError(f"{TR_ASKING} {symbol}: reply has no output1 object")
        try:
            ask, bid = _num(out.get("askp1")), _num(out.get("bidp1"))
            ask_q, bid_q = _num(out.get("askp_rsqn1")), _num(out.get("bidp_rsqn1"))
        except (ValueError, TypeError) as e:
            raise ApiError(f"{TR_ASKING} {symbol}: {e}") from None
        for name, v in (("askp1", ask), ("bidp1", bid), ("askp_rsqn1", ask_q), ("bidp_rsqn1", bid_q)):
            if v is not None and v < 0:
                raise ApiError(f"{TR_ASKING} {symbol}: {name} {v} is negative")
        return {"bid": bid or None, "ask": ask or None, "bid_size": bid_q if bid else None,
                "ask_size": ask_q if ask else None}

    def calls_per_s(self) -> float:
        return self.bucket.rate

    def conclusion_page(self, symbol: str, hhmmss: str) -> tuple[list[dict], dict]:
        """Raw FHPST01060000 page: (output2 rows newest first, output1)."""
        body, _ = self.request(QUOT + "inquire-time-itemconclusion", TR_TIME_CONCLUSION,
                               self._params(symbol, FID_INPUT_HOUR_1=hhmmss))
        rows = body.get("output2") or []
        rows = [r for r in rows if isinstance(r, dict) and r.get("stck_cntg_hour")]
        return rows, body.get("output1") or {}

    def trades_by_time(self, symbol: str, until_ns: int | None = None) -> list[dict]:
        until_ns = self.clock.now_ns() if until_ns is None else until_ns
        rows, _ = self.conclusion_page(symbol, _hhmmss(until_ns))
        now = self.clock.now_ns()
        out = []
        for row in rows:
            try:
                out.append(trade_from_conclusion(symbol, row, _kst_day(until_ns), now))
            except (ValueError, TypeError, KeyError) as e:
                self._reject("trade", symbol, e, row)
        return out

    def recover_trades(self, symbol: str, start_ns: int, end_ns: int, *, gap_id: str | None = None) -> TickRecovery:
        """Page back from end_ns to start_ns (inclusive, KST seconds) and prove continuity.

        Pages are keyed on (stck_cntg_hour, acml_vol); consecutive rows must satisfy
        acml_vol[newer] - cnqn[newer] == acml_vol[older]. Where they do not, trades are missing and a
        gap (with the missing quantity) is returned; when more than `page_rows` trades share one
        second the pager steps one second back and the skipped trades show up as such a gap.
        """
        day = _kst_day(end_ns)
        start_t, end_t = _hhmmss(start_ns), _hhmmss(end_ns)
        res = TickRecovery()
        seen: set[tuple[str, str]] = set()
        rows_all: list[dict] = []
        stepped: set[str] = set()  # seconds whose older trades were stepped over
        cursor = end_t
        reached = False
        while res.calls < 100_000:
            rows, _ = self.conclusion_page(symbol, cursor)
            res.calls += 1
            new = []
            for r in rows:
                k = (str(r.get("stck_cntg_hour")), str(r.get("acml_vol")))
                if k not in seen and k[0] <= end_t:
                    seen.add(k)
                    new.append(r)
            if not new:
                if len(rows) >= self.page_rows and all(str(r.get("stck_cntg_hour")) == cursor for r in rows):
                    # > page_rows trades in one second: the older ones are unreachable by time. Step one
                    # second back (even past start_t: the next older row proves the boundary's gap)
                    stepped.add(cursor)
                    cursor = _sec_back(cursor, 1)
                    if cursor == "000000":
                        reached = True
                        break
                    continue
                reached = len(rows) < self.page_rows
                break
            rows_all.extend(new)
            oldest = str(new[-1].get("stck_cntg_hour"))
            if oldest < start_t or len(rows) < self.page_rows:
                reached = True
                break
            cursor = oldest
        res.complete = reached
        now = self.clock.now_ns()
        # continuity over everything fetched (newest first)
        for newer, older in zip(rows_all, rows_all[1:], strict=False):
            try:
                expect = int(newer["acml_vol"]) - int(newer["cnqn"])
                have = int(older["acml_vol"])
            except (KeyError, ValueError, TypeError):
                continue
            if expect != have:
                t_old, t_new = str(older["stck_cntg_hour"]), str(newer["stck_cntg_hour"])
                if t_new < start_t or t_old > end_t:
                    continue
                res.gaps.append({
                    "start_ns": kst_ns(day, t_old), "end_ns": kst_ns(day, t_new),
                    "cause": "more_than_page_in_one_second" if t_new in stepped else
                    ("duplicate_or_overlap" if expect < have else "continuity_break"),
                    "missing_qty": expect - have,
                })
        for r in reversed(rows_all):
            if not (start_t <= str(r.get("stck_cntg_hour")) <= end_t):
                continue
            try:
                rec = trade_from_conclusion(symbol, r, day, now)
            except (ValueError, TypeError, KeyError) as e:
                self._reject("trade", symbol, e, r)
                continue
            if gap_id is not None:
                rec["provenance"] = {"source_call": TR_TIME_CONCLUSION, "fetched_at_ns": now, "gap_id": gap_id}
            res.records.append(rec)
        return res

    def minute_bars(self, symbol: str, start_ns: int | None = None, end_ns: int | None = None) -> list[dict]:
        end_ns = self.clock.now_ns() if end_ns is None else end_ns
        day = _kst_day(end_ns)
        start_t = _hhmmss(start_ns) if start_ns is not None else "000000"
        end_t = _hhmmss(end_ns)
        cursor = end_t
        bars: dict[str, dict] = {}
        calls = 0
        while calls < 1000:
            body, _ = self.request(QUOT + "inquire-time-itemchartprice", TR_MINUTE_BARS,
                                   self._params(symbol, FID_INPUT_HOUR_1=cursor, FID_PW_DATA_INCU_YN="Y",
                                                FID_ETC_CLS_CODE=""))
            calls += 1
            rows = [r for r in (body.get("output2") or []) if isinstance(r, dict) and r.get("stck_cntg_hour")]
            new = [r for r in rows if str(r["stck_cntg_hour"]) not in bars]
            for r in new:
                bars[str(r["stck_cntg_hour"])] = r
            if not new:
                break
            oldest = min(str(r["stck_cntg_hour"]) for r in new)
            if oldest <= start_t or len(rows) < self.page_rows:
                break
            cursor = _sec_back(oldest, 60)
            if cursor == "000000":
                break
        now = self.clock.now_ns()
        out = []
        for t in sorted(bars):
            if not (start_t <= t <= end_t):
                continue
            try:
                out.append(bar_from_minute(symbol, bars[t], now, day))
            except (ValueError, TypeError, KeyError) as e:
                self._reject("bar", symbol, e, bars[t])
        return out

    def daily_prices(self, symbol: str, period: str = "D", adjusted: bool = True) -> list[dict]:
        if period not in ("D", "W", "M"):
            raise ValueError(f"period must be D, W or M, got {period!r}")
        body, _ = self.request(QUOT + "inquire-daily-price", TR_DAILY,
                               self._params(symbol, FID_PERIOD_DIV_CODE=period, FID_ORG_ADJ_PRC="1" if adjusted else "0"))
        now = self.clock.now_ns()
        out = []
        for row in body.get("output") or []:
            try:
                out.append(bar_from_daily(symbol, row, now, period))
            except (ValueError, TypeError, KeyError, AttributeError) as e:
                self._reject("bar", symbol, e, row)
        out.sort(key=lambda r: r["exch_ns"])
        return out

    def volume_rank(self, **filters) -> list[dict]:
        params = {"FID_COND_MRKT_DIV_CODE": "J", "FID_COND_SCR_DIV_CODE": "20171", "FID_INPUT_ISCD": "0000",
                  "FID_DIV_CLS_CODE": "0", "FID_BLNG_CLS_CODE": "0", "FID_TRGT_CLS_CODE": "111111111",
                  "FID_TRGT_EXLS_CLS_CODE": "0000000000", "FID_INPUT_PRICE_1": "", "FID_INPUT_PRICE_2": "",
                  "FID_VOL_CNT": "", "FID_INPUT_DATE_1": ""}
        for k, v in filters.items():
            params[k.upper() if k.upper().startswith("FID_") else "FID_" + k.upper()] = v
        body, _ = self.request(QUOT + "volume-rank", TR_VOLUME_RANK, params)
        now = self.clock.now_ns()
        out = []
        for row in body.get("output") or []:
            try:
                out.append(snapshot_from_rank(row, now))
            except (ValueError, TypeError, KeyError, AttributeError) as e:
                self._reject("snapshot", str(row.get("mksc_shrn_iscd", "")) if isinstance(row, dict) else "", e, row)
        return out
