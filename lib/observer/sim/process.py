"""Run the real `observer-sim` program as a subprocess and wait for its ready line (tests, benchmarks, demos)."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time

import requests

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BIN = os.path.join(_REPO, "bin", "observer-sim")


class SimProcess:
    """`with SimProcess(["--seed", "1", ...]) as sim: sim.rest, sim.ws, sim.control`.

    Ports default to 0 (free ports). The constructor returns once the ready line arrived (or raises
    with the program's stderr when it exits or the deadline passes first).
    """

    def __init__(self, args: list[str] | None = None, timeout: float = 60.0, env: dict | None = None,
                 stderr_path: str | None = None):
        argv = list(args or [])
        for opt in ("--rest-port", "--ws-port", "--control-port"):
            if opt not in argv:
                argv += [opt, "0"]
        e = dict(os.environ if env is None else env)
        lib = os.path.join(_REPO, "lib")
        e["PYTHONPATH"] = lib + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
        self._err = open(stderr_path, "wb") if stderr_path else subprocess.DEVNULL  # noqa: SIM115
        self._err_path = stderr_path
        self.proc = subprocess.Popen([sys.executable, BIN, *argv], stdout=subprocess.PIPE, stderr=self._err, env=e)
        self.urls = self._wait_ready(timeout)
        self.rest: str = self.urls["rest"]
        self.ws: str = self.urls["ws"]
        self.control: str | None = self.urls.get("control")

    def _wait_ready(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        buf = b""
        try:
            while time.monotonic() < deadline:
                if sel.select(timeout=min(0.5, max(0.0, deadline - time.monotonic()))):
                    chunk = os.read(self.proc.stdout.fileno(), 65536)
                    if not chunk:
                        break
                    buf += chunk
                    if b"\n" in buf:
                        return json.loads(buf.split(b"\n", 1)[0])
                elif self.proc.poll() is not None:
                    break
        finally:
            sel.close()
        self.stop()
        detail = ""
        if self._err_path:
            with open(self._err_path, "rb") as f:
                detail = f.read()[-4000:].decode(errors="replace")
        raise RuntimeError(f"observer-sim did not become ready (rc={self.proc.returncode}): {detail}")

    def stats(self) -> dict:
        return requests.get(self.control + "/stats", timeout=10).json()

    def fault(self, spec: dict) -> dict:
        r = requests.post(self.control + "/fault", json=spec, timeout=10)
        r.raise_for_status()
        return r.json()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        if hasattr(self._err, "close"):
            self._err.close()
        return self.proc.returncode

    def __enter__(self) -> SimProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
