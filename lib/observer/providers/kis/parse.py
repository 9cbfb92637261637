"""KIS WebSocket frame decoder: `0|TR_ID|NNN|f^f^...` data frames and JSON control messages.

The hot path (H0STCNT0 trades, H0STASP0 books) uses plain str.split and int(); no regex per field
and no JSON Schema per record. `KisFrameDecoder.decode()` never raises: every problem comes back
in `Decoded.errors` (the frame is unusable or partly unusable) or `Decoded.rejects` (a record that
parsed but cannot be real: price <= 0, zero quantity, a symbol never subscribed). Suspicious but
possible records (crossed/locked book outside an auction, a price beyond the daily limits computed
from the previous close) are kept with quality "degraded" and a `flags` entry.

Protocol facts (frame layout, field positions) and assumptions: docs/providers/kis.md.
"""

from __future__ import annotations

from datetime import date

import orjson

from observer.core.clock import NS, kst_ns, parse_yyyymmdd
from observer.providers.base import BOOK, TRADES, Decoded

PROVIDER = "kis"
MARKET = "krx"

TR_TRADES = "H0STCNT0"
TR_BOOK = "H0STASP0"
TR_BY_CHANNEL = {TRADES: TR_TRADES, BOOK: TR_BOOK}
CHANNEL_BY_TR = {TR_TRADES: TRADES, TR_BOOK: BOOK}

# documented record widths (docs/providers/kis.md, Wire format); wider records keep the rest in extra["trailing"]
CNT_FIELDS = 46
ASP_FIELDS = 59
ASP_MID_FIELDS = 62  # MID_PRC, MIDP_TOTAL_RSQN, MIDP_CLS_CODE appended mid-2026

CNT_NAMES = (
    "MKSC_SHRN_ISCD", "STCK_CNTG_HOUR", "STCK_PRPR", "PRDY_VRSS_SIGN", "PRDY_VRSS", "PRDY_CTRT",
    "WGHN_AVRG_STCK_PRC", "STCK_OPRC", "STCK_HGPR", "STCK_LWPR", "ASKP1", "BIDP1", "CNTG_VOL", "ACML_VOL",
    "ACML_TR_PBMN", "SELN_CNTG_CSNU", "SHNU_CNTG_CSNU", "NTBY_CNTG_CSNU", "CTTR", "SELN_CNTG_SMTN",
    "SHNU_CNTG_SMTN", "CCLD_DVSN", "SHNU_RATE", "PRDY_VOL_VRSS_ACML_VOL_RATE", "OPRC_HOUR",
    "OPRC_VRSS_PRPR_SIGN", "OPRC_VRSS_PRPR", "HGPR_HOUR", "HGPR_VRSS_PRPR_SIGN", "HGPR_VRSS_PRPR",
    "LWPR_HOUR", "LWPR_VRSS_PRPR_SIGN", "LWPR_VRSS_PRPR", "BSOP_DATE", "NEW_MKOP_CLS_CODE", "TRHT_YN",
    "ASKP_RSQN1", "BIDP_RSQN1", "TOTAL_ASKP_RSQN", "TOTAL_BIDP_RSQN", "VOL_TNRT",
    "PRDY_SMNS_HOUR_ACML_VOL", "PRDY_SMNS_HOUR_ACML_VOL_RATE", "HOUR_CLS_CODE", "MRKT_TRTM_CLS_CODE",
    "VI_STND_PRC",
)
ASP_NAMES = (
    ("MKSC_SHRN_ISCD", "BSOP_HOUR", "HOUR_CLS_CODE")
    + tuple(f"ASKP{i}" for i in range(1, 11)) + tuple(f"BIDP{i}" for i in range(1, 11))
    + tuple(f"ASKP_RSQN{i}" for i in range(1, 11)) + tuple(f"BIDP_RSQN{i}" for i in range(1, 11))
    + ("TOTAL_ASKP_RSQN", "TOTAL_BIDP_RSQN", "OVTM_TOTAL_ASKP_RSQN", "OVTM_TOTAL_BIDP_RSQN",
       "ANTC_CNPR", "ANTC_CNQN", "ANTC_VOL", "ANTC_CNTG_VRSS", "ANTC_CNTG_VRSS_SIGN", "ANTC_CNTG_PRDY_CTRT",
       "ACML_VOL", "TOTAL_ASKP_RSQN_ICDC", "TOTAL_BIDP_RSQN_ICDC", "OVTM_TOTAL_ASKP_ICDC",
       "OVTM_TOTAL_BIDP_ICDC", "STCK_DEAL_CLS_CODE", "MID_PRC", "MIDP_TOTAL_RSQN", "MIDP_CLS_CODE")
)
# fields converted with int() on the hot path: when one fails, the slow path names it
_CNT_INT = (2, 4, 7, 8, 9, 10, 11, 12, 13, 14, 36, 37)
_ASP_INT = tuple(range(3, 45)) + (47, 48, 53)

