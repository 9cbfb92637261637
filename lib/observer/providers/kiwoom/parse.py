"""Kiwoom WebSocket message decoder: JSON `trnm` messages; REAL `0B` trades and `0D` 10-level books.

Every server message is one JSON object named by `trnm`:

- `REAL`: `{"trnm":"REAL","data":[{"type":"0B","item":"005930","values":{"20":"093012",...}}, ...]}`;
  one message may carry several elements, each decoded on its own (a bad element never loses the others);
- `LOGIN`, `REG`, `REMOVE`: answers carrying `return_code` (0 = done) and `return_msg`;
- `PING`: a heartbeat the client sends back unchanged (`Decoded.control["reply"]` is the text to send);
- `SYSTEM`: a server notice.

Values are strings keyed by FID. Prices carry `+`/`-` for the direction against the previous close, so
their absolute value is taken; FID 15 (trade quantity) is signed by the aggressor (`+` buy, `-` sell);
an empty book level is `"0"` or `"-0"`. Times are `HHMMSS` KST without a date: the trading date is the
one the client sets (set_trading_date) or else the KST date of the receive time.

`KiwoomFrameDecoder.decode()` never raises: a message it cannot use comes back with kind "invalid" and
the reason in `Decoded.errors`; a record that parsed but cannot be real goes to `Decoded.rejects`.
Points the protocol reference marks UNCONFIRMED are constructor parameters with the conservative
default; docs/providers/kiwoom.md lists them.
"""

from __future__ import annotations

from datetime import date

import orjson

from observer.core.clock import NS, kst_ns
from observer.providers.base import BOOK, TRADES, Decoded

PROVIDER = "kiwoom"
MARKET = "krx"

TYPE_TRADES = "0B"  # 주식체결
TYPE_BOOK = "0D"    # 주식호가잔량
TYPE_BY_CHANNEL = {TRADES: TYPE_TRADES, BOOK: TYPE_BOOK}
CHANNEL_BY_TYPE = {TYPE_TRADES: TRADES, TYPE_BOOK: BOOK}

# symbol suffix -> market of the record: `005930` KRX, `005930_NX` NXT, `005930_AL` the unified (SOR) feed
SUFFIX_MARKET = {"": "krx", "_NX": "nxt", "_AL": "sor"}

# 0B FIDs
F_TIME, F_PRICE, F_CHANGE, F_RATE, F_QTY, F_CUM_VOL, F_CUM_VALUE = "20", "10", "11", "12", "15", "13", "14"
F_OPEN, F_HIGH, F_LOW, F_ASK1, F_BID1 = "16", "17", "18", "27", "28"
F_STRENGTH, F_PHASE, F_EXCHANGE = "228", "290", "9081"
# 0D FIDs: ask price 1-10, bid price 1-10, ask qty 1-10, bid qty 1-10
F_BOOK_TIME, F_TOTAL_ASK, F_TOTAL_BID, F_AUCTION_PRICE, F_AUCTION_QTY = "21", "121", "125", "23", "24"
ASK_PRICE = tuple(str(i) for i in range(41, 51))
BID_PRICE = tuple(str(i) for i in range(51, 61))
ASK_QTY = tuple(str(i) for i in range(61, 71))
BID_QTY = tuple(str(i) for i in range(71, 81))
LEVEL_FIDS = ASK_PRICE + BID_PRICE + ASK_QTY + BID_QTY

CONTROL_TRNM = ("LOGIN", "REG", "REMOVE")

_DAY_NS = 86400 * NS
_SYM_MAX = 40                 # the record contracts' symbol length
_I64_MAX = (1 << 63) - 1      # what a record can be stored with (orjson writes 64-bit integers)
_DIGITS_MAX = 19              # more digits than any 64-bit number: refused before int() sees it
_TEXT_MAX = 200               # longest control text kept (a hostile server cannot fill the log)


class FieldError(ValueError):
    """One FID missing or malformed; the message names it."""


def signed(v, fid: str) -> int:
    """A Kiwoom numeric string with an optional `+`/`-` prefix -> int. Strict: ASCII digits only (int()
    alone would take `1_000`, spaces and non-ASCII digits), within 64 bits, a str and nothing else."""
    # the hot path: at most 18 digits cannot leave 64 bits
    if type(v) is str and 0 < len(v) <= 18 and v.isascii():
        c = v[0]
        if (c == "+" or c == "-") and v[1:].isdigit() or v.isdigit():
            return int(v)
    return _signed_checked(v, fid)


