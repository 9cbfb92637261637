"""KIS real-time WebSocket server: a small RFC 6455 server over plain sockets and threads.

Hand-written rather than a library so faults have full control of the socket: a TCP close with no close
frame, an RST, a silent stall, refused connects. Per connection one reader thread (client frames,
subscribe/unsubscribe, PINGPONG echoes) and one writer thread that sends whatever is queued in one
sendall per wake-up (frames pre-encoded once per event, shared by every subscriber).

The server listens to the market's tick feed (interfaces.MarketView.listen), encodes each event once and
hands the frame to the event's subscribers; the data faults in force for this provider (interfaces.FaultView)
act on frames on their way out. It never sees the Simulator.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import itertools
import json
import logging
import random
import socket
import struct
import threading
import time
from typing import TYPE_CHECKING

from observer.sim import encode
from observer.sim.faults import MALFORMED_MODES
from observer.sim.market import T_OPEN, TradeEv, hhmmss

if TYPE_CHECKING:
    from observer.sim.auth import Auth
    from observer.sim.config import SimConfig
    from observer.sim.faults import Active
    from observer.sim.interfaces import FaultView, MarketView, Recorder

log = logging.getLogger("observer.sim.ws")

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_QUEUE_BYTES = 64 << 20  # a reader this far behind is cut off (counted), as a real server would
SEND_CHUNK = 256 << 10  # the writer joins queued frames into sendall()s of about this size, not one huge copy
KNOWN_TR = {encode.CNT, encode.ASP, "H0STCNI0", "H0STCNI9", "H0STANC0", "H0STMKO0",
            "H0NXCNT0", "H0NXASP0", "H0UNCNT0", "H0UNASP0"}


def ws_frame(payload: bytes, opcode: int = 1) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 65536:
        return bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big") + payload


def ws_header_latin1(n: int) -> str:
    """The text-frame header for an n-byte payload as latin-1 characters (firehose builds whole batches as str)."""
    if n < 126:
        return "\x81" + chr(n)
    if n < 65536:
        return "\x81\x7e" + chr(n >> 8) + chr(n & 255)
    return "\x81\x7f" + "".join(chr(b) for b in n.to_bytes(8, "big"))


def _unmask(data: bytes, mask: bytes) -> bytes:
    n = len(data)
    if not n:
        return data
    m = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(m, "big")).to_bytes(n, "big")


class WsConn:
    def __init__(self, server: WsServer, sock: socket.socket, addr, cid: int):
        self.server = server
        self.market = server.market
        self.faults = server.faults
        self.sock = sock
        self.addr = addr
        self.id = cid
        self.app_key: str | None = None
        self.subs: set[tuple[str, str]] = set()
        self.cond = threading.Condition()
        self.queue: list[bytes] = []
        self.qbytes = 0
        self.closed = False
        self.closing = False  # our close frame is queued: nothing may follow it (RFC 6455 §5.5.1)
        self.closing_cause: str | None = None
        self.until_mt: int | None = None  # the pump's dispatched_ms when the connection stopped taking frames
        self.close_cause: str | None = None
        self.abort_cause: str | None = None
        self.stalled = False
        self.drop_at: float | None = None  # flap: abrupt close at this monotonic time
        self.next_ping = time.monotonic() + server.ping_interval
        self.latency = server.latency  # real seconds every frame waits in the queue (0: none)
        self.due: list[float] = []  # with a latency: when each queued frame may go out
        self.connected_ns = time.time_ns()
        self.connected_mt = self.market.market_ms()
        self.sent: dict[tuple[str, str], list[int]] = {}  # (tr_id, symbol) → [frames, records]
        self.dropped: dict[str, int] = {}
        self.pings_sent = 0
        self.pongs = 0
        self.controls_sent = 0
        self.firehose: dict | None = None
        self.fh_sent = 0
        self.held: dict[tuple[str, str], bytes] = {}  # out-of-order fault: a frame held back
        self.bytes_sent = 0

    # ---- sending ------------------------------------------------------------------------------------
    def enqueue(self, data: bytes) -> bool:
        with self.cond:
            if self.closed or self.closing:
                return False
            if self.stalled:
                self.dropped["stall"] = self.dropped.get("stall", 0) + 1
                return False
            self.queue.append(data)
            if self.latency:
                self.due.append(time.monotonic() + self.latency)
            self.qbytes += len(data)
            self.cond.notify()
            overflow = self.qbytes > MAX_QUEUE_BYTES
        if overflow:
            self.abort("slow_consumer")
        return True

    def send_text(self, text: str) -> bool:
        ok = self.enqueue(ws_frame(text.encode()))
        if ok:
            self.controls_sent += 1
        return ok

    def send_data(self, tr_id: str, sym: str, frame: bytes, nrec: int) -> None:
        """A data frame from the pump (called for every subscriber of (tr_id, sym))."""
        if self.firehose is not None and tr_id == encode.CNT:
            return
        if self.faults.data_active:
            self.server.send_faulted(self, tr_id, sym, frame, nrec)
            return
        if self.enqueue(frame):
            c = self.sent.get((tr_id, sym))
            if c is None:
                self.sent[(tr_id, sym)] = [1, nrec]
            else:
                c[0] += 1
                c[1] += nrec

    def count_sent(self, tr_id: str, sym: str, nrec: int) -> None:
        c = self.sent.setdefault((tr_id, sym), [0, 0])
        c[0] += 1
        c[1] += nrec

    def _writer(self) -> None:
        sock = self.sock
        try:
            while True:
                with self.cond:
                    while not self.queue and not self.closed and (self.firehose is None or self.closing):
                        self.cond.wait(0.5)
                    if self.closed:
                        return
                    if self.latency and self.due:
                        batch = self._due_frames()
                        if not batch:
                            continue
                    else:
                        batch = self.queue
                        self.queue = []
                        self.due = []
                        self.qbytes = 0
                # in chunks: joining a reader's whole backlog (up to MAX_QUEUE_BYTES) would copy it once more
                i, n = 0, len(batch)
                while i < n:
                    j, size = i, 0
                    while j < n and size < SEND_CHUNK:
                        size += len(batch[j])
                        j += 1
                    sock.sendall(batch[i] if j == i + 1 else b"".join(batch[i:j]))
                    self.bytes_sent += size
                    i = j
                del batch
                if self.firehose is not None and not self.closing:
                    self._firehose_batch()
        except OSError as e:
            self.finish(f"send_error:{e.__class__.__name__}")

    def _due_frames(self) -> list[bytes]:
        """(cond held, with a latency) the queued frames whose time has come, oldest first; waits for the
        first one's time if none has."""
        now = time.monotonic()
        k = bisect.bisect_right(self.due, now)
        if k == 0:
            self.cond.wait(self.due[0] - now)
            return []
        batch = self.queue[:k]
        del self.queue[:k]
        del self.due[:k]
        self.qbytes -= sum(len(b) for b in batch)
        return batch

    # ---- firehose (benchmarks) ------------------------------------------------------------------------
    def _firehose_batch(self) -> None:
        fh = self.firehose
        if fh is None:
            return
        syms = sorted(k for tr, k in self.subs if tr == encode.CNT and k in self.market.universe.by_code)
        if not syms:
            with self.cond:
                self.cond.wait(0.05)
            return
        st = fh.setdefault("state", {})
        now_mt = self.market.market_ms()
        sec = now_mt // 1000
        rate = fh.get("rate") or 0
        limit = fh.get("frames")
        n = 512 if rate <= 0 else max(1, min(512, int(rate / 200)))
        if limit is not None:
            n = min(n, limit - self.fh_sent)
        parts = []
        idx = fh.get("rr", 0)
        for _ in range(n):
            sym = syms[idx % len(syms)]
            idx += 1
            s = st.get(sym)
            if s is None or s[0] != sec:
                s = self.server.firehose_template(sym, now_mt, s[1] if s else 0)
                st[sym] = s
            acml = s[1] + 1
            s[1] = acml
            body = f"{s[2]}{acml}^{acml * s[4]}{s[3]}"
            parts.append(ws_header_latin1(len(body)))
            parts.append(body)
        fh["rr"] = idx
        data = "".join(parts).encode("latin-1")
        if rate > 0:
            t0 = fh.setdefault("t0", time.monotonic())
            delay = t0 + (self.fh_sent + n) / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        self.sock.sendall(data)
        send_ns = time.time_ns()
        seq0 = self.fh_sent
        self.fh_sent += n
        self.bytes_sent += len(data)
        self.server.truth.line("firehose", {"conn": self.id, "seq0": seq0, "n": n, "send_ns": send_ns})
        if limit is not None and self.fh_sent >= limit:
            self.server.truth.line("firehose", {"conn": self.id, "done": True, "frames": self.fh_sent,
                                                "send_ns": send_ns})
            self.firehose = None

    # ---- reading ----------------------------------------------------------------------------------------
    def _reader(self) -> None:
        sock = self.sock
        buf = bytearray()
        frag: list[bytes] = []
        frag_op = 0
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    self.finish("client_eof")
                    return
                buf += chunk
                while True:
                    if len(buf) < 2:
                        break
                    b0, b1 = buf[0], buf[1]
                    masked = b1 & 0x80
                    n = b1 & 0x7F
                    pos = 2
                    if n == 126:
                        if len(buf) < 4:
                            break
                        n = struct.unpack_from(">H", buf, 2)[0]
                        pos = 4
                    elif n == 127:
                        if len(buf) < 10:
                            break
                        n = struct.unpack_from(">Q", buf, 2)[0]
                        pos = 10
                    if n > 1 << 20:
                        self.finish("client_frame_too_large")
                        return
                    need = pos + (4 if masked else 0) + n
                    if len(buf) < need:
                        break
                    if masked:
                        mask = bytes(buf[pos:pos + 4])
                        payload = _unmask(bytes(buf[pos + 4:need]), mask)
                    else:
                        payload = bytes(buf[pos:need])
                    del buf[:need]
                    op = b0 & 0x0F
                    fin = b0 & 0x80
                    if op == 0:
                        frag.append(payload)
                        if not fin:
                            continue
                        payload, op, frag = b"".join(frag), frag_op, []
                    elif op in (1, 2) and not fin:
                        frag, frag_op = [payload], op
                        continue
                    if op == 8:
                        self._on_close_frame(payload)
                        return
                    if op == 9:
                        if not self.stalled:
                            self.enqueue(ws_frame(payload, 10))
                    elif op == 10:
                        self.pongs += 1
                    elif op in (1, 2):
                        self._on_text(payload.decode("utf-8", "replace"))
        except OSError as e:
            self.finish(f"recv_error:{e.__class__.__name__}")

    def _queue_close(self, frame: bytes | None, cause: str) -> bool:
        """Queue our close frame (None: none, e.g. stalled) as the last thing this connection is sent; False if
        it is already closing. Between two pump ticks, so until_mt says exactly which events were sent."""
        with self.market.tick_lock, self.cond:
            if self.closed or self.closing:
                return False
            if frame is not None:
                self.queue.append(frame)
                if self.latency:
                    self.due.append(time.monotonic() + self.latency)
                self.cond.notify()
            self.closing = True
            self.closing_cause = cause
            self.until_mt = self.market.dispatched_ms
        return True

    def _on_close_frame(self, payload: bytes) -> None:
        if self._queue_close(None if self.stalled else ws_frame(payload[:2], 8), "client_close"):
            self._flush_then_close("client_close")
        else:
            # the client's answer to our close frame: the closing handshake is complete
            self.finish(self.closing_cause or "client_close")

    def _flush_then_close(self, cause: str) -> None:
        # give the writer a moment to send what is queued (the close frame), then close the socket
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            with self.cond:
                if not self.queue:
                    break
            time.sleep(0.005)
        self.finish(cause)

    def _on_text(self, text: str) -> None:
        if self.stalled:
            return
        try:
            msg = json.loads(text)
            header = msg.get("header") or {}
        except (ValueError, AttributeError):
            self.send_text(encode.internal_error("", "", "JSON PARSING ERROR : invalid json"))
            return
        if header.get("tr_id") == "PINGPONG":
            self.pongs += 1
            return
        self.server.handle_request(self, header, ((msg.get("body") or {}).get("input") or {}))

    # ---- closing ------------------------------------------------------------------------------------
    def close_gracefully(self, code: int = 1001, cause: str = "server_stop") -> None:
        if self._queue_close(ws_frame(struct.pack(">H", code), 8), cause):
            self._flush_then_close(cause)

    def abort(self, cause: str, rst: bool = False) -> None:
        """Close the TCP connection with no WebSocket close frame (FIN, or RST with rst=True)."""
        with self.cond:
            if self.closed:
                return
            # the reader wakes up on the shutdown and would report "client_eof": the cause is ours
            self.abort_cause = cause
        try:
            if rst:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.sock.shutdown(socket.SHUT_RD)
            else:
                self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.finish(cause)

    def finish(self, cause: str) -> None:
        with self.market.tick_lock, self.cond:  # between ticks (see _queue_close)
            if self.closed:
                return
            self.closed = True
            self.close_cause = self.abort_cause or cause
            if self.until_mt is None:
                self.until_mt = self.market.dispatched_ms
            self.queue = []
            self.due = []
            self.cond.notify_all()
        try:
            self.sock.close()
        except OSError:
            pass
        self.server.on_closed(self)


