"""The daily audit: reports/YYYYMMDD/quality.json (+ quality.html, observer.recover.report).

What it measures (docs/recovery.md has every definition):
- Track A coverage per sweep and for the day (snapshots recorded / universe), target 99.5 %;
- Track B recording rate per slot (held time not inside a gap marker / held time), target 97 %, and a
  per-minute timeline of it;
- completeness per symbol: recorded + recovered trade volume against the exchange's own cumulative
  volume over each holding (the last trade's cum_vol minus the volume before the first one), the
  day's cumulative volume as of the last trade, trade counts;
- every gap (live and offline markers) with its outcome and why; reconnects, disconnected minutes,
  time under load mitigation, alerts sent;
- the anomaly-day verdict by the design's rules (`anomaly_day`, read by retention) with reasons, and
  the "dataset complete" verdict with reasons;
- with a ground-truth directory (the simulator's log): recorded ÷ generated and merged ÷ generated,
  exactly, per symbol — and whether the audit's own numbers equal that comparison.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from pathlib import Path

from observer.core.clock import NS, Clock, yyyymmdd
from observer.core.settings import AnomalyConfig, AuditConfig, GapfillConfig, TrackAConfig, TradingWindow
from observer.providers.base import market_of
from observer.recover.gapfill import load_checkpoint, open_holes, source_of
from observer.recover.gaps import (
    DayData,
    Hole,
    Marker,
    clipped_length,
    merge_intervals,
    overlaps,
    track_a_slots,
    universe_symbols,
)
from observer.store import paths
from observer.store.markers import BOOK, SNAPSHOT, TRADES, hhmmss
from observer.store.reader import read_file


def _pct(a: float, b: float) -> float | None:
    """a / b in %, 4 decimals; a loss is never rounded up to 100 % (99.9999 is the most it shows)."""
    if not b:
        return None
    v = round(100.0 * a / b, 4)
    return 99.9999 if a < b and v >= 100.0 else v


def marker_status(m: Marker, holes: list[Hole], checkpoint: dict) -> tuple[str, str]:
    """(status, why) of one gap marker after recovery."""
    if m.channel == BOOK:
        return "unrecoverable", "order books cannot be fetched after the fact"
    if m.channel == SNAPSHOT:
        return "unrecoverable", "Track A snapshots are points in time; the broker keeps no history of them"
    cur = [h for h in holes if m.gap_id in h.marker_ids]
    if cur:
        st = [checkpoint["holes"].get(h.key, {}) for h in cur]
        for status in ("unrecoverable", "failed"):
            hit = [s for s in st if s.get("status") == status]
            if hit:
                return status, "; ".join(sorted({str(s.get("reason") or s.get("cause") or "") for s in hit}))
        return "pending", "not attempted yet (run observer-gap-filler)"
    done = [s for s in checkpoint["holes"].values() if m.gap_id in (s.get("marker_ids") or [])]
    if any(s.get("status") in ("recovered", "partial") for s in done):
        return "recovered", "trades backfilled into recovered/ (continuity proven)"
    if not m.recoverable:
        return "unrecoverable", m.cause
    return "no_loss", "the cumulative volume proves no trade was missed"


def _ground_truth(gt_dir: Path, symbols: set[str]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for t in read_file(Path(gt_dir, "trades.jsonl")):
        if t.get("symbol") in symbols:
            out[t["symbol"]].append(t)
    return out


def build_quality(root: Path, day: date, cfg: dict, *, provider: str | None = None, market: str | None = None,
                  clock: Clock | None = None, calendar=None, ground_truth: Path | None = None) -> dict:
    """provider: whose day (None: the configured `gapfill.provider`); market: its records' (None: the provider's)."""
    provider, market = source_of(cfg, provider, market)
    clock = clock or Clock()
    g = GapfillConfig.from_config(cfg)
    acfg = AuditConfig.from_config(cfg)
    an = AnomalyConfig.from_config(cfg)
    tracks = list(g.tracks)
    data = DayData(root, day, provider, market, no_frames_s=min(float(g.no_frames_s), float(an.silence_s)))
    cp = load_checkpoint(root, provider, day)
    holes, _unmarked = open_holes(data, cfg, cp)
    markers = data.markers() + list(_unmarked)
    holdings = data.holdings()
    rec_end = data.recording_end()
    q: dict = {"v": 1, "date": yyyymmdd(day), "provider": provider, "market": market,
               "generated_ns": clock.now_ns(), "tracks": tracks, "gapfill_runs": cp.get("runs", 0),
               "rest_calls": cp.get("calls", 0)}

    # -- Track A ---------------------------------------------------------------------------------
    ta: dict = {"target_pct": acfg.track_a_target_pct, "sweeps": []}
    if "A" in tracks and calendar is not None:
        interval = int(TrackAConfig.from_config(cfg).interval_minutes)
        win = TradingWindow.from_config(cfg, "track_a")
        uni = universe_symbols(root, day, market_of(provider).universe)
        sweeps = {e["sweep_ns"]: e for e in data.events if e.get("event") == "sweep"}
        now = clock.now_ns()
        ok_all = exp_all = 0
        for s in track_a_slots(calendar, day, win, interval):
            if s > now:
                break
            ev = sweeps.get(s)
            got = len(data.snapshots.get(s, ()))
            expected = len(uni) if uni is not None else (ev or {}).get("symbols", 0)
            if not expected and ev is None and not got:
                continue
            ok = got if got or ev is None else ev.get("ok", 0)
            cov = _pct(ok, expected)
            ta["sweeps"].append({"slot": hhmmss(s)[:4], "sweep_ns": s, "ok": ok, "expected": expected,
                                 "coverage_pct": cov, "missed": ev is None and not got,
                                 "degraded": bool((ev or {}).get("degraded"))})
            ok_all += ok
            exp_all += expected
        ta["day_coverage_pct"] = _pct(ok_all, exp_all)
        ta["sweeps_below_target"] = sum(1 for x in ta["sweeps"] if (x["coverage_pct"] or 0) < ta["target_pct"])
    q["track_a"] = ta

    # -- Track B ---------------------------------------------------------------------------------
    tb: dict = {"target_pct": acfg.track_b_target_pct, "slots": [], "timeline": []}
    gap_iv: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for m in markers:
        if m.track == "B":
            gap_iv[m.symbol].append((m.start_ns, m.end_ns))
    held_total = covered_total = 0
    for sym in sorted(holdings):
        for h in holdings[sym]:
            held = max(0, h.end_ns - h.start_ns)
            lost = clipped_length(gap_iv.get(sym, []) + gap_iv.get("*", []), h.start_ns, h.end_ns)
            rate = _pct(held - lost, held)
            tb["slots"].append({"symbol": sym, "start_ns": h.start_ns, "end_ns": h.end_ns, "held_s": held / NS,
                                "gap_s": lost / NS, "recording_rate_pct": rate, "books": data.books.get(sym, 0)})
            held_total += held
            covered_total += held - lost
    tb["recording_rate_pct"] = _pct(covered_total, held_total)
    tb["slots_below_target"] = sum(1 for s in tb["slots"] if (s["recording_rate_pct"] or 0) < tb["target_pct"])
    all_h = [(h.start_ns, h.end_ns, h.symbol) for hs in holdings.values() for h in hs]
    if all_h:
        t0 = min(a for a, _, _ in all_h)
        t1 = max(b for _, b, _ in all_h)
        m0 = t0 - t0 % (60 * NS)
        for m in range(m0, t1, 60 * NS):
            m1 = m + 60 * NS
            held = cov = 0
            for a, b, sym in all_h:
                x0, x1 = max(a, m), min(b, m1)
                if x1 <= x0:
                    continue
                held += x1 - x0
                cov += (x1 - x0) - clipped_length(gap_iv.get(sym, []) + gap_iv.get("*", []), x0, x1)
            if held:
                tb["timeline"].append({"minute": hhmmss(m)[:4], "t_ns": m, "rate_pct": _pct(cov, held),
                                       "frames": data.raw_minutes.get(data.minute_of(m), 0)})
    q["track_b"] = tb

    # -- completeness per symbol -------------------------------------------------------------------
    target = acfg.completeness_target_pct
    comp = []
    for sym in sorted(holdings):
        merged = data.merged_trades(sym)
        row = {"symbol": sym, "expected_qty": 0, "recorded_qty": 0, "recovered_qty": 0, "recorded_trades": 0,
               "recovered_trades": 0, "day_cum_vol": merged[-1].cum_vol if merged else None, "spans": []}
        for h in holdings[sym]:
            inside = [t for t in merged if h.start_ns - NS <= t.exch_ns <= h.end_ns + NS]
            if not inside:
                continue
            lo, hi = inside[0].before, inside[-1].cum_vol
            row["spans"].append({"from_cum": lo, "to_cum": hi, "start_ns": inside[0].exch_ns,
                                 "end_ns": inside[-1].exch_ns})
            row["expected_qty"] += hi - lo
            for t in inside:
                k = "recovered" if t.recovered else "recorded"
                row[f"{k}_qty"] += t.qty
                row[f"{k}_trades"] += 1
        open_ = [x for x in holes if x.symbol == sym]
        row["open_holes"] = len(open_)
        row["unknown_edges"] = sum(1 for x in open_ if x.missing_qty is None)
        row["missing_qty"] = row["expected_qty"] - row["recorded_qty"] - row["recovered_qty"]
        row["recorded_pct"] = _pct(row["recorded_qty"], row["expected_qty"])
        row["completeness_pct"] = _pct(row["recorded_qty"] + row["recovered_qty"], row["expected_qty"])
        row["day_share_pct"] = _pct(row["recorded_qty"] + row["recovered_qty"], row["day_cum_vol"] or 0)
        comp.append(row)
    q["completeness"] = comp
    exp = sum(r["expected_qty"] for r in comp)
    q["completeness_pct"] = _pct(sum(r["recorded_qty"] + r["recovered_qty"] for r in comp), exp)
    q["recorded_pct"] = _pct(sum(r["recorded_qty"] for r in comp), exp)

    # -- gaps ------------------------------------------------------------------------------------------
    gaps = []
    for m in sorted(markers, key=lambda m: (m.start_ns, m.symbol, m.channel)):
        status, why = marker_status(m, holes, cp)
        gaps.append({"gap_id": m.gap_id, "symbol": m.symbol, "channel": m.channel, "track": m.track,
                     "start_ns": m.start_ns, "end_ns": m.end_ns, "start": hhmmss(m.start_ns), "end": hhmmss(m.end_ns),
                     "seconds": round((m.end_ns - m.start_ns) / NS, 3), "cause": m.cause, "detected": m.detected,
                     "recoverable": m.recoverable, "missing_qty": m.missing_qty, "status": status, "why": why})
    by_status: dict[str, int] = defaultdict(int)
    for x in gaps:
        by_status[x["status"]] += 1
    q["gaps"] = {"total": len(gaps), "live": sum(1 for x in gaps if x["detected"] == "live"),
                 "offline": sum(1 for x in gaps if x["detected"] == "offline"), "by_status": dict(by_status),
                 "by_channel": {ch: sum(1 for x in gaps if x["channel"] == ch) for ch in (TRADES, BOOK, SNAPSHOT)},
                 "open_trade_holes": [{"symbol": h.symbol, "start": hhmmss(h.start_ns), "end": hhmmss(h.end_ns),
                                       "missing_qty": h.missing_qty,
                                       "status": cp["holes"].get(h.key, {}).get("status", "pending"),
                                       "why": cp["holes"].get(h.key, {}).get("reason") or h.cause} for h in holes],
                 "list": gaps}
    q["recovered"] = {"trades": sum(len(v) for v in data.recovered.values()),
                      "qty": sum(t.qty for v in data.recovered.values() for t in v),
                      "bars": sum(data.bars.values())}

    # -- connection, mitigation, alerts --------------------------------------------------------------------
    rec = [e for e in data.events if e.get("event") == "reconnect"]
    disc_s = sum(float(e.get("downtime_s") or 0) for e in rec)
    silences = sum(1 for e in rec if float(e.get("downtime_s") or 0) >= an.silence_s)
    covered = merge_intervals([(e["ts_ns"] - int(float(e.get("downtime_s") or 0) * NS), e["ts_ns"]) for e in rec])
    silences += sum(1 for a, b in data.raw_gaps if b - a >= an.silence_s * NS
                    and not any(overlaps(a, b, x, y) for x, y in covered))
    mit_s = 0.0
    level, since = 0, None
    for e in data.events:
        if e.get("event") == "mitigation":
            if level > 0 and since is not None:
                mit_s += (e["ts_ns"] - since) / NS
            level, since = int(e.get("level", 0)), e["ts_ns"]
    if level > 0 and since is not None:
        mit_s += max(0, rec_end - since) / NS
    alerts_sent = set()
    ap = paths.alerts_file(root, day)
    if ap.exists():
        for a in read_file(ap):
            if a.get("state") == "sent":
                alerts_sent.add(a.get("id"))
    q["connection"] = {"reconnects": len(rec), "disconnected_min": round(disc_s / 60, 3), "silences": silences,
                       "raw_frames": data.raw_frames, "mitigation_min": round(mit_s / 60, 3),
                       "alerts_sent": len(alerts_sent),
                       "recording_paused": sum(1 for e in data.events if e.get("event") == "recording"
                                               and e.get("state") == "paused")}

    # -- anomaly day ------------------------------------------------------------------------------------
    reasons = []
    if len(rec) >= an.reconnects:
        reasons.append(f"{len(rec)} WebSocket reconnects (>= {an.reconnects})")
    if disc_s >= an.disconnected_s:
        reasons.append(f"disconnected {disc_s / 60:.1f} min in total (>= {an.disconnected_s / 60:g} min)")
    if silences >= an.silences:
        reasons.append(f"{silences} silences of >= {an.silence_s:g} s (>= {an.silences})")
    run = 0
    for x in tb["timeline"]:
        run = run + 1 if (x["rate_pct"] or 0) < an.scalp_rate_pct else 0
        if run * 60 >= an.scalp_rate_s:
            reasons.append(f"scalp recording rate below {an.scalp_rate_pct:g}% for {an.scalp_rate_s / 60:g} min "
                           f"(until {x['minute']})")
            break
    reasons += _metric_reasons(root, day, an)
    for e in data.events:
        if e.get("anomaly_day") is True:
            r = f"{e.get('event')}: {e.get('reason') or e.get('state') or ''}".strip()
            if r not in reasons:
                reasons.append(r)
    q["anomaly_day"] = bool(reasons)
    q["anomaly_reasons"] = reasons

    # -- dataset complete ---------------------------------------------------------------------------------
    why = []
    for h in holes:
        st = cp["holes"].get(h.key, {})
        why.append(f"{h.symbol} trades {hhmmss(h.start_ns)}-{hhmmss(h.end_ns)}: "
                   f"{h.missing_qty if h.missing_qty is not None else 'unknown'} shares missing "
                   f"({st.get('status', 'pending')}: {st.get('reason') or h.cause})")
    nbook = [x for x in gaps if x["channel"] == BOOK]
    if nbook:
        per: dict[str, list] = defaultdict(list)
        for x in nbook:
            per[x["symbol"]].append((x["start_ns"], x["end_ns"]))
        secs = sum(clipped_length(v, 0, 2**62) for v in per.values()) / NS
        why.append(f"{len(nbook)} order-book gaps ({secs:.0f} s of symbol-time; order books cannot be recovered)")
    nsnap = [x for x in gaps if x["channel"] == SNAPSHOT]
    if nsnap:
        why.append(f"{len(nsnap)} Track A snapshots missing (unrecoverable)")
    if ta.get("day_coverage_pct") is not None and ta["day_coverage_pct"] < ta["target_pct"]:
        why.append(f"Track A coverage {ta['day_coverage_pct']:.2f}% < {ta['target_pct']}%")
    for r in comp:
        if r["completeness_pct"] is not None and r["completeness_pct"] < target:
            why.append(f"{r['symbol']}: trade volume {r['completeness_pct']}% complete (< {target}%, "
                       f"{r['missing_qty']} shares missing)")
    if data.issues:
        why.append(f"{len(data.issues)} unreadable lines in the tree (observer-verify)")
    q["dataset_complete"] = not why
    q["incomplete_reasons"] = why
    q["read_issues"] = data.issues[:50]
    q["duplicates_in_scalp"] = data.duplicates

    if ground_truth is not None:
        q["ground_truth"] = compare_truth(data, holdings, comp, Path(ground_truth))
    return q


def _metric_reasons(root: Path, day: date, an: AnomalyConfig) -> list[str]:
    p = paths.metrics_file(root, day)
    if not p.exists():
        return []
    out = []
    cpu_since = None
    fired_cpu = fired_disk = False
    for m in read_file(p):
        v = m.get("values") or {}
        ts = m.get("ts_ns", 0)
        cpu = v.get("cpu_pct")
        if cpu is None and isinstance(v.get("observer_cpu_usage_ratio"), (int, float)):
            cpu = v["observer_cpu_usage_ratio"] * 100  # lib/observer/telemetry/metrics.py names
        if isinstance(cpu, (int, float)):
            if cpu >= an.cpu_pct:
                cpu_since = cpu_since or ts
                if not fired_cpu and ts - cpu_since >= an.cpu_s * NS:
                    out.append(f"CPU >= {an.cpu_pct:g}% for {an.cpu_s / 60:g} min")
                    fired_cpu = True
            else:
                cpu_since = None
        disk = v.get("disk_pct")
        if disk is None and isinstance(v.get("observer_disk_used_ratio"), (int, float)):
            disk = v["observer_disk_used_ratio"] * 100
        if isinstance(disk, (int, float)) and disk > an.disk_pct and not fired_disk:
            out.append(f"disk {disk:.1f}% used (> {an.disk_pct:g}%)")
            fired_disk = True
    return out


def compare_truth(data: DayData, holdings, comp: list[dict], gt_dir: Path) -> dict:
    """Recorded ÷ generated and merged ÷ generated, exactly, over the spans the audit measured and every
    trade generated while the symbol was held (from its allocation: a trade lost before the first one
    recorded counts as lost, not as outside the span)."""
    truth = _ground_truth(gt_dir, set(holdings))
    rows = []
    equal = True
    for r in comp:
        sym = r["symbol"]
        gt = truth.get(sym, [])
        want = set()
        want_qty = 0  # over the audit's spans: what its continuity numbers must equal
        for t in gt:
            t_ns = data.midnight_ns + t["t_ms"] * 1_000_000
            in_span = any(s["from_cum"] < t["acml_vol"] <= s["to_cum"] for s in r["spans"])
            if in_span or any(h.start_ns <= t_ns <= h.end_ns for h in holdings[sym]):
                want.add((t["acml_vol"], t["price"], t["qty"]))
                want_qty += t["qty"] if in_span else 0
        held_gen = sum(1 for t in gt for h in holdings[sym]
                       if h.start_ns <= data.midnight_ns + t["t_ms"] * 1_000_000 <= h.end_ns)
        scalp = {(t.cum_vol, t.price, t.qty) for t in data.scalp.get(sym, ())}
        merged = {(t.cum_vol, t.price, t.qty) for t in data.merged_trades(sym)
                  if any(s["from_cum"] < t.cum_vol <= s["to_cum"] for s in r["spans"])}
        # generated while held but outside every span: lost at an edge, where no recorded trade brackets it
        edge_lost = len(want - merged - {k for k in want if any(s["from_cum"] < k[0] <= s["to_cum"]
                                                                for s in r["spans"])})
        row = {"symbol": sym, "generated_trades": len(want), "generated_qty": want_qty,
               "generated_while_held": held_gen,
               "recorded_trades": len(scalp & want), "merged_trades": len(merged & want),
               "merged_not_generated": len(merged - want),
               "recorded_pct": _pct(len(scalp & want), len(want)), "merged_pct": _pct(len(merged & want), len(want))}
        row["lost_at_edges"] = edge_lost
        # the audit equals the truth when its continuity numbers match over its spans and it called the
        # symbol incomplete exactly when trades are missing (an edge loss shows as an open edge hole)
        row["audit_equals_truth"] = (r["expected_qty"] == want_qty
                                     and r["recorded_trades"] + r["recovered_trades"] == len(merged)
                                     and (r["missing_qty"] == 0 and not r["unknown_edges"]) ==
                                     (len(merged & want) == len(want)))
        equal = equal and row["audit_equals_truth"]
        rows.append(row)
    gen = sum(x["generated_trades"] for x in rows)
    return {"dir": str(gt_dir), "symbols": rows, "generated_trades": gen,
            "recorded_pct": _pct(sum(x["recorded_trades"] for x in rows), gen),
            "merged_pct": _pct(sum(x["merged_trades"] for x in rows), gen),
            "audit_equals_truth": equal}


def write_quality(root: Path, day: date, q: dict) -> tuple[Path, Path]:
    from observer.recover.report import render_html
    from observer.store.state import write_bytes_atomic, write_json_atomic

    jp, hp = paths.quality_json_file(root, day), paths.quality_html_file(root, day)
    write_json_atomic(jp, q, indent=True)
    write_bytes_atomic(hp, render_html(q).encode())
    return jp, hp
