"""A recorded day back in exchange-time order (the reproducibility promise; what a backtest reads).

Files are in arrival order; exchange time can run slightly behind arrival (a late frame), so records
pass through a small reorder buffer of `window_s` seconds of arrival time. A record later than that
is still emitted (never dropped) and counted in `late`.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from datetime import date
from pathlib import Path

from observer.core.clock import NS
from observer.store.reader import IssueSink, iter_day


def exchange_key(rec: dict) -> int:
    return rec.get("exch_ns") or rec.get("sweep_ns") or rec.get("recv_ns") or rec.get("ts_ns") or 0


class Replay:
    def __init__(self, root: Path, day: date, *, kinds: Iterable[str] = ("swing", "scalp"),
                 provider: str | None = None, symbols: set[str] | None = None, window_s: float = 60.0,
                 on_issue: IssueSink | None = None, raw: bool = False):
        self.root = Path(root)
        self.day = day
        self.kinds = ("raw",) if raw else tuple(kinds)
        self.provider = provider
        self.symbols = symbols
        self.window_ns = int(window_s * NS)
        self.on_issue = on_issue
        self.raw = raw
        self.late = 0
        self.count = 0

    def __iter__(self) -> Iterator[dict]:
        src = iter_day(self.root, self.day, self.kinds, self.provider, self.on_issue)
        if self.raw:  # raw frames are replayed exactly as received
            for rec in src:
                self.count += 1
                yield rec
            return
        heap: list = []
        seq = 0
        last_out = -1
        for rec in src:
            if self.symbols is not None and rec.get("symbol") not in self.symbols:
                continue
            arrival = rec.get("recv_ns") or 0
            seq += 1
            heapq.heappush(heap, (exchange_key(rec), arrival, seq, rec))
            while heap and heap[0][0] <= arrival - self.window_ns:
                k, _, _, out = heapq.heappop(heap)
                if k < last_out:
                    self.late += 1
                last_out = max(last_out, k)
                self.count += 1
                yield out
        while heap:
            k, _, _, out = heapq.heappop(heap)
            if k < last_out:
                self.late += 1
            last_out = max(last_out, k)
            self.count += 1
            yield out