class WsServer:
    conn_class = WsConn  # a provider's own connection class (its client-message protocol)
    supports_firehose = True  # the firehose sends synthetic H0STCNT0 frames: KIS only

    def __init__(self, host: str, port: int, *, cfg: SimConfig, market: MarketView, faults: FaultView, auth: Auth,
                 truth: Recorder, ping_interval: float | None = None, latency: float = 0.0):
        self.cfg = cfg
        self.ping_interval = cfg.pingpong_interval if ping_interval is None else ping_interval
        self.latency = latency
        self.market = market
        self.faults = faults
        self.auth = auth
        self.truth = truth
        self.lsock = socket.create_server((host, port), reuse_port=False, backlog=64)
        self.port = self.lsock.getsockname()[1]
        self.lock = threading.Lock()
        self.conns: dict[int, WsConn] = {}
        self.index: dict[tuple[str, str], tuple[WsConn, ...]] = {}
        self.bound: dict[str, WsConn] = {}  # app key → its one connection
        self.ids = itertools.count(1)
        self.rng = random.Random(f"{cfg.seed}|flap")
        self.fault_rng = random.Random(f"{cfg.seed}|faults")  # what ws_malformed garbles
        self._stalls: dict[int, set[int]] = {}  # ws_stall fault id → the connections it stalled
        self.stats = {"accepted": 0, "refused": 0, "appkey_in_use": 0, "invalid_approval": 0,
                      "max_subscribe": 0, "closed": 0, "subscribe": 0, "unsubscribe": 0}
        self._stop = False
        self.thread = threading.Thread(target=self._accept_loop, name="sim-ws-accept", daemon=True)
        market.listen(self.on_events)

    def start(self) -> None:
        self.thread.start()

    def _accept_loop(self) -> None:
        while not self._stop:
            try:
                sock, addr = self.lsock.accept()
            except OSError:
                return
            if self._stop:
                sock.close()
                return
            if self.faults.first("ws_refuse"):
                # refused: reset the connection before any handshake byte
                self.stats["refused"] += 1
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                finally:
                    sock.close()
                continue
            threading.Thread(target=self._handshake, args=(sock, addr), name="sim-ws-hs", daemon=True).start()

    def _handshake(self, sock: socket.socket, addr) -> None:
        try:
            sock.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk or len(data) > 16384:
                    sock.close()
                    return
                data += chunk
            head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
            lines = head.split("\r\n")
            headers = {}
            for ln in lines[1:]:
                k, _, v = ln.partition(":")
                headers[k.strip().lower()] = v.strip()
            key = headers.get("sec-websocket-key")
            if not lines[0].startswith("GET ") or "websocket" not in headers.get("upgrade", "").lower() or not key:
                sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                sock.close()
                return
            accept = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()
            sock.sendall(
                (
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
                ).encode()
            )
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            sock.close()
            return
        conn = self.conn_class(self, sock, addr, next(self.ids))
        flap = self.faults.first("ws_flap")
        if flap:
            conn.drop_at = time.monotonic() + self.flap_delay(flap)
        stall = self.faults.first("ws_stall")
        if stall and stall.spec.get("scope") == "all":
            conn.stalled = True
        if self.cfg.firehose is not None and self.supports_firehose:
            conn.firehose = dict(self.cfg.firehose)
        with self.lock:
            self.conns[conn.id] = conn
            self.stats["accepted"] += 1
        self.truth.line("connections", {"event": "open", "conn": conn.id, "t_ms": conn.connected_mt,
                                            "time": hhmmss(conn.connected_mt), "ns": conn.connected_ns,
                                            "peer": f"{addr[0]}:{addr[1]}"})
        log.info("ws connected", extra={"conn": conn.id, "peer": f"{addr[0]}:{addr[1]}"})
        threading.Thread(target=conn._writer, name=f"sim-ws-w{conn.id}", daemon=True).start()
        conn._reader()

    def flap_delay(self, fault) -> float:
        lo = float(fault.spec.get("min_real", 3.0))
        hi = float(fault.spec.get("max_real", 5.0))
        return self.rng.uniform(lo, hi)

    # ---- the feed ---------------------------------------------------------------------------------------
    trade_tr, book_tr = encode.CNT, encode.ASP  # what a provider calls its trade and book feeds

    def on_events(self, evs: list) -> None:
        """One pump tick's events (under the market's tick lock): each trade cluster (same symbol and group)
        becomes one trade frame, each book state one book frame, encoded once for all their subscribers."""
        index = self.index
        if not index:
            return
        trade_tr, book_tr = self.trade_tr, self.book_tr
        n = len(evs)
        i = 0
        while i < n:
            ev = evs[i]
            if type(ev) is TradeEv:
                j = i + 1
                while j < n and type(evs[j]) is TradeEv and evs[j].sym == ev.sym and evs[j].group == ev.group:
                    j += 1
                subs = index.get((trade_tr, ev.sym))
                if subs:
                    frame = self.trade_frame(evs[i:j])
                    for conn in subs:
                        conn.send_data(trade_tr, ev.sym, frame, j - i)
                i = j
            else:
                subs = index.get((book_tr, ev.sym))
                if subs:
                    frame = self.book_frame(ev)
                    for conn in subs:
                        conn.send_data(book_tr, ev.sym, frame, 1)
                i += 1

    def trade_frame(self, evs: list) -> bytes:
        """One H0STCNT0 frame: the records of one trade cluster."""
        info = self.market.universe.by_code[evs[0].sym]
        date, cf = self.market.date_str, self.cfg.cnt_fields
        return ws_frame(encode.data_frame(encode.CNT, [encode.cnt_record(e, info, date, cf) for e in evs]).encode())

    def book_frame(self, ev) -> bytes:
        """One H0STASP0 frame: one book state."""
        info = self.market.universe.by_code[ev.sym]
        return ws_frame(encode.data_frame(encode.ASP, [encode.asp_record(ev, info, self.cfg.asp_fields)]).encode())

    def firehose_template(self, sym: str, now_mt: int, acml: int) -> list:
        """[second, acml, head, tail, price]: one synthetic H0STCNT0 frame split around its ACML_VOL and
        ACML_TR_PBMN, which the firehose fills in per frame."""
        info = self.market.universe.by_code[sym]
        p = info.prev_close
        s1 = 987654321012
        s2 = s1 * p
        ev = TradeEv(sym, now_mt, 0, 0, p, 1, s1, s2, "1", "continuous", p, p, p, T_OPEN, T_OPEN, T_OPEN,
                     0, 1, 0, 1, p, p, 1, 1, 1, 1, 0)
        rec = encode.cnt_record(ev, info, self.market.date_str, self.cfg.cnt_fields)
        a, b = rec.split(f"^{s1}^{s2}^")
        return [now_mt // 1000, acml, f"0|{encode.CNT}|001|{a}^", f"^{b}", p]

    def set_firehose(self, rate: float | None, frames: int | None = None, conn_id: int | None = None) -> int:
        n = 0
        for c in self.conns_of() if self.supports_firehose else ():
            if conn_id is not None and c.id != conn_id:
                continue
            with c.cond:
                c.firehose = None if rate is None else {"rate": rate, "frames": frames}
                c.cond.notify()
            n += 1
        return n

    # ---- faults -----------------------------------------------------------------------------------------
    def conns_of(self, app_key: str | None = None) -> list[WsConn]:
        with self.lock:
            return [c for c in self.conns.values() if app_key is None or c.app_key == app_key]

    def fault_started(self, a: Active) -> int | None:
        """Connection faults: close, stall, flap (the data faults act in send_faulted)."""
        spec = a.spec
        app_key = spec.get("app_key")
        if a.kind == "ws_close_abrupt":
            return self.close_all(abrupt=True, rst=bool(spec.get("rst")), cause="fault:ws_close_abrupt",
                                  app_key=app_key)
        if a.kind == "ws_stall":
            conns = self.conns_of(app_key)
            with self.market.tick_lock:  # between ticks: a tick's frames are all sent or all counted as stalled
                for c in conns:
                    c.stalled = True
            if "duration" not in spec and "duration_real" not in spec and spec.get("scope") != "all":
                # stalled until the client gives up on the connection
                self.faults.expire_now(a)
            else:
                self._stalls[a.id] = {c.id for c in conns}
            return len(conns)
        if a.kind == "ws_flap":
            for c in self.conns_of():
                c.drop_at = time.monotonic() + self.flap_delay(a)
        return None

    def fault_ended(self, a: Active) -> None:
        with self.market.tick_lock:  # between ticks (see Market._tick)
            if a.kind == "ws_stall":
                ids = self._stalls.pop(a.id, set())
                for c in self.conns_of():
                    if c.id in ids or a.spec.get("scope") == "all":
                        c.stalled = False
            if a.kind == "ws_out_of_order":
                for c in self.conns_of():
                    for frame in c.held.values():
                        c.enqueue(frame)
                    c.held.clear()

    def send_faulted(self, conn: WsConn, tr_id: str, sym: str, frame: bytes, nrec: int) -> None:
        """Send a data frame while a data fault is in force: the first matching fault drops, garbles,
        duplicates or swaps it (logged in faults.jsonl); with none matching it goes out as it is."""
        for a in self.faults.data_faults():
            if not a.matches(tr_id, sym, conn.app_key):
                continue
            if a.remaining is not None and a.remaining <= 0:
                continue
            a.hits += 1
            if a.kind == "ws_drop_symbol":
                conn.dropped["drop_symbol"] = conn.dropped.get("drop_symbol", 0) + nrec
                return
            if a.remaining is not None:
                a.remaining -= 1
            payload = _payload(frame)
            base = {"event": "frame", "id": a.id, "kind": a.kind, "conn": conn.id, "tr_id": tr_id, "symbol": sym,
                    "records": nrec, "t_ms": self.market.market_ms(), "ns": time.time_ns(),
                    **self.frame_keys(tr_id, payload)}
            if a.kind == "ws_malformed":
                mode = a.spec.get("mode", "cycle")
                if mode == "cycle":
                    mode = MALFORMED_MODES[a.cycle % len(MALFORMED_MODES)]
                    a.cycle += 1
                conn.enqueue(ws_frame(self._garble(payload, mode).encode()))
                conn.dropped["malformed"] = conn.dropped.get("malformed", 0) + nrec
                self.truth.line("faults", {**base, "mode": mode})
                return
            if a.kind == "ws_duplicate":
                if conn.enqueue(frame):
                    conn.count_sent(tr_id, sym, nrec)
                    conn.enqueue(frame)
                    conn.dropped["duplicated"] = conn.dropped.get("duplicated", 0) + nrec
                self.truth.line("faults", base)
                return
            if a.kind == "ws_out_of_order":
                key = (tr_id, sym)
                held = conn.held.pop(key, None)
                if held is None:
                    conn.held[key] = frame
                    if a.remaining is not None:
                        a.remaining += 1  # the pair is counted when it is released
                    return
                if conn.enqueue(frame):
                    conn.count_sent(tr_id, sym, nrec)
                    conn.enqueue(held)
                    conn.count_sent(tr_id, sym, self.frame_count(held))
                self.truth.line("faults", {**base, "swapped_with_previous": True})
                return
        if conn.enqueue(frame):
            conn.count_sent(tr_id, sym, nrec)

    def frame_keys(self, tr_id: str, payload: str) -> dict:
        """What a faulted frame carried (faults.jsonl): its records' times and trade ACML_VOLs."""
        return _frame_keys(tr_id, payload)

    def frame_count(self, frame: bytes) -> int:
        return _frame_count(frame)

    def _garble(self, payload: str, mode: str) -> str:
        rng = self.fault_rng
        head, _, data = payload.rpartition("|")
        fields = data.split("^")
        if mode == "truncate":
            keep = max(1, rng.randrange(len(fields) // 3, max(len(fields) // 3 + 1, len(fields) - 1)))
            return head + "|" + "^".join(fields[:keep])[:-1]
        if mode == "nonnumeric":
            fields[2] = "12a4"
            return head + "|" + "^".join(fields)
        if mode == "count":
            enc, tr, cnt = head.split("|")
            return f"{enc}|{tr}|{int(cnt) + 1:03d}|{data}"
        if mode == "encrypted":
            enc, tr, cnt = head.split("|")
            return f"1|{tr}|{cnt}|" + base64.b64encode(rng.randbytes(96)).decode()
        return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789#%& ") for _ in range(rng.randrange(5, 80)))

    # ---- subscribe protocol ---------------------------------------------------------------------------
    def handle_request(self, conn: WsConn, header: dict, inp: dict) -> None:
        tr_id = str(inp.get("tr_id") or "")
        tr_key = str(inp.get("tr_key") or "")
        approval = header.get("approval_key")
        app_key = self.auth.approval_app_key(approval)
        if app_key is None:
            self.stats["invalid_approval"] += 1
            conn.send_text(encode.invalid_approval(tr_id, tr_key))
            return
        with self.lock:
            if conn.app_key is None:
                other = self.bound.get(app_key)
                if other is not None and other is not conn and not other.closed:
                    in_use = True
                else:
                    in_use = False
                    self.bound[app_key] = conn
                    conn.app_key = app_key
            else:
                in_use = False
        if in_use:
            self.stats["appkey_in_use"] += 1
            conn.send_text(encode.appkey_in_use(tr_key))
            log.info("ws appkey in use", extra={"conn": conn.id})
            threading.Thread(target=conn.close_gracefully, args=(1008, "appkey_in_use"), daemon=True).start()
            return
        tr_type = str(header.get("tr_type", ""))
        if tr_id not in KNOWN_TR or not tr_key:
            conn.send_text(encode.internal_error(tr_id, tr_key, "invalid tr_id or tr_key"))
            return
        key = (tr_id, tr_key)
        market = self.market
        mt = market.market_ms()
        # Between two pump ticks (dispatch_lock): the registration starts (ends) exactly after the last
        # dispatched tick, so frames for events with from_t_ms < t <= until_t_ms are the ones sent, and the ack
        # is queued before (after) any frame of the registration.
        if tr_type == "1":
            with market.tick_lock:
                with self.lock:
                    if key in conn.subs:
                        reply = encode.already_subscribed(tr_id, tr_key)
                    elif len(conn.subs) >= self.cfg.max_subscriptions:
                        self.stats["max_subscribe"] += 1
                        reply = encode.max_subscribe(tr_id, tr_key)
                    else:
                        conn.subs.add(key)
                        self.index[key] = (*self.index.get(key, ()), conn)
                        self.stats["subscribe"] += 1
                        reply = None
                if reply is None:
                    self.truth.line("subscriptions", {"event": "subscribe", "conn": conn.id, "app_key_id":
                                                      self.auth.key_id(app_key), "tr_id": tr_id, "symbol": tr_key,
                                                      "t_ms": mt, "from_t_ms": market.dispatched_ms,
                                                      "ns": time.time_ns()})
                    reply = encode.subscribe_ok(tr_id, tr_key)
                conn.send_text(reply)
        elif tr_type == "2":
            with market.tick_lock:
                with self.lock:
                    if key not in conn.subs:
                        reply = encode.not_registered(tr_id, tr_key)
                    else:
                        conn.subs.discard(key)
                        self.index[key] = tuple(c for c in self.index.get(key, ()) if c is not conn)
                        self.stats["unsubscribe"] += 1
                        reply = None
                if reply is None:
                    self.truth.line("subscriptions", {"event": "unsubscribe", "conn": conn.id, "tr_id": tr_id,
                                                      "symbol": tr_key, "t_ms": mt,
                                                      "until_t_ms": market.dispatched_ms, "ns": time.time_ns()})
                    reply = encode.unsubscribe_ok(tr_id, tr_key)
                conn.send_text(reply)
        else:
            conn.send_text(encode.internal_error(tr_id, tr_key, "invalid tr_type"))

    def on_closed(self, conn: WsConn) -> None:
        with self.lock:
            self.conns.pop(conn.id, None)
            for key in conn.subs:
                self.index[key] = tuple(c for c in self.index.get(key, ()) if c is not conn)
            if conn.app_key and self.bound.get(conn.app_key) is conn:
                del self.bound[conn.app_key]
            self.stats["closed"] += 1
        mt = self.market.market_ms()
        self.truth.line("connections", {
            "event": "close", "conn": conn.id, "cause": conn.close_cause, "t_ms": mt, "time": hhmmss(mt),
            "until_t_ms": conn.until_mt, "ns": time.time_ns(),
            "subscriptions": sorted(f"{tr}:{k}" for tr, k in conn.subs)})
        self.truth.line("sent", self.sent_summary(conn, final=True))
        log.info("ws closed", extra={"conn": conn.id, "cause": conn.close_cause})

    def sent_summary(self, conn: WsConn, final: bool = False) -> dict:
        per: dict[str, dict[str, dict[str, int]]] = {}
        for (tr, sym), (frames, recs) in conn.sent.items():
            per.setdefault(tr, {})[sym] = {"frames": frames, "records": recs}
        return {"conn": conn.id, "final": final, "app_key_id": self.auth.key_id(conn.app_key),
                "connected_t_ms": conn.connected_mt, "t_ms": self.market.market_ms(), "ns": time.time_ns(),
                "cause": conn.close_cause, "sent": per, "dropped": dict(conn.dropped),
                "pingpong_sent": conn.pings_sent, "pongs_received": conn.pongs, "firehose_frames": conn.fh_sent,
                "bytes_sent": conn.bytes_sent}

    def snapshot(self) -> list[dict]:
        with self.lock:
            conns = list(self.conns.values())
        return [{"conn": c.id, "app_key_id": self.auth.key_id(c.app_key), "subscriptions": len(c.subs),
                 "subs": sorted(f"{tr}:{k}" for tr, k in c.subs), "stalled": c.stalled,
                 "firehose": c.firehose is not None, "firehose_frames": c.fh_sent,
                 "pingpong_sent": c.pings_sent, "pongs_received": c.pongs,
                 "frames_sent": sum(v[0] for v in c.sent.values()), "dropped": dict(c.dropped),
                 "queued_bytes": c.qbytes} for c in conns]

    def housekeeping(self) -> None:
        """Flap drops that are due, and a PINGPONG to every connection whose interval has passed."""
        ping = ws_frame(self.ping_text().encode())
        now = time.monotonic()
        with self.lock:
            conns = list(self.conns.values())
        for c in conns:
            if c.drop_at is not None and now >= c.drop_at:
                c.drop_at = None
                c.abort("fault:ws_flap")
                continue
            if now >= c.next_ping:
                c.next_ping = now + self.ping_interval
                if c.enqueue(ping):
                    c.pings_sent += 1

    def ping_text(self) -> str:
        """The keep-alive message the server sends every `ping_interval` real seconds."""
        return encode.pingpong(encode.kst_text(self.market.now_ns()))

    def close_all(self, abrupt: bool = False, rst: bool = False, cause: str = "server_stop",
                  app_key: str | None = None) -> int:
        with self.lock:
            conns = [c for c in self.conns.values() if app_key is None or c.app_key == app_key]
        for c in conns:
            if abrupt:
                c.abort(cause, rst=rst)
            else:
                c.close_gracefully(1001, cause)
        return len(conns)

    def stop(self) -> None:
        self._stop = True
        try:
            # shutdown() wakes a thread blocked in accept(); close() alone does not on Linux
            self.lsock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.lsock.close()
        if self.thread.is_alive():  # not started when a later server failed to bind
            self.thread.join(2)
        self.close_all(cause="server_stop")


def _payload(frame: bytes) -> str:
    n = frame[1] & 0x7F
    off = 2 if n < 126 else 4 if n == 126 else 10
    return frame[off:].decode()


def _frame_count(frame: bytes) -> int:
    try:
        return int(_payload(frame).split("|", 3)[2])
    except (ValueError, IndexError):
        return 1


def _frame_keys(tr_id: str, payload: str) -> dict:
    """What a faulted frame carried: exchange times and (trades) ACML_VOL of each record."""
    try:
        _, _, cnt, data = payload.split("|", 3)
        f = data.split("^")
        n = int(cnt)
        w = len(f) // n
        recs = [f[i * w:(i + 1) * w] for i in range(n)]
        out = {"times": [r[1] for r in recs]}
        if tr_id == encode.CNT:
            out["acml_vols"] = [int(r[13]) for r in recs]
        return out
    except (ValueError, IndexError, ZeroDivisionError):
        return {}
