"""What Track B should have recorded while it was not running, marked so the gap-filler recovers it.

A streamer that never records from its window start (a crash loop at import, refused connects, a wrong
config) writes no gap marker itself: markers otherwise come only from symbols it held. The watchdog
knows the schedule, so it does it (docs/watchdog.md "Track B not recording from its window start"):

- the **expected symbols** are `track_b.expected_symbols` when configured, else the symbols the
  previous trading day's Track B held longest (its slot events), at most the slot capacity;
- from the window start until the first `slot` allocation of the day (Track B is recording and has
  taken over the symbols; its own markers cover what follows), or until the window end when it never
  started, each expected symbol gets a `gap_marker` per channel, cause `collector_down` (trades
  recoverable, books not);
- a start within `watchdog.expected_late_s` of the window start is on time (nothing is marked);
- idempotent: one marker per symbol and channel and day (gap ids derive from the window start; the
  events log is checked before writing, so a restarted watchdog never writes one twice).

The gap-filler counts a `collector_down` interval as a holding (observer.recover.gaps), so the
expected symbols' trades from the window start are backfilled like any other hole.
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import date, datetime

import orjson

from observer.collect.slots import slot_capacity
from observer.collect.triggers import SYMBOL_RE
from observer.core.clock import NS, yyyymmdd
from observer.core.logging import get_logger
from observer.core.settings import TrackBConfig, TradingWindow
from observer.providers.base import provider_class
from observer.store import paths
from observer.store.markers import COLLECTOR_DOWN, TRADES, hhmmss

log = get_logger(__name__)
_TS = re.compile(rb'"ts_ns":(\d+)')


def previous_day_slots(root, provider: str, day: date, limit: int) -> list[str]:
    """The symbols Track B held longest on `day` (slot allocate -> release, or its last event)."""
    p = paths.events_file(root, provider, day)
    held: dict[str, int] = defaultdict(int)
    open_: dict[str, int] = {}
    last = 0
    try:
        f = open(p, "rb")
    except OSError:
        return []
    with f:
        for line in f:
            if b'"slot"' not in line:
                m = _TS.search(line)  # open holdings last until the day's last event
                if m:
                    last = max(last, int(m.group(1)))
                continue
            try:
                e = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            sym, ts = e.get("symbol"), e.get("ts_ns")
            if e.get("event") != "slot" or not isinstance(sym, str) or not isinstance(ts, int):
                continue
            if not SYMBOL_RE.match(sym):  # read from a file: it later names a recovered file
                continue
            last = max(last, ts)
            if e.get("action") == "allocate":
                open_.setdefault(sym, ts)
            elif e.get("action") == "release" and sym in open_:
                held[sym] += ts - open_.pop(sym)
    for sym, a in open_.items():
        held[sym] += max(0, last - a)
    return [s for s, _ in sorted(held.items(), key=lambda x: (-x[1], x[0]))][:limit]


def expected_symbols(cfg: dict, root, provider: str, day: date, calendar) -> tuple[list[str], str]:
    """(symbols, where they come from): the configured core set, else the previous trading day's slots."""
    core = [s for s in TrackBConfig.from_config(cfg).expected_symbols if isinstance(s, str)]
    if core:
        return list(dict.fromkeys(core)), "track_b.expected_symbols"
    prev = calendar.previous_trading_day(day)
    try:
        cap = slot_capacity(cfg)
    except ValueError:
        cap = 20
    syms = previous_day_slots(root, provider, prev, cap)
    return syms, f"slots held on {yyyymmdd(prev)}"


