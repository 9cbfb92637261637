"""observer-retention's run: plan the deletions, print the plan, carry it out, report what blocks it.
See docs/backup.md; the policy and the plan are observer.lifecycle.retention."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from observer.core import notify
from observer.core.clock import yyyymmdd
from observer.core.config import host_id
from observer.core.exitcodes import EXIT_FAILED, EXIT_OK, EXIT_PROBLEMS
from observer.lifecycle import backup as bk
from observer.lifecycle import layout
from observer.lifecycle import retention as rt
from observer.lifecycle.notify import notify_failure, notify_invalid
from observer.store.store import Store

PROGRAM = "observer-retention"


def run(root: Path, cfg: dict, clock, *, dry_run: bool = False, disk: rt.Disk | None = None,
        out=sys.stdout, as_json: bool = False) -> int:
    """One retention run on the tree at `root`; the exit code (0 ok, 1 disk critical and blocked, 3 failed)."""
    notify.ready("planning")  # the watchdog runs from here (systemd unit)
    policy = rt.Policy.from_config(cfg)
    today = clock.today_kst()
    survey = rt.day_states(root)
    # a temp file's age is its mtime against the wall clock that set it (not a drill's shifted clock)
    temp = layout.stale_temp_files(root, time.time_ns(), policy.tmp_max_age_hours * 3600)
    disk = disk or rt.Disk.of(root)
    pl = rt.plan(today, survey.states, disk, policy, temp)
    if as_json:
        print(json.dumps({"today": today.isoformat(), "disk_pct": round(disk.pct, 2),
                          "projected_pct": round(pl.projected_pct, 2), "pressure": pl.pressure,
                          "critical": pl.critical,
                          "deletions": [{"date": yyyymmdd(d.day), "partition": d.partition, "bytes": d.bytes,
                                         "why": d.why, "early": d.early} for d in pl.deletions],
                          "blocked": [{"date": yyyymmdd(d), "why": w, "bytes": n} for d, w, n in pl.blocked],
                          "overdue": [yyyymmdd(d) for d in pl.overdue],
                          "invalid": [{"date": yyyymmdd(d), "why": w} for d, w in pl.invalid],
                          "stale_tmp": [{"path": t.rel, "bytes": t.bytes} for t in pl.temp],
                          "problems": survey.problems, "dry_run": dry_run}), file=out)
    else:
        lines = pl.lines() + [f"  problem: {x}" for x in survey.problems]
        print("\n".join(lines) + ("\n(dry run: nothing deleted)" if dry_run else ""), file=out)
    if dry_run:
        return EXIT_PROBLEMS if pl.critical else EXIT_OK
    store = Store(root, program=PROGRAM, provider="system", clock=clock, host=host_id(cfg))
    try:
        def emit(severity: str, **fields):
            store.events().emit("retention", severity, **fields)

        # reported first: a bad package is news even if deleting the others fails below
        notify_invalid(store, cfg, [(yyyymmdd(d), w) for d, w in pl.invalid])
        if survey.problems:
            emit("WARNING", date=yyyymmdd(today), action="skipped", problems=survey.problems[:50],
                 problems_count=len(survey.problems),
                 why="not regular files or not of the tree's names: never packaged, never deleted")
        for msg in _sweep_build_leftovers(root):
            emit("INFO", date=yyyymmdd(today), action="delete", partition="backup-build", why=msg)
        try:
            rt.execute(root, pl, survey.inv, survey.manifests, emit)
        except OSError as e:
            notify_failure(store, "retention", cfg, date=yyyymmdd(today), action="failed", error=str(e))
            return EXIT_FAILED
        blocking = [{"date": yyyymmdd(d), "why": w, "bytes": n} for d, w, n in pl.blocked]
        for d in pl.overdue:
            why = next(w for dd, w, _ in pl.blocked if dd == d)
            emit("ERROR", date=yyyymmdd(d), action="overdue",
                 why=f"older than max_keep_days={policy.max_keep_days} but kept: {why}")
        if pl.critical:
            notify_failure(store, "retention", cfg, date=yyyymmdd(today), action="blocked",
                           why="disk critically full and nothing more may be deleted without a verified receipt",
                           disk_pct=round(disk.pct, 2), projected_pct=round(pl.projected_pct, 2), blocking=blocking)
            print(f"{PROGRAM}: CRITICAL: disk {disk.pct:.1f}% used; blocked by: "
                  + (", ".join(f"{b['date']} ({b['why']})" for b in blocking) or "nothing (no day data left)"),
                  file=sys.stderr)
            return EXIT_PROBLEMS
        return EXIT_OK
    finally:
        store.close()


def _sweep_build_leftovers(root: Path) -> list[str]:
    """Half-built packages of any day (a backup killed mid-build): observer-backup sweeps only the day it
    builds. Under backup's lock, so never one being built; skipped while a backup runs."""
    if not layout.backup_root(root).is_dir():
        return []
    try:
        lock = bk.lock_backup_root(root)
    except bk.BackupBusy:
        return []
    try:
        return bk.sweep_leftovers(root)
    finally:
        lock.close()
