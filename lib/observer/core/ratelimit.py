"""A token bucket shared by every process that uses one API key.

Track A, the gap-filler and preflight call the same broker account; the broker counts requests per
app key, not per process. The bucket's state lives in a small file under state/ (a
store.fs.SharedRecord, opened by the caller: core does not touch the tree) and every read-modify-write
happens under its flock, so the processes together never exceed `rate` requests per second (plus the
`burst` they may save up).

Time is the Clock's wall time (now_ns) so that processes share one time base; waiting goes
through Clock.sleep. A broker's "too many requests" reply calls penalize(), which pushes every
process sharing the bucket back, not just the one that was refused.
"""

from __future__ import annotations

import hashlib
import struct
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

from observer.core.clock import NS, Clock

_FMT = "<dq"  # tokens (float), last refill time (UTC ns)
_SIZE = struct.calcsize(_FMT)
# a refill time this far ahead is no penalty of ours (those are ≤ a few seconds): a process on another
# clock (a test's market clock, a host whose time jumped) wrote it; waiting it out could take days
MAX_AHEAD_NS = 120 * NS


class RateLimitTimeout(Exception):
    pass


class SharedState(Protocol):
    """What the bucket needs of its file (store.fs.SharedRecord): an exclusive lock across processes
    and the record read and rewritten in place."""
    path: Path

    def locked(self) -> AbstractContextManager[None]: ...
    def read(self, size: int) -> bytes: ...
    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...


def bucket_name(provider: str, key: str) -> str:
    """File name for one provider + API key; the key itself never appears (a hash of it does)."""
    h = hashlib.sha256(key.encode()).hexdigest()[:16]
    return f"ratelimit_{provider}_{h}.bucket"


class TokenBucket:
    def __init__(self, state: SharedState, rate: float, burst: float = 1.0, clock: Clock | None = None):
        if rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        self.state = state
        self.path = state.path
        self.rate = float(rate)
        self.burst = float(burst)
        self.clock = clock or Clock()
        self.acquired = 0
        self.waited_s = 0.0

    def close(self) -> None:
        self.state.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def _read(self, now: int) -> tuple[float, int]:
        data = self.state.read(_SIZE)
        if len(data) != _SIZE:
            return self.burst, now
        tokens, last = struct.unpack(_FMT, data)
        if not (tokens == tokens) or tokens > self.burst:  # NaN or a larger burst in another process
            tokens = self.burst
        if last > now + MAX_AHEAD_NS:  # not a penalty: another clock's time. Start afresh from ours
            return tokens, now
        if last > now:  # another process's clock ran ahead (or a penalty): no refill until then
            return tokens, last
        return min(self.burst, tokens + (now - last) / NS * self.rate), now

    def _write(self, tokens: float, last: int) -> None:
        self.state.write(struct.pack(_FMT, tokens, last))

    def try_acquire(self, n: float = 1.0) -> float:
        """Take n tokens if available: returns 0.0; else returns the seconds to wait (nothing taken)."""
        with self.state.locked():
            now = self.clock.now_ns()
            tokens, last = self._read(now)
            if tokens >= n and last <= now:
                self._write(tokens - n, last)
                return 0.0
            wait = (n - tokens) / self.rate + max(0, last - now) / NS
            self._write(tokens, last)
            return max(wait, 1e-4)

    def acquire(self, n: float = 1.0, timeout: float | None = None) -> float:
        """Block (through the Clock) until n tokens are taken. Returns the seconds waited."""
        waited = 0.0
        while True:
            wait = self.try_acquire(n)
            if wait == 0.0:
                self.acquired += 1
                self.waited_s += waited
                return waited
            if timeout is not None and waited + wait > timeout:
                raise RateLimitTimeout(f"{self.path.name}: no token within {timeout} s")
            self.clock.sleep(wait)
            waited += wait

    def penalize(self, seconds: float) -> None:
        """Nobody sharing this bucket gets a token for `seconds` (the broker said we were too fast)."""
        with self.state.locked():
            now = self.clock.now_ns()
            _, last = self._read(now)
            self._write(0.0, max(last, now + int(seconds * NS)))
