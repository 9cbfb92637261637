"""The vocabulary of `gap_marker` events: channels, the causes the readers treat specially, and the time
format of marker texts and ids. Beside the record contracts, below everyone who writes a marker (the
collectors, the watchdog) and everyone who reads one (observer.recover.gaps, the audit)."""

from __future__ import annotations

from datetime import datetime

from observer.core.clock import KST, NS

TRADES, BOOK, SNAPSHOT = "trades", "book", "snapshot"
# a Track B that was not recording when it should have (the watchdog marks its expected symbols,
# observer.heal.expected): the marked interval counts as a holding, so its trades are backfilled
COLLECTOR_DOWN = "collector_down"
# a slot from its allocation until its subscription is effective (Track B marks it live): the trades
# of that stretch never reach the stream, so the leading edge is always a hole to page, however short
SUBSCRIBING = "subscribing"
# ... and from the newest trade written to its release (or the streamer's stop): trades not yet sent when
# the subscription ended never arrive; the trailing edge is paged, however short
UNSUBSCRIBING = "unsubscribing"
EDGE_CAUSES = (SUBSCRIBING, UNSUBSCRIBING)


def hhmmss(ns: int) -> str:
    """KST time of day of `ns` as HHMMSS (marker texts, gap and recovered-file names)."""
    return datetime.fromtimestamp(ns / NS, KST).strftime("%H%M%S")
