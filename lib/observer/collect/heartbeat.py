"""A collector's proof of life for the watchdog: state/heartbeat/<name>.json, rewritten by the main
loop (never by a side thread), so a stuck loop shows as a stale heartbeat while a quiet market does
not. It also carries the loop's own counters, so "alive but recording nothing" can be told apart."""

from __future__ import annotations

import os
import time
from pathlib import Path

from observer.core.clock import Clock
from observer.core.logging import get_logger
from observer.store import paths
from observer.store.state import write_json_atomic

log = get_logger(__name__)


class Heartbeat:
    def __init__(self, root: Path, name: str, clock: Clock, every_s: float = 1.0):
        self.path = paths.heartbeat_file(root, name)
        self.name = name
        self.clock = clock
        self.every_s = every_s
        self._last = 0.0
        self.started_ns = clock.now_ns()
        self._failing = False

    def beat(self, phase: str, force: bool = False, **counters) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.every_s:
            return
        self._last = now
        try:
            write_json_atomic(self.path, {"name": self.name, "pid": os.getpid(), "ts_ns": self.clock.now_ns(),
                                          "wall_ns": time.time_ns(), "started_ns": self.started_ns,
                                          "phase": phase, **counters}, durable=False)
        except OSError as e:
            # a full disk must not kill the loop (the store counts and marks what it refuses); the
            # heartbeat goes stale only if the disk stays full, and is written again once it is not
            if not self._failing:
                log.error("heartbeat not written", extra={"file": str(self.path), "error": str(e)})
            self._failing = True
        else:
            self._failing = False
