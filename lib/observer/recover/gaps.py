"""Gap detection: what is missing from a recorded day, and where the exchange itself proves it.

Used offline by observer-gap-filler and observer-audit (DayData + detect_*), and live by a collector
that wants to notice a silent loss the moment it happens (ContinuityWatch).

The tools, strongest first:
- **cumulative volume** (trades): every trade carries the exchange's running volume, so between two
  recorded trades p, q of one symbol `q.cum_vol - q.qty - p.cum_vol` shares are missing, exactly. This
  finds losses nobody marked live (a dropped frame inside a connected stream) and proves a disconnect
  during which nothing traded lost nothing;
- **live gap markers** (collectors: WebSocket down windows, queue overflow, failed sweeps);
- **time**: a held symbol silent beyond `silence_s` at the start or end of its holding (no recorded
  trade after it to prove continuity), no raw frame at all for `no_frames_s` (the recorder was down),
  Track A sweeps that never happened or symbols missing from a sweep.

Every gap is one `gap_marker` event. Markers the collectors wrote live are never repeated: a detected
gap is marked only when no marker of the same symbol and channel overlaps it.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import NamedTuple

import orjson

from observer.core.clock import KST, NS
from observer.core.settings import TradingWindow
from observer.store import paths
from observer.store.markers import BOOK, COLLECTOR_DOWN, EDGE_CAUSES, SNAPSHOT, TRADES, UNSUBSCRIBING
from observer.store.reader import day_files, read_chunks, read_file

# the marker vocabulary (channels, causes) is observer.store.markers
# the restarted streamer's first allocation round, however slow under load: a holding of the symbol
# that starts this soon after a collector_down interval continues it
JOIN_NS = 60 * NS
_RECV = re.compile(rb'"recv_ns":(\d+)')


def sec_floor(ns: int) -> int:
    return ns - ns % NS


def short_hash(*parts) -> str:
    return hashlib.sha1("|".join(str(p) for p in parts).encode()).hexdigest()[:10]


def overlaps(a0: int, a1: int, b0: int, b1: int) -> bool:
    return a0 <= b1 and b0 <= a1


def merge_intervals(iv: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Union of closed intervals, sorted."""
    out: list[list[int]] = []
    for a, b in sorted(iv):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def uncovered(a: int, b: int, cover: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Parts of [a, b] outside the (merged, sorted) intervals `cover`; a point interval counts."""
    out = []
    x = a
    for c0, c1 in cover:
        if c1 < x:
            continue
        if c0 > b:
            break
        if c0 > x:
            out.append((x, c0))
        x = max(x, c1)
        if x >= b:
            break
    if x < b or (not cover and a == b) or (x == a == b and not any(c0 <= a <= c1 for c0, c1 in cover)):
        out.append((x, b))
    return out


def clipped_length(iv: list[tuple[int, int]], lo: int, hi: int) -> int:
    return sum(max(0, min(b, hi) - max(a, lo)) for a, b in merge_intervals(iv))


# -- records ------------------------------------------------------------------------------------
class Trade(NamedTuple):
    """The identity of one trade print (the merged view's dedupe key is (symbol,) + the first four).
    A tuple: sorting a day's trades stays in C."""

    cum_vol: int
    exch_ns: int
    price: float
    qty: int
    recovered: bool = False

    @property
    def before(self) -> int:
        """The exchange's cumulative volume just before this trade."""
        return self.cum_vol - self.qty


def trade_key(rec: dict) -> tuple:
    return (rec.get("symbol"), rec.get("exch_ns"), rec.get("price"), rec.get("qty"), rec.get("cum_vol"))


@dataclass
class Marker:
    gap_id: str
    symbol: str
    channel: str  # trades | book | snapshot
    track: str
    start_ns: int
    end_ns: int
    cause: str
    recoverable: bool
    detected: str = "live"
    missing_qty: int | None = None
    ts_ns: int = 0

    @classmethod
    def from_event(cls, ev: dict) -> Marker:
        ch = ev.get("channel") or (SNAPSHOT if ev.get("track") == "A" else TRADES)
        return cls(gap_id=ev["gap_id"], symbol=ev["symbol"], channel=ch, track=ev["track"], start_ns=ev["start_ns"],
                   end_ns=ev["end_ns"], cause=ev["cause"], recoverable=bool(ev["recoverable"]),
                   detected=ev.get("detected", "live"), missing_qty=ev.get("missing_qty"), ts_ns=ev.get("ts_ns", 0))

    def event_fields(self, market: str) -> dict:
        out = {"market": market, "symbol": self.symbol, "start_ns": self.start_ns, "end_ns": self.end_ns,
               "track": self.track, "cause": self.cause, "recoverable": self.recoverable, "gap_id": self.gap_id,
               "channel": self.channel, "detected": self.detected}
        if self.missing_qty is not None:
            out["missing_qty"] = int(self.missing_qty)
        return out

    def covers(self, symbol: str, channel: str, a: int, b: int) -> bool:
        return (self.symbol in (symbol, "*") and self.channel == channel and overlaps(self.start_ns, self.end_ns, a, b))


@dataclass
class Holding:
    symbol: str
    start_ns: int
    end_ns: int


@dataclass
class Hole:
    """Trades of one symbol missing between two recorded trades (either may be absent at an edge)."""

    symbol: str
    start_ns: int
    end_ns: int
    prev: Trade | None
    next: Trade | None
    cause: str  # cum_vol_jump | silence | <a live marker's cause>
    prev_idx: int = -1  # index of prev / next in the holding's trade list
    next_idx: int = -1
    marker_ids: list[str] = field(default_factory=list)

    @property
    def lo(self) -> int | None:
        """Cumulative volume of the last trade we have before the hole (exclusive bound)."""
        return self.prev.cum_vol if self.prev else None

    @property
    def hi(self) -> int | None:
        """Cumulative volume just before the first trade we have after the hole (inclusive bound)."""
        return self.next.before if self.next else None

    @property
    def missing_qty(self) -> int | None:
        return self.hi - self.lo if self.lo is not None and self.hi is not None else None

    @property
    def key(self) -> str:
        """Stable identity of the hole: its cumulative-volume bracket (times only at an open edge)."""
        return f"{self.symbol}:{self.lo if self.lo is not None else 't' + str(self.start_ns)}:" \
               f"{self.hi if self.hi is not None else 't' + str(self.end_ns)}"

    def contains(self, t: Trade) -> bool:
        if self.lo is not None and t.cum_vol <= self.lo:
            return False
        if self.hi is not None and t.cum_vol > self.hi:
            return False
        if self.lo is None and t.exch_ns < sec_floor(self.start_ns):
            return False
        return not (self.hi is None and t.exch_ns > self.end_ns)


# -- the day as recorded ------------------------------------------------------------------------
class DayData:
    """One provider's day: events, recorded (and recovered) trades per symbol, book samples, raw-frame
    timeline. Reading is streaming per file; only trades are held in memory (as compact tuples)."""

    def __init__(self, root: Path, day: date, provider: str, market: str, *,
                 no_frames_s: float = 120.0, read_raw: bool = True):
        self.root = Path(root)
        self.day = day
        self.provider = provider
        self.market = market
        self.events: list[dict] = []
        self.scalp: dict[str, list[Trade]] = defaultdict(list)
        self.recovered: dict[str, list[Trade]] = defaultdict(list)
        self.bars: dict[str, int] = defaultdict(int)
        self.books: dict[str, int] = defaultdict(int)
        self.book_minutes: dict[str, set[int]] = defaultdict(set)
        self.first_recv: dict[str, int] = {}
        self.last_recv: dict[str, int] = {}
        self.duplicates = 0  # identical trade prints recorded twice in scalp/
        self.snapshots: dict[int, set[str]] = defaultdict(set)  # sweep_ns -> symbols
        self.raw_first = 0
        self.raw_last = 0
        self.raw_frames = 0
        self.raw_gaps: list[tuple[int, int]] = []  # no frame at all for >= no_frames_s
        self.raw_minutes: dict[int, int] = defaultdict(int)  # KST minute of day -> frames
        self.bytes_read = 0
        self.issues: list[str] = []
        self._no_frames_ns = int(no_frames_s * NS)
        self._load(read_raw)

    def _issue(self, i) -> None:
        self.issues.append(f"{i.file}:{i.line}: {i.problem}")

    def _load(self, read_raw: bool) -> None:
        kinds = ("scalp", "recovered", "events", "swing") + (("raw",) if read_raw else ())
        seen_scalp: set[tuple] = set()
        for kind, p in day_files(self.root, self.day, kinds, on_issue=self._issue):
            rel = p.relative_to(self.root).parts
            if kind == "events":
                if rel[2] != self.provider:
                    continue
                self.bytes_read += p.stat().st_size
                self.events.extend(read_file(p, self._issue, checked=True))
                continue
            if rel[1] != self.provider:
                continue
            self.bytes_read += p.stat().st_size
            if kind == "raw":
                self._scan_raw(p)
                continue
            for r in read_file(p, self._issue, "recovered" if kind == "recovered" else None, checked=True):
                k = r.get("kind")
                sym = r.get("symbol")
                if kind == "swing":
                    if k == "snapshot" and r.get("sweep_ns") is not None:
                        self.snapshots[r["sweep_ns"]].add(sym)
                    continue
                if k == "trade":
                    if r.get("exch_ns") is None or r.get("cum_vol") is None:
                        continue
                    t = Trade(int(r["cum_vol"]), r["exch_ns"], r["price"], int(r["qty"]), kind == "recovered")
                    if kind == "scalp":
                        key = (sym, t)
                        if key in seen_scalp:
                            self.duplicates += 1
                            continue
                        seen_scalp.add(key)
                        self.scalp[sym].append(t)
                        rv = r.get("recv_ns") or 0
                        if sym not in self.first_recv:
                            self.first_recv[sym] = rv
                        self.last_recv[sym] = max(self.last_recv.get(sym, 0), rv)
                    else:
                        self.recovered[sym].append(t)
                elif k == "book" and kind == "scalp":
                    self.books[sym] += 1
                    self.book_minutes[sym].add(self.minute_of(r.get("recv_ns") or 0))
                elif k == "bar":
                    self.bars[sym] += 1
        self.events.sort(key=lambda e: e.get("ts_ns", 0))
        for d in (self.scalp, self.recovered):
            for v in d.values():
                v.sort()

    def _scan_raw(self, p: Path) -> None:
        prev = self.raw_last
        gap = self._no_frames_ns
        minutes = self.raw_minutes
        mid = self.midnight_ns
        n = 0
        for data in read_chunks(p, self._issue):  # bounded blocks of whole lines, not the whole file
            for m in _RECV.finditer(data):
                ns = int(m.group(1))
                n += 1
                if not self.raw_first:
                    self.raw_first = ns
                elif ns - prev >= gap:
                    self.raw_gaps.append((prev, ns))
                if ns > prev:
                    prev = ns
                minutes[(ns - mid) // (60 * NS)] += 1
        self.raw_last = prev
        self.raw_frames += n

    @property
    def midnight_ns(self) -> int:
        return int(datetime(self.day.year, self.day.month, self.day.day, tzinfo=KST).timestamp()) * NS

    def minute_of(self, ns: int) -> int:
        return (ns - self.midnight_ns) // (60 * NS)

    # -- derived views --------------------------------------------------------------------------
    def markers(self) -> list[Marker]:
        return [Marker.from_event(e) for e in self.events if e.get("event") == "gap_marker"]

    def merged_trades(self, symbol: str) -> list[Trade]:
        """Recorded + recovered trades of a symbol in exchange order, each print once (cached)."""
        cache = self.__dict__.setdefault("_merged", {})
        got = cache.get(symbol)
        if got is not None:
            return got
        rec = self.recovered.get(symbol)
        if not rec:
            got = self.scalp.get(symbol, [])
        else:
            out = {t[:4]: t for t in self.scalp.get(symbol, ())}
            for t in rec:
                out.setdefault(t[:4], t)
            got = sorted(out.values())
        cache[symbol] = got
        return got

    def recording_end(self) -> int:
        """When Track B stopped: the last raw frame (or the last recorded trade)."""
        stops = [e["ts_ns"] for e in self.events if e.get("event") == "collector" and e.get("state") == "stopped"
                 and str(e.get("program", "")).startswith("observer-track-b")]
        stops += [e["end_ns"] for e in self.events if e.get("event") == "gap_marker" and e.get("cause") == UNSUBSCRIBING]
        ends = [self.raw_last, max(self.last_recv.values(), default=0)] + stops
        return max(ends)

    def holdings(self) -> dict[str, list[Holding]]:
        """Per symbol, the intervals it held a Track B slot (slot allocate -> release / recording end)."""
        end = self.recording_end()
        open_: dict[str, int] = {}
        out: dict[str, list[Holding]] = defaultdict(list)
        for e in self.events:
            if e.get("event") != "slot":
                continue
            sym, ts = e.get("symbol"), e.get("ts_ns", 0)
            if e.get("action") == "allocate":
                if sym in open_:  # a restarted streamer allocates again: the old holding ends here
                    out[sym].append(Holding(sym, open_.pop(sym), ts))
                open_[sym] = ts
            elif e.get("action") == "release" and sym in open_:
                out[sym].append(Holding(sym, open_.pop(sym), ts))
        for sym, a in open_.items():
            out[sym].append(Holding(sym, a, max(end, a)))
        for sym, trades in self.scalp.items():  # trades without slot events (older streamers): their span
            if sym not in out and trades:
                out[sym].append(Holding(sym, self.first_recv.get(sym, trades[0].exch_ns), max(end, trades[-1].exch_ns)))
        self._expected_holdings(out)
        return out

    def _expected_holdings(self, out: dict[str, list[Holding]]) -> None:
        """Intervals Track B should have held a symbol but was not recording (`collector_down` markers):
        a holding of their own, or the start of the holding that begins where the interval ends (the
        restarted streamer allocating it, within JOIN_NS), so the trades from the window start are one hole."""
        for m in self.markers():
            if m.cause != COLLECTOR_DOWN or m.channel != TRADES or m.symbol == "*":
                continue
            hs = out[m.symbol]
            for h in hs:
                if m.start_ns <= h.start_ns <= m.end_ns + JOIN_NS:
                    h.start_ns = m.start_ns
                    break
                if h.start_ns <= m.start_ns <= h.end_ns:  # already inside a holding
                    h.end_ns = max(h.end_ns, m.end_ns)
                    break
            else:
                hs.append(Holding(m.symbol, m.start_ns, m.end_ns))
            hs.sort(key=lambda h: h.start_ns)


# -- detection: Track B trades ------------------------------------------------------------------
def trade_holes(trades: list[Trade], holding: Holding, markers: list[Marker], silence_s: float) -> list[Hole]:
    """Holes of one symbol inside one holding. `trades` are the merged trades of the symbol (sorted)."""
    sym = holding.symbol
    a, b = holding.start_ns, holding.end_ns
    inside = [t for t in trades if a - NS <= t.exch_ns <= b + NS]
    silence = int(silence_s * NS)
    live = [m for m in markers if m.channel == TRADES and m.symbol in (sym, "*") and overlaps(m.start_ns, m.end_ns, a, b)]
    out: list[Hole] = []

    def marked(x0: int, x1: int) -> list[Marker]:
        return [m for m in live if overlaps(m.start_ns, m.end_ns, x0, x1)]

    if not inside:
        ms = marked(a, b)
        if ms or b - a >= silence:
            out.append(Hole(sym, a, b, None, None, ms[0].cause if ms else "silence"))
        return _tag(out, live)
    first, last = inside[0], inside[-1]
    # exchange times are whole seconds: the first trade we have may be stamped before the holding began
    # and still have missed trades of its own second, so the edge runs to the end of that second
    ms = marked(a, max(a, first.exch_ns + NS - 1))
    if ms or first.exch_ns - a >= silence:
        out.append(Hole(sym, a, max(a, first.exch_ns), None, first, ms[0].cause if ms else "silence", next_idx=0))
    for i in range(1, len(inside)):
        p, q = inside[i - 1], inside[i]
        if q.before > p.cum_vol:
            ms = marked(p.exch_ns, q.exch_ns)
            out.append(Hole(sym, p.exch_ns, q.exch_ns, p, q, ms[0].cause if ms else "cum_vol_jump", i - 1, i))
    ms = marked(last.exch_ns, b)
    if ms or b - last.exch_ns >= silence:
        out.append(Hole(sym, last.exch_ns, b, last, None, ms[0].cause if ms else "silence", len(inside) - 1))
    return _tag(out, live)


def _tag(holes: list[Hole], live: list[Marker]) -> list[Hole]:
    for h in holes:
        h.marker_ids = [m.gap_id for m in live if overlaps(m.start_ns, m.end_ns, h.start_ns, h.end_ns)]
    return holes


def detect_track_b(data: DayData, silence_s: float = 60.0) -> tuple[list[Hole], list[Marker]]:
    """Trade holes of every held symbol (on the merged view, so what was recovered is no longer a hole),
    and new markers for what nobody marked: holes without a live trades marker, and windows with no raw
    frame at all (both channels) not covered by a marker."""
    markers = data.markers()
    holes: list[Hole] = []
    new: list[Marker] = []
    holdings = data.holdings()
    for sym in sorted(holdings):
        merged = data.merged_trades(sym)
        for h in holdings[sym]:
            for hole in trade_holes(merged, h, markers, silence_s):
                holes.append(hole)
                # the parts of the hole no marker covers yet (a live disconnect window starts when the
                # loss was noticed; the trades lost just before it are marked here)
                covering = [m for m in markers if m.covers(sym, TRADES, hole.start_ns, hole.end_ns)]
                if hole.missing_qty is None and any(m.cause in EDGE_CAUSES for m in covering):
                    continue  # a slot's edge, marked live: paged as it is; the rest of it was streaming
                cover = merge_intervals([(m.start_ns, m.end_ns) for m in covering])
                for a, b in uncovered(hole.start_ns, hole.end_ns, cover):
                    m = Marker(gap_id=f"R-{data.provider}-{sym}-{TRADES}-{a}", symbol=sym, channel=TRADES,
                               track="B", start_ns=a, end_ns=b, cause="cum_vol_jump" if cover and hole.missing_qty is not None else hole.cause,
                               recoverable=True, detected="offline", missing_qty=hole.missing_qty)
                    new.append(m)
                    markers.append(m)
                    hole.marker_ids.append(m.gap_id)
    for a, b in data.raw_gaps:
        for sym in sorted(holdings):
            for h in holdings[sym]:
                if not overlaps(h.start_ns, h.end_ns, a, b):
                    continue
                x0, x1 = max(a, h.start_ns), min(b, h.end_ns)
                for ch in (BOOK,):  # trades: the cumulative volume already told (a hole above, or nothing lost)
                    if any(m.covers(sym, ch, x0, x1) for m in markers):
                        continue
                    m = Marker(gap_id=f"R-{data.provider}-{sym}-{ch}-{x0}", symbol=sym, channel=ch, track="B",
                               start_ns=x0, end_ns=x1, cause="no_frames", recoverable=False, detected="offline")
                    new.append(m)
                    markers.append(m)
    return holes, new


# -- detection: Track A -------------------------------------------------------------------------
def track_a_slots(calendar, day: date, window: TradingWindow, interval_min: int) -> list[int]:
    start, end = window.span(calendar, day)
    step = interval_min * 60 * NS
    return list(range(int(start.timestamp()) * NS, int(end.timestamp()) * NS + 1, step))


def universe_symbols(root: Path, day: date, universe: str) -> list[str] | None:
    p = paths.universe_file(root, day, universe)
    try:
        u = orjson.loads(p.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return [s["symbol"] for s in u.get("symbols", [])]


def detect_track_a(data: DayData, slots: list[int], interval_min: int, now_ns: int,
                   universe: list[str] | None) -> list[Marker]:
    """Missed sweeps (no sweep event and no snapshot) and symbols missing from a sweep, unmarked."""
    markers = data.markers()
    step = interval_min * 60 * NS
    swept = {e.get("sweep_ns") for e in data.events if e.get("event") == "sweep"}
    new: list[Marker] = []
    for s in slots:
        if s + step > now_ns:
            break
        got = data.snapshots.get(s, set())
        if s not in swept and not got:
            if not any(m.track == "A" and m.covers("*", SNAPSHOT, s, s + step - 1) and m.symbol == "*" for m in markers):
                m = Marker(gap_id=f"A-{data.provider}-*-{s}", symbol="*", channel=SNAPSHOT, track="A", start_ns=s,
                           end_ns=s + step, cause="sweep_missed", recoverable=False, detected="offline")
                new.append(m)
                markers.append(m)
            continue
        if universe is None:
            continue
        for sym in universe:
            if sym in got:
                continue
            if any(m.track == "A" and m.covers(sym, SNAPSHOT, s, s + step - 1) for m in markers):
                continue
            m = Marker(gap_id=f"A-{data.provider}-{sym}-{s}", symbol=sym, channel=SNAPSHOT, track="A", start_ns=s,
                       end_ns=s + step, cause="missing_from_sweep", recoverable=False, detected="offline")
            new.append(m)
            markers.append(m)
    return new


# -- live use -------------------------------------------------------------------------------------
class ContinuityWatch:
    """For a collector: feed every trade as it is written; returns a Hole when the exchange's cumulative
    volume jumps by more than the trade explains (a silent loss inside a connected stream)."""

    def __init__(self):
        self.last: dict[str, Trade] = {}

    def feed(self, symbol: str, cum_vol: int, qty: int, exch_ns: int, price: float = 0) -> Hole | None:
        t = Trade(int(cum_vol), int(exch_ns), price, int(qty))
        p = self.last.get(symbol)
        if p is not None and t.cum_vol <= p.cum_vol:
            return None  # a duplicate or late print: not newer
        self.last[symbol] = t
        if p is not None and t.before > p.cum_vol:
            return Hole(symbol, p.exch_ns, t.exch_ns, p, t, "cum_vol_jump")
        return None

    def reset(self, symbol: str | None = None) -> None:
        """When a symbol is released (unsubscribed on purpose), so its next holding starts fresh. Do not
        call it on a reconnect: the jump across a disconnect is exactly the gap to report."""
        if symbol is None:
            self.last.clear()
        else:
            self.last.pop(symbol, None)