class ExpectedCoverage:
    """One watchdog step: marks the expected symbols of every Track B provider while it is not recording."""

    def __init__(self, wd):
        self.wd = wd
        self._scan: dict[str, dict] = {}  # provider -> {path, offset, first_alloc, gap_ids}

    def _events_since(self, provider: str, day: date, window_start_ns: int) -> dict:
        """Incremental read of the day's events: the first slot allocation at/after the window start
        and the collector_down gap ids already written."""
        path = paths.events_file(self.wd.root, provider, day)
        sc = self._scan.get(provider)
        if sc is None or sc["path"] != path:
            sc = self._scan[provider] = {"path": path, "offset": 0, "first_alloc": None, "gap_ids": set()}
        try:
            with open(path, "rb") as f:
                f.seek(sc["offset"])
                chunk = f.read()
        except OSError:
            return sc
        end = chunk.rfind(b"\n") + 1
        sc["offset"] += end
        for line in chunk[:end].splitlines():
            if b'"slot"' not in line and COLLECTOR_DOWN.encode() not in line:
                continue
            try:
                e = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if e.get("event") == "slot" and e.get("action") == "allocate":
                ts = e.get("ts_ns")
                if isinstance(ts, int) and ts >= window_start_ns and sc["first_alloc"] is None:
                    sc["first_alloc"] = ts
            elif e.get("event") == "gap_marker" and e.get("cause") == COLLECTOR_DOWN:
                sc["gap_ids"].add(e.get("gap_id"))
        return sc

    def check(self, now_kst: datetime, trading: bool) -> list:
        from observer.heal.watchdog import Finding

        try:
            return self._check(now_kst, trading)
        except Exception as e:  # never stops the watchdog's pass
            log.exception("expected-symbols check failed")
            return [self.wd._say(Finding("note", "expected symbols", f"{type(e).__name__}: {e}", False))]

    def _check(self, now_kst: datetime, trading: bool) -> list:
        from observer.heal.watchdog import Finding

        wd = self.wd
        out: list = []
        if not trading:
            return out
        day = now_kst.date()
        dstr = yyyymmdd(day)
        start, end = TradingWindow.from_config(wd.cfg, "track_b").span(wd.calendar, day)
        if now_kst < start:
            return out
        w_ns, e_ns = int(start.timestamp()) * NS, int(end.timestamp()) * NS
        late_ns = int(float(wd.w.expected_late_s) * NS)
        channels = list(TrackBConfig.from_config(wd.cfg).channels)
        states = wd.state.setdefault("expected", {})
        for p in wd.w.providers:
            st = states.get(p)
            if not st or st.get("day") != dstr:
                st = states[p] = {"day": dstr}
            if st.get("done"):
                continue
            sc = self._events_since(p, day, w_ns)
            began = sc["first_alloc"]
            stop_ns = began if began is not None else (e_ns if now_kst >= end else None)
            if stop_ns is None:
                if wd.clock.now_ns() - w_ns < late_ns or st.get("open_reported"):
                    continue
                syms, src = expected_symbols(wd.cfg, wd.root, p, day, wd.calendar)
                if not wd.dry_run:
                    st["open_reported"] = True
                if not syms:
                    log.warning("Track B not recording since its window start and no symbols are expected "
                                "(configure track_b.expected_symbols)", extra={"provider": p})
                    continue
                text = (f"Track B ({p}) not recording since the window start {hhmmss(w_ns)}: {len(syms)} expected "
                        f"symbols ({src}) will be marked collector_down until it records")
                out.append(wd._say(Finding("note", f"track-b@{p}", text, not wd.dry_run, {"symbols": syms})))
                continue
            if stop_ns - w_ns < late_ns:
                if not wd.dry_run:
                    st["done"] = True  # on time
                continue
            syms, src = expected_symbols(wd.cfg, wd.root, p, day, wd.calendar)
            if not syms:
                log.warning("Track B started late but no symbols are expected: nothing to mark (configure "
                            "track_b.expected_symbols)", extra={"provider": p, "late_s": (stop_ns - w_ns) / NS})
                if not wd.dry_run:
                    st["done"] = True
                continue
            written = 0
            for sym in syms:
                for ch in channels:
                    gid = f"W-{p}-{sym}-{ch}-{COLLECTOR_DOWN}-{w_ns}"
                    if gid in sc["gap_ids"]:
                        continue
                    wd._event(p, "gap_marker", "WARNING", market=provider_class(p).market, symbol=sym, start_ns=w_ns, end_ns=stop_ns,
                              track="B", cause=COLLECTOR_DOWN, recoverable=ch == TRADES, channel=ch, gap_id=gid,
                              detected="live", note=f"expected symbol ({src}); Track B not recording")
                    if not wd.dry_run:
                        sc["gap_ids"].add(gid)
                    written += 1
            if not wd.dry_run:
                st["done"] = True
                st["marked"] = [w_ns, stop_ns]
            if not written:  # already in the events log (this watchdog's state was lost)
                continue
            why = "until its first slot allocation" if began is not None else "to the window end (it never recorded)"
            text = (f"Track B ({p}) did not record {hhmmss(w_ns)}-{hhmmss(stop_ns)} ({(stop_ns - w_ns) / NS / 60:.1f} "
                    f"min, {why}): {written} collector_down markers for {len(syms)} expected symbols ({src})")
            out.append(wd._say(Finding("gap", f"track-b@{p}", text, not wd.dry_run,
                                       {"symbols": syms, "start_ns": w_ns, "end_ns": stop_ns})))
        return out
