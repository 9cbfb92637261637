"""The KRX market as a stream sees it: its session phases by KST clock time and how long a feed of it may
be silent in each, before a connection counts as stalled or a registration as stale. Every provider that
streams KRX (its WireProtocol) times its sessions by these; the config overrides the limits."""

from __future__ import annotations

from observer.providers.base import BOOK, TRADES

MARKET = "krx"
PHASES = ("preopen", "continuous", "auction", "after")
# no data frame on a connection for this long (s) = stalled
STALL_S = {"preopen": 600.0, "continuous": 60.0, "auction": 120.0, "after": 1800.0}
# no data for one registration for this long (s) = stale
STALE_S = {
    TRADES: {"preopen": 1800.0, "continuous": 300.0, "auction": 600.0, "after": 3600.0},
    BOOK: {"preopen": 600.0, "continuous": 120.0, "auction": 300.0, "after": 3600.0},
}


def session_phase(hour: int, minute: int) -> str:
    """preopen < 09:00, continuous 09:00-15:20, auction 15:20-15:30 (the closing call), after."""
    hm = hour * 100 + minute
    if hm < 900:
        return "preopen"
    if hm < 1520:
        return "continuous"
    if hm < 1530:
        return "auction"
    return "after"
