"""KIS WebSocket client: one connection per app key, up to 41 registrations each, self-healing.

KisConnection (one thread) connects, (re)registers every active (tr_id, symbol), echoes PINGPONG,
decodes frames and hands every frame to the sink. It reconnects on any failure:

  cause                when
  eof / reset          the server closed TCP (with or without a close frame) or reset it
  close_frame          the server sent a WebSocket close
  stall                no data frame for stall_s[phase] since the later of the last data frame and
                       the (re)subscription: a connection that subscribes and never receives data
                       is caught too (PINGPONGs do not count: they flow on a dead feed)
  silent               no frame of any kind (data, PINGPONG, ack) for silence_s: a half-open socket
                       (also caught by TCP keepalive + TCP_USER_TIMEOUT on the socket)
  approval_invalid     OPSP0011 (a new approval key is fetched first)
  appkey_in_use        OPSP8996 (another session holds the key; retried with backoff)
  connect_failed       connect/handshake refused or timed out

Backoff between attempts follows ws.backoff_s (1, 2, 5, 10, 20, 30, 60, then 60 repeating) and goes
back to the start only after data has flowed for ws.backoff_reset_s on a new connection - a
successful connect alone does not reset it, so a flapping server is not hammered.

After each reconnect a `reconnect` event carries the cause, the downtime and the attempt number,
and (ws.gap_markers) one `gap_marker` per registration covers the downtime.

Per-registration staleness (stale_s[channel][phase], counted from the subscribe time, data frames
only) emits `stream_stale` and re-registers that one pair once per episode.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from dataclasses import dataclass

import websocket

from observer.core.clock import NS, Clock
from observer.core.config import with_defaults
from observer.core.logging import get_logger
from observer.providers.base import (
    BOOK,
    CHANNELS,
    TRADES,
    AuthError,
    FrameSink,
    ProviderError,
    RegistrationLimitError,
    StreamClient,
    Subscription,
)
from observer.providers.kis.auth import KisAuth
from observer.providers.kis.parse import CHANNEL_BY_TR, TR_BY_CHANNEL, KisFrameDecoder, subscribe_message
from observer.providers.wsframes import OP_BINARY, OP_CLOSE, OP_PING, FrameReader

log = get_logger(__name__)

MAX_REGISTRATIONS = 41


def session_phase(hour: int, minute: int) -> str:
    hm = hour * 100 + minute
    if hm < 900:
        return "preopen"
    if hm < 1520:
        return "continuous"
    if hm < 1530:
        return "auction"
    return "after"


def open_socket(url: str, connect_timeout_s: float, tcp_user_timeout_ms: int = 30000) -> websocket.WebSocket:
    """Connect and handshake, with TCP keepalive and TCP_USER_TIMEOUT so a half-open socket fails instead
    of hanging. Raises websocket/OS errors as websocket-client does (the caller names them)."""
    opts = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1), (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
    for name, val in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3),
                      ("TCP_USER_TIMEOUT", tcp_user_timeout_ms)):
        if hasattr(socket, name) and val:
            opts.append((socket.IPPROTO_TCP, getattr(socket, name), val))
    return websocket.create_connection(url, timeout=connect_timeout_s, skip_utf8_validation=True,
                                       enable_multithread=True, sockopt=opts)


@dataclass
class _Reg:
    sub: Subscription
    tr_id: str
    since: float          # monotonic: subscribe (or re-subscribe) time - staleness counts from here
    last_data: float = 0.0
    acked: bool = False
    acked_ns: int | None = None  # when the server acknowledged the latest (re)send: the stream is effective
    stale: bool = False
    resubscribed: bool = False
    error: str = ""


class KisConnection:
    """One WebSocket session for one app key. Thread-safe subscribe/unsubscribe."""

    def __init__(self, *, ws_url: str, auth: KisAuth, account: str, wcfg: dict, clock: Clock,
                 sink: FrameSink, events=None, custtype: str = "P", trading_date=None):
        wcfg = with_defaults(wcfg, "providers", "kis", "ws")
        self.ws_url = ws_url + wcfg["path"]
        self.auth = auth
        self.account = account
        self.clock = clock
        self.sink = sink
        self.events = events
        self.custtype = custtype
        self.max_registrations = min(int(wcfg["max_registrations"]), MAX_REGISTRATIONS)
        self.backoff = [float(x) for x in wcfg["backoff_s"]]
        self.backoff_reset_s = float(wcfg["backoff_reset_s"])
        self.connect_timeout_s = float(wcfg["connect_timeout_s"])
        self.silence_s = float(wcfg["silence_s"])
        # a phase table given in part keeps the schema's default for the other phases
        self.stall_s = {**with_defaults(None, "providers", "kis", "ws", "stall_s"), **wcfg["stall_s"]}
        self.stale_s = {ch: {**with_defaults(None, "providers", "kis", "ws", "stale_s", ch), **wcfg["stale_s"][ch]}
                        for ch in CHANNELS}
        self.stale_resubscribe = bool(wcfg["stale_resubscribe"])
        self.gap_markers = bool(wcfg["gap_markers"])
        self.poll_s = float(wcfg["poll_s"])  # real seconds between timer checks while idle
        self.tcp_user_timeout_ms = int(wcfg["tcp_user_timeout_ms"])
        self.error_events_per_min = int(wcfg["error_events_per_min"])
        self._lock = threading.RLock()
        self._regs: dict[tuple[str, str], _Reg] = {}
        self._ever: dict[str, set[str]] = {ch: set() for ch in CHANNELS}
        self.decoder = KisFrameDecoder(subscribed=self._ever, trading_date=trading_date)
        self._ws: websocket.WebSocket | None = None
        self._approval: str | None = None
        self._refused: str | None = None  # the approval key the server refused (OPSP0011)
        self.fatal: AuthError | None = None  # the broker refused this account's key/secret: no retry helps
        self._last_data_ns = 0  # receive time of the latest data frame (where a stall's gap begins)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn_no = 0
        self.session_id = ""
        self.connected = threading.Event()
        self.backoff_index = 0
        self._err_window = (0.0, 0)
        self.stats = {"frames": 0, "data_frames": 0, "records": 0, "errors": 0, "rejects": 0, "pingpongs": 0,
                      "connects": 0, "reconnects": 0, "connect_failures": 0, "stalls": 0, "stale": 0,
                      "sink_errors": 0, "last_cause": "", "last_downtime_s": None}

    # -- registrations -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._regs)

    def has(self, symbol: str, channel: str) -> bool:
        return (TR_BY_CHANNEL[channel], symbol) in self._regs

    def registrations(self) -> set[Subscription]:
        with self._lock:
            return {r.sub for r in self._regs.values()}

    def acked_ns(self, symbol: str, channel: str) -> int | None:
        reg = self._regs.get((TR_BY_CHANNEL[channel], symbol))
        return reg.acked_ns if reg is not None else None

    def subscribe(self, symbol: str, channel: str) -> None:
        sub = Subscription(symbol, channel)
        tr = TR_BY_CHANNEL[channel]
        with self._lock:
            if (tr, symbol) in self._regs:
                return
            if len(self._regs) >= self.max_registrations:
                raise RegistrationLimitError(
                    f"KIS connection {self.account!r} already has {len(self._regs)} of {self.max_registrations} "
                    f"registrations (a symbol with trades and book uses 2); cannot add {symbol} {channel}")
            reg = _Reg(sub, tr, since=self.clock.monotonic())
            self._regs[(tr, symbol)] = reg
            self._ever[channel].add(symbol)
            self._send_reg(reg, True)

    def unsubscribe(self, symbol: str, channel: str) -> None:
        tr = TR_BY_CHANNEL[channel]
        with self._lock:
            reg = self._regs.pop((tr, symbol), None)
            if reg is not None:
                self._send_reg(reg, False)

    def _send_reg(self, reg: _Reg, register: bool) -> bool:
        ws, key = self._ws, self._approval
        if ws is None or key is None:
            return False  # sent on (re)connect
        try:
            ws.send(subscribe_message(key, reg.tr_id, reg.sub.symbol, register=register, custtype=self.custtype))
            if register:
                reg.since = self.clock.monotonic()
                reg.acked = False
                reg.acked_ns = None
            return True
        except Exception as e:  # the receive loop notices the broken socket and reconnects
            log.info("subscribe send failed; will resend after reconnect", extra={"error": type(e).__name__})
            return False

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"kis-ws-{self.account}", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        ws = self._ws
        if ws is not None:
            try:
                ws.close(timeout=0.5)
            except Exception:
                pass
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # -- helpers -------------------------------------------------------------------------------
    def _emit(self, event: str, severity: str, **fields) -> None:
        if self.events is None:
            return
        try:
            self.events.emit(event, severity, **fields)
        except Exception:
            log.exception("event not emitted", extra={"event_kind": event})

    def _pause(self, seconds: float) -> bool:
        """Wait `seconds` of clock time unless stopped; False if stopped."""
        end = self.clock.monotonic() + seconds
        speed = max(self.clock.speed, 1e-9)
        while not self._stop.is_set():
            left = end - self.clock.monotonic()
            if left <= 0:
                return True
            self._stop.wait(min(0.1, left / speed))
        return False

    def _phase(self) -> str:
        t = self.clock.now_kst()
        return session_phase(t.hour, t.minute)

    def _connect(self) -> websocket.WebSocket:
        self._approval = self.auth.approval_key(invalid=self._refused)
        ws = open_socket(self.ws_url, self.connect_timeout_s, self.tcp_user_timeout_ms)
        ws.settimeout(self.poll_s)
        return ws

    # -- the connection thread -----------------------------------------------------------------
    def _run(self) -> None:
        down_since_ns: int | None = None
        down_since_mono = 0.0
        cause = ""
        failures = 0  # consecutive attempts since data last flowed for backoff_reset_s
        while not self._stop.is_set():
            if down_since_ns is not None:
                delay = self.backoff[min(failures - 1, len(self.backoff) - 1)] if failures > 0 else 0.0
                self.backoff_index = failures
                if delay and not self._pause(delay):
                    break
            try:
                ws = self._connect()
            except Exception as e:
                if self._stop.is_set():
                    break
                self.stats["connect_failures"] += 1
                failures += 1
                if down_since_ns is None:
                    down_since_ns, down_since_mono = self.clock.now_ns(), self.clock.monotonic()
                    cause = "connect_failed"
                log.warning("KIS WebSocket connect failed", extra={"account": self.account, "error": f"{type(e).__name__}: {e}"[:200],
                                                                   "attempt": failures})
                if isinstance(e, ProviderError):
                    self._emit("subscription_error", "ERROR", account=self.account, code="auth",
                               message=str(e)[:300])
                if isinstance(e, AuthError) and self.auth.refused:  # definitive: the collector stops
                    e.account = self.account
                    self.fatal = e
                    break
                continue
            self._conn_no += 1
            self.session_id = f"kis-{self.account}-{uuid.uuid4().hex[:8]}-{self._conn_no}"
            self.decoder.session_id = self.session_id
            with self._lock:
                self._ws = ws
                for reg in self._regs.values():
                    reg.stale = False
                    reg.resubscribed = False
                    self._send_reg(reg, True)
            self.stats["connects"] += 1
            self.connected.set()
            up_ns, up_mono = self.clock.now_ns(), self.clock.monotonic()
            if down_since_ns is not None:
                downtime = up_mono - down_since_mono
                self._emit("reconnect", "WARNING", cause=cause, downtime_s=round(downtime, 3), attempt=failures,
                           session_id=self.session_id)
                if self.gap_markers:
                    self._gap_markers(down_since_ns, up_ns, cause)
                # counted after the events are durable: whoever watches the counter finds the events
                self.stats["last_cause"] = cause
                self.stats["last_downtime_s"] = round(downtime, 3)
                self.stats["reconnects"] += 1
            data_before = self.stats["data_frames"]
            cause, flowed = self._receive(ws)
            self.connected.clear()
            with self._lock:
                self._ws = None
            try:
                ws.close(timeout=0.2)
            except Exception:
                pass
            if self._stop.is_set():
                break
            if flowed:
                failures = 0
            failures += 1
            with self._lock:
                acked = any(r.acked for r in self._regs.values())
            if down_since_ns is not None and not acked and self.stats["data_frames"] == data_before:
                # this connection never worked (no ack, no data): the downtime goes on from the last marker's end
                down_since_ns, down_since_mono = up_ns, up_mono
            elif cause in ("stall", "silent") and self._last_data_ns > up_ns:
                # the feed stopped at its last data frame, not when the stall was noticed: the marker
                # must cover the silent stretch too (a quiet market makes it longer than needed, never short)
                now_ns, now_mono = self.clock.now_ns(), self.clock.monotonic()
                down_since_ns = self._last_data_ns
                down_since_mono = now_mono - (now_ns - down_since_ns) / NS
            else:
                down_since_ns, down_since_mono = self.clock.now_ns(), self.clock.monotonic()
            log.warning("KIS WebSocket lost", extra={"account": self.account, "cause": cause,
                                                     "session_id": self.session_id})

    def _gap_markers(self, start_ns: int, end_ns: int, cause: str) -> None:
        with self._lock:
            regs = list(self._regs.values())
        for reg in regs:
            self._emit("gap_marker", "WARNING", market="krx", symbol=reg.sub.symbol, start_ns=start_ns,
                       end_ns=end_ns, track="B", cause=f"ws_{cause}", recoverable=reg.sub.channel == TRADES,
                       channel=reg.sub.channel, gap_id=f"kis-{reg.sub.channel}-{reg.sub.symbol}-{start_ns}")

    def _receive(self, ws: websocket.WebSocket) -> tuple[str, bool]:
        """Receive until the connection fails; returns (cause, data flowed for backoff_reset_s)."""
        clock = self.clock
        decode = self.decoder.decode
        sink = self.sink
        regs = self._regs
        stats = self.stats
        now = clock.monotonic()
        last_any = now
        last_data = 0.0
        connected_at = now
        flowing_since = 0.0
        flowed = False
        next_check = now
        recv = FrameReader(ws.sock).recv  # websocket-client handshakes and sends; frames are read here
        while not self._stop.is_set():
            try:
                opcode, data = recv()
            except websocket.WebSocketTimeoutException:
                opcode, data = -1, b""
            except websocket.WebSocketConnectionClosedException:
                return "eof", flowed
            except (ConnectionResetError, BrokenPipeError):
                return "reset", flowed
            except (OSError, websocket.WebSocketException) as e:
                if isinstance(e, TimeoutError | socket.timeout):
                    opcode, data = -1, b""
                else:
                    return f"error_{type(e).__name__}", flowed
            now = clock.monotonic()
            if opcode > OP_BINARY:  # control frames
                if opcode == OP_CLOSE:
                    try:
                        ws.send_close()
                    except Exception:
                        pass
                    return "close_frame", flowed
                if opcode == OP_PING:
                    try:
                        ws.pong(data)
                    except Exception:
                        return "reset", flowed
                opcode = -1
            if opcode >= 0:
                last_any = now
                recv_ns = clock.now_ns()
                text = data.decode("utf-8", "replace")  # FrameReader gives bytes
                d = decode(text, recv_ns)
                stats["frames"] += 1
                kind = d.kind
                if kind == "data":
                    stats["data_frames"] += 1
                    last_data = now
                    self._last_data_ns = recv_ns
                    if not flowing_since:
                        flowing_since = now
                    elif not flowed and now - flowing_since >= self.backoff_reset_s:
                        flowed = True
                        self.backoff_index = 0
                    recs = d.records
                    stats["records"] += len(recs)
                    ch = CHANNEL_BY_TR.get(d.tr_id)
                    if recs:
                        reg = regs.get((d.tr_id, recs[0]["symbol"]))
                        if reg is not None:
                            reg.last_data = now
                            if reg.stale:
                                self._resumed(reg, ch)
                        for r in recs[1:]:
                            reg = regs.get((d.tr_id, r["symbol"]))
                            if reg is not None:
                                reg.last_data = now
                elif kind == "pingpong":
                    stats["pingpongs"] += 1
                    try:
                        ws.send(text)  # echo the identical text (official clients and python-kis)
                    except Exception:
                        return "reset", flowed
                ended = self._control(d.control or {}) if kind == "control" else ""
                try:
                    sink(text, recv_ns, d.records)  # also the control frame that ends a session: raw/ keeps it
                except Exception:
                    stats["sink_errors"] += 1
                    log.exception("sink failed")
                if ended:
                    return ended, flowed
                if d.errors or d.rejects:
                    self._report(d, text)
            if now >= next_check:
                next_check = now + min(1.0, self.poll_s * max(clock.speed, 1.0))
                cause = self._check_timers(now, last_any, last_data, connected_at)
                if cause:
                    return cause, flowed
        return "stopped", flowed

    def _resumed(self, reg: _Reg, channel: str | None) -> None:
        reg.stale = False
        self._emit("stream_stale", "INFO", symbol=reg.sub.symbol, channel=reg.sub.channel, state="resumed",
                   session_id=self.session_id)

    def _check_timers(self, now: float, last_any: float, last_data: float, connected_at: float) -> str:
        if now - last_any > self.silence_s:
            self.stats["stalls"] += 1
            return "silent"
        with self._lock:
            regs = list(self._regs.values())
        if not regs:
            return ""
        phase = self._phase()
        stall = float(self.stall_s.get(phase, 0) or 0)
        if stall > 0:
            # data frames only, counted from the earliest pending subscribe when nothing came since
            ref = max(last_data, min(r.since for r in regs), connected_at)
            if now - ref > stall:
                self.stats["stalls"] += 1
                return "stall"
        for reg in regs:
            limit = float(self.stale_s[reg.sub.channel].get(phase, 0) or 0)
            if limit <= 0 or reg.stale:
                continue
            silent = now - max(reg.since, reg.last_data)
            if silent > limit:
                reg.stale = True
                self.stats["stale"] += 1
                self._emit("stream_stale", "WARNING", symbol=reg.sub.symbol, channel=reg.sub.channel, state="stale",
                           silent_s=round(silent, 3), phase=phase, session_id=self.session_id)
                if self.stale_resubscribe and not reg.resubscribed:
                    reg.resubscribed = True
                    with self._lock:
                        if self._send_reg(reg, False):
                            self._send_reg(reg, True)
                            reg.stale = True  # keep the episode open until data arrives
        return ""

    def _control(self, c: dict) -> str:
        code = c.get("msg_cd", "")
        tr, key = c.get("tr_id", ""), c.get("tr_key", "")
        reg = self._regs.get((tr, key))
        if code in ("OPSP0000", "OPSP0002"):
            if reg is not None:
                reg.acked = True
                reg.acked_ns = self.clock.now_ns()
                reg.error = ""
            return ""
        if code in ("OPSP0001", "OPSP0003"):
            return ""
        if code == "OPSP0011":
            self._emit("subscription_error", "ERROR", account=self.account, code=code, message=c.get("msg1", "")[:200],
                       symbol=key)
            self._refused = self._approval  # _connect fetches a new one (inside the downtime)
            return "approval_invalid"
        if code == "OPSP8996":
            self._emit("subscription_error", "ERROR", account=self.account, code=code, message=c.get("msg1", "")[:200])
            return "appkey_in_use"
        if c.get("rt_cd") not in ("0", ""):
            if reg is not None:
                reg.error = code
            self._emit("subscription_error", "ERROR", account=self.account, code=code, message=c.get("msg1", "")[:200],
                       symbol=key, tr_id=tr)
        return ""

    def _report(self, d, text: str) -> None:
        self.stats["errors"] += len(d.errors)
        self.stats["rejects"] += len(d.rejects)
        t = time.monotonic()
        start, n = self._err_window
        if t - start > 60:
            start, n = t, 0
        for e in d.errors:
            n += 1
            if n <= self.error_events_per_min and d.kind != "encrypted":
                self._emit("record_rejected", "WARNING", record_kind="frame", reason=e[:300],
                           session_id=self.session_id)
        for _rec, reason, sym in d.rejects:
            n += 1
            if n <= self.error_events_per_min:
                self._emit("record_rejected", "WARNING", record_kind="trade" if d.tr_id == "H0STCNT0" else "book",
                           reason=reason, symbol=sym[:40])
        self._err_window = (start, n)


class KisStream(StreamClient):
    """Every configured KIS account's connection behind one StreamClient.

    A symbol's trades and book go to the same connection when it has room; when every connection
    holds its 41 registrations, subscribe raises RegistrationLimitError (no silent server refusal).
    """

    def __init__(self, connections: list[KisConnection]):
        if not connections:
            raise ProviderError("no KIS accounts configured (providers.kis.accounts)")
        self.connections = connections
        self.max_registrations = sum(c.max_registrations for c in connections)
        self._lock = threading.Lock()

    def _owner(self, symbol: str, channel: str) -> KisConnection | None:
        for c in self.connections:
            if c.has(symbol, channel):
                return c
        return None

    def subscribe(self, symbol: str, channel: str) -> None:
        if channel not in CHANNELS:
            raise ValueError(f"channel must be one of {CHANNELS}")
        with self._lock:
            if self._owner(symbol, channel):
                return
            other = BOOK if channel == TRADES else TRADES
            sibling = self._owner(symbol, other)
            candidates = sorted((c for c in self.connections if len(c) < c.max_registrations), key=len)
            if sibling is not None and len(sibling) < sibling.max_registrations:
                candidates.insert(0, sibling)
            if not candidates:
                raise RegistrationLimitError(
                    f"all {len(self.connections)} KIS connection(s) hold their {self.connections[0].max_registrations} "
                    f"registrations ({self.max_registrations} in all; trades and book of one symbol use 2); "
                    f"cannot add {symbol} {channel}: add an account or free a slot")
            candidates[0].subscribe(symbol, channel)

    def unsubscribe(self, symbol: str, channel: str) -> None:
        with self._lock:
            c = self._owner(symbol, channel)
            if c is not None:
                c.unsubscribe(symbol, channel)

    def acked_ns(self, symbol: str, channel: str) -> int | None:
        c = self._owner(symbol, channel)
        return c.acked_ns(symbol, channel) if c is not None else None

    def registrations(self) -> set[Subscription]:
        out: set[Subscription] = set()
        for c in self.connections:
            out |= c.registrations()
        return out

    def start(self) -> None:
        for c in self.connections:
            c.start()

    def stop(self, timeout: float = 5.0) -> None:
        for c in self.connections:
            c.stop(timeout)

    def fatal(self) -> ProviderError | None:
        return next((c.fatal for c in self.connections if c.fatal is not None), None)

    def stats(self) -> dict:
        per = {c.account: dict(c.stats, registrations=len(c), session_id=c.session_id, connected=c.connected.is_set(),
                               backoff_index=c.backoff_index) for c in self.connections}
        total: dict = {}
        for s in per.values():
            for k, v in s.items():
                if isinstance(v, int) and not isinstance(v, bool):
                    total[k] = total.get(k, 0) + v
        total["connections"] = per
        return total