def _signed_checked(v, fid: str) -> int:
    """signed()'s slow path: the value is long, malformed or not a string; name what is wrong."""
    if not isinstance(v, str):
        raise FieldError(f"FID {fid} is {type(v).__name__}, not a string")
    s = v[1:] if v[:1] in ("+", "-") else v
    if not s or not s.isascii() or not s.isdigit():
        raise FieldError(f"FID {fid} is not a number: {v[:20]!r}")
    if len(s) > _DIGITS_MAX or (n := int(s)) > _I64_MAX:
        raise FieldError(f"FID {fid} is beyond the 64-bit range: {v[:24]!r}")
    return -n if v[0] == "-" else n


def signed_all(raw: list, fids: tuple[str, ...]) -> list[int]:
    """signed() of many values at C speed: one check of all of them joined (ASCII, only digits once the
    signs are gone, none longer than 18), then int() of each; int() refuses a sign that is not in front
    or an empty value. Anything else goes through signed() one by one, which names the bad FID."""
    try:
        j = "".join(raw)
        if j.isascii() and j.replace("+", "").replace("-", "").isdigit() and max(map(len, raw)) <= 18:
            return list(map(int, raw))
    except (TypeError, ValueError):
        pass
    return list(map(signed, raw, fids))


def hms_offset_ns(t, fid: str) -> int:
    """ns since midnight of an `HHMMSS` time FID."""
    if not isinstance(t, str) or len(t) != 6 or not t.isascii() or not t.isdigit():
        raise FieldError(f"FID {fid} {str(t)[:12]!r} is not HHMMSS")
    h, m, s = int(t[:2]), int(t[2:4]), int(t[4:])
    if h > 23 or m > 59 or s > 59:
        raise FieldError(f"FID {fid} {t!r} is not a time of day")
    return (h * 3600 + m * 60 + s) * NS


def split_item(item: str) -> tuple[str, str, list[str] | None]:
    """(symbol, market, flags) of a registered item: the `_NX`/`_AL` suffix names the venue. An unknown
    suffix keeps the whole item as the symbol, on market krx, flagged so it is never taken for a KRX code."""
    base, sep, suffix = item.rpartition("_")
    if sep and base:
        market = SUFFIX_MARKET.get("_" + suffix)
        if market is not None:
            return base, market, None
        return item, MARKET, ["unknown_item_suffix"]
    return item, MARKET, None


