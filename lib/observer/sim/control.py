"""The control endpoint (tests, demos, benchmarks): health, stats, faults now, firehose, stop."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from observer.sim.faults import FaultError
from observer.sim.httpserver import ThreadedServer

if TYPE_CHECKING:
    from observer.sim.interfaces import SimControl


class ControlHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        pass

    server: ControlServer

    def _send(self, status: int, obj) -> None:
        data = json.dumps(obj, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _json(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        return json.loads(raw or b"{}")

    def do_GET(self):  # noqa: N802 - stdlib name
        path = urlsplit(self.path).path
        sim = self.server.sim
        if path == "/health":
            self._send(200, sim.health())
        elif path == "/stats":
            self._send(200, sim.stats())
        elif path == "/faults":
            self._send(200, sim.fault_snapshot())
        else:
            self._send(404, {"error": f"no such endpoint {path}"})

    def do_POST(self):  # noqa: N802 - stdlib name
        path = urlsplit(self.path).path
        sim = self.server.sim
        try:
            body = self._json()
        except ValueError as e:
            self._send(400, {"error": f"bad JSON: {e}"})
            return
        try:
            if path == "/fault":
                specs = body if isinstance(body, list) else [body]
                out = []
                for spec in specs:
                    if isinstance(spec, dict) and "at" in spec:
                        sim.schedule_fault(spec)
                        out.append({"scheduled": spec["at"], "kind": spec.get("kind")})
                    else:
                        out.append(sim.apply_fault(spec))
                self._send(200, out if isinstance(body, list) else out[0])
            elif path == "/faults/clear":
                self._send(200, {"cleared": sim.clear_faults()})
            elif path == "/firehose":
                rate = None if body.get("off") else float(body.get("rate", 0))
                n = sim.set_firehose(rate, body.get("frames"), body.get("conn"))
                self._send(200, {"connections": n, "rate": rate, "frames": body.get("frames")})
            elif path == "/stop":
                self._send(200, {"stopping": True})
                sim.request_stop()
            else:
                self._send(404, {"error": f"no such endpoint {path}"})
        except FaultError as e:
            self._send(400, {"error": str(e)})


class ControlServer(ThreadedServer):
    def __init__(self, sim: SimControl, host: str, port: int):
        self.sim = sim
        super().__init__(host, port, ControlHandler, name="sim-control")
