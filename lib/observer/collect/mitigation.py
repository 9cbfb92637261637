"""Track B load mitigation, recording rate and the anomaly-day rules (design §4, docs/track_b.md).

Coverage first: mitigation never drops a slot. Level 0/1/2 only lowers the order-book sampling rate
(2 / 1 / 0.5 Hz) and lengthens scalp file rotation (10 / 30 / 60 min); trade prints are always
recorded in full.

MitigationController: four load metrics (CPU %, memory %, store fsync latency ms, event lag s), each
judged over a trailing window (default 300 s). Level L is *engaged* when, over a fully covered window,
at least `sustained_fraction` of one metric's samples are at or above its level-L threshold; the level
rises at once to the highest engaged level. It steps down only when the current level is *clear*: for
every metric at most 1 - sustained_fraction of the window's samples reach the level's threshold
(sustained_fraction 1.0 = strict: every sample above to engage, none above to clear). Between the two
the level holds: that gap is the hysteresis.
"""

from __future__ import annotations

from collections import deque

from observer.core.clock import NS, Clock
from observer.core.config import section
from observer.core.settings import AnomalyConfig

BOOK_INTERVAL_S = {0: 0.5, 1: 1.0, 2: 2.0}
ROTATION_MINUTES = {0: 10, 1: 30, 2: 60}
LEVELS = (0, 1, 2)

METRICS = ("cpu_pct", "mem_pct", "fsync_ms", "lag_s")
_LABEL = {"cpu_pct": ("cpu", "%"), "mem_pct": ("memory", "%"), "fsync_ms": ("store fsync", " ms"),
          "lag_s": ("event lag", " s")}


def _level(level: int) -> int:
    if level not in BOOK_INTERVAL_S:
        raise ValueError(f"mitigation level must be 0, 1 or 2, got {level!r}")
    return level


def book_interval_s(level: int) -> float:
    """Seconds between order-book samples per slot: 0.5 / 1.0 / 2.0 (2 / 1 / 0.5 Hz)."""
    return BOOK_INTERVAL_S[_level(level)]


def book_hz(level: int) -> float:
    return 1.0 / book_interval_s(level)


def rotation_minutes(level: int) -> int:
    """Scalp file rotation: 10 / 30 / 60 minutes."""
    return ROTATION_MINUTES[_level(level)]


def _fmt(v: float, unit: str) -> str:
    return f"{v:g}{unit}"