_SIDE = {"1": "buy", "5": "sell"}
_DAY_NS = 86400 * NS
_KST_OFFSET_NS = 9 * 3600 * NS
_LIMIT_UP = 1.3    # KRX daily price limit: previous close +-30 % (rounded to the tick grid
_LIMIT_DOWN = 0.7  # inside these bounds), so only a price beyond the unrounded bound is flagged
# the contract's symbol length, and the integer range a record can be stored with (JSON as orjson
# writes it): the guard rejects what the record contracts or the writer would refuse later
_SYM_MAX = 40
_I64_MAX = (1 << 63) - 1
_I64_MIN = -(1 << 63)
_MIDNIGHT_MAX = _I64_MAX - _DAY_NS


def _hms_offset(t: str) -> int | None:
    if len(t) != 6 or not (t.isascii() and t.isdigit()):
        return None
    h, m, s = int(t[:2]), int(t[2:4]), int(t[4:])
    if h > 23 or m > 59 or s > 59:
        return None
    return (h * 3600 + m * 60 + s) * NS


def kst_midnight_ns(recv_ns: int) -> int:
    """UTC ns of 00:00 KST of the KST day that contains recv_ns (KST has no DST)."""
    return (recv_ns + _KST_OFFSET_NS) // _DAY_NS * _DAY_NS - _KST_OFFSET_NS


def in_auction(hour_cls: str, hhmmss: str) -> bool:
    """Opening (before 09:00) or closing (15:20-15:30) call auction, or a non-regular HOUR_CLS_CODE
    (A/B/C/D: expected prices, VI single-price) - a crossed or locked book is real then."""
    return hour_cls not in ("0", "") or hhmmss < "090000" or "152000" <= hhmmss < "153000"


