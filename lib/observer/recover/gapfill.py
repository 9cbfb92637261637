"""The gap-filler: detect what is missing, backfill what the broker can still give, say why the rest cannot.

One run (observer-gap-filler, 15:40, or by hand):
1. repair the day's recovered/ files (a killed run may have left a torn last line);
2. detect gaps on the merged view (recorded + already recovered; observer.recover.gaps) and emit a
   `gap_marker` for each one nobody marked yet (never twice for one interval);
3. plan paging runs ("jobs"): one per trade hole, neighbouring holes of a symbol merged when the
   trades between them fit in a page, so one paging run serves both;
4. page back through the broker's today's-trades-by-time call from the trade after the hole to the
   trade before it (the pager stops as soon as it sees the trade before the hole: the cumulative
   volume proves the bracket), keep exactly the trades whose cumulative volume falls inside the hole,
   prove continuity, and write them to recovered/ with provenance; what is still missing (more trades
   in one second than one page holds, rows the broker does not give) stays a hole with its cause, and
   its minutes are fetched as 1-minute bars;
5. record each outcome in the checkpoint state/gapfill/<provider>_<YYYYMMDD>.json (atomic rename after
   every job): a kill loses at most the job in flight, whose records are deduplicated on the rerun.

Idempotent: holes are computed on the merged view, so a second run finds nothing left to fetch
(permanently unrecoverable holes are remembered by their cumulative-volume bracket and not retried).
Order-book and Track A gaps are never "filled": they stay marked, unrecoverable.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from observer.core import notify
from observer.core.clock import NS, Clock, yyyymmdd
from observer.core.logging import get_logger
from observer.core.settings import GapfillConfig, TrackAConfig, TradingWindow
from observer.providers.base import MarketRest, ProviderError, RecoverySource, market_of, provider_class
from observer.recover.gaps import (
    DayData,
    Hole,
    Marker,
    Trade,
    detect_track_a,
    detect_track_b,
    sec_floor,
    short_hash,
    track_a_slots,
    universe_symbols,
)
from observer.store import paths
from observer.store.markers import hhmmss
from observer.store.reader import day_files
from observer.store.state import read_json, write_json_atomic
from observer.store.store import Store

log = get_logger(__name__)

# a provider that declares no recovery source is paged with the neutral call names and this page size
DEFAULT_PAGE_ROWS = 30


def source_of(cfg: dict, provider: str | None, market: str | None) -> tuple[str, str]:
    """(provider, market) whose day is recovered: the given ones, else the configured `gapfill.provider`
    and the market that provider serves."""
    provider = provider or GapfillConfig.from_config(cfg).provider
    return provider, market or provider_class(provider).market


checkpoint_path = paths.gapfill_checkpoint_file  # one spelling of the path (retention deletes it with its day)


def load_checkpoint(root: Path, provider: str, day: date) -> dict:
    cp = read_json(checkpoint_path(root, provider, day)) or {}
    cp.setdefault("v", 1)
    cp.setdefault("provider", provider)
    cp.setdefault("date", yyyymmdd(day))
    cp.setdefault("runs", 0)
    cp.setdefault("holes", {})
    cp.setdefault("edges_done", [])
    cp.setdefault("calls", 0)
    cp.setdefault("markers_emitted", 0)
    return cp


def edge_key(h: Hole) -> str | None:
    if h.prev is None and h.next is None:
        return f"{h.symbol}:both:{h.start_ns}:{h.end_ns}"
    if h.prev is None:
        return f"{h.symbol}:lead:{h.start_ns}"
    if h.next is None:
        return f"{h.symbol}:trail:{h.end_ns}"
    return None


def open_holes(data: DayData, cfg: dict, checkpoint: dict) -> tuple[list[Hole], list[Marker]]:
    """Trade holes still open on the merged view (edges already proven complete left out), and the
    markers nobody has written yet."""
    holes, new = detect_track_b(data, float(GapfillConfig.from_config(cfg).silence_s))
    done = set(checkpoint.get("edges_done", []))
    return [h for h in holes if edge_key(h) not in done], new


# -- paging --------------------------------------------------------------------------------------
@dataclass
class Paged:
    records: list[dict] = field(default_factory=list)
    calls: int = 0
    stepped: set[int] = field(default_factory=set)  # seconds with more trades than one page could reach
    complete: bool = False
    error: str | None = None


def page_back(rest: MarketRest, symbol: str, end_ns: int, *, lo: int | None, start_ns: int, page_rows: int,
              max_calls: int, on_call: Callable[[], None] | None = None) -> Paged:
    """Page today's trades back in time from end_ns until the trade with cumulative volume `lo` (or,
    without one, until a trade older than start_ns's second) shows up, or the day's first trade."""
    res = Paged()
    cursor = sec_floor(end_ns)
    stop_before = sec_floor(start_ns)
    seen: set[tuple] = set()
    while res.calls < max_calls:
        try:
            page = rest.trades_by_time(symbol, until_ns=cursor)
        except ProviderError as e:
            res.error = f"{type(e).__name__}: {e}"[:300]
            return res
        res.calls += 1
        if on_call:
            on_call()
        for r in page:
            k = (r["exch_ns"], r.get("cum_vol"))
            if k not in seen:
                seen.add(k)
                res.records.append(r)
        if not page:
            res.complete = True  # nothing at or before the cursor: the day's first trade is behind us
            break
        oldest = min(page, key=lambda r: (r["exch_ns"], r.get("cum_vol") or 0))
        if lo is not None and any((r.get("cum_vol") or 0) <= lo for r in page):
            res.complete = True
            break
        if lo is None and oldest["exch_ns"] < stop_before:
            res.complete = True
            break
        if len(page) < page_rows:
            res.complete = True
            break
        nxt = sec_floor(oldest["exch_ns"])
        if nxt >= cursor:
            # a full page inside one second: the older trades of this second are out of reach by time
            res.stepped.add(cursor)
            nxt = cursor - NS
        cursor = nxt
    return res


# -- jobs ------------------------------------------------------------------------------------------
@dataclass
class Job:
    symbol: str
    holes: list[Hole]

    @property
    def start_ns(self) -> int:
        return min(h.start_ns for h in self.holes)

    @property
    def end_ns(self) -> int:
        return max(h.end_ns for h in self.holes)

    @property
    def lo(self) -> int | None:
        return self.holes[0].lo

    @property
    def id(self) -> str:
        return short_hash(*(h.key for h in self.holes))

    @property
    def fetch_end_ns(self) -> int:
        last = self.holes[-1]
        return last.next.exch_ns if last.next is not None else last.end_ns


def plan_jobs(holes: list[Hole], merge_rows: int) -> list[Job]:
    jobs: list[Job] = []
    for h in sorted(holes, key=lambda h: (h.symbol, h.start_ns)):
        j = jobs[-1] if jobs else None
        if (j is not None and j.symbol == h.symbol and merge_rows > 0 and h.prev is not None
                and j.holes[-1].next is not None and j.holes[-1].next_idx >= 0 and h.prev_idx >= j.holes[-1].next_idx
                and j.holes[-1].next.cum_vol <= h.prev.cum_vol
                and h.prev_idx - j.holes[-1].next_idx + 1 < merge_rows):
            j.holes.append(h)
        else:
            jobs.append(Job(h.symbol, [h]))
    return jobs


def chain(hole: Hole, got: list[Trade], stepped: set[int]) -> list[dict]:
    """What is still missing inside `hole` after `got` (sorted): residual holes with their cause."""
    out = []
    expect = hole.lo
    prev_ns = hole.prev.exch_ns if hole.prev else hole.start_ns
    for t in got:
        if expect is not None and t.before != expect:
            out.append(_residual(hole, expect, t.before, prev_ns, t.exch_ns, stepped))
        expect, prev_ns = t.cum_vol, t.exch_ns
    if hole.hi is not None and expect is not None and expect != hole.hi:
        out.append(_residual(hole, expect, hole.hi, prev_ns, hole.next.exch_ns, stepped))
    return out


def _residual(hole: Hole, lo: int, hi: int, a: int, b: int, stepped: set[int]) -> dict:
    many = any(a <= s <= b for s in stepped)
    return {"symbol": hole.symbol, "lo": lo, "hi": hi, "missing_qty": hi - lo, "start_ns": a, "end_ns": b,
            "key": f"{hole.symbol}:{lo}:{hi}",
            "cause": "more_trades_in_one_second_than_one_page" if many else
            ("broker_rows_overlap" if hi < lo else "broker_rows_missing")}


# -- the run -----------------------------------------------------------------------------------------
class Progress:
    """A one-line progress bar on a terminal; JSON log lines otherwise."""

    def __init__(self, total: int, enabled: bool | None = None, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total = max(total, 0)
        self.done = 0
        self.calls = 0
        self.t0 = time.monotonic()
        self._last = 0.0

    def call(self) -> None:
        self.calls += 1
        notify.progress()  # a page fetched: real progress for the unit's watchdog
        self.draw()

    def step(self, label: str) -> None:
        self.done += 1
        notify.progress()  # a job finished and checkpointed
        self.draw(force=True, label=label)

    def draw(self, force: bool = False, label: str = "") -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        n = 30
        fill = int(n * self.done / self.total) if self.total else n
        took = now - self.t0
        eta = took / self.done * (self.total - self.done) if self.done else 0.0
        self.stream.write(f"\r[{'#' * fill}{'.' * (n - fill)}] {self.done}/{self.total} gaps  {self.calls} calls  "
                          f"{took:5.1f}s  eta {eta:5.1f}s {label[:24]:<24}")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def repair_recovered(store: Store, provider: str, day: date) -> int:
    """Open (and so repair) every recovered file of the day; returns how many there are."""
    n = 0
    for _, p in day_files(store.root, day, ("recovered",), provider):
        w = store.writer(p, "recovered")
        store.release(w)
        n += 1
    return n


class GapFiller:
    def __init__(self, *, store: Store, rest: MarketRest | None, cfg: dict, clock: Clock, day: date,
                 provider: str | None = None, market: str | None = None, calendar=None,
                 progress: bool | None = None):
        """provider: whose recorded data and REST calls (None: the configured `gapfill.provider`);
        market: the records' market (None: the provider's)."""
        self.store = store
        self.root = store.root
        self.rest = rest
        self.cfg = cfg
        self.g = GapfillConfig.from_config(cfg)
        self.clock = clock
        self.day = day
        self.provider, self.market = provider, market = source_of(cfg, provider, market)
        # the broker's calls behind the recovered kinds (provenance.source_call, how far back they reach)
        self.sources: dict[str, RecoverySource] = dict(provider_class(provider).recovery_sources)
        self.calendar = calendar
        self.progress_enabled = progress
        self.events = store.events(provider)
        trade_src = self.sources.get("trade")
        default_rows = trade_src.rows_per_call if trade_src else DEFAULT_PAGE_ROWS
        self.page_rows = int(getattr(rest, "page_rows", default_rows) or default_rows)
        self.cp = load_checkpoint(self.root, provider, day)
        self.summary = {"holes": 0, "jobs": 0, "recovered_trades": 0, "recovered_qty": 0, "recovered_bars": 0,
                        "calls": 0, "markers_emitted": 0, "unrecoverable_holes": 0, "failed_jobs": 0,
                        "skipped_known_unrecoverable": 0}

    # -- checkpoint ------------------------------------------------------------------------------
    def _save(self) -> None:
        self.cp["updated_ns"] = self.clock.now_ns()
        write_json_atomic(checkpoint_path(self.root, self.provider, self.day), self.cp, indent=True)

    def _emit_markers(self, markers: list[Marker]) -> None:
        """Each new marker goes to the events log of the day it describes (a run after midnight for a past
        day must not file them under the day it runs on)."""
        if not markers:
            return
        if paths.day_of(self.clock.now_ns()) == self.day:
            for m in markers:
                self.events.emit("gap_marker", "WARNING", **m.event_fields(self.market))
        else:
            w = self.store.writer(paths.events_file(self.root, self.provider, self.day), "events", shared=True)
            for m in markers:
                rec = {"v": 1, "kind": "event", "ts_ns": self.clock.now_ns(), "event": "gap_marker",
                       "severity": "WARNING", "provider": self.provider, "program": self.store.program,
                       "host": self.store.host, **m.event_fields(self.market)}
                w.append(rec)
                log.warning("gap_marker", extra={"event_fields": m.event_fields(self.market)})
        self.summary["markers_emitted"] += len(markers)
        self.cp["markers_emitted"] += len(markers)

    # -- the run ---------------------------------------------------------------------------------
    def run(self) -> dict:
        self.cp["runs"] += 1
        self.summary["recovered_files_checked"] = repair_recovered(self.store, self.provider, self.day)
        data = DayData(self.root, self.day, self.provider, self.market,
                       no_frames_s=float(self.g.no_frames_s))
        self.summary["read_issues"] = len(data.issues)
        if data.issues:  # lines the reader skipped (observer-verify lists them all)
            log.warning("unreadable lines in the tree skipped", extra={"count": len(data.issues),
                                                                      "first": data.issues[:5]})
        tracks = self.g.tracks
        if "A" in tracks and self.calendar is not None:
            win = TradingWindow.from_config(self.cfg, "track_a")
            interval = int(TrackAConfig.from_config(self.cfg).interval_minutes)
            slots = track_a_slots(self.calendar, self.day, win, interval)
            self._emit_markers(detect_track_a(data, slots, interval, self.clock.now_ns(),
                                              universe_symbols(self.root, self.day, market_of(self.provider).universe)))
        holes: list[Hole] = []
        if "B" in tracks:
            holes, new = open_holes(data, self.cfg, self.cp)
            self._emit_markers(new)
        todo = []
        for h in holes:
            known = self.cp["holes"].get(h.key)
            if known and known.get("status") == "unrecoverable":
                self.summary["skipped_known_unrecoverable"] += 1
                continue
            todo.append(h)
        self.summary["holes"] = len(todo)
        jobs = plan_jobs(todo, int(self.g.merge_rows))
        self.summary["jobs"] = len(jobs)
        self._save()
        prog = Progress(len(jobs), self.progress_enabled)
        try:
            for job in jobs:
                self._job(job, prog)
                prog.step(job.symbol)
        finally:
            prog.close()
        self.summary["calls_total_all_runs"] = self.cp["calls"]
        self._save()
        return self.summary

    def _source_call(self, kind: str, neutral: str) -> str:
        """provenance.source_call of a recovered `kind`: the broker's call, or the MarketRest method's name."""
        src = self.sources.get(kind)
        return src.call if src else neutral

    def _today_only(self) -> bool:
        src = self.sources.get("trade")
        return src is not None and src.today_only and self.day != self.clock.today_kst()

    def _job(self, job: Job, prog: Progress) -> None:
        t0 = time.monotonic()
        if self._today_only():
            why = f"{self.provider} serves trades by time for the current day only; {yyyymmdd(self.day)} is past"
            for h in job.holes:
                self._record(h, job, "unrecoverable", reason=why)
            self.summary["unrecoverable_holes"] += len(job.holes)
            self._save()
            return
        if self.rest is None:  # not permanent: a later run with credentials may still fill it today
            for h in job.holes:
                self._record(h, job, "failed", reason="no REST client (credentials missing or refused)")
            self.summary["failed_jobs"] += 1
            self._save()
            return
        paged = page_back(self.rest, job.symbol, job.fetch_end_ns, lo=job.lo, start_ns=job.start_ns,
                          page_rows=self.page_rows, max_calls=int(self.g.max_calls_per_gap),
                          on_call=prog.call)
        self.summary["calls"] += paged.calls
        self.cp["calls"] += paged.calls
        if paged.error is not None:
            for h in job.holes:
                self._record(h, job, "failed", reason=paged.error, calls=paged.calls)
            self.summary["failed_jobs"] += 1
            log.warning("gap not recovered (will retry on the next run)",
                        extra={"symbol": job.symbol, "job": job.id, "error": paged.error})
            self._save()
            return
        by_trade = []
        for r in paged.records:
            try:
                by_trade.append((Trade(int(r["cum_vol"]), r["exch_ns"], r["price"], int(r["qty"])), r))
            except (KeyError, TypeError, ValueError):
                continue
        by_trade.sort(key=lambda x: x[0])
        src = self._source_call("trade", "trades_by_time")
        out: list[dict] = []
        residuals_all: list[dict] = []
        for h in job.holes:
            got = [(t, r) for t, r in by_trade if h.contains(t)]
            residual = chain(h, [t for t, _ in got], paged.stepped)
            if h.prev is None and not paged.complete:
                residual.append({"symbol": h.symbol, "lo": None, "hi": got[0][0].before if got else h.hi,
                                 "missing_qty": None, "start_ns": h.start_ns,
                                 "end_ns": got[0][0].exch_ns if got else h.end_ns,
                                 "key": f"{h.symbol}:t{h.start_ns}:?", "cause": "start_not_reached"})
            gid = h.marker_ids[0] if h.marker_ids else f"R-{self.provider}-{h.symbol}-trades-{h.start_ns}"
            for _, r in got:
                rec = dict(r)
                rec["quality"] = "recovered"
                rec["track"] = "R"
                rec["provenance"] = {"source_call": src, "fetched_at_ns": r["recv_ns"], "gap_id": gid}
                out.append(rec)
            qty = sum(t.qty for t, _ in got)
            status = "recovered" if not residual else ("partial" if got else "unrecoverable")
            self._record(h, job, status, recovered_trades=len(got), recovered_qty=qty, residual=residual,
                         calls=paged.calls, reason="; ".join(sorted({x["cause"] for x in residual})) or None)
            for x in residual:
                if x.get("lo") is not None:
                    self.cp["holes"][x["key"]] = {"status": "unrecoverable", "symbol": h.symbol, "reason": x["cause"],
                                                  "start_ns": x["start_ns"], "end_ns": x["end_ns"],
                                                  "missing_qty": x["missing_qty"], "marker_ids": h.marker_ids,
                                                  "parent": h.key}
            residuals_all += residual
            if not residual:
                keys = [edge_key(h)]
                if h.prev is None and h.next is None:  # proven whole: so are the two edges the trades found leave
                    keys += [f"{h.symbol}:lead:{h.start_ns}", f"{h.symbol}:trail:{h.end_ns}"]
                for ek in keys:
                    if ek and ek not in self.cp["edges_done"]:
                        self.cp["edges_done"].append(ek)
            if residual:
                self.summary["unrecoverable_holes"] += 1
        if out:
            out.sort(key=lambda r: (r["cum_vol"], r["exch_ns"]))
            name = f"{job.symbol}_{hhmmss(job.start_ns)}_{job.id[:8]}"
            self._write(name, out)
            self.summary["recovered_trades"] += len(out)
            self.summary["recovered_qty"] += sum(r["qty"] for r in out)
        if residuals_all and self.g.minute_bars:
            self._bars(job, residuals_all)
        log.info("gap job done", extra={"symbol": job.symbol, "job": job.id, "holes": len(job.holes),
                                        "trades": len(out), "calls": paged.calls,
                                        "residual": len(residuals_all), "seconds": round(time.monotonic() - t0, 3)})
        self._save()

    def _record(self, h: Hole, job: Job, status: str, **more) -> None:
        self.cp["holes"][h.key] = {"status": status, "symbol": h.symbol, "start_ns": h.start_ns, "end_ns": h.end_ns,
                                   "missing_qty": h.missing_qty, "marker_ids": h.marker_ids, "cause": h.cause,
                                   "job": job.id, "at_ns": self.clock.now_ns(),
                                   **{k: v for k, v in more.items() if v is not None}}

    def _write(self, name: str, records: list[dict]) -> None:
        path = paths.recovered_file(self.root, self.provider, self.market, self.day, name)
        w = self.store.writer(path, "recovered")
        try:
            for r in records:
                w.append(r)
            w.sync()
        finally:
            self.store.release(w)

    def _bars(self, job: Job, residuals: list[dict]) -> None:
        """1-minute bars for the minutes whose ticks could not be recovered (context, not a substitute)."""
        minutes: dict[int, str] = {}
        for x in residuals:
            m0 = x["start_ns"] - x["start_ns"] % (60 * NS)
            for m in range(m0, x["end_ns"] + 1, 60 * NS):
                minutes.setdefault(m, x["key"])
        if not minutes:
            return
        try:
            bars = self.rest.minute_bars(job.symbol, min(minutes), max(minutes) + 59 * NS)
        except (ProviderError, NotImplementedError) as e:
            log.warning("minute bars not available", extra={"symbol": job.symbol, "error": str(e)[:200]})
            return
        notify.progress()  # bars fetched
        src = self._source_call("bar", "minute_bars")
        gid = job.holes[0].marker_ids[0] if job.holes[0].marker_ids else f"R-{self.provider}-{job.symbol}"
        have = self.cp.setdefault("bars_written", [])
        out = []
        for b in bars:
            k = f"{job.symbol}:{b['exch_ns']}"
            if b.get("exch_ns") in minutes and k not in have:
                rec = dict(b)
                rec["quality"] = "recovered"
                rec["track"] = "R"
                rec["provenance"] = {"source_call": src, "fetched_at_ns": b["recv_ns"], "gap_id": gid}
                out.append(rec)
        if out:
            self._write(f"{job.symbol}_{hhmmss(job.start_ns)}_{job.id[:8]}_bars", out)
            have.extend(f"{job.symbol}:{b['exch_ns']}" for b in out)
            self.summary["recovered_bars"] += len(out)
