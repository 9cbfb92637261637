"""Fault schedule (JSON or TOML, market-time triggers) and the set of faults in force.

A fault is a dict: {"kind": ..., "at": "HH:MM[:SS]" (market time; omitted = now), "duration": market
seconds | "duration_real": real seconds, ...kind parameters}. See docs/simulator.md for every kind.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import tomllib

from observer.sim.market import parse_hhmmss

# kind → (windowed?, allowed parameters)
KINDS: dict[str, tuple[bool, set[str]]] = {
    "ws_close_abrupt": (False, {"rst", "app_key"}),
    "ws_stall": (True, {"scope", "app_key"}),
    "ws_refuse": (True, set()),
    "ws_flap": (True, {"min_real", "max_real"}),
    "rest_5xx": (True, {"status", "scope"}),
    "rate_limit_storm": (True, set()),
    "token_expire": (False, {"reset_issue_limit"}),
    "token_invalidate": (False, {"reset_issue_limit"}),
    "approval_invalidate": (False, {"app_key"}),
    "rest_slow": (True, {"delay", "scope"}),
    "ws_malformed": (True, {"count", "mode", "symbol", "tr_id", "app_key"}),
    "ws_duplicate": (True, {"count", "symbol", "tr_id", "app_key"}),
    "ws_out_of_order": (True, {"count", "symbol", "tr_id", "app_key"}),
    "ws_drop_symbol": (True, {"symbol", "tr_id", "app_key"}),
    "clock_skew": (True, {"skew"}),
    "master_bad": (True, {"mode"}),
}
# at_ms: validated form of at; provider: the one provider (kis.KisProvider.name, ...) it applies to (absent: all)
COMMON = {"kind", "at", "at_ms", "duration", "duration_real", "id", "note", "provider"}
MASTER_MODES = ("missing", "error", "corrupt", "bomb", "wrong_member", "many_members")  # sim/master.py BAD_MODES
MALFORMED_MODES = ("truncate", "nonnumeric", "count", "junk", "encrypted")
# kinds that act on data frames on their way out (checked on the hot path only while one is in force)
DATA_KINDS = {"ws_malformed", "ws_duplicate", "ws_out_of_order", "ws_drop_symbol"}


class FaultError(ValueError):
    pass


def validate(spec: dict) -> dict:
    if not isinstance(spec, dict):
        raise FaultError(f"a fault must be an object, got {spec!r}")
    kind = spec.get("kind")
    if kind not in KINDS:
        raise FaultError(f"unknown fault kind {kind!r}; known: {', '.join(sorted(KINDS))}")
    windowed, params = KINDS[kind]
    extra = set(spec) - COMMON - params
    if extra:
        raise FaultError(f"{kind}: unknown parameter(s) {sorted(extra)}; allowed: {sorted(params | COMMON)}")
    out = dict(spec)
    if out.get("at") is not None:
        out["at_ms"] = parse_hhmmss(str(out["at"]))
    for k in ("duration", "duration_real", "delay", "skew", "min_real", "max_real"):
        if k in out and not isinstance(out[k], int | float):
            raise FaultError(f"{kind}: {k} must be a number")
    if "provider" in out and (not isinstance(out["provider"], str) or not out["provider"]):
        raise FaultError(f"{kind}: provider must be a provider's name")
    if "count" in out and (not isinstance(out["count"], int) or out["count"] < 1):
        raise FaultError(f"{kind}: count must be a positive integer")
    if kind == "ws_drop_symbol" and not out.get("symbol"):
        raise FaultError("ws_drop_symbol needs a symbol")
    if kind == "rest_slow" and "delay" not in out:
        raise FaultError("rest_slow needs delay (real seconds)")
    if kind == "master_bad" and out.get("mode") not in MASTER_MODES:
        raise FaultError(f"master_bad: mode must be one of {MASTER_MODES}")
    if kind == "clock_skew" and "skew" not in out:
        raise FaultError("clock_skew needs skew (seconds)")
    if kind == "ws_malformed" and out.get("mode", "cycle") not in (*MALFORMED_MODES, "cycle"):
        raise FaultError(f"ws_malformed: mode must be one of {MALFORMED_MODES} or 'cycle'")
    if kind in ("ws_refuse", "ws_flap", "rest_5xx", "rate_limit_storm", "rest_slow", "master_bad") and not (
        "duration" in out or "duration_real" in out
    ):
        raise FaultError(f"{kind} needs duration (market s) or duration_real (real s)")
    return out


def load_schedule(path: str) -> list[dict]:
    with open(path, "rb") as f:
        raw = f.read()
    if path.endswith(".toml"):
        doc = tomllib.loads(raw.decode())
    else:
        doc = json.loads(raw)
    items = doc.get("faults", []) if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise FaultError("a schedule is a list of faults or {\"faults\": [...]}")
    out = []
    for i, spec in enumerate(items):
        try:
            v = validate(spec)
        except FaultError as e:
            raise FaultError(f"fault #{i + 1}: {e}") from None
        if "at_ms" not in v:
            raise FaultError(f"fault #{i + 1}: a scheduled fault needs 'at' (market time HH:MM[:SS])")
        out.append(v)
    return sorted(out, key=lambda s: s["at_ms"])


class Active:
    """One fault in force."""

    __slots__ = ("id", "kind", "spec", "start_mt", "end_mt", "end_mono", "remaining", "cycle", "hits")

    def __init__(self, fid: int, spec: dict, now_mt: int, speed: float):
        self.id = fid
        self.kind = spec["kind"]
        self.spec = spec
        self.start_mt = now_mt
        self.end_mt = now_mt + int(spec["duration"] * 1000) if "duration" in spec else None
        self.end_mono = time.monotonic() + spec["duration_real"] if "duration_real" in spec else None
        self.remaining = spec.get("count")
        self.cycle = 0
        self.hits = 0

    def expired(self, now_mt: int, mono: float) -> bool:
        if self.remaining is not None and self.remaining <= 0:
            return True
        if self.end_mt is not None and now_mt >= self.end_mt:
            return True
        return self.end_mono is not None and mono >= self.end_mono

    def matches(self, tr_id: str | None = None, symbol: str | None = None, app_key: str | None = None) -> bool:
        s = self.spec
        if "tr_id" in s and tr_id is not None and s["tr_id"] != tr_id:
            return False
        if "symbol" in s and symbol is not None and s["symbol"] != symbol:
            return False
        return not ("app_key" in s and app_key is not None and s["app_key"] != app_key)

    def describe(self) -> dict:
        return {"id": self.id, "kind": self.kind, "spec": {k: v for k, v in self.spec.items() if k != "at_ms"},
                "start_t_ms": self.start_mt, "end_t_ms": self.end_mt, "remaining": self.remaining, "hits": self.hits}


class FaultBook:
    """Scheduled and active faults. Servers ask it; the housekeeping tick triggers and expires."""

    def __init__(self, schedule: list[dict] | None = None, speed: float = 1.0):
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.pending = list(schedule or [])
        self.active: list[Active] = []
        self.speed = speed
        self.data_active = False  # hot-path flag: any DATA_KINDS fault in force
        self.history: list[dict] = []
        self._views: list[ProviderFaults] = []

    def view(self, provider: str) -> ProviderFaults:
        """The faults as one provider's servers see them (interfaces.FaultView)."""
        v = ProviderFaults(self, provider)
        with self._lock:
            self._views.append(v)
            self._refresh()
        return v

    def due(self, now_mt: int) -> list[dict]:
        with self._lock:
            due = [s for s in self.pending if s["at_ms"] <= now_mt]
            self.pending = [s for s in self.pending if s["at_ms"] > now_mt]
        return due

    def schedule(self, spec: dict) -> None:
        with self._lock:
            self.pending.append(spec)

    def activate(self, spec: dict, now_mt: int) -> Active:
        a = Active(next(self._ids), spec, now_mt, self.speed)
        if KINDS[spec["kind"]][0]:
            with self._lock:
                self.active.append(a)
                self._refresh()
        return a

    def expire(self, now_mt: int) -> list[Active]:
        mono = time.monotonic()
        with self._lock:
            gone = [a for a in self.active if a.expired(now_mt, mono)]
            if gone:
                self.active = [a for a in self.active if a not in gone]
                self._refresh()
        return gone

    def expire_now(self, a: Active) -> None:
        with self._lock:
            self.active = [x for x in self.active if x is not a]
            self._refresh()

    def clear(self) -> list[Active]:
        with self._lock:
            gone, self.active = self.active, []
            self._refresh()
        return gone

    def _refresh(self) -> None:
        self.data_active = any(a.kind in DATA_KINDS for a in self.active)
        for v in self._views:
            v.data_active = self.data_active and any(a.kind in DATA_KINDS and v.applies(a) for a in self.active)

    def find(self, kind: str) -> list[Active]:
        return [a for a in self.active if a.kind == kind]

    def first(self, kind: str) -> Active | None:
        for a in self.active:
            if a.kind == kind:
                return a
        return None

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "active": [a.describe() for a in self.active],
                "pending": [{k: v for k, v in s.items() if k != "at_ms"} for s in self.pending],
            }


class ProviderFaults:
    """The faults in force for one provider (interfaces.FaultView): those without `provider` and its own."""

    def __init__(self, book: FaultBook, provider: str):
        self.provider = provider
        self._book = book
        self.data_active = False  # kept by the book (FaultBook._refresh): read per frame on the hot path

    def applies(self, a: Active) -> bool:
        p = a.spec.get("provider")
        return p is None or p == self.provider

    def first(self, kind: str) -> Active | None:
        for a in self._book.active:
            if a.kind == kind and self.applies(a):
                return a
        return None

    def data_faults(self) -> list[Active]:
        return [a for a in self._book.active if a.kind in DATA_KINDS and self.applies(a)]

    def expire_now(self, a: Active) -> None:
        self._book.expire_now(a)
