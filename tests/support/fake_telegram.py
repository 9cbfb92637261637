"""A local fake of the Telegram Bot API for tests: a real HTTP server on 127.0.0.1.

Answers POST /bot<token>/getMe and /bot<token>/sendMessage (JSON or form body) like the real API
({"ok": true, "result": {...}}, 401 for a wrong token), records every message, and can be switched:

    up        answers normally
    down      nothing listens on the port (connection refused)
    error     HTTP 502 with {"ok": false, ...}
    hang      accepts the request and never answers (until the mode changes or the server stops)
    ratelimit HTTP 429 with parameters.retry_after

Run standalone (for a manual look): python tests/support/fake_telegram.py TOKEN
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

# the bot and chat of the `tg` fixture (tests/conftest.py) and of the configs that point at it
TOKEN = "7123456789:AAHk3xQ-fakeTokenForTests_0123456789"
CHAT = "987654321"
SECRETS = {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_CHAT_ID": CHAT}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class FakeTelegram:
    def __init__(self, token: str, *, port: int = 0):
        self.token = token
        self.messages: list[dict] = []
        self.requests: list[tuple[str, str]] = []   # (method, raw path) of every request answered or held
        self.mode = "up"
        self._cv = threading.Condition()
        self._release = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._next_message_id = 1
        self.port = port
        self._listen()

    # -- control ---------------------------------------------------------------------------
    @property
    def base(self) -> str:
        """The value for alerts.telegram_api_base."""
        return f"http://127.0.0.1:{self.port}"

    def set_mode(self, mode: str) -> None:
        assert mode in ("up", "down", "error", "hang", "ratelimit"), mode
        with self._cv:
            old, self.mode = self.mode, mode
        if old == "hang":
            self._release.set()
        if mode == "hang":
            self._release.clear()
        if mode == "down" and self._server is not None:
            self._close()
        elif mode != "down" and self._server is None:
            self._listen()

    def stop(self) -> None:
        self._release.set()
        self._close()

    def wait_for_messages(self, n: int, timeout: float = 10) -> list[dict]:
        deadline = time.monotonic() + timeout
        with self._cv:
            while len(self.messages) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"fake Telegram got {len(self.messages)} message(s), wanted {n}")
                self._cv.wait(left)
            return list(self.messages)

    def texts(self) -> list[str]:
        with self._cv:
            return [m["text"] for m in self.messages]

    # -- server ----------------------------------------------------------------------------
    def _listen(self) -> None:
        srv = _Server(("127.0.0.1", self.port), self._handler())
        self.port = srv.server_address[1]
        self._server = srv
        self._thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-telegram", daemon=True)
        self._thread.start()

    def _close(self) -> None:
        srv, self._server = self._server, None
        if srv is not None:
            srv.shutdown()
            srv.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def _record(self, method: str, path: str) -> None:
        with self._cv:
            self.requests.append((method, path))
            self._cv.notify_all()

    def _message(self, params: dict) -> dict:
        with self._cv:
            mid = self._next_message_id
            self._next_message_id += 1
            msg = {"message_id": mid, "date": int(time.time()),
                   "chat": {"id": int(params["chat_id"]) if str(params.get("chat_id", "")).lstrip("-").isdigit()
                            else params.get("chat_id"), "type": "private"},
                   "text": params.get("text", "")}
            self.messages.append(msg)
            self._cv.notify_all()
            return msg

    def _handler(self):
        fake = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def _reply(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self.do_POST()

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                fake._record(self.command, self.path)
                mode = fake.mode
                if mode == "hang":
                    fake._release.wait(60)
                    self.close_connection = True
                    return
                if mode == "error":
                    return self._reply(502, {"ok": False, "error_code": 502, "description": "Bad Gateway"})
                if mode == "ratelimit":
                    return self._reply(429, {"ok": False, "error_code": 429,
                                             "description": "Too Many Requests: retry after 1",
                                             "parameters": {"retry_after": 1}})
                parts = self.path.split("?")[0].strip("/").split("/")
                if len(parts) != 2 or not parts[0].startswith("bot"):
                    return self._reply(404, {"ok": False, "error_code": 404, "description": "Not Found"})
                token, method = parts[0][3:], parts[1]
                if token != fake.token:
                    return self._reply(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
                ctype = self.headers.get("Content-Type", "")
                if "json" in ctype:
                    params = json.loads(raw or b"{}")
                else:
                    params = {k: v[-1] for k, v in parse_qs(raw.decode()).items()}
                if method == "getMe":
                    return self._reply(200, {"ok": True, "result": {
                        "id": 1000001, "is_bot": True, "first_name": "Observer", "username": "observer_test_bot",
                        "can_join_groups": True, "can_read_all_group_messages": False,
                        "supports_inline_queries": False}})
                if method == "sendMessage":
                    if not params.get("chat_id") or not params.get("text"):
                        return self._reply(400, {"ok": False, "error_code": 400,
                                                 "description": "Bad Request: chat_id and text are required"})
                    msg = fake._message(params)
                    return self._reply(200, {"ok": True, "result": {
                        **msg, "from": {"id": 1000001, "is_bot": True, "first_name": "Observer"}}})
                return self._reply(404, {"ok": False, "error_code": 404, "description": "Not Found: method"})

        return H


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    f = FakeTelegram(sys.argv[1] if len(sys.argv) > 1 else "123:ABC")
    print(f"fake Telegram Bot API on {f.base}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        f.stop()