class MitigationController:
    def __init__(self, cfg: dict, clock: Clock | None = None):
        m = section(cfg, "track_b", "mitigation")
        self.clock = clock or Clock()
        self.window_ns = int(float(m["window_s"]) * NS)
        self.fraction = float(m["sustained_fraction"])
        if not 0.5 <= self.fraction <= 1.0:
            raise ValueError(f"sustained_fraction must be in [0.5, 1], got {self.fraction}")
        self.thresholds: dict[str, tuple[float, float]] = {}
        for k in METRICS:
            lo, hi = (float(x) for x in m[k])
            if lo > hi:
                raise ValueError(f"track_b.mitigation.{k}: level-1 threshold {lo} above level-2 {hi}")
            self.thresholds[k] = (lo, hi)
        self.level = 0
        self.changed_ns: int | None = None
        self.reason = ""
        self._samples: deque[tuple[int, dict[str, float]]] = deque()
        self._first_ns: int | None = None

    # -- helpers -------------------------------------------------------------------------------
    def _frac_above(self, metric: str, threshold: float) -> float:
        n = hits = 0
        for _, vals in self._samples:
            v = vals.get(metric)
            if v is None:
                continue
            n += 1
            if v >= threshold:
                hits += 1
        return hits / n if n else 0.0

    def _covered(self, now_ns: int) -> bool:
        return self._first_ns is not None and now_ns - self._first_ns >= self.window_ns

    def _engaged(self, level: int) -> list[str]:
        why = []
        for k in METRICS:
            thr = self.thresholds[k][level - 1]
            f = self._frac_above(k, thr)
            if f >= self.fraction:
                name, unit = _LABEL[k]
                why.append(f"{name} >= {_fmt(thr, unit)} in {f:.0%} of samples")
        return why

    def _clear(self, level: int) -> bool:
        return all(self._frac_above(k, self.thresholds[k][level - 1]) <= 1.0 - self.fraction + 1e-12
                   for k in METRICS)

    # -- the one entry point ---------------------------------------------------------------------
    def observe(self, now_ns: int, cpu_pct: float | None, mem_pct: float | None, fsync_ms: float | None,
                lag_s: float | None) -> tuple[int, int, str] | None:
        """Add one sample (None = metric unknown this time). Returns (new_level, old_level, reason) when
        the level changes, else None."""
        vals = {k: float(v) for k, v in zip(METRICS, (cpu_pct, mem_pct, fsync_ms, lag_s), strict=True)
                if v is not None}
        if self._first_ns is None:
            self._first_ns = now_ns
        self._samples.append((now_ns, vals))
        horizon = now_ns - self.window_ns
        while self._samples and self._samples[0][0] < horizon:
            self._samples.popleft()
        if not self._covered(now_ns):
            return None
        win = self.window_ns / NS
        old = self.level
        for lvl in (2, 1):
            if lvl <= old:
                break
            why = self._engaged(lvl)
            if why:
                return self._change(lvl, now_ns, f"level {lvl}: " + "; ".join(why) + f" over {win:g} s")
        if old > 0 and self._clear(old):
            new = 0
            for lvl in range(old - 1, 0, -1):
                if not self._clear(lvl):
                    new = lvl
                    break
            names = ", ".join(f"{_LABEL[k][0]} < {_fmt(self.thresholds[k][old - 1], _LABEL[k][1])}"
                              for k in METRICS)
            return self._change(new, now_ns, f"level {old} clear for {win:g} s ({names})")
        return None

    def _change(self, new: int, now_ns: int, reason: str) -> tuple[int, int, str]:
        old, self.level = self.level, new
        self.changed_ns, self.reason = now_ns, reason
        return new, old, reason

    @property
    def book_interval_s(self) -> float:
        return book_interval_s(self.level)

    @property
    def rotation_minutes(self) -> int:
        return rotation_minutes(self.level)


class RecordingRate:
    """Per slot: recorded order-book samples / expected samples over a trailing window.

    Expected accrues only while the slot is subscribed, at 1 / book_interval per second, the interval
    following the mitigation level (`set_interval`). A rate is None until at least one sample is
    expected in the window; it is capped at 1.0 (a sampler's phase can give one sample more)."""

    def __init__(self, window_s: float = 60.0, interval_s: float = 0.5):
        if window_s <= 0 or interval_s <= 0:
            raise ValueError("window_s and interval_s must be > 0")
        self.window_ns = int(window_s * NS)
        self.interval_s = float(interval_s)
        self._segments: dict[int, list[list]] = {}        # slot -> [[start_ns, end_ns|None, interval_s]]
        self._samples: dict[int, deque[tuple[int, int]]] = {}

    def subscribe(self, slot: int, now_ns: int) -> None:
        segs = self._segments.setdefault(slot, [])
        if segs and segs[-1][1] is None:
            return
        segs.append([now_ns, None, self.interval_s])
        self._samples.setdefault(slot, deque())

    def unsubscribe(self, slot: int, now_ns: int) -> None:
        segs = self._segments.get(slot)
        if segs and segs[-1][1] is None:
            segs[-1][1] = now_ns

    def set_interval(self, now_ns: int, interval_s: float) -> None:
        """The mitigation level changed: expected samples accrue at the new rate from now on."""
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        self.interval_s = float(interval_s)
        for segs in self._segments.values():
            if segs and segs[-1][1] is None:
                segs[-1][1] = now_ns
                segs.append([now_ns, None, self.interval_s])

    def record(self, slot: int, now_ns: int, n: int = 1) -> None:
        self._samples.setdefault(slot, deque()).append((now_ns, n))

    def _prune(self, slot: int, now_ns: int) -> None:
        start = now_ns - self.window_ns
        segs = self._segments.get(slot)
        if segs:
            self._segments[slot] = [s for s in segs if s[1] is None or s[1] > start]
        q = self._samples.get(slot)
        while q and q[0][0] <= start:
            q.popleft()

    def expected(self, slot: int, now_ns: int) -> float:
        self._prune(slot, now_ns)
        start = now_ns - self.window_ns
        total = 0.0
        for s0, s1, iv in self._segments.get(slot, []):
            a, b = max(s0, start), min(now_ns if s1 is None else s1, now_ns)
            if b > a:
                total += (b - a) / NS / iv
        return total

    def recorded(self, slot: int, now_ns: int) -> int:
        self._prune(slot, now_ns)
        return sum(n for t, n in self._samples.get(slot, ()) if t <= now_ns)

    def rate(self, slot: int, now_ns: int) -> float | None:
        exp = int(self.expected(slot, now_ns) + 1e-9)
        if exp < 1:
            return None
        return min(1.0, self.recorded(slot, now_ns) / exp)

    def rates(self, now_ns: int) -> dict[int, float | None]:
        return {s: self.rate(s, now_ns) for s in sorted(self._segments)}

    def overall(self, now_ns: int) -> float | None:
        """All slots together: sum recorded / sum expected (each slot capped at its expected)."""
        rec = exp = 0
        for s in list(self._segments):
            e = int(self.expected(s, now_ns) + 1e-9)
            if e < 1:
                continue
            exp += e
            rec += min(e, self.recorded(s, now_ns))
        return rec / exp if exp else None

    def forget(self, slot: int) -> None:
        self._segments.pop(slot, None)
        self._samples.pop(slot, None)


