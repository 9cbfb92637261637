"""Gap detection, paging and the merged view on small synthetic trees (no simulator)."""

from __future__ import annotations

from datetime import date

import orjson

from observer.core.clock import NS, kst_ns
from observer.recover.gapfill import chain, page_back, plan_jobs
from observer.recover.gaps import (
    ContinuityWatch,
    DayData,
    Holding,
    Marker,
    Trade,
    detect_track_a,
    detect_track_b,
    trade_holes,
    uncovered,
)
from observer.store.replay import Replay, merged_trades
from observer.store.store import Store

DAY = date(2026, 3, 16)
T0 = kst_ns(DAY, "100000")


def tr(sym, cum, qty, sec, price=1000, quality="normal", **more):
    r = {"v": 1, "kind": "trade", "provider": "kis", "market": "krx", "symbol": sym, "exch_ns": T0 + sec * NS,
         "recv_ns": T0 + sec * NS + 1000, "quality": quality, "price": price, "qty": qty, "cum_vol": cum,
         "side": "buy"}
    r.update(more)
    return r


def seq(sym, n, start_cum=1000, sec0=0, per_sec=1):
    out, cum = [], start_cum
    for i in range(n):
        cum += 10
        out.append(tr(sym, cum, 10, sec0 + i // per_sec))
    return out


def write_tree(root, scalp, events=(), recovered=()):
    store = Store(root, program="test", provider="kis")
    part = store.partition("scalp", "kis", "krx")
    for r in scalp:
        part.append(r, r["recv_ns"])
    part.close()
    ev = store.events("kis")
    for kind, fields in events:
        store.clock = type("C", (), {"now_ns": staticmethod(lambda f=fields: f.pop("_ts", T0))})()
        ev.emit(kind, "INFO", **fields)
    if recovered:
        from observer.store import paths

        w = store.writer(paths.recovered_file(root, "kis", "krx", DAY, "x"), "recovered")
        for r in recovered:
            w.append(r)
        store.release(w)
    store.close()


def test_continuity_finds_silent_loss_and_proves_quiet_disconnects(tmp_path):
    trades = [Trade(r["cum_vol"], r["exch_ns"], r["price"], r["qty"]) for r in seq("A", 50)]
    lost = trades[:20] + trades[25:]  # five prints lost inside a connected stream
    h = Holding("A", T0 - 5 * NS, T0 + 60 * NS)
    holes = trade_holes(lost, h, [], silence_s=60)
    assert [(x.lo, x.hi, x.missing_qty, x.cause) for x in holes] == [(trades[19].cum_vol, trades[24].cum_vol, 50,
                                                                      "cum_vol_jump")]
    # a disconnect during which nothing traded: no hole, the cumulative volume proves it
    m = Marker("g1", "A", "trades", "B", T0 + 30 * NS, T0 + 31 * NS, "ws_eof", True)
    assert trade_holes(trades, h, [m], 60) == []
    # a live marker over the edge: the trades after the last recorded one are suspect until proven
    m2 = Marker("g2", "A", "trades", "B", T0 + 55 * NS, T0 + 60 * NS, "ws_eof", True)
    holes = trade_holes(trades, h, [m2], 60)
    assert len(holes) == 1 and holes[0].next is None and holes[0].lo == trades[-1].cum_vol
    assert holes[0].marker_ids == ["g2"]
    w = ContinuityWatch()
    assert [w.feed("A", t.cum_vol, t.qty, t.exch_ns) for t in lost[:21]][-1].missing_qty == 50


def test_offline_markers_only_where_nobody_marked(tmp_path):
    rows = seq("A", 40)
    del rows[10:15]
    ev = [("slot", {"action": "allocate", "slot": 0, "symbol": "A", "_ts": T0 - 2 * NS}),
          ("gap_marker", {"market": "krx", "symbol": "A", "start_ns": T0 + 9 * NS + 500, "end_ns": T0 + 12 * NS,
                          "track": "B", "cause": "ws_eof", "recoverable": True, "gap_id": "live-1",
                          "channel": "trades", "_ts": T0 + 13 * NS})]
    write_tree(tmp_path, rows, ev)
    d = DayData(tmp_path, DAY, "kis", "krx")
    holes, new = detect_track_b(d)
    assert len(holes) == 1 and holes[0].missing_qty == 50
    # the live marker covers only part of the loss (it starts when the loss was noticed): the parts
    # before and after it are marked offline, the live interval is not marked twice
    assert [(m.start_ns, m.end_ns, m.detected) for m in new] == [(T0 + 9 * NS, T0 + 9 * NS + 500, "offline"),
                                                                 (T0 + 12 * NS, T0 + 15 * NS, "offline")]
    assert holes[0].marker_ids == ["live-1"] + [m.gap_id for m in new]
    # once written, detection finds the same hole and marks nothing new
    from observer.core.clock import ManualClock
    from observer.recover.gapfill import GapFiller

    clock = ManualClock(kst_ns(DAY, "154000"))
    store = Store(tmp_path, program="observer-gap-filler", provider="kis", clock=clock)
    cfg = {"gapfill": {"tracks": ["B"]}}
    s1 = GapFiller(store=store, rest=None, cfg=cfg, clock=clock, day=DAY, progress=False).run()
    s2 = GapFiller(store=store, rest=None, cfg=cfg, clock=clock, day=DAY, progress=False).run()
    store.close()
    assert s1["markers_emitted"] == 2 and s2["markers_emitted"] == 0
    assert s1["failed_jobs"] == s2["failed_jobs"] == 1  # no REST client: retried by every run, never given up
    assert uncovered(0, 10, [(0, 10)]) == [] and uncovered(0, 10, [(3, 4)]) == [(0, 3), (4, 10)]


def test_missed_sweeps_and_missing_symbols(tmp_path):
    s0, step = T0, 600 * NS
    ev = [("sweep", {"slot": "10:00", "sweep_ns": s0, "symbols": 3, "ok": 2, "coverage_pct": 66.7, "duration_s": 1.0,
                     "degraded": False}),
          ("gap_marker", {"market": "krx", "symbol": "B", "start_ns": s0, "end_ns": s0 + step, "track": "A",
                          "cause": "ApiError", "recoverable": False, "gap_id": "A-kis-B"})]
    write_tree(tmp_path, [], ev)
    store = Store(tmp_path, program="t", provider="kis")
    part = store.partition("swing", "kis", "krx")
    part.append({"v": 1, "kind": "snapshot", "provider": "kis", "market": "krx", "symbol": "A", "exch_ns": None,
                 "recv_ns": s0 + 1, "quality": "normal", "price": 1, "sweep_ns": s0}, s0 + 1)
    part.close()
    store.close()
    d = DayData(tmp_path, DAY, "kis", "krx")
    new = detect_track_a(d, [s0, s0 + step, s0 + 2 * step], 10, s0 + 2 * step, ["A", "B", "C"])
    got = sorted((m.symbol, m.start_ns, m.cause) for m in new)
    # C missing from the 10:00 sweep (B was marked live); 10:10 never happened; 10:20 not over yet
    assert got == [("*", s0 + step, "sweep_missed"), ("C", s0, "missing_from_sweep")]


class FakeRest:
    """trades_by_time over a list of trades, KIS-style: the newest `rows` at or before the second."""

    page_rows = 30

    def __init__(self, trades):
        self.trades = sorted(trades, key=lambda r: r["cum_vol"])
        self.calls = 0

    def trades_by_time(self, symbol, until_ns=None):
        self.calls += 1
        upto = until_ns - until_ns % NS + NS - 1
        rows = [dict(r, quality="recovered", track="R") for r in self.trades if r["exch_ns"] <= upto]
        return list(reversed(rows[-30:]))


def test_pager_stops_at_the_bracket_and_reports_more_than_a_page_in_one_second():
    rows = seq("A", 200, per_sec=3)
    rest = FakeRest(rows)
    p, q = rows[39], rows[160]
    res = page_back(rest, "A", q["exch_ns"], lo=p["cum_vol"], start_ns=p["exch_ns"], page_rows=30, max_calls=100)
    got = sorted(r["cum_vol"] for r in res.records if p["cum_vol"] < r["cum_vol"] < q["cum_vol"])
    assert got == [r["cum_vol"] for r in rows[40:160]] and res.complete
    assert res.calls <= 6  # 121 rows needed: 5 pages of 30 (+ the overlap of one second per page)
    # 40 trades in one second: the older ones cannot be reached by time; the residual says why
    burst = seq("B", 10, sec0=0) + [tr("B", 1100 + 10 * i, 10, 12) for i in range(1, 41)] + \
        [tr("B", 1500 + 10 * i, 10, 15) for i in range(1, 5)]
    rest = FakeRest(burst)
    lo_t, hi_t = burst[9], burst[-1]
    res = page_back(rest, "B", hi_t["exch_ns"], lo=lo_t["cum_vol"], start_ns=lo_t["exch_ns"], page_rows=30,
                    max_calls=50)
    from observer.recover.gaps import Hole

    hole = Hole("B", lo_t["exch_ns"], hi_t["exch_ns"], Trade(lo_t["cum_vol"], lo_t["exch_ns"], 1000, 10),
                Trade(hi_t["cum_vol"], hi_t["exch_ns"], 1000, 10), "cum_vol_jump")
    got = sorted(Trade(r["cum_vol"], r["exch_ns"], r["price"], r["qty"]) for r in res.records if hole.contains(
        Trade(r["cum_vol"], r["exch_ns"], r["price"], r["qty"])))
    residual = chain(hole, got, res.stepped)
    assert [(x["lo"], x["hi"], x["cause"]) for x in residual] == [(1100, 1200, "more_trades_in_one_second_than_one_page")]


def test_plan_merges_neighbouring_holes():
    trades = [Trade(r["cum_vol"], r["exch_ns"], r["price"], r["qty"]) for r in seq("A", 100)]
    kept = trades[:10] + trades[12:20] + trades[22:80] + trades[82:]
    holes = trade_holes(kept, Holding("A", T0, T0 + 100 * NS), [], 60)
    assert len(holes) == 3
    jobs = plan_jobs(holes, merge_rows=30)
    assert [len(j.holes) for j in jobs] == [2, 1]  # 8 prints between the first two; 58 before the third


def test_merged_view_weaves_by_cumulative_volume_and_drops_duplicates(tmp_path):
    rows = seq("A", 30, per_sec=3)
    missing = rows[10:14]
    scalp = rows[:10] + rows[14:] + [rows[20]]  # the stream also delivered one print twice
    rec = [dict(r, quality="recovered", track="R", recv_ns=T0 + 3600 * NS,
                provenance={"source_call": "FHPST01060000", "fetched_at_ns": T0 + 3600 * NS, "gap_id": "g"})
           for r in missing + [rows[9]]]  # and one recovered copy of a print we already have
    write_tree(tmp_path, scalp, [], rec)
    out = list(merged_trades(tmp_path, DAY))
    assert [r["cum_vol"] for r in out] == [r["cum_vol"] for r in rows]
    assert out[9]["quality"] == "normal"  # the real-time record wins
    rp = Replay(tmp_path, DAY, kinds=("scalp", "recovered"))
    assert len(list(rp)) == 30 and rp.duplicates == 2 and rp.recovered == 4
    # without recovered/, the plain replay is unchanged (duplicates kept as recorded)
    assert len(list(Replay(tmp_path, DAY, kinds=("scalp",)))) == 27
    raw = orjson.dumps(out[0])
    assert b"provenance" not in raw
