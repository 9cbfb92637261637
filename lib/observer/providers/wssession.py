"""A self-healing market-data WebSocket session, and a stream over several: what every streaming provider
shares. A provider supplies only its wire protocol (a WireProtocol: credential, login, registration
messages, its frame decoder, what a control message means, its market's phases); this module does the rest.

WsSession (one thread, one credential) connects, logs in when the protocol has a login (registrations wait
for its answer), (re)registers every active (symbol, channel), answers heartbeats, decodes frames and
hands every frame to the sink. It reconnects on any failure:

  cause                when
  eof / reset          the server closed TCP (with or without a close frame) or reset it
  close_frame          the server sent a WebSocket close
  stall                no data frame for stall_s[phase] since the later of the last data frame and
                       the (re)subscription: a connection that subscribes and never receives data
                       is caught too (heartbeats do not count: they flow on a dead feed)
  silent               no frame of any kind (data, heartbeat, answer) for silence_s: a half-open socket
                       (also caught by TCP keepalive + TCP_USER_TIMEOUT on the socket)
  login_timeout        the login was not answered within connect_timeout_s
  connect_failed       connect/handshake refused or timed out, or the credential could not be had
  <protocol's cause>   a control message that ends the session (the protocol names it: a refused
                       credential, the key in use elsewhere, a server notice)

A credential the server refused is replaced before the next connect (the protocol is asked for a new one,
never the refused one). A refusal no new credential can cure (the broker refused the account) is fatal():
the session stops and the collector ends with it.

Backoff between attempts follows ws.backoff_s (1, 2, 5, 10, 20, 30, 60, then 60 repeating) and goes
back to the start only after data has flowed for ws.backoff_reset_s on a new connection - a
successful connect alone does not reset it, so a flapping server is not hammered.

After each reconnect (the moment the session is live again: connected and, with a login, logged in) a
`reconnect` event carries the cause, the downtime and the attempt number, and (ws.gap_markers) one
`gap_marker` per registration covers the downtime.

Per-registration staleness (stale_s[channel][phase], counted from the subscribe time, data frames
only) emits `stream_stale` and re-registers that one pair once per episode.
"""

from __future__ import annotations

import abc
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime

import websocket

from observer.core.clock import NS, Clock
from observer.core.logging import get_logger
from observer.providers.base import (
    BOOK,
    CHANNELS,
    TRADES,
    AuthError,
    Decoded,
    FrameSink,
    ProviderError,
    RegistrationLimitError,
    StreamClient,
    Subscription,
)
from observer.providers.wsframes import OP_BINARY, OP_CLOSE, OP_PING, FrameReader

log = get_logger(__name__)

# registrations are keyed by (record kind, symbol): a decoded record finds its registration in one lookup
KIND_OF_CHANNEL = {TRADES: "trade", BOOK: "book"}


@dataclass(frozen=True, slots=True)
class Control:
    """What a control message means to the session (WireProtocol.control). The default: nothing."""

    acked: Subscription | None = None     # the server registered it: its data flows from now
    refused: Subscription | None = None   # the server refused to register it (code: why)
    code: str = ""
    logged_in: bool = False               # the login was accepted: registrations may go out
    end: str = ""                         # the session is over: reconnect, with this cause
    renew: bool = False                   # the credential in use was refused: get a new one first
    fatal: ProviderError | None = None    # no reconnect can help (the account was refused): stop
    event: tuple[str, str, dict] | None = None  # (kind, severity, fields) to emit; the account is added


NOTHING = Control()


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


class WireProtocol(abc.ABC):
    """One provider's WebSocket protocol, as a WsSession needs it. One instance per session: it may keep
    per-connection state (e.g. which registration an answer that names none belongs to)."""

    name = ""                 # provider: session ids, gap ids, thread names
    label = ""                # how messages to people name the provider
    market = ""               # market of the gap markers
    max_registrations = 0     # per connection; the config may only lower it
    # every key of the session's table (backoff_s, stall_s by phase, stale_s by channel and phase, ...):
    # what applies where the config says nothing
    defaults: dict = {}

    @abc.abstractmethod
    def credential(self, refused: str | None) -> str:
        """What the connection authenticates with, fetched before each connect (may raise ProviderError).
        `refused`: the value the server just refused; never return it."""

    def fatal(self, error: Exception) -> bool:
        """Whether failing to get the credential is definitive (the broker refused the account)."""
        return False

    def login(self, credential: str) -> str | None:
        """The message sent first on a new connection; None when the protocol has none. Its answer
        (Control.logged_in) lets the registrations go out."""
        return None

    @abc.abstractmethod
    def registration(self, credential: str, symbol: str, channel: str, register: bool) -> str:
        """The message that registers (or releases) one (symbol, channel)."""

    @abc.abstractmethod
    def decoder(self, subscribed: dict[str, set[str]], trading_date):
        """The connection's frame decoder: decode(text, recv_ns) -> Decoded, a session_id attribute, and
        records of a symbol not in subscribed[channel] rejected."""

    @abc.abstractmethod
    def control(self, d: Decoded) -> Control:
        """What a control message (kind "control") means."""

    def reply(self, d: Decoded, text: str) -> str | None:
        """The answer to a heartbeat (kind "pingpong"): by default the identical text."""
        return text

    def connected(self) -> None:
        """A new connection begins: forget what belonged to the previous one."""
        return None

    @abc.abstractmethod
    def phase(self, now_kst: datetime) -> str:
        """The market's session phase now (keys of stall_s and stale_s)."""


