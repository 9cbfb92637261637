"""The daily summary: the day's alerts (by key, severity and outcome), preflight warnings and WARNING+
events, counted from the tree and sent once as an INFO alert `daily_summary:YYYYMMDD` through the outbox.
The watchdog calls send_daily_summary every pass once daily_summary_due returns a day (idempotent)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import date, timedelta
from pathlib import Path

from observer.core.clock import Clock, yyyymmdd
from observer.core.redact import redact
from observer.store import paths
from observer.telemetry.alerts.outbox import (
    EXPIRED,
    NOT_ROUTED,
    RANK,
    SEVERITIES,
    TEXT_MAX_CHARS,
    THROTTLED,
    Alerter,
    alerts_config,
    as_date,
    host_of,
    key_name,
)
from observer.telemetry.alerts.table import KEY_DAILY_SUMMARY


def _day_lines(root: Path, day: date) -> list[dict]:
    p = paths.alerts_file(root, day)
    if not p.exists():
        return []
    from observer.store.reader import read_file

    return [r for r in read_file(p) if r.get("kind") == "alert"]


def summarize_day(root, day, cfg: Mapping | None = None) -> dict:
    """Counts of the day's alerts by key and severity, their outcome, preflight warnings and the day's
    WARNING+ events; plus the text of the summary message. Reads only the tree."""
    root = Path(root)
    day = as_date(day)
    before = {r["id"] for r in _day_lines(root, day - timedelta(days=1))}
    first: dict[str, dict] = {}
    latest: dict[str, dict] = {}
    for d in (day, day + timedelta(days=1)):
        for r in _day_lines(root, d):
            if r["id"] in before or key_name(r.get("key", "")) == KEY_DAILY_SUMMARY:
                continue
            if d == day and r["id"] not in first:
                first[r["id"]] = r
            if r["id"] in first:
                latest[r["id"]] = r
    by_sev: Counter[str] = Counter()
    by_key: dict[tuple[str, str], Counter[str]] = {}
    outcome: Counter[str] = Counter()
    for i, r in first.items():
        if i.endswith("-sum"):  # a throttle summary stands for alerts already counted
            c = by_key.setdefault((r["key"], r["severity"]), Counter())
            c["summaries"] += 1
            continue
        end = latest[i]
        err = end.get("error", "")
        if end["state"] == "sent":
            o = "sent"
        elif end["state"] == "suppressed" and err.startswith(THROTTLED):
            o = "throttled"
        elif end["state"] == "suppressed" and err.startswith(NOT_ROUTED):
            o = "not_routed"
        elif end["state"] == "suppressed" and err.startswith(EXPIRED):
            o = "expired"
        else:
            o = "undelivered"
        by_sev[r["severity"]] += 1
        outcome[o] += 1
        c = by_key.setdefault((r["key"], r["severity"]), Counter())
        c["n"] += 1
        c[o] += 1
    preflight: list[str] = []
    events: Counter[str] = Counter()
    from observer.store.reader import day_files, read_file

    for _kind, p in day_files(root, day, kinds=("events",)):
        for ev in read_file(p):
            if ev.get("event") == "preflight":
                for chk in ev.get("checks") or []:
                    if isinstance(chk, dict) and chk.get("verdict") in ("warn", "fail"):
                        line = f"{chk.get('verdict')}: {chk.get('name', '?')}: {chk.get('reason', '')}".rstrip(": ")
                        if line not in preflight:
                            preflight.append(line)
            if RANK.get(ev.get("severity"), 0) >= RANK["WARNING"]:
                events[ev.get("event", "?")] += 1
    host = host_of(cfg)
    lines = [f"\U0001F4CB Observer daily summary {day.isoformat()} ({host})"]
    total = sum(by_sev.values())
    lines.append(f"Alerts: {total}" + (" (" + ", ".join(f"{s} {by_sev[s]}" for s in reversed(SEVERITIES)
                                                         if by_sev[s]) + ")" if total else ""))
    if total:
        lines.append("  " + ", ".join(f"{k.replace('_', ' ')} {outcome[k]}" for k in
                                      ("sent", "throttled", "not_routed", "undelivered", "expired") if outcome[k]))
        lines.append("By key:")
        rows = sorted(by_key.items(), key=lambda kv: (-RANK.get(kv[0][1], 0), -kv[1]["n"], kv[0][0]))
        for (k, s), c in rows[:30]:
            if not c["n"]:
                continue
            extra = ", ".join(f"{x.replace('_', ' ')} {c[x]}" for x in ("sent", "throttled", "not_routed",
                                                                      "undelivered", "expired") if c[x])
            lines.append(f"  {s} {k} ×{c['n']} ({extra})")
        if len(rows) > 30:
            lines.append(f"  … {len(rows) - 30} more")
    lines.append("Preflight: " + ("no warnings" if not preflight else ""))
    lines.extend(f"  {p}" for p in preflight[:20])
    if events:
        lines.append("Events (WARNING and above): " + ", ".join(f"{k} {n}" for k, n in events.most_common(12)))
    text = redact("\n".join(lines))
    if len(text) > TEXT_MAX_CHARS:
        text = text[:TEXT_MAX_CHARS - 1] + "…"
    return {"day": day.isoformat(), "alerts": total, "by_severity": dict(by_sev), "outcome": dict(outcome),
            "by_key": {f"{k}|{s}": dict(c) for (k, s), c in by_key.items()}, "preflight": preflight,
            "events": dict(events), "text": text}


def daily_summary_due(cfg: Mapping | None, clock: Clock | None = None) -> date | None:
    """The day whose summary is due now (today after alerts.daily_summary_at KST), else None.
    send_daily_summary is idempotent, so a loop may call it every time this returns a day."""
    clock = clock or Clock()
    now = clock.now_kst()
    hh, mm = (int(x) for x in alerts_config(cfg)["daily_summary_at"].split(":"))
    return now.date() if (now.hour, now.minute) >= (hh, mm) else None


def send_daily_summary(root, cfg, secrets, day, *, clock=None, program: str = "daily-summary",
                       timeout_s: float = 20) -> dict:
    """Build the summary of `day` and send it once (an outbox entry with key daily_summary:YYYYMMDD).

    Idempotent and cheap to call again: when the entry exists, nothing is re-counted and only its
    delivery is retried. Returns key, id, state ("sent", "pending", "failed", ...), created, the drain
    counts and — when this call created it — the summary's counts and text (see summarize_day)."""
    root = Path(root)
    day = as_date(day)
    key = f"{KEY_DAILY_SUMMARY}:{yyyymmdd(day)}"
    a = Alerter(root, cfg, secrets, program=program, clock=clock)
    rep: dict = {"day": day.isoformat()}
    created = False
    res: dict = {}
    try:
        existing = a.with_key(key)
        if existing:
            alert_id = existing[0]["id"]
            if existing[0]["state"] in ("pending", "failed"):
                res = a.drain(timeout_s)
        else:
            rep = summarize_day(root, day, cfg)
            alert_id = a.alert(key, "INFO", rep["text"])["id"]
            created = True
            res = a.drain(timeout_s) if alert_id else {}
        ent = a.entry(alert_id) if alert_id else None
    finally:
        a.close(2)
    return {**rep, "key": key, "id": alert_id, "created": created,
            "state": (ent or {}).get("state", "failed"), "drain": res}