class _Sustained:
    """A condition that has held at every observation since `since` (reset by one that does not)."""

    __slots__ = ("since",)

    def __init__(self):
        self.since: int | None = None

    def update(self, now_ns: int, holds: bool, duration_ns: int) -> bool:
        if not holds:
            self.since = None
            return False
        if self.since is None:
            self.since = now_ns
        return now_ns - self.since >= duration_ns


class AnomalyTracker:
    """Design §4 anomaly-day rules for one trading day. Each method returns the reasons that became
    true with this observation (empty list if none); `anomaly` / `reasons` give the day's state.

    Rules (config [track_b.anomaly]): >= 20 WebSocket reconnects; >= 10 min disconnected in total;
    >= 2 silences of >= 60 s; scalp recording rate < 97 % continuously for 5 min; CPU >= 85 %
    continuously for 10 min; disk use > 80 %; plus any reason given to flag() (e.g. 5 min of continuous
    connection failure)."""

    def __init__(self, cfg: dict | None = None, clock: Clock | None = None):
        self.t = AnomalyConfig.from_config(cfg or {})
        self.clock = clock or Clock()
        self.reasons: list[str] = []
        self._fired: set[str] = set()
        self.reconnects = 0
        self.silences = 0
        self.disconnected_ns = 0
        self._disc_since: int | None = None
        self._last_activity: int | None = None
        self._rate = _Sustained()
        self._cpu = _Sustained()

    @property
    def anomaly(self) -> bool:
        return bool(self.reasons)

    def _fire(self, key: str, reason: str) -> list[str]:
        if key in self._fired:
            return []
        self._fired.add(key)
        self.reasons.append(reason)
        return [reason]

    # -- connection --------------------------------------------------------------------------------
    def reconnect(self, now_ns: int) -> list[str]:
        self.reconnects += 1
        if self.reconnects >= self.t.reconnects:
            return self._fire("reconnects", f"{self.reconnects} WebSocket reconnects today "
                                            f"(>= {self.t.reconnects})")
        return []

    def disconnected(self, now_ns: int) -> list[str]:
        if self._disc_since is None:
            self._disc_since = now_ns
        return self.tick(now_ns)

    def connected(self, now_ns: int) -> list[str]:
        out = self.tick(now_ns)
        if self._disc_since is not None:
            self.disconnected_ns += max(0, now_ns - self._disc_since)
            self._disc_since = None
        return out

    def disconnected_s(self, now_ns: int) -> float:
        ongoing = now_ns - self._disc_since if self._disc_since is not None else 0
        return (self.disconnected_ns + max(0, ongoing)) / NS

    def tick(self, now_ns: int) -> list[str]:
        """Check the time-based rules that can become true without a new observation."""
        d = self.disconnected_s(now_ns)
        if d >= self.t.disconnected_s:
            return self._fire("disconnected", f"disconnected {d / 60:.1f} min in total today "
                                              f"(>= {self.t.disconnected_s / 60:g} min)")
        return []

    # -- silences ----------------------------------------------------------------------------------
    def silence(self, seconds: float, now_ns: int) -> list[str]:
        """A silence (no data) of `seconds` ended or reached its length; counted if >= silence_s."""
        if seconds < self.t.silence_s:
            return []
        self.silences += 1
        if self.silences >= self.t.silences:
            return self._fire("silences", f"{self.silences} silences of >= {self.t.silence_s:g} s today "
                                          f"(>= {self.t.silences})")
        return []

    def activity(self, now_ns: int) -> list[str]:
        """Data arrived: a gap since the previous activity of >= silence_s counts as a silence."""
        prev, self._last_activity = self._last_activity, now_ns
        if prev is not None and now_ns - prev >= self.t.silence_s * NS:
            return self.silence((now_ns - prev) / NS, now_ns)
        return []

    # -- sustained levels --------------------------------------------------------------------------
    def scalp_rate(self, now_ns: int, rate: float | None) -> list[str]:
        """The overall scalp recording rate (fraction 0..1; None = nothing expected)."""
        thr = self.t.scalp_rate_pct / 100.0
        if self._rate.update(now_ns, rate is not None and rate < thr, int(self.t.scalp_rate_s * NS)):
            return self._fire("scalp_rate", f"scalp recording rate below {self.t.scalp_rate_pct:g}% for "
                                            f"{self.t.scalp_rate_s / 60:g} min (now {rate:.1%})")
        return []

    def cpu(self, now_ns: int, pct: float | None) -> list[str]:
        if self._cpu.update(now_ns, pct is not None and pct >= self.t.cpu_pct, int(self.t.cpu_s * NS)):
            return self._fire("cpu", f"CPU >= {self.t.cpu_pct:g}% for {self.t.cpu_s / 60:g} min")
        return []

    def disk(self, now_ns: int, used_pct: float | None) -> list[str]:
        if used_pct is not None and used_pct > self.t.disk_pct:
            return self._fire("disk", f"disk {used_pct:.1f}% used (> {self.t.disk_pct:g}%)")
        return []

    def flag(self, reason: str, now_ns: int, key: str | None = None) -> list[str]:
        return self._fire(key or f"flag:{reason}", reason)

    def observe(self, now_ns: int, cpu_pct: float | None = None, disk_pct: float | None = None,
                scalp_rate: float | None = None) -> list[str]:
        """The periodic checks in one call (metrics loop)."""
        out = self.tick(now_ns)
        out += self.cpu(now_ns, cpu_pct)
        out += self.disk(now_ns, disk_pct)
        out += self.scalp_rate(now_ns, scalp_rate)
        return out

    # -- restart within a day ------------------------------------------------------------------------
    def to_dict(self, now_ns: int) -> dict:
        return {"reasons": list(self.reasons), "fired": sorted(self._fired), "reconnects": self.reconnects,
                "silences": self.silences, "disconnected_s": self.disconnected_s(now_ns)}

    @classmethod
    def from_dict(cls, d: dict, cfg: dict | None = None, clock: Clock | None = None) -> AnomalyTracker:
        """Continue a day after a restart (state saved under state/ by the streamer)."""
        a = cls(cfg, clock)
        a.reasons = list(d.get("reasons", []))
        a._fired = set(d.get("fired", []))
        a.reconnects = int(d.get("reconnects", 0))
        a.silences = int(d.get("silences", 0))
        a.disconnected_ns = int(float(d.get("disconnected_s", 0)) * NS)
        return a


__all__ = ["MitigationController", "RecordingRate", "AnomalyTracker", "book_interval_s", "book_hz",
           "rotation_minutes", "BOOK_INTERVAL_S", "ROTATION_MINUTES", "LEVELS", "METRICS"]
