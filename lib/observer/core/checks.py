"""What a check says, and what a check gets: the result type of observer-preflight's checks and of the
checks each provider contributes to it (Provider.preflight_checks). It lives below both, so a provider
never imports heal/. Also the clock-skew estimate, which is the same whoever supplies the samples."""

from __future__ import annotations

import email.utils
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from observer.core.clock import NS, Clock

VERDICTS = ("ok", "warn", "fail", "skip")
RANK = {"ok": 0, "skip": 0, "warn": 1, "fail": 2}


@dataclass
class Check:
    """One row of preflight's table: verdict ok/warn/fail/skip, a one-line reason, how to fix it."""

    name: str
    verdict: str
    reason: str
    fix: str = ""
    detail: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        d = {"name": self.name, "verdict": self.verdict, "reason": self.reason, "fix": self.fix}
        if self.detail:
            d["detail"] = self.detail
        return d


# a check's name and the callable that runs it (never raises on purpose: the runner makes a crash a `fail`)
CheckFn = Callable[[], "Check | list[Check] | None"]
NamedCheck = tuple[str, CheckFn]


@dataclass
class CheckContext:
    """What preflight hands a provider's checks: the validated config, the clock, the KST day checked,
    the data tree, the secrets (None when they could not be loaded: the secrets row says why) and the
    store (for events; None without a tree)."""

    cfg: dict
    clock: Clock
    day: date
    root: Path
    secrets: Any = None
    store: Any = None

    @property
    def settings(self) -> dict:
        """The [preflight] section."""
        return self.cfg.get("preflight") or {}


def http_date_ns(text: str) -> int:
    """An HTTP Date header (1-s resolution) as UTC ns; ValueError/TypeError when it is not one."""
    return int(email.utils.parsedate_to_datetime(text).timestamp()) * NS


def estimate_skew(samples: Sequence[tuple[int, int, int]]) -> tuple[float, float]:
    """Clock offset (server - local, seconds) from (local_before_ns, local_after_ns, server_date_ns)
    samples. A Date header is truncated to the second, so each sample says the offset lies in
    (D - t1, D + 1 s - t0); the intersection of the samples narrows it to about the spacing.
    Returns (estimate, half-width). Inconsistent samples (a jump): the median of the midpoints."""
    if not samples:
        raise ValueError("no samples")
    lo = max(d - t1 for t0, t1, d in samples)
    hi = min(d + NS - t0 for t0, t1, d in samples)
    if lo <= hi:
        return (lo + hi) / 2 / NS, (hi - lo) / 2 / NS
    mids = sorted((d + NS // 2 - (t0 + t1) // 2) for t0, t1, d in samples)
    return mids[len(mids) // 2] / NS, 0.5


def skew_check(name: str, samples: Sequence[tuple[int, int, int]], *, source: str, warn_s: float, fail_s: float,
               errors: Sequence[str] = ()) -> Check:
    """The clock row from a provider's samples of its server's Date header (`source`: where they came from)."""
    if not samples:
        return Check(name, "warn" if errors else "skip",
                     f"no Date header from {source} ({', '.join(errors[:2]) or 'none sent'})",
                     "check chrony (chronyc tracking) by hand")
    skew, unc = estimate_skew(samples)
    detail = {"skew_s": round(skew, 3), "uncertainty_s": round(unc, 3), "samples": len(samples)}
    sign = "ahead of" if skew < 0 else "behind"
    what = (f"local clock {abs(skew):.2f} s {sign} the broker's Date header (±{unc:.2f} s, "
            f"{len(samples)} samples)")
    fix = "sync the clock: chronyc tracking / timedatectl; check chrony's sources"
    if abs(skew) >= fail_s:
        return Check(name, "fail", what, fix, detail)
    if abs(skew) >= warn_s:
        return Check(name, "warn", what, fix, detail)
    return Check(name, "ok", what, detail=detail)
