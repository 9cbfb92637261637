"""Server-to-client WebSocket frames (RFC 6455 §5.2), read straight off the socket.

websocket-client does the handshake and every send; receiving is done here because its frame parser
costs about 7 µs a frame in Python (three recv() calls, an ABNF object and a validation per frame),
which at tens of thousands of frames a second was a third of Track B's budget. This reader parses
frames out of one large recv() at a time (about 1 µs a frame), joins fragmented messages, and raises
websocket-client's own exceptions, so a caller handles both the same way.

It keeps the protocol's rules a client must enforce: server frames are never masked, reserved bits
stay 0 (no extension is negotiated), control frames are short and never fragmented, a continuation
needs a message to continue, and a message has a size bound (a broken or hostile peer cannot make us
buffer without limit).
"""

from __future__ import annotations

import socket

import websocket

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10
_DATA_OPS = (OP_TEXT, OP_BINARY)
_CONTROL_OPS = (OP_CLOSE, OP_PING, OP_PONG)
READ_SIZE = 262144
MAX_MESSAGE = 16 * 1024 * 1024  # far above any market-data frame; bounds what a peer can make us hold

_ProtocolError = websocket.WebSocketProtocolException


class FrameReader:
    """recv() -> (opcode, payload bytes) of the next complete message or control frame.

    Reads go into one buffer allocated once (recv_into), so a busy feed does not allocate and free
    a quarter-megabyte object per read: that churn fragments the reading thread's malloc arena and
    showed up as tens of MB of RSS under a firehose."""

    __slots__ = ("sock", "buf", "pos", "end", "max_message", "_frag_op", "_frag")

    def __init__(self, sock: socket.socket, max_message: int = MAX_MESSAGE):
        self.sock = sock
        self.buf = bytearray(2 * READ_SIZE)
        self.pos = 0   # first unparsed byte
        self.end = 0   # end of the bytes read so far
        self.max_message = max_message
        self._frag_op = -1       # opcode of the fragmented message being joined, -1 = none
        self._frag: list[bytes] = []

    def recv(self) -> tuple[int, bytes]:
        while True:
            buf, pos, end_of_data = self.buf, self.pos, self.end
            have = end_of_data - pos
            if have >= 2:
                b0 = buf[pos]
                b1 = buf[pos + 1]
                n = b1 & 0x7F
                head = 2
                if n >= 126:
                    head = 4 if n == 126 else 10
                    if have < head:
                        self._fill(head)
                        continue
                    n = int.from_bytes(buf[pos + 2:pos + head], "big")
                if b1 & 0x80:
                    raise _ProtocolError("the server masked a frame (RFC 6455 §5.1 forbids it)")
                if b0 & 0x70:
                    raise _ProtocolError(f"reserved bits set in a frame header ({b0:#04x}); no extension was negotiated")
                if n > self.max_message:
                    raise _ProtocolError(f"frame of {n} bytes exceeds the {self.max_message}-byte bound")
                end = pos + head + n
                if end <= end_of_data:
                    payload = bytes(buf[pos + head:end])
                    self.pos = end
                    op = b0 & 0x0F
                    if b0 & 0x80 and op in _DATA_OPS and self._frag_op < 0:
                        return op, payload  # the hot path: one unfragmented text frame
                    msg = self._assemble(op, bool(b0 & 0x80), payload)
                    if msg is not None:
                        return msg
                    continue
                self._fill(head + n)
                continue
            self._fill(2)

    def _assemble(self, op: int, fin: bool, payload: bytes) -> tuple[int, bytes] | None:
        if op in _CONTROL_OPS:
            if not fin or len(payload) > 125:
                raise _ProtocolError(f"control frame {op} fragmented or longer than 125 bytes")
            return op, payload  # may arrive between the fragments of a message (§5.4)
        if op in _DATA_OPS:
            if self._frag_op >= 0:
                raise _ProtocolError("a new message began before the fragmented one finished")
            self._frag_op, self._frag = op, [payload]
        elif op == OP_CONT:
            if self._frag_op < 0:
                raise _ProtocolError("continuation frame without a message to continue")
            self._frag.append(payload)
            if sum(map(len, self._frag)) > self.max_message:
                raise _ProtocolError(f"fragmented message exceeds the {self.max_message}-byte bound")
        else:
            raise _ProtocolError(f"unknown opcode {op}")
        if not fin:
            return None
        msg = (self._frag_op, b"".join(self._frag))
        self._frag_op, self._frag = -1, []
        return msg

    def _fill(self, need: int) -> None:
        """Read more; `need` = bytes the frame being parsed needs from `pos` (room is made for it)."""
        buf, pos, end = self.buf, self.pos, self.end
        if pos == end:
            pos = end = 0
            if len(buf) > 2 * READ_SIZE:  # give back what one large message needed
                buf = self.buf = bytearray(2 * READ_SIZE)
        elif len(buf) - end < READ_SIZE or pos + need > len(buf):
            buf[:end - pos] = buf[pos:end]  # move the unparsed tail to the front
            end -= pos
            pos = 0
        if need > len(buf):  # a frame larger than the buffer (bounded by max_message)
            buf.extend(bytes(need - len(buf)))
        self.pos, self.end = pos, end
        view = memoryview(buf)
        try:
            n = self.sock.recv_into(view[end:], len(buf) - end)
        except TimeoutError:  # socket.timeout is TimeoutError since Python 3.10
            raise websocket.WebSocketTimeoutException("timed out") from None
        finally:
            view.release()
        if not n:
            raise websocket.WebSocketConnectionClosedException("Connection to remote host was lost.")
        self.end = end + n
