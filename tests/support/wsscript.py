"""A WebSocket server on 127.0.0.1 whose answers a test scripts: RFC 6455 over a plain socket (handshake,
masked client frames in, unmasked frames out), one thread per connection. The test's `on_message(conn,
text)` is called for every text message a client sends; it answers with conn.send(text) (or not), ends a
connection with conn.close(), and everything received is kept in order for the assertions."""

from __future__ import annotations

import base64
import hashlib
import socket
import threading
import time
from collections.abc import Callable

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Conn:
    def __init__(self, sock: socket.socket, number: int):
        self.sock = sock
        self.number = number
        self.received: list[tuple[float, str]] = []  # (monotonic, text) of every client text message
        self.sent: list[tuple[float, str]] = []
        self.closed = threading.Event()
        self._lock = threading.Lock()

    def texts(self) -> list[str]:
        return [t for _, t in self.received]

    def send(self, text: str) -> None:
        self._frame(0x1, text.encode())
        self.sent.append((time.monotonic(), text))

    def close(self, *, abrupt: bool = False) -> None:
        """A close frame and the end of TCP, or (abrupt) the end of TCP alone."""
        if not abrupt:
            try:
                self._frame(0x8, b"\x03\xe8")
            except OSError:
                pass
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.closed.set()

    def _frame(self, op: int, payload: bytes) -> None:
        n = len(payload)
        head = bytes([0x80 | op]) + (bytes([n]) if n < 126 else bytes([126]) + n.to_bytes(2, "big") if n < 65536
                                     else bytes([127]) + n.to_bytes(8, "big"))
        with self._lock:
            self.sock.sendall(head + payload)

    def _read(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("client closed")
            buf += chunk
        return buf

    def next_message(self) -> tuple[int, bytes]:
        b0, b1 = self._read(2)
        n = b1 & 0x7F
        if n == 126:
            n = int.from_bytes(self._read(2), "big")
        elif n == 127:
            n = int.from_bytes(self._read(8), "big")
        mask = self._read(4) if b1 & 0x80 else b"\0\0\0\0"
        data = bytes(c ^ mask[i % 4] for i, c in enumerate(self._read(n)))
        return b0 & 0x0F, data


class ScriptedWsServer:
    def __init__(self, on_message: Callable[[Conn, str], None]):
        self.on_message = on_message
        self.conns: list[Conn] = []
        self._srv = socket.create_server(("127.0.0.1", 0))
        self._srv.settimeout(0.1)
        self.url = f"ws://127.0.0.1:{self._srv.getsockname()[1]}/ws"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                s, _ = self._srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn = Conn(s, len(self.conns) + 1)
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: Conn) -> None:
        try:
            req = b""
            while b"\r\n\r\n" not in req:
                chunk = conn.sock.recv(4096)
                if not chunk:
                    return
                req += chunk
            key = next(line.split(b":", 1)[1].strip() for line in req.split(b"\r\n")
                       if line.lower().startswith(b"sec-websocket-key:"))
            accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
            conn.sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                              b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            while True:
                op, data = conn.next_message()
                if op == 0x8:
                    conn.close()
                    return
                if op == 0x9:
                    conn._frame(0xA, data)
                elif op == 0x1:
                    text = data.decode()
                    conn.received.append((time.monotonic(), text))
                    self.on_message(conn, text)
        except (OSError, ConnectionError):
            pass
        finally:
            conn.closed.set()

    def stop(self) -> None:
        self._stop.set()
        self._srv.close()
        for c in self.conns:
            if not c.closed.is_set():
                c.close(abrupt=True)
        self._thread.join(2)