class KiwoomFrameDecoder:
    """Decoder of one connection (or one replay).

    subscribed: channel -> set of registered items (as sent, suffix included); a data element for an
      item not in it is rejected ("never subscribed"). None disables the check (tools, replay).
    trading_date: the date of the HHMMSS times; None = the KST date of each message's receive time.
    cum_value_unit: KRW per unit of FID 14 (cumulative traded value). UNCONFIRMED: one third-party test
      says millions of KRW. None (default) keeps FID 14 verbatim in extra["fid14"] and leaves cum_value
      null, so no record states a traded value in a unit nobody confirmed.
    require_all_levels: a 0D element must carry all 40 level FIDs 41-80 (the one real sample does); a
      missing one makes the element an error instead of being read as an empty level. UNCONFIRMED whether
      the server ever sends partial books; False reads a missing level FID as empty.
    system_ends_connection: a SYSTEM notice is marked control["disconnect"] = True (the official example
      ends the connection on one; the notice's meaning is UNCONFIRMED). The stream client reconnects.
    """

    __slots__ = ("subscribed", "session_id", "cum_value_unit", "require_all_levels", "system_ends_connection",
                 "_trading_midnight", "_tcache")

    def __init__(self, *, subscribed: dict[str, set[str]] | None = None, trading_date: date | None = None,
                 session_id: str | None = None, cum_value_unit: int | None = None,
                 require_all_levels: bool = True, system_ends_connection: bool = True):
        if cum_value_unit is not None and (not isinstance(cum_value_unit, int) or cum_value_unit <= 0):
            raise ValueError(f"cum_value_unit must be a positive integer or None, got {cum_value_unit!r}")
        self.subscribed = subscribed
        self.session_id = session_id
        self.cum_value_unit = cum_value_unit
        self.require_all_levels = require_all_levels
        self.system_ends_connection = system_ends_connection
        self._trading_midnight: int | None = None
        self._tcache: dict[str, int] = {}
        self.set_trading_date(trading_date)

    def set_trading_date(self, day: date | None) -> None:
        self._trading_midnight = None if day is None else kst_ns(day, "000000")

    # -- entry point ------------------------------------------------------------------------
    def decode(self, frame: str, recv_ns: int) -> Decoded:
        try:
            return self._decode(frame, recv_ns)
        except Exception as e:  # a safety net: the decoder must never take a connection down
            d = Decoded("invalid", "")
            d.errors.append(f"decoder error {type(e).__name__}: {str(e)[:_TEXT_MAX]}")
            return d

    def _decode(self, frame: str, recv_ns: int) -> Decoded:
        if not frame:
            return _invalid("", "empty message")
        try:
            msg = orjson.loads(frame)
        except orjson.JSONDecodeError as e:
            return _invalid("", f"message is not JSON: {str(e)[:_TEXT_MAX]}")
        if not isinstance(msg, dict):
            return _invalid("", f"message is a JSON {type(msg).__name__}, not an object")
        trnm = msg.get("trnm")
        if not isinstance(trnm, str) or not trnm:
            return _invalid("", "message has no trnm")
        if trnm == "REAL":
            return self._real(msg, recv_ns)
        if trnm == "PING":
            d = Decoded("pingpong", trnm)
            d.control = {"trnm": trnm, "reply": frame}  # echoed byte for byte, as the official client does
            return d
        if trnm in CONTROL_TRNM:
            return _answer(trnm, msg)
        if trnm == "SYSTEM":
            d = Decoded("control", trnm)
            d.control = {"trnm": trnm, "code": _text(msg.get("code", msg.get("return_code"))),
                         "message": _text(msg.get("message", msg.get("return_msg"))),
                         "disconnect": self.system_ends_connection}
            return d
        d = Decoded("unsupported", trnm[:40])
        d.errors.append(f"trnm {trnm[:40]!r} is not decoded (kept in raw/ only)")
        return d

    # -- REAL --------------------------------------------------------------------------------
    def _real(self, msg: dict, recv_ns: int) -> Decoded:
        data = msg.get("data")
        if not isinstance(data, list) or not data:
            return _invalid("REAL", "REAL message has no data list")
        types = {e.get("type") for e in data if isinstance(e, dict) and isinstance(e.get("type"), str)}
        tr = next(iter(types)) if len(types) == 1 else "REAL"
        d = Decoded("data", tr[:40])
        midnight = self._trading_midnight
        if midnight is None:
            midnight = (recv_ns + 9 * 3600 * NS) // _DAY_NS * _DAY_NS - 9 * 3600 * NS  # KST has no DST
        n = len(data)
        decoded = unsupported = 0
        for i, el in enumerate(data, 1):
            where = f"REAL element {i}/{n}"
            if not isinstance(el, dict):
                d.errors.append(f"{where} is a JSON {type(el).__name__}, not an object")
                continue
            typ, item, values = el.get("type"), el.get("item"), el.get("values")
            if not isinstance(typ, str) or typ not in CHANNEL_BY_TYPE:
                unsupported += 1
                d.errors.append(f"{where}: type {str(typ)[:12]!r} is not decoded (kept in raw/ only)")
                continue
            where = f"{where} ({typ} {str(item)[:12]!r})"
            if not isinstance(item, str) or not 0 < len(item) <= _SYM_MAX:
                d.errors.append(f"{where}: item is not a symbol of 1-{_SYM_MAX} characters")
                continue
            if not isinstance(values, dict):
                d.errors.append(f"{where}: values is not an object")
                continue
            try:
                if typ == TYPE_TRADES:
                    rec, reason, flags = self._trade(item, values, recv_ns, midnight)
                else:
                    rec, reason, flags = self._book(item, values, recv_ns, midnight)
            except FieldError as e:
                d.errors.append(f"{where}: {e}")
                continue
            decoded += 1
            if self.session_id is not None:
                rec["session_id"] = self.session_id
            if reason is None and self.subscribed is not None and item not in self.subscribed.get(
                    CHANNEL_BY_TYPE[typ], ()):
                reason = f"symbol never subscribed ({typ})"
            if reason is not None:
                d.rejects.append((rec, reason, item))
                continue
            if flags:
                rec["quality"] = "degraded"
                rec["flags"] = flags
            d.records.append(rec)
        d.count = decoded
        if unsupported == n:
            d.kind = "unsupported"
        elif decoded == 0:
            d.kind = "invalid"
        return d

    def _exch_ns(self, values: dict, fid: str, midnight: int) -> int:
        t = values.get(fid)
        off = self._tcache.get(t) if isinstance(t, str) else None
        if off is None:
            if t is None:
                raise FieldError(f"FID {fid} (time) missing")
            off = hms_offset_ns(t, fid)
            if len(self._tcache) > 100_000:  # one entry per second of a day: bounded by 86,400 anyway
                self._tcache.clear()
            self._tcache[t] = off
        exch = midnight + off
        if not 0 <= exch <= _I64_MAX:
            raise FieldError("trading date outside 1970-2262")
        return exch

    # -- 0B ----------------------------------------------------------------------------------
    def _trade(self, item: str, v: dict, recv_ns: int, midnight: int):
        exch = self._exch_ns(v, F_TIME, midnight)
        price = abs(_need(v, F_PRICE))
        qty = abs(_need(v, F_QTY))
        q = v[F_QTY]  # a str: _need checked it
        side = "buy" if q[:1] == "+" else "sell" if q[:1] == "-" else "none"
        change = _opt(v, F_CHANGE)
        symbol, market, flags = split_item(item)
        extra: dict = {}
        if change is not None:
            extra["prev_close"] = price - change  # FID 11's sign is the direction: price - prev close
        for fid, name in ((F_RATE, "change_rate"), (F_STRENGTH, "strength"), (F_EXCHANGE, "exchange")):
            if isinstance(v.get(fid), str):
                extra[name] = v[fid][:40]
        cum_value = None
        raw_value = _opt(v, F_CUM_VALUE)
        if raw_value is not None:
            if self.cum_value_unit is None:
                extra["fid14"] = raw_value
            else:
                cum_value = raw_value * self.cum_value_unit
        phase = v.get(F_PHASE)
        rec = {
            "v": 1, "kind": "trade", "provider": PROVIDER, "market": market, "symbol": symbol,
            "exch_ns": exch, "recv_ns": recv_ns, "quality": "normal",
            "price": price, "qty": qty, "cum_vol": _opt(v, F_CUM_VOL), "cum_value": cum_value, "side": side,
            "bid": _opt_abs(v, F_BID1), "ask": _opt_abs(v, F_ASK1), "open": _opt_abs(v, F_OPEN),
            "high": _opt_abs(v, F_HIGH), "low": _opt_abs(v, F_LOW),
            "phase": phase[:40] if isinstance(phase, str) else None,
        }
        if extra:
            rec["extra"] = extra
        if price <= 0:
            return rec, "price <= 0", None
        if qty <= 0:
            return rec, "trade quantity <= 0", None
        if cum_value is not None and cum_value > _I64_MAX:
            return rec, "a number beyond the 64-bit range", None
        return rec, None, flags

    # -- 0D ----------------------------------------------------------------------------------
    def _book(self, item: str, v: dict, recv_ns: int, midnight: int):
        exch = self._exch_ns(v, F_BOOK_TIME, midnight)
        raw = list(map(v.get, LEVEL_FIDS))
        if None in raw:
            if self.require_all_levels:
                raise FieldError(f"FID {LEVEL_FIDS[raw.index(None)]} missing")
            raw = ["0" if x is None or x == "" else x for x in raw]
        n = signed_all(raw, LEVEL_FIDS)
        ap = [abs(x) for x in n[:10]]
        bp = [abs(x) for x in n[10:20]]
        aq, bq = n[20:30], n[30:]
        symbol, market, flags = split_item(item)
        rec = {
            "v": 1, "kind": "book", "provider": PROVIDER, "market": market, "symbol": symbol,
            "exch_ns": exch, "recv_ns": recv_ns, "quality": "normal",
            # an empty level ("0"/"-0") has price 0 and is left out, as in every book record
            "asks": [[p, q] for p, q in zip(ap, aq, strict=True) if p > 0],
            "bids": [[p, q] for p, q in zip(bp, bq, strict=True) if p > 0],
            "total_ask": _opt(v, F_TOTAL_ASK), "total_bid": _opt(v, F_TOTAL_BID), "cum_vol": _opt(v, F_CUM_VOL),
            "phase": None,
        }
        auction = _opt_abs(v, F_AUCTION_PRICE)
        if auction:
            rec["auction"] = {"price": auction, "qty": _opt(v, F_AUCTION_QTY)}
        if min(aq + bq) < 0:
            return rec, "negative book size", None
        if not rec["asks"] and not rec["bids"] and not auction:
            return rec, "book has no price > 0", None
        asks, bids = rec["asks"], rec["bids"]
        # a crossed or locked book is real in a call auction (an expected price is published then)
        if asks and bids and bids[0][0] >= asks[0][0] and not auction:
            flags = (flags or []) + ["crossed_book" if bids[0][0] > asks[0][0] else "locked_book"]
        return rec, None, flags


