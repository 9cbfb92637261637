"""Kiwoom REST: request builders and reply readers, pure functions (no network; rest.py sends them).

Conventions: every call is `POST` with a JSON body; the headers name the call (`api-id`) and carry the
bearer token; a reply's body has `return_code` (0 = OK) and `return_msg`; a paged reply says in its
headers `cont-yn: Y` and `next-key: <key>` while more data exist, and the next request repeats the same
body with those two headers. Prices carry a `+`/`-` direction prefix; their absolute value is taken.

Return codes (the broker's error table) map onto provider errors by `classify()`:
- 1700 (request rate exceeded), and HTTP 429 whatever the body: RateLimitedError -> back off and retry;
- HTTP 401 and the token codes: TokenRejected -> refresh the token once and retry;
- credentials, real/paper mismatch, device/IP registration: AuthError naming the code; never retried;
- unknown symbol: UnknownSymbolError; input errors and the rest: ApiError; HTTP 5xx: ServerError (retried).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from observer.core.clock import KST, to_ns
from observer.providers.base import ApiError, AuthError, ProviderError, RateLimitedError
from observer.providers.kiwoom.parse import PROVIDER, return_code, split_item

HOSTS = {
    "real": ("https://api.kiwoom.com", "wss://api.kiwoom.com:10000/api/dostk/websocket"),
    "paper": ("https://mockapi.kiwoom.com", "wss://mockapi.kiwoom.com:10000/api/dostk/websocket"),  # KRX only
}
PATH_TOKEN = "/oauth2/token"
PATH_REVOKE = "/oauth2/revoke"
PATH_CHART = "/api/dostk/chart"
PATH_STOCK_INFO = "/api/dostk/stkinfo"

API_TOKEN = "au10001"
API_REVOKE = "au10002"
API_QUOTE = "ka10001"  # 주식기본정보요청; not in the protocol reference (docs/providers/kiwoom.md)
API_TICK_CHART = "ka10079"
API_MINUTE_CHART = "ka10080"

TICK_SCOPES = ("1", "3", "5", "10", "30")                      # trades per row
MINUTE_SCOPES = ("1", "3", "5", "10", "15", "30", "45", "60")  # minutes per bar

CONTENT_TYPE = "application/json;charset=UTF-8"

# -- return codes ---------------------------------------------------------------------------------
RATE_LIMIT_CODES = frozenset({1700})
TOKEN_CODES = frozenset({8003, 8005, 8006, 8009, 8015, 8016})
CREDENTIAL_CODES = frozenset({8001, 8002, 8011, 8012})
ENV_MISMATCH_CODES = frozenset({8030, 8031})
DEVICE_CODES = frozenset({8010, 8040, 8050, 8103})
INPUT_CODES = frozenset(range(1501, 1518)) | {1687, 8020}
UNKNOWN_SYMBOL_CODES = frozenset({1901, 1902})
# The official client refreshes the token and retries once on HTTP 401 and on 8005, 8031 and 8103;
# so this adapter does too for those two non-token codes, and a second refusal is an AuthError.
REFRESH_ONCE_CODES = TOKEN_CODES | {8031, 8103}

_AUTH_REASON = {**{c: "app key/secret refused" for c in CREDENTIAL_CODES},
                **{c: "real/paper server mismatch" for c in ENV_MISMATCH_CODES},
                **{c: "device or IP address not registered" for c in DEVICE_CODES},
                **{c: "token refused" for c in TOKEN_CODES}}


class TokenRejected(ProviderError):
    """The server refused the access token (HTTP 401 or a token code): get a new token once and retry.
    Not an AuthError: the credentials may be fine; the client turns a second refusal into one."""

    def __init__(self, message: str, *, code: int | None = None, status: int | None = None):
        super().__init__(message)
        self.code = code
        self.status = status


class UnknownSymbolError(ApiError):
    """The symbol is not known to the server (1901, 1902)."""


class ServerError(ApiError):
    """HTTP 5xx: the broker is unwell; retried with backoff."""


def auth_reason(code: int | None) -> str:
    return _AUTH_REASON.get(code, "refused") if code is not None else "refused"


def classify(api_id: str, status: int, body, *, refresh_codes: frozenset[int] = REFRESH_ONCE_CODES
             ) -> ProviderError | None:
    """The provider error a reply stands for, or None when it is a success (HTTP 2xx, return_code 0)."""
    body = body if isinstance(body, dict) else {}
    code = return_code(body.get("return_code"))
    msg = str(body.get("return_msg") or "")[:200]
    said = f"{api_id}: HTTP {status} return_code {code if code is not None else '-'} {msg}".rstrip()
    if status == 429 or code in RATE_LIMIT_CODES:
        e = RateLimitedError(f"{said} (rate limit)")
        e.code, e.status = code, status
        return e
    if status == 401 or code in refresh_codes:
        return TokenRejected(f"{said} ({auth_reason(code) if code else 'token refused'})", code=code, status=status)
    if code in _AUTH_REASON or status == 403:
        e = AuthError(f"{said} ({auth_reason(code)})")
        e.code, e.status = code, status
        return e
    if status >= 500:
        return ServerError(said, code=str(code or ""), status=status)
    if code in UNKNOWN_SYMBOL_CODES:
        return UnknownSymbolError(f"{said} (unknown symbol)", code=str(code), status=status)
    if code in INPUT_CODES:
        return ApiError(f"{said} (request input refused)", code=str(code), status=status)
    if status >= 400 or code != 0:
        why = "reply has no return_code" if code is None and status < 400 else "error"
        return ApiError(f"{said} ({why})", code=str(code or ""), status=status)
    return None


# -- requests -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Request:
    path: str
    api_id: str
    body: dict

    def headers(self, token: str | None = None, next_key: str | None = None) -> dict:
        """Request headers: the token (not for au10001) and, for a continuation, cont-yn/next-key."""
        h = {"Content-Type": CONTENT_TYPE, "api-id": self.api_id}
        if token is not None:
            h["authorization"] = f"Bearer {token}"
        if next_key is not None:
            h["cont-yn"] = "Y"
            h["next-key"] = next_key
        return h


def token_request(app_key: str, secret_key: str) -> Request:
    return Request(PATH_TOKEN, API_TOKEN, {"grant_type": "client_credentials", "appkey": app_key,
                                           "secretkey": secret_key})


def revoke_request(app_key: str, secret_key: str, token: str) -> Request:
    return Request(PATH_REVOKE, API_REVOKE, {"appkey": app_key, "secretkey": secret_key, "token": token})


def quote_request(stk_cd: str) -> Request:
    return Request(PATH_STOCK_INFO, API_QUOTE, {"stk_cd": stk_cd})


def _adjusted(adjusted: bool) -> str:
    return "1" if adjusted else "0"


def tick_chart_request(stk_cd: str, *, scope: str = "1", adjusted: bool = True) -> Request:
    """ka10079. stk_cd `005930` KRX, `005930_NX` NXT, `005930_AL` unified; scope = trades per row."""
    if scope not in TICK_SCOPES:
        raise ValueError(f"tick scope must be one of {', '.join(TICK_SCOPES)}, got {scope!r}")
    return Request(PATH_CHART, API_TICK_CHART, {"stk_cd": stk_cd, "tic_scope": scope,
                                                "upd_stkpc_tp": _adjusted(adjusted)})


def minute_chart_request(stk_cd: str, *, scope: str = "1", adjusted: bool = True, base_dt: str | None = None
                         ) -> Request:
    """ka10080. base_dt (YYYYMMDD) as in the official example; omitted when None."""
    if scope not in MINUTE_SCOPES:
        raise ValueError(f"minute scope must be one of {', '.join(MINUTE_SCOPES)}, got {scope!r}")
    body = {"stk_cd": stk_cd, "tic_scope": scope, "upd_stkpc_tp": _adjusted(adjusted)}
    if base_dt is not None:
        if len(base_dt) != 8 or not (base_dt.isascii() and base_dt.isdigit()):
            raise ValueError(f"base_dt must be YYYYMMDD, got {base_dt!r}")
        body["base_dt"] = base_dt
    return Request(PATH_CHART, API_MINUTE_CHART, body)


# -- replies --------------------------------------------------------------------------------------
def kst_stamp_ns(s, name: str) -> int:
    """`YYYYMMDDHHMMSS` KST -> UTC ns."""
    if not isinstance(s, str) or len(s) != 14 or not (s.isascii() and s.isdigit()):
        raise ValueError(f"{name} {str(s)[:20]!r} is not YYYYMMDDHHMMSS")
    try:
        t = datetime.strptime(s, "%Y%m%d%H%M%S").replace(tzinfo=KST)
    except ValueError:
        raise ValueError(f"{name} {s!r} is not a date and time") from None
    return to_ns(t)


def parse_token(body) -> tuple[str, int]:
    """au10001 reply -> (token, expires UTC ns); `expires_dt` is KST."""
    if not isinstance(body, dict) or not isinstance(body.get("token"), str) or not body["token"]:
        raise AuthError(f"{API_TOKEN}: reply has no token")
    try:
        return body["token"], kst_stamp_ns(body.get("expires_dt"), "expires_dt")
    except ValueError as e:
        raise AuthError(f"{API_TOKEN}: {e}") from None


def next_key(headers: Mapping) -> str | None:
    """The continuation key when the reply says more data exist (`cont-yn: Y`), else None. Header names
    are case-insensitive (HTTP); an empty key with cont-yn Y is treated as the end (nothing to send)."""
    h = {str(k).lower(): v for k, v in headers.items()}
    if str(h.get("cont-yn", "")).strip().upper() != "Y":
        return None
    key = str(h.get("next-key", "") or "").strip()
    return key or None


def num(v, name: str) -> int | float | None:
    """A Kiwoom numeric string -> its absolute value ('+'/'-' is a direction); '' or None -> None."""
    if v is None or v == "":
        return None
    if not isinstance(v, str):
        raise ValueError(f"{name} {v!r} is not a string")
    s = v.strip()
    s = s[1:] if s[:1] in ("+", "-") else s
    if not s or not s.isascii() or len(s) > 30:
        raise ValueError(f"{name} {v[:20]!r} is not a number")
    try:
        return int(s) if s.isdigit() else float(s)
    except ValueError:
        raise ValueError(f"{name} {v[:20]!r} is not a number") from None


def positive(v, name: str):
    x = num(v, name)
    if x is None or x <= 0:
        raise ValueError(f"{name} {str(v)[:20]!r} is not a positive number")
    return x


def _base(kind: str, item: str, exch_ns, recv_ns: int, quality: str) -> dict:
    symbol, market, flags = split_item(item)
    rec = {"v": 1, "kind": kind, "provider": PROVIDER, "market": market, "symbol": symbol,
           "exch_ns": exch_ns, "recv_ns": recv_ns, "quality": quality}
    if flags:
        rec["flags"] = flags
    return rec


def snapshot_from_quote(stk_cd: str, body: dict, recv_ns: int, sweep_ns: int | None = None) -> dict:
    """ka10001 reply -> snapshot. The reply carries no time: exch_ns null. Only cur_prc is required;
    the other fields are read when present (their names come from third-party material)."""
    price = positive(body.get("cur_prc"), "cur_prc")
    rec = _base("snapshot", stk_cd, None, recv_ns, "normal")
    change = body.get("pred_pre")
    c = num(change, "pred_pre")
    # pred_pre's sign is the direction against the previous close; an unsigned non-zero change has none
    if c == 0:
        prev = price
    elif c is not None and change.strip()[:1] in ("+", "-"):
        prev = price - c if change.strip()[0] == "+" else price + c
    else:
        prev = None
    rec.update({"price": price, "open": num(body.get("open_pric"), "open_pric"),
                "high": num(body.get("high_pric"), "high_pric"), "low": num(body.get("low_pric"), "low_pric"),
                "prev_close": prev, "cum_vol": num(body.get("trde_qty"), "trde_qty"),
                "upper_limit": num(body.get("upl_pric"), "upl_pric"),
                "lower_limit": num(body.get("lst_pric"), "lst_pric"),
                "sweep_ns": sweep_ns if sweep_ns is not None else recv_ns, "track": "A"})
    return rec


def _rows(body, list_name: str) -> list:
    rows = body.get(list_name) if isinstance(body, dict) else None
    return rows if isinstance(rows, list) else []


@dataclass
class Pages:
    """What a paged call gave: every row in the order received (newest first), nothing merged."""

    rows: list = field(default_factory=list)
    pages: int = 0
    complete: bool = False   # the server said there is no more (cont-yn not Y)
    stopped: str = ""        # why paging ended early: max_pages, repeated_key, empty_page


def collect_pages(fetch: Callable[[str | None], tuple[dict, Mapping]], list_name: str, *, max_pages: int = 10,
                  pause: Callable[[], None] | None = None) -> Pages:
    """Follow `cont-yn`/`next-key` from the first page (fetch(None)) until the server says there is no
    more, or max_pages (the official examples stop at 10) were read. Rows are kept exactly as the pages
    gave them: pages are consecutive slices of one list, so a row repeated on the next page would be a
    second trade, not a copy (see missing_by_count). A key the server already gave, or a page with no
    rows that still says 'more', ends the paging as incomplete instead of looping."""
    if max_pages < 1:
        raise ValueError(f"max_pages must be >= 1, got {max_pages}")
    out = Pages()
    key: str | None = None
    seen: set[str] = set()
    while True:
        body, headers = fetch(key)
        out.pages += 1
        rows = _rows(body, list_name)
        out.rows.extend(rows)
        nk = next_key(headers)
        if nk is None:
            out.complete = True
            return out
        if not rows:
            out.stopped = "empty_page"
            return out
        if nk in seen:
            out.stopped = "repeated_key"
            return out
        if out.pages >= max_pages:
            out.stopped = "max_pages"
            return out
        seen.add(nk)
        key = nk
        if pause is not None:
            pause()


def trades_from_tick_rows(stk_cd: str, rows: list, recv_ns: int, *, source: str = API_TICK_CHART,
                          gap_id: str | None = None) -> tuple[list[dict], list[tuple[object, str]]]:
    """ka10079 rows (scope 1: one row per trade, newest first) -> (trade records oldest first, rejected
    (row, reason)).

    A row has no cumulative volume and no trade id, so two trades of the same second, price and quantity
    are identical rows: they are never merged. Each record carries extra["pos"], its position among the
    rows of its second (0 = the oldest), so identical trades stay distinct and a later merge can count
    them (missing_by_count). Positions are exact for every second the rows hold in full; when paging
    stopped early (Pages.stopped), the oldest second may be cut and its positions start at its oldest
    row fetched. Side is unknown ("none"): pred_pre_sig is the direction against the previous close,
    not the aggressor."""
    out: list[dict] = []
    bad: list[tuple[object, str]] = []
    per_second: Counter = Counter()
    for row in reversed(rows):
        try:
            if not isinstance(row, dict):
                raise ValueError("row is not an object")
            t = row.get("cntr_tm")
            rec = _base("trade", stk_cd, kst_stamp_ns(t, "cntr_tm"), recv_ns, "recovered")
            rec.update({"price": positive(row.get("cur_prc"), "cur_prc"),
                        "qty": positive(row.get("trde_qty"), "trde_qty"), "cum_vol": None, "side": "none",
                        "track": "R", "extra": {"pos": per_second[t]}})
        except ValueError as e:
            bad.append((row, str(e)))
            continue
        per_second[t] += 1
        if gap_id is not None:
            rec["provenance"] = {"source_call": source, "fetched_at_ns": recv_ns, "gap_id": gap_id}
        out.append(rec)
    return out, bad


def missing_by_count(have: list[dict], fetched: list[dict]) -> list[dict]:
    """The fetched trades not already among `have`, matched by counting, never by value alone.

    Trades are compared on (exch_ns, price, qty) - all a tick row carries - as multisets: if the live feed
    recorded a (13:19:39, 78900, 200) trade once and the chart has it twice, one of the two is missing.
    Identical trades cannot be told apart, so which of them is "the missing one" is a convention: the
    first ones of a key (oldest first) stand for those already had, the surplus is returned."""
    left = Counter((r["exch_ns"], r["price"], r["qty"]) for r in have)
    out = []
    for r in fetched:
        k = (r["exch_ns"], r["price"], r["qty"])
        if left[k] > 0:
            left[k] -= 1
        else:
            out.append(r)
    return out


def bars_from_minute_rows(stk_cd: str, rows: list, recv_ns: int, *, minutes: int = 1
                          ) -> tuple[list[dict], list[tuple[object, str]]]:
    """ka10080 rows (newest first) -> (bar records oldest first, rejected (row, reason)). One bar per
    cntr_tm: a bar repeated on a later page is the same bar (bars, unlike ticks, have a unique time)."""
    bars: dict[int, dict] = {}
    bad: list[tuple[object, str]] = []
    for row in rows:
        try:
            if not isinstance(row, dict):
                raise ValueError("row is not an object")
            t = kst_stamp_ns(row.get("cntr_tm"), "cntr_tm")
            rec = _base("bar", stk_cd, t, recv_ns, "recovered")
            rec.update({"open": positive(row.get("open_pric"), "open_pric"),
                        "high": positive(row.get("high_pric"), "high_pric"),
                        "low": positive(row.get("low_pric"), "low_pric"),
                        "close": positive(row.get("cur_prc"), "cur_prc"),
                        "volume": num(row.get("trde_qty"), "trde_qty") or 0,
                        "cum_vol": num(row.get("acc_trde_qty"), "acc_trde_qty"), "minutes": minutes,
                        "track": "R"})
        except ValueError as e:
            bad.append((row, str(e)))
            continue
        bars.setdefault(t, rec)
    return [bars[t] for t in sorted(bars)], bad

