"""A recorded day back in exchange-time order (the reproducibility promise; what a backtest reads).

Files are in arrival order; exchange time can run slightly behind arrival (a late frame), so records
pass through a small reorder buffer of `window_s` seconds of arrival time. A record later than that
is still emitted (never dropped) and counted in `late`.

The merged view (`kinds` including "recovered"; `observer-replay --merged`): real-time records plus
the backfilled ones from recovered/ (which arrived hours later, at the gap-filler's run), woven in by
exchange time. Within one second, trades follow the exchange's cumulative volume, so a recovered trade
lands exactly where it happened. A trade print is emitted once: the dedupe key is
(symbol, exch_ns, price, qty, cum_vol); the real-time record wins over a recovered copy of it
(`duplicates` counts what was dropped, including a print the stream delivered twice).
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import date
from pathlib import Path

from observer.core.clock import NS
from observer.store.reader import IssueSink, day_files, iter_day, read_file


def exchange_key(rec: dict) -> int:
    return rec.get("exch_ns") or rec.get("sweep_ns") or rec.get("recv_ns") or rec.get("ts_ns") or 0


def paced(records: Iterable[dict], speed: float, *, before_wait: Callable[[], None] | None = None,
          sleep: Callable[[float], None] = time.sleep,
          monotonic: Callable[[], float] = time.monotonic) -> Iterator[dict]:
    """`records` no faster than their exchange times allow at `speed` times real time (observer-replay
    --speed), counted from the first record. `before_wait` runs before each wait (flush the output, so
    a reader sees what is due)."""
    t0 = None
    k0 = 0
    for rec in records:
        k = exchange_key(rec)
        if t0 is None:
            t0, k0 = monotonic(), k
        wait = (k - k0) / NS / speed - (monotonic() - t0)
        if wait > 0:
            if before_wait is not None:
                before_wait()
            sleep(wait)
        yield rec


def trade_key(rec: dict) -> tuple:
    """The merged view's identity of a trade print."""
    return (rec.get("symbol"), rec.get("exch_ns"), rec.get("price"), rec.get("qty"), rec.get("cum_vol"))


def _cum(rec: dict) -> int:
    c = rec.get("cum_vol")
    return c if isinstance(c, int) else -1


class Replay:
    def __init__(self, root: Path, day: date, *, kinds: Iterable[str] = ("swing", "scalp"),
                 provider: str | None = None, symbols: set[str] | None = None, window_s: float = 60.0,
                 on_issue: IssueSink | None = None, raw: bool = False, dedupe: bool | None = None):
        self.root = Path(root)
        self.day = day
        self.kinds = ("raw",) if raw else tuple(kinds)
        self.provider = provider
        self.symbols = symbols
        self.window_ns = int(window_s * NS)
        self.on_issue = on_issue
        self.raw = raw
        self.merged = "recovered" in self.kinds and not raw
        self.dedupe = self.merged if dedupe is None else dedupe
        self.late = 0
        self.count = 0
        self.duplicates = 0
        self.recovered = 0

    def _recovered_stream(self) -> Iterator[dict]:
        """recovered/ records in exchange order (each file is written sorted; files are merged)."""
        streams = []
        for _, p in day_files(self.root, self.day, ("recovered",), self.provider, self.on_issue):
            recs = [r for r in read_file(p, self.on_issue, "recovered", checked=True)
                    if self.symbols is None or r.get("symbol") in self.symbols]
            recs.sort(key=lambda r: (exchange_key(r), _cum(r)))
            streams.append(recs)
        return heapq.merge(*streams, key=lambda r: (exchange_key(r), _cum(r)))

    def __iter__(self) -> Iterator[dict]:
        if self.raw:  # raw frames are replayed exactly as received
            for rec in iter_day(self.root, self.day, self.kinds, self.provider, self.on_issue):
                self.count += 1
                yield rec
            return
        rt_kinds = tuple(k for k in self.kinds if k != "recovered")
        src = iter_day(self.root, self.day, rt_kinds, self.provider, self.on_issue) if rt_kinds else iter(())
        rec_src = self._recovered_stream() if self.merged else iter(())
        pending = next(rec_src, None)
        heap: list = []
        seq = 0
        last_out = -1
        merged = self.merged
        recent: dict[int, set] = {}  # exch second -> trade keys emitted (bounded by the window)

        def push(rec: dict, arrival: int, origin: int) -> None:
            nonlocal seq
            seq += 1
            k = exchange_key(rec)
            key = (k, _cum(rec), origin, arrival, seq) if merged else (k, arrival, seq)
            heapq.heappush(heap, (key, rec))

        def pull_recovered(upto: int | None) -> None:
            nonlocal pending
            while pending is not None and (upto is None or exchange_key(pending) <= upto):
                push(pending, 0, 1)
                pending = next(rec_src, None)

        def emit(rec: dict):
            nonlocal last_out
            k = exchange_key(rec)
            if self.dedupe and rec.get("kind") == "trade":
                tk = trade_key(rec)
                sec = k - k % NS
                seen = recent.get(sec)
                if seen is None:
                    seen = recent[sec] = set()
                    if len(recent) > 4 * max(1, self.window_ns // NS) + 8:
                        for s in sorted(recent)[: len(recent) // 2]:
                            del recent[s]
                if tk in seen:
                    self.duplicates += 1
                    return None
                seen.add(tk)
            if k < last_out:
                self.late += 1
            last_out = max(last_out, k)
            self.count += 1
            if rec.get("quality") == "recovered":
                self.recovered += 1
            return rec

        for rec in src:
            if self.symbols is not None and rec.get("symbol") not in self.symbols:
                continue
            arrival = rec.get("recv_ns") or 0
            push(rec, arrival, 0)
            while heap:
                top = heap[0][0][0]
                if merged and pending is not None and exchange_key(pending) <= top:
                    pull_recovered(top)
                    top = heap[0][0][0]
                if top > arrival - self.window_ns:
                    break
                out = emit(heapq.heappop(heap)[1])
                if out is not None:
                    yield out
        pull_recovered(None)
        while heap:
            out = emit(heapq.heappop(heap)[1])
            if out is not None:
                yield out


def merged_trades(root: Path, day: date, *, provider: str | None = None, symbols: set[str] | None = None,
                  window_s: float = 60.0) -> Iterator[dict]:
    """The merged reader API: every trade print of the day once (real-time + recovered), exchange order."""
    for rec in Replay(root, day, kinds=("scalp", "recovered"), provider=provider, symbols=symbols,
                      window_s=window_s):
        if rec.get("kind") == "trade":
            yield rec
