"""Kiwoom real-time WebSocket (providers.md §2.4) over the RFC 6455 server of ws.py: the same sockets,
threads, queues, connection faults and data faults, with Kiwoom's messages.

Client → server: `{"trnm":"LOGIN","token"}` (the REST bearer token; a bad one gets a non-zero return code,
a SYSTEM notice and the close), `REG` `{grp_no, refresh, data:[{item:[...], type:[...]}]}` and `REMOVE`
`{grp_no[, data]}` (registrations are kept per group: `refresh` "0" replaces the group's registrations,
"1" keeps them; a REMOVE without data releases the whole group), and the echo of our `PING`.
Server → client: the acks (`{"trnm", "return_code", "return_msg"}`), `{"trnm":"PING"}` every
`ping_interval` real seconds, `REAL` messages — one per trade cluster (one `0B` element per trade) and one
per book state (`0D`) — and a `SYSTEM` notice before every close the server starts.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from typing import TYPE_CHECKING

from observer.sim.kiwoom_auth import E_TOKEN
from observer.sim.market import TradeEv, dec2, hhmmss
from observer.sim.ws import WsConn, WsServer, ws_frame

if TYPE_CHECKING:
    from observer.sim.market import BookEv, SymbolInfo

log = logging.getLogger("observer.sim.kiwoom")

TRADE, BOOK = "0B", "0D"
NAMES = {TRADE: "주식체결", BOOK: "주식호가잔량"}
PHASE_CODE = {"open_auction": "1", "continuous": "2", "close_auction": "5"}  # FID 290 (UNCONFIRMED values)
PING = json.dumps({"trnm": "PING"})
E_LOGIN_FIRST = {**E_TOKEN, "return_msg": "LOGIN 후에 등록하세요 (simulator)"}


def _dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def signed(price: int, ref: int) -> str:
    """A price with its direction against the previous close (+ above, - below); empty levels are "0"."""
    if not price:
        return "0"
    return f"+{price}" if price > ref else f"-{price}" if price < ref else str(price)


# The FIDs of each type in the order they are written; a message is formatted from these templates (every
# value is digits, signs and dots: nothing to escape), about 3x cheaper than building dicts for json.dumps.
TRADE_FIDS = ("20", "10", "11", "12", "15", "13", "14", "16", "17", "18", "27", "28", "228", "290", "9081", "1030",
              "1031")
BOOK_FIDS = ("21", *(str(41 + i) for i in range(10)), *(str(51 + i) for i in range(10)),
             *(str(61 + i) for i in range(10)), *(str(71 + i) for i in range(10)), "121", "125", "23", "24", "13")


def _template(type_: str, fids: tuple[str, ...]) -> str:
    values = ",".join(f'"{f}":"%s"' for f in fids)
    return f'{{"type":"{type_}","name":"{NAMES[type_]}","item":"%s","values":{{{values}}}}}'


_ELEMENT = {TRADE: _template(TRADE, TRADE_FIDS), BOOK: _template(BOOK, BOOK_FIDS)}


def trade_values(ev: TradeEv, info: SymbolInfo) -> tuple:
    """FIDs TRADE_FIDS of one trade."""
    prev = info.prev_close
    p = ev.price
    d = p - prev
    side = "+" if ev.ccld == "1" else "-" if ev.ccld == "5" else ""  # an auction trade has no aggressor
    return (hhmmss(ev.t), signed(p, prev), f"+{d}" if d > 0 else str(d), ("+" if d > 0 else "") + dec2(d * 100, prev),
            f"{side}{ev.qty}", ev.acml_vol, ev.acml_pbmn // 1_000_000, signed(ev.o, prev), signed(ev.h, prev),
            signed(ev.l, prev), signed(ev.ask1, prev), signed(ev.bid1, prev), dec2(ev.shnu_q * 100, ev.seln_q),
            PHASE_CODE.get(ev.phase, "2"), "1", ev.seln_q, ev.shnu_q)


def book_values(ev: BookEv, info: SymbolInfo) -> tuple:
    """FIDs BOOK_FIDS of one book state."""
    prev = info.prev_close
    return (hhmmss(ev.t), *[signed(x, prev) for x in ev.askp], *[signed(x, prev) for x in ev.bidp], *ev.askq,
            *ev.bidq, ev.tot_ask, ev.tot_bid, signed(ev.antc_p, prev), ev.antc_q, ev.acml_vol)


def real(type_: str, item: str, values: list[tuple]) -> bytes:
    """One REAL message (a frame): one element per record."""
    el = _ELEMENT[type_]
    return ws_frame(('{"trnm":"REAL","data":[' + ",".join(el % (item, *v) for v in values) + "]}").encode())


class KiwoomConn(WsConn):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.groups: dict[str, set[tuple[str, str]]] = {}  # grp_no → its (type, item) registrations

    def _on_text(self, text: str) -> None:
        if self.stalled:
            return
        try:
            msg = json.loads(text)
            trnm = msg.get("trnm")
        except (ValueError, AttributeError):
            self.send_text(_dumps({"trnm": "", "return_code": 1501, "return_msg": "JSON 형식 오류 (simulator)"}))
            return
        srv: KiwoomWsServer = self.server
        if trnm == "PING":  # the echo of ours
            self.pongs += 1
        elif trnm == "LOGIN":
            srv.login(self, msg.get("token"))
        elif trnm in ("REG", "REMOVE"):
            srv.register(self, trnm, msg)
        else:
            self.send_text(_dumps({"trnm": str(trnm)[:20], "return_code": 1501,
                                   "return_msg": "알 수 없는 trnm (simulator)"}))

    def close_gracefully(self, code: int = 1001, cause: str = "server_stop") -> None:
        # the SYSTEM notice goes out before our close frame (the official example ends the session on one)
        self.send_text(_dumps({"trnm": "SYSTEM", "code": "SIM-CLOSE", "message": f"연결을 종료합니다: {cause}"}))
        super().close_gracefully(code, cause)


class KiwoomWsServer(WsServer):
    conn_class = KiwoomConn
    supports_firehose = False

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.stats.update(login=0, login_failed=0, reg=0, remove=0, bad_request=0)

    def ping_text(self) -> str:
        return PING

    # ---- the feed (ws.WsServer.on_events): a REAL message per trade cluster (one 0B element per trade) and
    # one per book state (a 0D element) -------------------------------------------------------------------
    trade_tr, book_tr = TRADE, BOOK

    def trade_frame(self, evs: list) -> bytes:
        info = self.market.universe.by_code[evs[0].sym]
        return real(TRADE, evs[0].sym, [trade_values(e, info) for e in evs])

    def book_frame(self, ev) -> bytes:
        return real(BOOK, ev.sym, [book_values(ev, self.market.universe.by_code[ev.sym])])

    # ---- client messages --------------------------------------------------------------------------------
    def login(self, conn: KiwoomConn, token) -> None:
        app_key, err = self.auth.token_app_key(token if isinstance(token, str) else None)
        if err is not None:
            self.stats["login_failed"] += 1
            conn.send_text(_dumps({"trnm": "LOGIN", **err}))
            threading.Thread(target=conn.close_gracefully, args=(1008, "login_failed"), daemon=True).start()
            return
        with self.lock:
            conn.app_key = app_key
        self.stats["login"] += 1
        conn.send_text(_dumps({"trnm": "LOGIN", "return_code": 0, "return_msg": ""}))

    def _parse(self, msg: dict, need_data: bool) -> tuple[str, set[tuple[str, str]] | None, dict | None]:
        """(grp_no, the (type, item) pairs named — None when there is no data —, error body or None)."""
        grp = msg.get("grp_no")
        data = msg.get("data")
        if not isinstance(grp, str) or not grp or len(grp) > 8:
            return "", None, {"return_code": 1501, "return_msg": "grp_no 오류 (simulator)"}
        if data is None and not need_data:
            return grp, None, None
        keys: set[tuple[str, str]] = set()
        if not isinstance(data, list) or not data:
            return grp, None, {"return_code": 1501, "return_msg": "data 오류 (simulator)"}
        for d in data:
            items, types = (d.get("item"), d.get("type")) if isinstance(d, dict) else (None, None)
            if not isinstance(items, list) or not isinstance(types, list) or not items or not types:
                return grp, None, {"return_code": 1501, "return_msg": "item/type 은 배열입니다 (simulator)"}
            for tp in types:
                if tp not in NAMES:
                    return grp, None, {"return_code": 1501, "return_msg": f"지원하지 않는 type {str(tp)[:8]!r} "
                                                                          "(simulator)"}
            for it in items:
                # only KRX is simulated: _NX / _AL items name venues the market does not have
                if not isinstance(it, str) or self.market.symbol(it) is None:
                    return grp, None, {"return_code": 1901, "return_msg": f"종목코드 오류 {str(it)[:20]!r} "
                                                                          "(simulator)"}
                keys.update((tp, it) for tp in types)
        return grp, keys, None

    def register(self, conn: KiwoomConn, trnm: str, msg: dict) -> None:
        if conn.app_key is None:
            self.stats["bad_request"] += 1
            conn.send_text(_dumps({"trnm": trnm, **E_LOGIN_FIRST}))
            return
        grp, keys, err = self._parse(msg, need_data=trnm == "REG")
        if err is not None:
            self.stats["bad_request"] += 1
            conn.send_text(_dumps({"trnm": trnm, **err}))
            return
        market = self.market
        # between two pump ticks: a registration starts (ends) exactly after the last dispatched tick, and the
        # ack is queued before (after) its first (last) frame
        with market.tick_lock:
            with self.lock:
                before = set(conn.subs)
                group = conn.groups.setdefault(grp, set())
                if trnm == "REG":
                    if msg.get("refresh") == "0":
                        group.clear()
                    group |= keys
                    self.stats["reg"] += 1
                else:
                    group -= keys if keys is not None else set(group)
                    self.stats["remove"] += 1
                if not group:
                    del conn.groups[grp]
                conn.subs = set().union(*conn.groups.values())
                for key in conn.subs - before:
                    self.index[key] = (*self.index.get(key, ()), conn)
                for key in before - conn.subs:
                    self.index[key] = tuple(c for c in self.index.get(key, ()) if c is not conn)
            self._log_changes(conn, before, grp)
            conn.send_text(_dumps({"trnm": trnm, "return_code": 0, "return_msg": ""}))

    def _log_changes(self, conn: KiwoomConn, before: set, grp: str) -> None:
        mt, dispatched, ns = self.market.market_ms(), self.market.dispatched_ms, time.time_ns()
        kid = self.auth.key_id(conn.app_key)
        self.stats["subscribe"] += len(conn.subs - before)
        self.stats["unsubscribe"] += len(before - conn.subs)
        for tp, item in sorted(conn.subs - before):
            self.truth.line("subscriptions", {"event": "subscribe", "conn": conn.id, "app_key_id": kid, "tr_id": tp,
                                              "symbol": item, "grp_no": grp, "t_ms": mt, "from_t_ms": dispatched,
                                              "ns": ns})
        for tp, item in sorted(before - conn.subs):
            self.truth.line("subscriptions", {"event": "unsubscribe", "conn": conn.id, "tr_id": tp, "symbol": item,
                                              "grp_no": grp, "t_ms": mt, "until_t_ms": dispatched, "ns": ns})

    # ---- data faults on Kiwoom messages -----------------------------------------------------------------
    def frame_keys(self, tr_id: str, payload: str) -> dict:
        try:
            els = json.loads(payload)["data"]
            out = {"times": [e["values"]["20" if tr_id == TRADE else "21"] for e in els]}
            if tr_id == TRADE:
                out["acml_vols"] = [int(e["values"]["13"]) for e in els]
            return out
        except (ValueError, KeyError, TypeError):
            return {}

    def frame_count(self, frame: bytes) -> int:
        n = frame[1] & 0x7F
        off = 2 if n < 126 else 4 if n == 126 else 10
        try:
            return len(json.loads(frame[off:])["data"])
        except (ValueError, KeyError, TypeError):
            return 1

    def _garble(self, payload: str, mode: str) -> str:
        """A broken REAL message: cut short (truncate), a non-numeric FID 13 (nonnumeric), `data` not a list
        (count), base64 noise (encrypted), or random text (junk)."""
        rng = self.fault_rng
        if mode == "truncate":
            return payload[:rng.randrange(max(2, len(payload) // 3), max(3, len(payload) - 2))]
        if mode in ("nonnumeric", "count"):
            msg = json.loads(payload)
            if mode == "count":
                msg["data"] = msg["data"][0]
            else:
                msg["data"][0]["values"]["13"] = "12a4"
            return _dumps(msg)
        if mode == "encrypted":
            return base64.b64encode(rng.randbytes(96)).decode()
        return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789#%& ") for _ in range(rng.randrange(5, 80)))