class KisFrameDecoder:
    """Stateful decoder of one connection (or one replay): learns the previous close per symbol from
    trades (for the limit guard) and knows the trading date books are stamped with.

    subscribed: channel -> set of symbols; when given, a data record for a symbol not in it is
    rejected ("never subscribed"). None disables the check (observer-decode, replay).
    trading_date: date of book frames (they carry only HHMMSS); None = the BSOP_DATE of the latest
    trade decoded, else the KST date of recv_ns.
    """

    __slots__ = ("subscribed", "_trading_midnight", "session_id", "_tcache", "_dcache", "_prev",
                 "provider", "market", "last_bsop_date", "_learned_midnight")

    def __init__(self, *, subscribed: dict[str, set[str]] | None = None, trading_date: date | None = None,
                 session_id: str | None = None):
        self.subscribed = subscribed
        self.session_id = session_id
        self._trading_midnight: int | None = None
        self._tcache: dict[str, int] = {}
        self._dcache: dict[str, int] = {}
        self._prev: dict[str, tuple[int, int]] = {}
        self.provider = PROVIDER
        self.market = MARKET
        self.last_bsop_date: str | None = None
        self._learned_midnight: int | None = None
        if trading_date is not None:
            self.set_trading_date(trading_date)

    def set_trading_date(self, day: date | None) -> None:
        self._trading_midnight = None if day is None else kst_ns(day, "000000")

    # -- entry point ------------------------------------------------------------------------
    def decode(self, frame: str, recv_ns: int) -> Decoded:
        try:
            if frame[:11] == "0|H0STCNT0|":  # the hot path, inlined
                cnt, sep, payload = frame[11:].partition("|")
                d = Decoded("data", TR_TRADES)
                if sep and cnt.isascii() and cnt.isdigit():
                    fields = payload.split("^")
                    n = int(cnt)
                    if n == 1 and len(fields) == CNT_FIELDS:
                        self._trades(d, fields, 1, CNT_FIELDS, recv_ns)
                        return d
                    width = self._width(d, n, fields, CNT_FIELDS)
                    if width:
                        self._trades(d, fields, n, width, recv_ns)
                    return d
            c = frame[:1]
            if c == "0":
                return self._data(frame, recv_ns)
            if c == "{":
                return self._control(frame)
            if c == "1":
                parts = frame.split("|", 3)
                tr = parts[1] if len(parts) > 1 else ""
                d = Decoded("encrypted", tr)
                d.errors.append(f"encrypted frame ({tr or 'no tr_id'}): payload not decoded "
                                "(execution notices are not market data)")
                return d
            d = Decoded("invalid", "")
            d.errors.append(f"not a KIS frame: starts with {frame[:12]!r}" if frame else "empty frame")
            return d
        except Exception as e:  # the decoder must never take a connection down
            d = Decoded("invalid", "")
            d.errors.append(f"decoder error {type(e).__name__}: {e}")
            return d

    def _control(self, frame: str) -> Decoded:
        try:
            msg = orjson.loads(frame)
        except orjson.JSONDecodeError as e:
            d = Decoded("invalid", "")
            d.errors.append(f"control message is not JSON: {e}")
            return d
        if not isinstance(msg, dict):
            d = Decoded("invalid", "")
            d.errors.append("control message is not a JSON object")
            return d
        header = msg.get("header") if isinstance(msg.get("header"), dict) else {}
        body = msg.get("body") if isinstance(msg.get("body"), dict) else {}
        tr = str(header.get("tr_id", ""))
        d = Decoded("pingpong" if tr == "PINGPONG" else "control", tr)
        d.control = {"tr_id": tr, "tr_key": str(header.get("tr_key", "") or ""),
                     "rt_cd": str(body.get("rt_cd", "") or ""), "msg_cd": str(body.get("msg_cd", "") or ""),
                     "msg1": str(body.get("msg1", "") or ""), "encrypt": header.get("encrypt")}
        out = body.get("output")
        if isinstance(out, dict):
            d.control["output"] = out
        return d

    def _data(self, frame: str, recv_ns: int) -> Decoded:
        parts = frame.split("|", 3)
        if len(parts) != 4:
            d = Decoded("invalid", parts[1] if len(parts) > 1 else "")
            d.errors.append(f"data frame has {len(parts)} '|' parts, want 4")
            return d
        _, tr, cnt, payload = parts
        if tr not in (TR_TRADES, TR_BOOK):
            d = Decoded("unsupported", tr)
            d.errors.append(f"tr_id {tr!r} is not decoded (kept in raw/ only)")
            return d
        d = Decoded("data", tr)
        if not (cnt.isascii() and cnt.isdigit()) or int(cnt) <= 0:
            d.errors.append(f"{tr}: record count {cnt[:12]!r} is not a positive number")
            d.kind = "invalid"
            return d
        n = int(cnt)
        fields = payload.split("^")
        if tr == TR_TRADES:
            width = self._width(d, n, fields, CNT_FIELDS)
            if width:
                self._trades(d, fields, n, width, recv_ns)
        else:
            width = self._width(d, n, fields, ASP_FIELDS)
            if width:
                self._books(d, fields, n, width, recv_ns)
        return d

    @staticmethod
    def _width(d: Decoded, n: int, fields: list[str], need: int) -> int:
        if n <= 0:
            d.errors.append(f"{d.tr_id}: record count {n} is not a positive number")
            d.kind = "invalid"
            return 0
        total = len(fields)
        if total % n:
            d.errors.append(f"{d.tr_id}: {total} fields is not a multiple of the record count {n}")
            d.kind = "invalid"
            return 0
        width = total // n
        if width < need:
            d.errors.append(f"{d.tr_id}: {width} fields per record, fewer than the {need} required")
            d.kind = "invalid"
            return 0
        return width

    # -- the records of one data frame --------------------------------------------------------
    def _trades(self, d: Decoded, fields: list[str], count: int, width: int, recv_ns: int) -> None:
        self._records(d, fields, count, width, recv_ns, self._trade, CNT_NAMES, _CNT_INT, TRADES, 0)

    def _books(self, d: Decoded, fields: list[str], count: int, width: int, recv_ns: int) -> None:
        midnight = self._trading_midnight
        if midnight is None:
            midnight = self._learned_midnight
            if midnight is None:
                midnight = kst_midnight_ns(recv_ns)
        self._records(d, fields, count, width, recv_ns, self._book, ASP_NAMES, _ASP_INT, BOOK, midnight)

    def _records(self, d: Decoded, fields: list[str], count: int, width: int, recv_ns: int, build,
                 names: tuple[str, ...], ints: tuple[int, ...], channel: str, midnight: int) -> None:
        """The loop both channels share: each record's `width` fields through the channel's `build`,
        which returns (record, reject reason or None, flags or None), or None when the record is
        invalid (the error noted in d); a ValueError from it means a numeric field is not numeric."""
        out, rejects = d.records, d.rejects
        sub = self.subscribed.get(channel) if self.subscribed is not None else None
        sid = self.session_id
        for i in range(count):
            f = fields if count == 1 else fields[i * width:(i + 1) * width]
            try:
                r = build(d, f, width, recv_ns, i, count, sub, midnight)
            except ValueError:
                d.errors.append(self._bad_field(f, names, ints, i, count, d))
                continue
            if r is None:
                continue
            rec, reason, flags = r
            if sid is not None:
                rec["session_id"] = sid
            if reason is not None:
                rejects.append((rec, reason, f[0][:_SYM_MAX]))
                continue
            if flags:
                rec["quality"] = "degraded"
                rec["flags"] = flags
            out.append(rec)

    # -- H0STCNT0 ---------------------------------------------------------------------------
    def _trade(self, d: Decoded, f: list[str], width: int, recv_ns: int, i: int, count: int,
               sub: set[str] | None, _midnight: int):
        sym = f[0]
        price = int(f[2])
        prev = price - int(f[4])  # previous close = price - PRDY_VRSS
        qty = int(f[12])
        cv, cval, bid, ask, op, hi, lo, asz, bsz = (int(f[13]), int(f[14]), int(f[11]), int(f[10]),
                                                   int(f[7]), int(f[8]), int(f[9]), int(f[36]), int(f[37]))
        rec = {
            "v": 1, "kind": "trade", "provider": "kis", "market": "krx", "symbol": sym,
            "exch_ns": None, "recv_ns": recv_ns, "quality": "normal",
            "price": price, "qty": qty, "cum_vol": cv, "cum_value": cval,
            "side": _SIDE.get(f[21], "none"), "bid": bid, "ask": ask,
            "open": op, "high": hi, "low": lo, "phase": f[34],
            "extra": {"hour_cls": f[43], "halt": f[35], "ask_size": asz,
                      "bid_size": bsz, "prev_close": prev},
        }
        t = f[1]
        off = self._tcache.get(t)
        if off is None and (off := self._time_offset(d, t, "STCK_CNTG_HOUR", i, count)) is None:
            return None
        bd = f[33]
        dcache = self._dcache
        mid = dcache.get(bd)
        if mid is None:
            try:
                mid = kst_ns(parse_yyyymmdd(bd), "000000")
            except ValueError:
                mid = -1
            if not 0 <= mid <= _MIDNIGHT_MAX:  # exch_ns: UTC ns >= 0 (contract) in 64 bits: 1970-2262
                d.errors.append(f"{d.tr_id} record {i + 1}/{count}: BSOP_DATE {bd[:12]!r} is not a YYYYMMDD "
                                "trading date")
                return None
            if len(dcache) > 64:
                dcache.clear()
            dcache[bd] = mid
            self.last_bsop_date = bd
        rec["exch_ns"] = mid + off
        self._learned_midnight = mid
        if width > CNT_FIELDS:
            rec["extra"]["trailing"] = f[CNT_FIELDS:]
        # guard: reject what cannot be real, flag what is only suspicious
        if price <= 0 or qty <= 0:
            return rec, "price <= 0" if price <= 0 else "trade quantity <= 0", None
        if not 0 < len(sym) <= _SYM_MAX:
            return rec, f"symbol of {len(sym)} characters (1-{_SYM_MAX})", None
        if (max(price, qty, cv, cval, bid, ask, op, hi, lo, asz, bsz, prev) > _I64_MAX
                or min(cv, cval, bid, ask, op, hi, lo, asz, bsz, prev) < _I64_MIN):
            return rec, "a number beyond the 64-bit range", None
        if sub is not None and sym not in sub:
            return rec, "symbol never subscribed (H0STCNT0)", None
        if prev > 0:
            self._prev[sym] = (mid, prev)
            if price > prev * _LIMIT_UP or price < prev * _LIMIT_DOWN:
                return rec, None, ["beyond_limit"]
        return rec, None, None

    # -- H0STASP0 ---------------------------------------------------------------------------
    def _book(self, d: Decoded, f: list[str], width: int, recv_ns: int, i: int, count: int,
              sub: set[str] | None, midnight: int):
        sym = f[0]
        ap = list(map(int, f[3:13]))
        bp = list(map(int, f[13:23]))
        aq = list(map(int, f[23:33]))
        bq = list(map(int, f[33:43]))
        antc = int(f[47])
        antq = int(f[48])
        tot = (int(f[43]), int(f[44]), int(f[53]))
        rec = {
            "v": 1, "kind": "book", "provider": "kis", "market": "krx", "symbol": sym,
            "exch_ns": None, "recv_ns": recv_ns, "quality": "normal",
            "asks": [[p, q] for p, q in zip(ap, aq, strict=True) if p > 0],
            "bids": [[p, q] for p, q in zip(bp, bq, strict=True) if p > 0],
            "total_ask": tot[0], "total_bid": tot[1], "cum_vol": tot[2],
            "phase": f[2],
        }
        if antc > 0:
            rec["auction"] = {"price": antc, "qty": antq}
        t = f[1]
        off = self._tcache.get(t)
        if off is None and (off := self._time_offset(d, t, "BSOP_HOUR", i, count)) is None:
            return None
        rec["exch_ns"] = exch = midnight + off
        if not 0 <= exch <= _I64_MAX:  # UTC ns >= 0 (contract) in 64 bits: the trading date is not 1970-2262
            d.errors.append(f"{d.tr_id} record {i + 1}/{count}: trading date outside 1970-2262")
            return None
        if width > ASP_FIELDS:
            extra = {}
            if width >= ASP_MID_FIELDS:
                extra["mid_prc"] = f[59]
                extra["midp_total_rsqn"] = f[60]
                extra["midp_cls_code"] = f[61]
                if width > ASP_MID_FIELDS:
                    extra["trailing"] = f[ASP_MID_FIELDS:]
            else:
                extra["trailing"] = f[ASP_FIELDS:]
            rec["extra"] = extra
        if min(ap + bp) < 0 or min(aq + bq) < 0:
            return rec, "negative book price or size", None
        if not 0 < len(sym) <= _SYM_MAX:
            return rec, f"symbol of {len(sym)} characters (1-{_SYM_MAX})", None
        if max(ap + bp + aq + bq) > _I64_MAX or max(antc, antq, *tot) > _I64_MAX or min(antq, *tot) < _I64_MIN:
            return rec, "a number beyond the 64-bit range", None
        asks, bids = rec["asks"], rec["bids"]
        if not asks and not bids and antc <= 0:
            return rec, "book has no price > 0", None
        if sub is not None and sym not in sub:
            return rec, "symbol never subscribed (H0STASP0)", None
        flags = None
        if asks and bids and bids[0][0] >= asks[0][0] and not in_auction(f[2], t):
            flags = ["crossed_book" if bids[0][0] > asks[0][0] else "locked_book"]
        pc = self._prev.get(sym)
        prev = pc[1] if pc is not None and pc[0] == midnight else 0
        if prev and ((asks and asks[-1][0] > prev * _LIMIT_UP) or (bids and bids[-1][0] < prev * _LIMIT_DOWN)):
            flags = (flags or []) + ["beyond_limit"]
        return rec, None, flags

    def _time_offset(self, d: Decoded, t: str, name: str, i: int, count: int) -> int | None:
        """ns since midnight of an HHMMSS field (cached per distinct value), or None with the error noted."""
        off = _hms_offset(t)
        if off is None:
            d.errors.append(f"{d.tr_id} record {i + 1}/{count}: {name} {t[:12]!r} is not HHMMSS")
        else:
            self._tcache[t] = off
        return off

    @staticmethod
    def _bad_field(f: list[str], names: tuple[str, ...], idx: tuple[int, ...], i: int, count: int,
                   d: Decoded) -> str:
        for j in idx:
            try:
                int(f[j])
            except ValueError:
                return (f"{d.tr_id} record {i + 1}/{count} ({f[0][:12]!r}): field {j + 1} {names[j]} "
                        f"is not numeric: {f[j][:20]!r}")
        return f"{d.tr_id} record {i + 1}/{count}: a numeric field is not numeric"


def subscribe_message(approval_key: str, tr_id: str, tr_key: str, *, register: bool = True,
                      custtype: str = "P") -> str:
    """The JSON text a client sends to register ("1") or release ("2") one (tr_id, tr_key)."""
    return orjson.dumps({"header": {"approval_key": approval_key, "custtype": custtype,
                                    "tr_type": "1" if register else "2", "content-type": "utf-8"},
                         "body": {"input": {"tr_id": tr_id, "tr_key": tr_key}}}).decode()
