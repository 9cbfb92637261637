"""The KRX market as a stream sees it: its session phases by KST clock time, which the silence limits of
a stream (ws.stall_s, ws.stale_s) are keyed by. Every provider that streams KRX times its sessions by it."""

from __future__ import annotations


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
