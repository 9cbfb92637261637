"""One clock for every program.

Everything that asks "what time is it" or waits goes through a Clock, so tests and the simulator
can run a market day faster than real time (ScaledClock) or step it by hand (ManualClock).
Times are UTC nanoseconds (int) at the edges; KST helpers convert for calendars and paths.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

KST = ZoneInfo("Asia/Seoul")
UTC = UTC
NS = 1_000_000_000


class Stopped(Exception):
    """A wait was cut short: the program was asked to stop (SIGTERM/SIGINT) while it slept."""


class Clock:
    """Wall clock (UTC ns), monotonic seconds and sleep. The base class is the real system clock.

    stop_on(event): from then on every sleep() of this clock ends as soon as `event` is set and raises
    Stopped, so a long wait anywhere below a program (token issuance limit, rate limiter, retry
    backoff) ends within the stop budget instead of running out its time.
    """

    _stop: threading.Event | None = None

    def stop_on(self, event: threading.Event | None) -> None:
        self._stop = event

    @property
    def stop_event(self) -> threading.Event | None:
        return self._stop

    def _wait_real(self, real_s: float) -> None:
        ev = self._stop
        if ev is None:
            time.sleep(real_s)
        elif ev.wait(real_s):
            raise Stopped("stop requested during a wait")

    def now_ns(self) -> int:
        return time.time_ns()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._wait_real(seconds)

    # Derived helpers: never override these, override the three above.
    def now(self) -> datetime:
        return datetime.fromtimestamp(self.now_ns() / NS, tz=UTC)

    def now_kst(self) -> datetime:
        return self.now().astimezone(KST)

    def today_kst(self) -> date:
        return self.now_kst().date()

    @property
    def speed(self) -> float:
        return 1.0


SystemClock = Clock


class ScaledClock(Clock):
    """Time that starts at `start` and runs `speed` times faster than real time.

    sleep(s) waits s / speed real seconds, so a loop written for real time runs a simulated
    session at speed. Used by the simulator and the programs that talk to it.
    """

    def __init__(self, start: datetime | int, speed: float = 1.0, anchor_real_ns: int | None = None):
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self._start_ns = start if isinstance(start, int) else to_ns(start)
        self._real0 = time.monotonic_ns()
        self._speed = float(speed)
        # With an anchor (the real wall-clock instant at which market time was `start`), separate
        # processes — the simulator and the collectors — agree on market time to the microsecond.
        self._anchor = anchor_real_ns

    def now_ns(self) -> int:
        if self._anchor is not None:
            return self._start_ns + int((time.time_ns() - self._anchor) * self._speed)
        return self._start_ns + int((time.monotonic_ns() - self._real0) * self._speed)

    def spec(self) -> str:
        """OBSERVER_CLOCK value that makes another process share this clock."""
        anchor = self._anchor if self._anchor is not None else time.time_ns() - int(
            time.monotonic_ns() - self._real0)
        return f"{from_ns(self._start_ns, KST).isoformat()}@{self._speed:g}@{anchor}"

    def monotonic(self) -> float:
        return (time.monotonic_ns() - self._real0) * self._speed / NS

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._wait_real(seconds / self._speed)

    @property
    def speed(self) -> float:
        return self._speed


class ManualClock(Clock):
    """A clock that moves only when told (unit tests). sleep() advances it instead of waiting."""

    def __init__(self, start: datetime | int):
        self._ns = start if isinstance(start, int) else to_ns(start)
        self._lock = threading.Lock()

    def now_ns(self) -> int:
        return self._ns

    def monotonic(self) -> float:
        return self._ns / NS

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._ns += int(seconds * NS)

    def set(self, when: datetime | int) -> None:
        with self._lock:
            self._ns = when if isinstance(when, int) else to_ns(when)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            if self._stop is not None and self._stop.is_set():
                raise Stopped("stop requested during a wait")
            self.advance(seconds)


def to_ns(dt: datetime) -> int:
    if dt.tzinfo is None:
        raise ValueError(f"naive datetime {dt!r}: give a time zone (KST or UTC)")
    return int(dt.timestamp()) * NS + dt.microsecond * 1000


def from_ns(ns: int, tz=UTC) -> datetime:
    return datetime.fromtimestamp(ns / NS, tz=tz)


def kst(ns: int) -> datetime:
    return from_ns(ns, KST)


def kst_datetime(day: date, hhmmss: str) -> datetime:
    """KST datetime from a date and an exchange 'HHMMSS' (or 'HH:MM' / 'HH:MM:SS') string."""
    s = hhmmss.replace(":", "")
    if len(s) == 4:
        s += "00"
    if len(s) != 6 or not s.isdigit():
        raise ValueError(f"bad exchange time {hhmmss!r}: want HHMMSS")
    return datetime(day.year, day.month, day.day, int(s[:2]), int(s[2:4]), int(s[4:6]), tzinfo=KST)


def kst_ns(day: date, hhmmss: str) -> int:
    return to_ns(kst_datetime(day, hhmmss))


def yyyymmdd(d: date) -> str:
    return d.strftime("%Y%m%d")


def parse_yyyymmdd(s: str) -> date:
    if len(s) != 8 or not (s.isascii() and s.isdigit()):  # isdigit alone takes full-width digits
        raise ValueError(f"bad date {s!r}: want YYYYMMDD")
    return date(int(s[:4]), int(s[4:6]), int(s[6:8]))


def clock_from_env() -> Clock:
    """OBSERVER_CLOCK='YYYY-MM-DDTHH:MM:SS+09:00[@speed[@anchor_real_ns]]' gives a ScaledClock
    (simulated days, tests); the simulator prints the spec that shares its clock."""
    import os

    spec = os.environ.get("OBSERVER_CLOCK", "").strip()
    if not spec:
        return Clock()
    return parse_clock_spec(spec)


def parse_clock_spec(spec: str) -> ScaledClock:
    parts = spec.split("@")
    try:
        start = datetime.fromisoformat(parts[0])
        speed = float(parts[1]) if len(parts) > 1 and parts[1] else 1.0
        anchor = int(parts[2]) if len(parts) > 2 and parts[2] else None
    except ValueError as e:
        raise ValueError(f"bad clock spec {spec!r}: want ISO-START[@SPEED[@ANCHOR_NS]] ({e})") from None
    if start.tzinfo is None:
        raise ValueError(f"bad clock spec {spec!r}: the start needs a UTC offset, e.g. +09:00")
    return ScaledClock(start, speed, anchor)
