"""One test subscription on the KIS WebSocket, for preflight: approval key, connect (the streaming
client's own connect), one H0STCNT0 registration answered within answer_s, unsubscribe, close. Each
way it can go wrong is named: no handshake, a refused handshake, a silent feed, a drop without a close
frame (the 2026-01-19 flapping), a close frame, a refused subscription."""

from __future__ import annotations

import time

import orjson
import websocket

from observer.core.checks import Check
from observer.providers.base import ProviderError
from observer.providers.kis.auth import KisAuth
from observer.providers.kis.parse import TR_TRADES, subscribe_message
from observer.providers.kis.ws import open_socket

FIX_NET = "check the network path to the broker's WebSocket port (and the broker's notices)"


def probe(name: str, auth: KisAuth, ws_url: str, symbol: str, answer_s: float, connect_s: float,
          tcp_user_timeout_ms: int = 30000, custtype: str = "P") -> Check:
    try:
        key = auth.approval_key()
    except ProviderError as e:
        return Check(name, "fail", f"no approval key: {e}"[:400],
                     "check KIS_APP_KEY / KIS_APP_SECRET; the approval key comes from /oauth2/Approval")
    t0 = time.monotonic()
    try:
        ws = open_socket(ws_url, connect_s, tcp_user_timeout_ms)
    except (TimeoutError, websocket.WebSocketTimeoutException):
        return Check(name, "fail", f"{ws_url}: no WebSocket handshake within {connect_s:g} s", FIX_NET)
    except websocket.WebSocketBadStatusException as e:
        return Check(name, "fail", f"{ws_url}: handshake refused: {str(e)[:200]}", FIX_NET)
    except (OSError, websocket.WebSocketException) as e:
        what = (e.strerror if isinstance(e, OSError) and e.strerror else f"{type(e).__name__}: {e}")[:200]
        return Check(name, "fail", f"{ws_url}: connect failed: {what}", FIX_NET)
    connect_ms = round((time.monotonic() - t0) * 1000)
    try:
        return _subscribe_once(name, ws, auth, key, symbol, answer_s, connect_ms, custtype)
    finally:
        try:
            ws.close(timeout=1)
        except Exception:
            pass


def _subscribe_once(name: str, ws, auth: KisAuth, key: str, symbol: str, answer_s: float, connect_ms: int,
                    custtype: str) -> Check:
    t1 = time.monotonic()
    ws.send(subscribe_message(key, TR_TRADES, symbol, register=True, custtype=custtype))
    deadline = t1 + answer_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return Check(name, "fail", f"connected in {connect_ms} ms, but the test subscription ({TR_TRADES} "
                         f"{symbol}) got no answer within {answer_s:g} s: the feed is silent (stalled server "
                         "or half-open connection)", FIX_NET, {"connect_ms": connect_ms})
        ws.settimeout(left)
        try:
            op, data = ws.recv_data(control_frame=True)
        except (TimeoutError, websocket.WebSocketTimeoutException):
            continue
        except websocket.WebSocketConnectionClosedException:
            return Check(name, "fail", f"connected in {connect_ms} ms, then the server dropped the connection "
                         "without a close frame before answering the test subscription (the incident's "
                         "'no close frame' flapping)", FIX_NET, {"connect_ms": connect_ms})
        if op == websocket.ABNF.OPCODE_CLOSE:
            code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
            return Check(name, "fail", f"the server closed the connection (close code {code}) before answering "
                         "the test subscription", FIX_NET, {"close_code": code})
        if op not in (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY):
            continue
        text = data.decode("utf-8", "replace")
        if not text.startswith("{"):
            continue  # a data frame: the subscription is answered by its ack first, keep looking
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(msg, dict):
            continue
        header = msg.get("header") or {}
        body = msg.get("body") or {}
        if header.get("tr_id") == "PINGPONG":
            ws.send(text)
            continue
        if header.get("tr_id") != TR_TRADES or header.get("tr_key") != symbol:
            continue
        answer_ms = round((time.monotonic() - t1) * 1000)
        code = str(body.get("msg_cd", ""))
        if str(body.get("rt_cd", "")) != "0":
            if code == "OPSP0011":
                try:
                    auth.approval_key(invalid=key)
                except ProviderError:
                    pass
            return Check(name, "fail", f"the test subscription was refused: {code} {body.get('msg1', '')}".rstrip(),
                         "read the broker's message (OPSP0008: too many registrations; OPSP8996: the app key is "
                         "in use by another session)", {"code": code})
        try:
            ws.send(subscribe_message(key, TR_TRADES, symbol, register=False, custtype=custtype))
        except (OSError, websocket.WebSocketException):
            pass
        return Check(name, "ok", f"connected in {connect_ms} ms; {TR_TRADES} {symbol} answered in {answer_ms} ms "
                     f"({code} {body.get('msg1', '')}); unsubscribed".rstrip(),
                     detail={"connect_ms": connect_ms, "answer_ms": answer_ms})
