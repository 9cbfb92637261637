"""quality.html: the day's quality report as one self-contained page (inline CSS and SVG, no script, no
network): headline numbers, a coverage timeline per track, the per-symbol completeness table, a gap
timeline chart, the verdicts with their reasons."""

from __future__ import annotations

import math
from html import escape

from observer.core.clock import NS
from observer.store.markers import hhmmss

CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'Noto Sans KR',sans-serif;margin:24px;color:#1d2430;background:#f6f7f9}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px}
.sub{color:#5b6472;margin-bottom:16px}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:10px 14px;min-width:150px}
.card .n{font-size:22px;font-weight:600}.card .l{color:#5b6472;font-size:12px}
.ok{color:#17803d}.bad{color:#b42318}.warn{color:#b25e09}
.verdict{border-radius:8px;padding:10px 14px;margin:8px 0;border:1px solid}
.verdict.ok{background:#ecfdf3;border-color:#abefc6}.verdict.bad{background:#fef3f2;border-color:#fecdca}
table{border-collapse:collapse;background:#fff;border:1px solid #dde1e7}
th,td{padding:4px 8px;border-bottom:1px solid #eef0f3;text-align:right;font-variant-numeric:tabular-nums}
th{background:#f0f2f5;font-weight:600}td.l,th.l{text-align:left}
svg{background:#fff;border:1px solid #dde1e7;border-radius:6px}
.legend span{display:inline-block;margin-right:14px}.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:-1px}
ul{margin:4px 0 4px 18px;padding:0}
"""

COLORS = {"recovered": "#2e90fa", "no_loss": "#98a2b3", "unrecoverable": "#d92d20", "failed": "#f79009",
          "pending": "#fdb022"}


def _fmt(v, digits: int = 2, suffix: str = "") -> str:
    if v is None:
        return "–"
    if isinstance(v, float):  # truncated, not rounded: 99.9996 % must not read 100.000 %
        return f"{math.floor(v * 10 ** digits + 1e-6) / 10 ** digits:,.{digits}f}{suffix}"
    if isinstance(v, int):
        return f"{v:,}{suffix}"
    return escape(str(v))


def _cls(v, target) -> str:
    if v is None or target is None:
        return ""
    return "ok" if v >= target else "bad"


def _card(label: str, value: str, cls: str = "", title: str = "") -> str:
    return (f'<div class="card" title="{escape(title)}"><div class="n {cls}" data-k="{escape(label)}">{value}</div>'
            f'<div class="l">{escape(label)}</div></div>')


def _bars(points: list[tuple[str, float | None]], target: float, w: int = 1180, h: int = 120, label: str = "") -> str:
    if not points:
        return '<p class="sub">no data</p>'
    n = len(points)
    bw = max(1.0, (w - 50) / n)
    lo = min([target - 5] + [p for _, p in points if p is not None])
    lo = max(0.0, min(lo, 90.0))
    out = [f'<svg width="{w}" height="{h + 24}" viewBox="0 0 {w} {h + 24}" role="img" aria-label="{escape(label)}">']
    ty = h - (target - lo) / (100 - lo) * (h - 10)
    for i, (t, p) in enumerate(points):
        x = 40 + i * bw
        if p is None:
            continue
        bh = max(1.0, (p - lo) / (100 - lo) * (h - 10))
        col = "#17b26a" if p >= target else "#f04438"
        out.append(f'<rect x="{x:.1f}" y="{h - bh:.1f}" width="{max(bw - 1, 1):.1f}" height="{bh:.1f}" fill="{col}">'
                   f'<title>{escape(t)} {p:.2f}%</title></rect>')
    out.append(f'<line x1="40" x2="{w - 5}" y1="{ty:.1f}" y2="{ty:.1f}" stroke="#344054" stroke-dasharray="4 3"/>')
    out.append(f'<text x="2" y="{ty + 4:.1f}" font-size="10">{target:g}%</text>')
    out.append(f'<text x="2" y="{h:.1f}" font-size="10">{lo:.0f}%</text>')
    step = max(1, n // 12)
    for i in range(0, n, step):
        out.append(f'<text x="{40 + i * bw:.1f}" y="{h + 16}" font-size="10">{escape(points[i][0])}</text>')
    out.append("</svg>")
    return "".join(out)


def _gap_chart(q: dict, w: int = 1180) -> str:
    gaps = [g for g in q["gaps"]["list"] if g["track"] == "B"]
    slots = q["track_b"]["slots"]
    if not slots and not gaps:
        return '<p class="sub">no Track B holdings</p>'
    t0 = min([s["start_ns"] for s in slots] + [g["start_ns"] for g in gaps])
    t1 = max([s["end_ns"] for s in slots] + [g["end_ns"] for g in gaps])
    t1 = max(t1, t0 + 60 * NS)
    rows = sorted({s["symbol"] for s in slots} | {g["symbol"] for g in gaps})
    rh = 22
    left = 90
    h = 30 + rh * len(rows) * 2
    sx = (w - left - 10) / (t1 - t0)
    out = [f'<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="gap timeline">']
    for i in range(7):
        t = t0 + (t1 - t0) * i // 6
        x = left + (t - t0) * sx
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="18" y2="{h}" stroke="#eef0f3"/>'
                   f'<text x="{x - 20:.1f}" y="12" font-size="10">{hhmmss(t)[:2]}:{hhmmss(t)[2:4]}:{hhmmss(t)[4:]}</text>')
    for r, sym in enumerate(rows):
        for k, ch in enumerate(("trades", "book")):
            y = 22 + (2 * r + k) * rh
            out.append(f'<text x="4" y="{y + 14}" font-size="11">{escape(sym)} {ch}</text>')
            for s in slots:
                if s["symbol"] == sym:
                    x0 = left + (s["start_ns"] - t0) * sx
                    out.append(f'<rect x="{x0:.1f}" y="{y + 8}" width="{max(1, (s["end_ns"] - s["start_ns"]) * sx):.1f}" '
                               f'height="4" fill="#d0f0dc"/>')
            for g in gaps:
                if g["symbol"] not in (sym, "*") or g["channel"] != ch:
                    continue
                x0 = left + (g["start_ns"] - t0) * sx
                gw = max(3.0, (g["end_ns"] - g["start_ns"]) * sx)
                col = COLORS.get(g["status"], "#667085")
                out.append(f'<rect x="{x0:.1f}" y="{y + 2}" width="{gw:.1f}" height="16" rx="2" fill="{col}" '
                           f'fill-opacity="0.85"><title>{escape(g["gap_id"])} {g["start"]}-{g["end"]} {escape(g["cause"])}: '
                           f'{escape(g["status"])} - {escape(g["why"])}</title></rect>')
    out.append("</svg>")
    legend = "".join(f'<span><i style="background:{c}"></i>{escape(k)}</span>' for k, c in COLORS.items())
    return "".join(out) + f'<div class="legend sub"><span><i style="background:#d0f0dc"></i>held</span>{legend}</div>'


def render_html(q: dict) -> str:
    ta, tb = q["track_a"], q["track_b"]
    g = q["gaps"]
    st = g["by_status"]
    complete = q["dataset_complete"]
    parts = [f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Quality {q['date']}</title>"
             f"<meta name=\"viewport\" content=\"width=device-width\"><style>{CSS}</style></head><body>",
             f"<h1>Data quality — {q['date'][:4]}-{q['date'][4:6]}-{q['date'][6:]}</h1>",
             f"<div class=\"sub\">provider {escape(q['provider'])} · market {escape(q['market'])} · tracks "
             f"{', '.join(q['tracks'])} · gap-filler runs {q['gapfill_runs']} · REST calls {q['rest_calls']:,}</div>"]
    parts.append(f'<div id="verdict-complete" class="verdict {"ok" if complete else "bad"}"><b>Dataset '
                 f'{"complete" if complete else "NOT complete"}</b>')
    if not complete:
        parts.append("<ul>" + "".join(f"<li>{escape(r)}</li>" for r in q["incomplete_reasons"][:40]) + "</ul>")
    parts.append("</div>")
    anomaly = q["anomaly_day"]
    parts.append(f'<div id="verdict-anomaly" class="verdict {"bad" if anomaly else "ok"}"><b>'
                 f'{"Anomaly day (kept 7 days)" if anomaly else "Normal day"}</b>')
    if anomaly:
        parts.append("<ul>" + "".join(f"<li>{escape(r)}</li>" for r in q["anomaly_reasons"]) + "</ul>")
    parts.append("</div>")
    cards = [
        _card("trade completeness", _fmt(q["completeness_pct"], 3, "%"), _cls(q["completeness_pct"], 100.0),
              "recorded + recovered volume / the exchange's cumulative volume over the holdings"),
        _card("recorded live", _fmt(q["recorded_pct"], 3, "%"), "", "before recovery"),
        _card("Track B recording rate", _fmt(tb.get("recording_rate_pct"), 2, "%"),
              _cls(tb.get("recording_rate_pct"), tb["target_pct"]), f"target {tb['target_pct']}%"),
    ]
    if "A" in q["tracks"]:
        cards.append(_card("Track A coverage", _fmt(ta.get("day_coverage_pct"), 2, "%"),
                           _cls(ta.get("day_coverage_pct"), ta["target_pct"]), f"target {ta['target_pct']}%"))
    cards += [
        _card("gaps", _fmt(g["total"]), "", f"{g['live']} marked live, {g['offline']} found offline"),
        _card("recovered", _fmt(st.get("recovered", 0)), "ok" if st.get("recovered") else ""),
        _card("unrecoverable", _fmt(st.get("unrecoverable", 0) + st.get("failed", 0) + st.get("pending", 0)),
              "bad" if st.get("unrecoverable", 0) + st.get("failed", 0) + st.get("pending", 0) else "ok"),
        _card("no loss (proven)", _fmt(st.get("no_loss", 0))),
        _card("recovered trades", _fmt(q["recovered"]["trades"])),
        _card("reconnects", _fmt(q["connection"]["reconnects"])),
        _card("disconnected", _fmt(q["connection"]["disconnected_min"], 2, " min")),
        _card("mitigation", _fmt(q["connection"]["mitigation_min"], 1, " min")),
        _card("alerts sent", _fmt(q["connection"]["alerts_sent"])),
    ]
    gt = q.get("ground_truth")
    if gt:
        cards.append(_card("merged ÷ generated (truth)", _fmt(gt["merged_pct"], 3, "%"), _cls(gt["merged_pct"], 100.0)))
        cards.append(_card("recorded ÷ generated (truth)", _fmt(gt["recorded_pct"], 3, "%")))
    parts.append('<div class="cards">' + "".join(cards) + "</div>")

    if "A" in q["tracks"]:
        parts.append(f"<h2>Track A coverage per sweep (target {ta['target_pct']}%)</h2>")
        parts.append(_bars([(s["slot"], s["coverage_pct"]) for s in ta["sweeps"]], ta["target_pct"], label="Track A"))
    parts.append(f"<h2>Track B recording rate per minute (target {tb['target_pct']}%)</h2>")
    parts.append(_bars([(x["minute"], x["rate_pct"]) for x in tb["timeline"]], tb["target_pct"], label="Track B"))

    parts.append("<h2>Completeness per symbol</h2><table id=\"completeness\"><tr><th class=l>symbol</th>"
                 "<th>exchange volume (held)</th><th>recorded</th><th>recovered</th><th>missing</th>"
                 "<th>recorded %</th><th>complete %</th><th>trades rec.</th><th>trades recov.</th>"
                 "<th>day cum. volume</th><th>open holes</th></tr>")
    for r in q["completeness"]:
        parts.append(f"<tr><td class=l>{escape(r['symbol'])}</td><td>{_fmt(r['expected_qty'])}</td>"
                     f"<td>{_fmt(r['recorded_qty'])}</td><td>{_fmt(r['recovered_qty'])}</td>"
                     f"<td class=\"{'bad' if r['missing_qty'] else ''}\">{_fmt(r['missing_qty'])}</td>"
                     f"<td>{_fmt(r['recorded_pct'], 3)}</td>"
                     f"<td class=\"{_cls(r['completeness_pct'], 100.0)}\">{_fmt(r['completeness_pct'], 3)}</td>"
                     f"<td>{_fmt(r['recorded_trades'])}</td><td>{_fmt(r['recovered_trades'])}</td>"
                     f"<td>{_fmt(r['day_cum_vol'])}</td><td>{_fmt(r['open_holes'])}</td></tr>")
    parts.append("</table>")

    parts.append("<h2>Track B slots</h2><table><tr><th class=l>symbol</th><th>from</th><th>to</th><th>held s</th>"
                 "<th>in gaps s</th><th>recording rate %</th><th>book samples</th></tr>")
    for s in tb["slots"]:
        parts.append(f"<tr><td class=l>{escape(s['symbol'])}</td><td>{hhmmss(s['start_ns'])}</td>"
                     f"<td>{hhmmss(s['end_ns'])}</td><td>{_fmt(s['held_s'], 0)}</td><td>{_fmt(s['gap_s'], 1)}</td>"
                     f"<td class=\"{_cls(s['recording_rate_pct'], tb['target_pct'])}\">"
                     f"{_fmt(s['recording_rate_pct'], 2)}</td><td>{_fmt(s['books'])}</td></tr>")
    parts.append("</table>")

    parts.append("<h2>Gap timeline</h2>" + _gap_chart(q))
    parts.append("<h2>Gaps</h2><table id=\"gaps\"><tr><th class=l>symbol</th><th class=l>channel</th><th>from</th>"
                 "<th>to</th><th>s</th><th class=l>cause</th><th class=l>found</th><th>missing qty</th>"
                 "<th class=l>outcome</th><th class=l>why</th></tr>")
    for x in g["list"][:500]:
        col = COLORS.get(x["status"], "")
        parts.append(f"<tr><td class=l>{escape(x['symbol'])}</td><td class=l>{escape(x['channel'])}</td>"
                     f"<td>{x['start']}</td><td>{x['end']}</td><td>{_fmt(x['seconds'], 1)}</td>"
                     f"<td class=l>{escape(x['cause'])}</td><td class=l>{escape(x['detected'])}</td>"
                     f"<td>{_fmt(x['missing_qty'])}</td><td class=l style=\"color:{col}\"><b>{escape(x['status'])}"
                     f"</b></td><td class=l>{escape(x['why'])}</td></tr>")
    if len(g["list"]) > 500:
        parts.append(f"<tr><td class=l colspan=10>… {len(g['list']) - 500} more in quality.json</td></tr>")
    parts.append("</table>")
    if gt:
        parts.append("<h2>Against the simulator's ground truth</h2><table id=\"truth\"><tr><th class=l>symbol</th>"
                     "<th>generated</th><th>recorded</th><th>merged</th><th>merged, not generated</th>"
                     "<th>recorded %</th><th>merged %</th><th class=l>audit = truth</th></tr>")
        for r in gt["symbols"]:
            parts.append(f"<tr><td class=l>{escape(r['symbol'])}</td><td>{_fmt(r['generated_trades'])}</td>"
                         f"<td>{_fmt(r['recorded_trades'])}</td><td>{_fmt(r['merged_trades'])}</td>"
                         f"<td>{_fmt(r['merged_not_generated'])}</td><td>{_fmt(r['recorded_pct'], 3)}</td>"
                         f"<td>{_fmt(r['merged_pct'], 3)}</td><td class=l>{'yes' if r['audit_equals_truth'] else 'NO'}</td></tr>")
        parts.append("</table>")
    parts.append(f"<p class=sub>generated {q['generated_ns']} (UTC ns) by observer-audit · quality.json holds every "
                 "number shown here</p></body></html>")
    return "".join(parts)
