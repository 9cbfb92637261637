"""KIS wire encoding, written from the reference (providers.md §1.6–1.9), never shared with the client's decoder.

Data frames are `0|TR_ID|NNN|f1^f2^…`; with NNN > 1 the records are concatenated with '^'.
"""

from __future__ import annotations

import json
import secrets
from datetime import timedelta

from observer.core.clock import UTC, from_ns
from observer.sim.market import BookEv, SymbolInfo, TradeEv, day_share_by, dec2, hhmmss, sign_code

CNT = "H0STCNT0"
ASP = "H0STASP0"


def _vs(price: int, ref: int) -> tuple[str, str]:
    """(sign, signed difference) of a price against a reference (open/high/low: 2 up, 3 same, 5 down)."""
    d = price - ref
    return ("2" if d > 0 else "5" if d < 0 else "3"), str(d)


def cnt_record(ev: TradeEv, info: SymbolInfo, date: str, fields: int = 46) -> str:
    """One H0STCNT0 record (46 documented fields, 47 with the trailing MARKET_CLS_CODE)."""
    prev = info.prev_close
    p = ev.price
    vrss = p - prev
    o_s, o_d = _vs(p, ev.o)
    h_s, h_d = _vs(p, ev.h)
    l_s, l_d = _vs(p, ev.l)
    smns = int(info.prdy_vol * day_share_by(ev.t)) or 1
    f = [
        ev.sym,
        hhmmss(ev.t),
        str(p),
        sign_code(p, prev, info.lower, info.upper),
        str(vrss),
        dec2(vrss * 100, prev),
        dec2(ev.acml_pbmn, ev.acml_vol),
        str(ev.o),
        str(ev.h),
        str(ev.l),
        str(ev.ask1),
        str(ev.bid1),
        str(ev.qty),
        str(ev.acml_vol),
        str(ev.acml_pbmn),
        str(ev.seln_n),
        str(ev.shnu_n),
        str(ev.shnu_n - ev.seln_n),
        dec2(ev.shnu_q * 100, ev.seln_q),
        str(ev.seln_q),
        str(ev.shnu_q),
        ev.ccld,
        dec2(ev.shnu_q, ev.acml_vol),
        dec2(ev.acml_vol * 100, info.prdy_vol),
        hhmmss(ev.o_t),
        o_s,
        o_d,
        hhmmss(ev.h_t),
        h_s,
        h_d,
        hhmmss(ev.l_t),
        l_s,
        l_d,
        date,
        "20",
        "N",
        str(ev.ask1q),
        str(ev.bid1q),
        str(ev.tot_ask),
        str(ev.tot_bid),
        dec2(ev.acml_vol * 100, info.listed),
        str(smns),
        dec2(ev.acml_vol * 100, smns),
        "0",
        "",
        str(ev.o),
    ]
    if fields >= 47:
        f.append("5" if ev.phase == "close_auction" else "2")
        f.extend("" for _ in range(fields - 47))
    return "^".join(f)


def _mid(a: int, b: int) -> str:
    s = a + b
    return str(s // 2) if s % 2 == 0 else f"{s // 2}.5"


def asp_record(ev: BookEv, info: SymbolInfo, fields: int = 62) -> str:
    """One H0STASP0 record: 59 documented fields, 62 with MID_PRC/MIDP_TOTAL_RSQN/MIDP_CLS_CODE, 63 with MARKET_CLS_CODE."""
    prev = info.prev_close
    if ev.antc_p:
        a_vrss = ev.antc_p - prev
        antc = [str(ev.antc_p), str(ev.antc_q), str(ev.antc_vol), str(a_vrss),
                sign_code(ev.antc_p, prev, info.lower, info.upper), dec2(a_vrss * 100, prev)]
    else:
        # outside the auctions KIS sends 0 and the negative reference price / -100.00 (see the samples)
        antc = ["0", "0", str(ev.antc_vol), str(-prev), "5", "-100.00"]
    f = [ev.sym, hhmmss(ev.t), ev.hour_cls]
    f += [str(x) for x in ev.askp]
    f += [str(x) for x in ev.bidp]
    f += [str(x) for x in ev.askq]
    f += [str(x) for x in ev.bidq]
    f += [str(ev.tot_ask), str(ev.tot_bid), "0", "0"]
    f += antc
    f += [str(ev.acml_vol), str(ev.icdc_ask), str(ev.icdc_bid), "0", "0", "0"]
    if fields >= 62:
        continuous = ev.hour_cls == "0" and ev.askp[0] and ev.bidp[0]
        f += [_mid(ev.askp[0], ev.bidp[0]) if continuous else "0", "0", "0"]
    if fields >= 63:
        f.append({"preopen": "1", "close_auction": "5"}.get(ev.phase, "2"))
        f.extend("" for _ in range(fields - 63))
    return "^".join(f)


def data_frame(tr_id: str, records: list[str]) -> str:
    return f"0|{tr_id}|{len(records):03d}|{'^'.join(records)}"


# ---- control messages (JSON text frames) ------------------------------------------------------------

def _dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def ack(tr_id: str, tr_key: str, msg_cd: str, msg1: str, rt_cd: str, output: dict | None = None,
        encrypt: bool = True) -> str:
    header = {"tr_id": tr_id, "tr_key": tr_key}
    if encrypt:
        header["encrypt"] = "N"
    body = {"rt_cd": rt_cd, "msg_cd": msg_cd, "msg1": msg1}
    if output is not None:
        body["output"] = output
    return _dumps({"header": header, "body": body})


def subscribe_ok(tr_id: str, tr_key: str) -> str:
    return ack(tr_id, tr_key, "OPSP0000", "SUBSCRIBE SUCCESS", "0",
               {"iv": secrets.token_hex(8), "key": secrets.token_hex(16)})


def unsubscribe_ok(tr_id: str, tr_key: str) -> str:
    return ack(tr_id, tr_key, "OPSP0001", "UNSUBSCRIBE SUCCESS", "0")


def already_subscribed(tr_id: str, tr_key: str) -> str:
    return ack(tr_id, tr_key, "OPSP0002", "ALREADY IN SUBSCRIBE", "1", encrypt=False)


def not_registered(tr_id: str, tr_key: str) -> str:
    # msg1 text of OPSP0003 is UNCONFIRMED in the reference
    return ack(tr_id, tr_key, "OPSP0003", "UNSUBSCRIBE ERROR(not found!)", "1", encrypt=False)


def internal_error(tr_id: str, tr_key: str, detail: str = "internal error") -> str:
    return ack(tr_id, tr_key, "OPSP0007", detail, "1", encrypt=False)


def max_subscribe(tr_id: str, tr_key: str) -> str:
    return ack(tr_id, tr_key, "OPSP0008", "MAX SUBSCRIBE OVER", "1", encrypt=False)


def invalid_approval(tr_id: str, tr_key: str) -> str:
    return ack(tr_id, tr_key, "OPSP0011", "invalid approval : NOT FOUND", "1", encrypt=False)


def appkey_in_use(tr_key: str) -> str:
    return ack("(null)", tr_key, "OPSP8996", "ALREADY IN USE appkey", "9", encrypt=False)


def pingpong(datetime_kst: str) -> str:
    return _dumps({"header": {"tr_id": "PINGPONG", "datetime": datetime_kst}})


def kst_text(ns: int) -> str:
    """YYYYMMDDHHMMSS in KST, as PINGPONG's datetime."""
    return (from_ns(ns, UTC) + timedelta(hours=9)).strftime("%Y%m%d%H%M%S")