@dataclass
class _Reg:
    sub: Subscription
    since: float          # monotonic: subscribe (or re-subscribe) time - staleness counts from here
    last_data: float = 0.0
    acked: bool = False
    acked_ns: int | None = None  # when the server acknowledged the latest (re)send: the stream is effective
    stale: bool = False
    resubscribed: bool = False
    error: str = ""


class WsSession:
    """One WebSocket session for one credential. Thread-safe subscribe/unsubscribe."""

    def __init__(self, protocol: WireProtocol, *, url: str, account: str, wcfg: dict, clock: Clock,
                 sink: FrameSink, events=None, trading_date=None):
        self.protocol = protocol
        self.ws_url = url
        self.account = account
        self.clock = clock
        self.sink = sink
        self.events = events
        self.label = protocol.label
        # the protocol's defaults (KIS: the config schema's ws table) under what the config sets; a phase
        # table given in part keeps the defaults of the other phases
        d = protocol.defaults
        w = {**d, **wcfg}
        self.max_registrations = min(int(w["max_registrations"]), protocol.max_registrations)
        self.backoff = [float(x) for x in w["backoff_s"]]
        self.backoff_reset_s = float(w["backoff_reset_s"])
        self.connect_timeout_s = float(w["connect_timeout_s"])
        self.silence_s = float(w["silence_s"])
        self.stall_s = {**d["stall_s"], **(wcfg.get("stall_s") or {})}
        stale = wcfg.get("stale_s") or {}
        self.stale_s = {ch: {**d["stale_s"][ch], **(stale.get(ch) or {})} for ch in CHANNELS}
        self.stale_resubscribe = bool(w["stale_resubscribe"])
        self.gap_markers = bool(w["gap_markers"])
        self.poll_s = float(w["poll_s"])  # real seconds between timer checks while idle
        self.tcp_user_timeout_ms = int(w["tcp_user_timeout_ms"])
        self.error_events_per_min = int(w["error_events_per_min"])
        self._lock = threading.RLock()
        self._regs: dict[tuple[str, str], _Reg] = {}
        self._ever: dict[str, set[str]] = {ch: set() for ch in CHANNELS}
        self.decoder = protocol.decoder(self._ever, trading_date)
        self._sock: websocket.WebSocket | None = None  # the open connection (stop() closes it)
        self._ws: websocket.WebSocket | None = None    # ... once live: registrations go out on it
        self._credential: str | None = None
        self._refused: str | None = None  # the credential the server refused
        self.fatal: ProviderError | None = None  # no retry helps (refused account): the collector stops
        self._last_data_ns = 0  # receive time of the latest data frame (where a stall's gap begins)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn_no = 0
        self._up: tuple[int, float] | None = None    # (ns, monotonic) the current connection went live
        self._down: tuple[int, float] | None = None  # (ns, monotonic) the feed was lost; None while up
        self._cause = ""     # why it was lost (the next reconnect event's cause)
        self._failures = 0   # attempts since data last flowed for backoff_reset_s (the event's attempt)
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
        return (KIND_OF_CHANNEL[channel], symbol) in self._regs

    def registrations(self) -> set[Subscription]:
        with self._lock:
            return {r.sub for r in self._regs.values()}

    def acked_ns(self, symbol: str, channel: str) -> int | None:
        reg = self._regs.get((KIND_OF_CHANNEL[channel], symbol))
        return reg.acked_ns if reg is not None else None

    def subscribe(self, symbol: str, channel: str) -> None:
        sub = Subscription(symbol, channel)
        key = (KIND_OF_CHANNEL[channel], symbol)
        with self._lock:
            if key in self._regs:
                return
            if len(self._regs) >= self.max_registrations:
                raise RegistrationLimitError(
                    f"{self.label} connection {self.account!r} already has {len(self._regs)} of "
                    f"{self.max_registrations} registrations (a symbol with trades and book uses 2); "
                    f"cannot add {symbol} {channel}")
            reg = _Reg(sub, since=self.clock.monotonic())
            self._regs[key] = reg
            self._ever[channel].add(symbol)
            self._send_reg(reg, True)

    def unsubscribe(self, symbol: str, channel: str) -> None:
        with self._lock:
            reg = self._regs.pop((KIND_OF_CHANNEL[channel], symbol), None)
            if reg is not None:
                self._send_reg(reg, False)

    def _send_reg(self, reg: _Reg, register: bool) -> bool:
        ws, cred = self._ws, self._credential
        if ws is None or cred is None:
            return False  # sent once the session is live again
        try:
            ws.send(self.protocol.registration(cred, reg.sub.symbol, reg.sub.channel, register))
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
            self._thread = threading.Thread(target=self._run, name=f"{self.protocol.name}-ws-{self.account}",
                                            daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        ws = self._sock
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

    def _connect(self) -> websocket.WebSocket:
        self._credential = self.protocol.credential(self._refused)
        ws = open_socket(self.ws_url, self.connect_timeout_s, self.tcp_user_timeout_ms)
        ws.settimeout(self.poll_s)
        return ws

    # -- the connection thread -----------------------------------------------------------------
    def _run(self) -> None:
        failures = 0  # consecutive attempts since data last flowed for backoff_reset_s
        while not self._stop.is_set():
            if self._down is not None:
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
                if self._down is None:
                    self._down = (self.clock.now_ns(), self.clock.monotonic())
                    self._cause = "connect_failed"
                log.warning(f"{self.label} WebSocket connect failed",
                            extra={"account": self.account, "error": f"{type(e).__name__}: {e}"[:200],
                                   "attempt": failures})
                if isinstance(e, ProviderError):
                    self._emit("subscription_error", "ERROR", account=self.account, code="auth",
                               message=str(e)[:300])
                if isinstance(e, AuthError) and self.protocol.fatal(e):  # definitive: the collector stops
                    e.account = self.account
                    self.fatal = e
                    break
                continue
            self._conn_no += 1
            self.session_id = f"{self.protocol.name}-{self.account}-{uuid.uuid4().hex[:8]}-{self._conn_no}"
            self.decoder.session_id = self.session_id
            self._up = None
            self._failures = failures
            self.protocol.connected()
            self._sock = ws
            login = self.protocol.login(self._credential)
            cause = ""
            if login is None:
                self._live(ws)
            else:
                try:
                    ws.send(login)
                except Exception:
                    cause = "reset"
            data_before = self.stats["data_frames"]
            flowed = False
            if not cause:
                cause, flowed = self._receive(ws)
            self.connected.clear()
            with self._lock:
                self._ws = None
            self._sock = None
            try:
                ws.close(timeout=0.2)
            except Exception:
                pass
            if self._stop.is_set() or self.fatal is not None:
                break
            if flowed:
                failures = 0
            failures += 1
            with self._lock:
                acked = any(r.acked for r in self._regs.values())
            up = self._up
            if up is None:  # never live (refused login, no answer): the downtime goes on from where it began
                if self._down is None:
                    self._down = (self.clock.now_ns(), self.clock.monotonic())
            elif self._down is not None and not acked and self.stats["data_frames"] == data_before:
                # this connection never worked (no ack, no data): the downtime goes on from the last marker's end
                self._down = up
            elif cause in ("stall", "silent") and self._last_data_ns > up[0]:
                # the feed stopped at its last data frame, not when the stall was noticed: the marker
                # must cover the silent stretch too (a quiet market makes it longer than needed, never short)
                now_ns, now_mono = self.clock.now_ns(), self.clock.monotonic()
                self._down = (self._last_data_ns, now_mono - (now_ns - self._last_data_ns) / NS)
            else:
                self._down = (self.clock.now_ns(), self.clock.monotonic())
            self._cause = cause
            log.warning(f"{self.label} WebSocket lost", extra={"account": self.account, "cause": cause,
                                                                "session_id": self.session_id})

    def _live(self, ws: websocket.WebSocket) -> None:
        """The connection is usable (connected, logged in where the protocol logs in): every registration
        goes out, and a reconnect is reported with the downtime it ends."""
        with self._lock:
            self._ws = ws
            for reg in self._regs.values():
                reg.stale = False
                reg.resubscribed = False
                self._send_reg(reg, True)
        self.stats["connects"] += 1
        self.connected.set()
        up_ns, up_mono = self.clock.now_ns(), self.clock.monotonic()
        self._up = (up_ns, up_mono)
        down = self._down
        if down is not None:
            downtime = up_mono - down[1]
            self._emit("reconnect", "WARNING", cause=self._cause, downtime_s=round(downtime, 3),
                       attempt=self._failures, session_id=self.session_id)
            if self.gap_markers:
                self._gap_markers(down[0], up_ns, self._cause)
            # counted after the events are durable: whoever watches the counter finds the events
            self.stats["last_cause"] = self._cause
            self.stats["last_downtime_s"] = round(downtime, 3)
            self.stats["reconnects"] += 1

    def _gap_markers(self, start_ns: int, end_ns: int, cause: str) -> None:
        with self._lock:
            regs = list(self._regs.values())
        name, market = self.protocol.name, self.protocol.market
        for reg in regs:
            self._emit("gap_marker", "WARNING", market=market, symbol=reg.sub.symbol, start_ns=start_ns,
                       end_ns=end_ns, track="B", cause=f"ws_{cause}", recoverable=reg.sub.channel == TRADES,
                       channel=reg.sub.channel, gap_id=f"{name}-{reg.sub.channel}-{reg.sub.symbol}-{start_ns}")

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
                ended = ""
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
                    for r in recs:
                        reg = regs.get((r["kind"], r["symbol"]))
                        if reg is not None:
                            reg.last_data = now
                            if reg.stale:
                                self._resumed(reg)
                elif kind == "pingpong":
                    stats["pingpongs"] += 1
                    answer = self.protocol.reply(d, text)
                    if answer is not None:
                        try:
                            ws.send(answer)
                        except Exception:
                            return "reset", flowed
                elif kind == "control":
                    ended = self._control(self.protocol.control(d), ws)
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

    def _resumed(self, reg: _Reg) -> None:
        reg.stale = False
        self._emit("stream_stale", "INFO", symbol=reg.sub.symbol, channel=reg.sub.channel, state="resumed",
                   session_id=self.session_id)

    def _check_timers(self, now: float, last_any: float, last_data: float, connected_at: float) -> str:
        if now - last_any > self.silence_s:
            self.stats["stalls"] += 1
            return "silent"
        if self._ws is None and now - connected_at > self.connect_timeout_s:
            return "login_timeout"
        with self._lock:
            regs = list(self._regs.values())
        if not regs:
            return ""
        phase = self.protocol.phase(self.clock.now_kst())
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

    def _control(self, c: Control, ws: websocket.WebSocket) -> str:
        """Act on a control message; the cause that ends the session, or ""."""
        if c is NOTHING:
            return ""
        if c.event is not None:
            kind, severity, fields = c.event
            self._emit(kind, severity, account=self.account, **fields)
        if c.acked is not None:
            reg = self._regs.get((KIND_OF_CHANNEL[c.acked.channel], c.acked.symbol))
            if reg is not None:
                reg.acked = True
                reg.acked_ns = self.clock.now_ns()
                reg.error = ""
        if c.refused is not None:
            reg = self._regs.get((KIND_OF_CHANNEL[c.refused.channel], c.refused.symbol))
            if reg is not None:
                reg.error = c.code
        if c.renew:
            self._refused = self._credential  # _connect gets a new one (inside the downtime)
        if c.fatal is not None:
            c.fatal.account = self.account
            self.fatal = c.fatal
            return c.end or "fatal"
        if c.logged_in and self._ws is None:
            self._live(ws)
        return c.end

    def _report(self, d: Decoded, text: str) -> None:
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
        for rec, reason, sym in d.rejects:
            n += 1
            if n <= self.error_events_per_min:
                self._emit("record_rejected", "WARNING", record_kind=rec.get("kind") or "frame",
                           reason=reason, symbol=sym[:40])
        self._err_window = (start, n)


class MultiSession(StreamClient):
    """Every configured account's session behind one StreamClient.

    A symbol's trades and book go to the same session when it has room; when every session holds its
    limit of registrations, subscribe raises RegistrationLimitError (no silent server refusal).
    """

    def __init__(self, sessions: list[WsSession]):
        if not sessions:
            raise ProviderError("no streaming accounts configured")
        self.connections = sessions
        self.label = sessions[0].label
        self.max_registrations = sum(c.max_registrations for c in sessions)
        self._lock = threading.Lock()

    def _owner(self, symbol: str, channel: str) -> WsSession | None:
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
                    f"all {len(self.connections)} {self.label} connection(s) hold their "
                    f"{self.connections[0].max_registrations} registrations ({self.max_registrations} in all; "
                    f"trades and book of one symbol use 2); cannot add {symbol} {channel}: add an account or "
                    f"free a slot")
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

