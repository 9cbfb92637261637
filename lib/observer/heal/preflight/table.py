"""How a preflight report is shown: the table on the terminal, the JSON report, the one-line verdict on
stderr, the alert's text."""

from __future__ import annotations

import json
import textwrap

from observer.heal.preflight.runner import Report


def format_table(rep: Report, width: int = 0) -> str:
    width = width or 160
    rows = [("check", "verdict", "reason", "fix")] + [(c.name, c.verdict.upper() if c.verdict != "ok" else "ok",
                                                       c.reason, c.fix) for c in rep.checks]
    w0 = max(len(r[0]) for r in rows)
    w1 = 7
    rest = max(40, width - w0 - w1 - 6)
    wr = max(30, int(rest * 0.62))
    lines = []
    for i, (n, v, r, f) in enumerate(rows):
        rl = _wrap(r, wr)
        fl = _wrap(f, max(20, rest - wr - 3))
        for j in range(max(len(rl), len(fl))):
            lines.append(f"{n if j == 0 else '':<{w0}} | {v if j == 0 else '':<{w1}} | "
                         f"{rl[j] if j < len(rl) else '':<{wr}} | {fl[j] if j < len(fl) else ''}".rstrip())
        if i == 0:
            lines.append("-" * min(width, w0 + w1 + wr + 30))
    c = rep.counts()
    if rep.skipped_day:
        lines.append(f"\n{rep.day}: not a trading day ({rep.skipped_day}): nothing else checked; exit {rep.exit_code}")
    else:
        lines.append(f"\npreflight {rep.day}: {rep.verdict.upper()} — {c['ok']} ok, {c['warn']} warn, {c['fail']} fail"
                     f"{', ' + str(c['skip']) + ' skipped' if c['skip'] else ''} ({rep.duration_s:.1f} s); "
                     f"exit {rep.exit_code}")
    return "\n".join(lines)


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width, break_long_words=True, break_on_hyphens=False) or [""]


def report_json(rep: Report) -> str:
    return json.dumps({"date": rep.day.strftime("%Y%m%d"), "verdict": rep.verdict, "skipped_day": rep.skipped_day,
                       "checks": [c.as_dict() for c in rep.checks]}, indent=1, ensure_ascii=False)


def fail_line(program: str, rep: Report) -> str | None:
    """One line for stderr naming every failed check (the table is on stdout), or None."""
    if rep.verdict != "fail" or rep.skipped_day:
        return None
    return f"{program}: FAIL: " + "; ".join(f"{c.name}: {' '.join(c.reason.split())[:200]}" for c in rep.failed())


def summary_text(rep: Report, host: str) -> str:
    bad = rep.failed() or rep.warned()
    head = (f"preflight {rep.day} on {host}: {rep.verdict.upper()} "
            f"({len(rep.failed())} fail, {len(rep.warned())} warn)")
    return head + "".join(f"\n- {c.name}: {c.reason}" + (f" → {c.fix}" if c.fix else "") for c in bad[:12])