# -- helpers ---------------------------------------------------------------------------------
def _invalid(tr: str, why: str) -> Decoded:
    d = Decoded("invalid", tr)
    d.errors.append(why)
    return d


def _text(v) -> str:
    return v[:_TEXT_MAX] if isinstance(v, str) else "" if v is None else str(v)[:_TEXT_MAX]


def return_code(v) -> int | None:
    """`return_code` as an int: the samples send a JSON number; a numeric string is read too. Anything
    else (missing, bool, text) is None, which no caller takes for success."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        s = v.strip()
        digits = s[1:] if s[:1] == "-" else s
        if digits and digits.isascii() and digits.isdigit() and len(digits) <= 18:
            return int(s)
    return None


def _answer(trnm: str, msg: dict) -> Decoded:
    """LOGIN/REG/REMOVE answer: ok only when return_code is 0 (a missing code is not success)."""
    d = Decoded("control", trnm)
    code = return_code(msg.get("return_code"))
    d.control = {"trnm": trnm, "return_code": code, "return_msg": _text(msg.get("return_msg")), "ok": code == 0}
    if "sor_yn" in msg:  # reported on the LOGIN answer by a third-party client
        d.control["sor_yn"] = _text(msg.get("sor_yn"))
    return d


def _need(v: dict, fid: str) -> int:
    x = v.get(fid)
    if x is None:
        raise FieldError(f"FID {fid} missing")
    return signed(x, fid)


def _opt(v: dict, fid: str) -> int | None:
    """An optional FID: absent or "" -> None; present but malformed is still an error."""
    x = v.get(fid)
    return None if x is None or x == "" else signed(x, fid)


def _opt_abs(v: dict, fid: str) -> int | None:
    x = _opt(v, fid)
    return None if x is None else abs(x)


# -- client messages ---------------------------------------------------------------------------
def login_message(token: str) -> str:
    return orjson.dumps({"trnm": "LOGIN", "token": token}).decode()


def _group(items: list[str], types: list[str]) -> list[dict]:
    if not items or not types:
        raise ValueError("items and types must both be non-empty")
    return [{"item": list(items), "type": list(types)}]


def register_message(items: list[str], types: list[str], *, grp_no: str = "1", keep_existing: bool = True) -> str:
    """REG. `refresh` "1" keeps the group's existing registrations, "0" replaces them (per the field's
    description; UNCONFIRMED beyond it): the default keeps them, so a registration never silently drops
    another one."""
    return orjson.dumps({"trnm": "REG", "grp_no": grp_no, "refresh": "1" if keep_existing else "0",
                         "data": _group(items, types)}).decode()


def remove_message(items: list[str], types: list[str], *, grp_no: str = "1") -> str:
    """REMOVE naming the items and types to release. Public clients also send `grp_no` alone; which form
    releases what is UNCONFIRMED, so only the explicit form (it cannot release more than it names) is built."""
    return orjson.dumps({"trnm": "REMOVE", "grp_no": grp_no, "data": _group(items, types)}).decode()
