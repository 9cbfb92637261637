"""Retention of the per-day files that are not market data and are never packaged: metrics/YYYYMMDD.jsonl
(kept metrics_keep_days, no receipt needed, earlier under disk pressure) and the gap-filler's checkpoints
state/gapfill/<provider>_YYYYMMDD.json (kept while their day's data is on the server). Real files, the real
MetricsWriter, and the real bin/observer-retention where the program's behaviour is the point."""

import json
import os
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from observer.core.clock import KST, ManualClock, yyyymmdd
from observer.lifecycle import layout
from observer.lifecycle import retention as rt
from observer.lifecycle.backup import load_manifest, package_day
from observer.recover import gapfill
from observer.store import paths
from observer.store.reader import read_file
from observer.store.state import write_json_atomic
from observer.telemetry.metrics import MetricsWriter
from tests.lifecycle.test_retention import day_paths, receipt, small_day
from tests.support.procs import run_prog

TODAY = date(2026, 3, 20)
NOW = {"OBSERVER_CLOCK": "2026-03-20T22:00:00+09:00"}
CALM = ("--disk-pct", "10")  # whatever the test machine's disk holds: no pressure unless a test asks for it


def write_metrics(root: Path, ages: list[int]) -> dict[int, Path]:
    """A few records per day through the real MetricsWriter (the file names retention must recognise)."""
    clock = ManualClock(datetime(2026, 1, 1, 12, 0, tzinfo=KST))
    m = MetricsWriter(root, "watchdog", clock=clock, interval_s=15)
    try:
        for age in sorted(ages, reverse=True):
            d = TODAY - timedelta(days=age)
            clock.set(datetime(d.year, d.month, d.day, 12, 0, tzinfo=KST))
            for _ in range(3):
                m.set("observer_alerts_undelivered", 0)
                assert m.write_now() is not None
                clock.advance(15)
    finally:
        m.close()
    out = {a: paths.metrics_file(root, TODAY - timedelta(days=a)) for a in ages}
    assert all(p.stat().st_size > 0 for p in out.values())
    return out


def config(tmp: Path, root: Path, **retention) -> Path:
    cfg = tmp / "observer.toml"
    text = f'data_dir = "{root}"\n'
    if retention:
        text += "[retention]\n" + "".join(f"{k} = {v}\n" for k, v in retention.items())
    cfg.write_text(text)
    return cfg


def retention_events(root: Path) -> list[dict]:
    f = paths.events_file(root, "system", TODAY)
    return [e for e in read_file(f) if e["event"] == "retention"] if f.exists() else []


def checkpoint(root: Path, day: date, provider: str = "kis") -> Path:
    p = gapfill.checkpoint_path(root, provider, day)
    # the path helper retention uses must name the file the gap-filler writes
    assert p == paths.gapfill_checkpoint_file(root, provider, day)
    write_json_atomic(p, {**gapfill.load_checkpoint(root, provider, day), "runs": 1})
    return p


@pytest.mark.parametrize("keep", [None, 5])
def test_old_metrics_are_deleted_without_a_receipt(tree, tmp_path, keep):
    ages = [0, 1, 4, 5, 6, 14, 15, 30]
    files = write_metrics(tree, ages)
    prom = paths.prom_file(tree)
    parts = sorted(paths.prom_parts_dir(tree).iterdir())
    # an old, unreceipted market day: its data stays (receipt-gated), its metrics do not
    small_day(tree, TODAY - timedelta(days=15), False)
    market_before = day_paths(tree, TODAY - timedelta(days=15)) - {str(files[15].relative_to(tree))}
    cfg = config(tmp_path, tree, **({"metrics_keep_days": keep} if keep else {}))
    limit = keep or 14
    expired = [a for a in ages if a > limit]

    # --dry-run lists them and deletes nothing
    r = run_prog("observer-retention", "--config", cfg, *CALM, "--dry-run", env=NOW)
    assert r.returncode == 0, r.stderr
    listed = [ln.split()[1] for ln in r.stdout.splitlines() if ln.strip().startswith("delete") and " metrics " in ln]
    assert listed == [yyyymmdd(TODAY - timedelta(days=a)) for a in sorted(expired, reverse=True)]
    assert all(f.exists() for f in files.values()) and retention_events(tree) == []
    r = run_prog("observer-retention", "--config", cfg, *CALM, "--dry-run", "--json", env=NOW)
    plan = json.loads(r.stdout)
    assert [d["partition"] for d in plan["deletions"]] == ["metrics"] * len(expired)
    assert all(f"> metrics_keep_days {limit} d" in d["why"] and not d["early"] for d in plan["deletions"])

    sizes = {a: files[a].stat().st_size for a in ages}
    r = run_prog("observer-retention", "--config", cfg, *CALM, env=NOW)
    assert r.returncode == 0, r.stderr
    assert {a for a in ages if files[a].exists()} == {a for a in ages if a <= limit}
    # observer.prom and the programs' parts are not day files: untouched
    assert prom.exists() and sorted(paths.prom_parts_dir(tree).iterdir()) == parts
    assert day_paths(tree, TODAY - timedelta(days=15)) == market_before
    # one event per deleted file's day, with bytes, why and early, like every other retention deletion
    evs = [e for e in retention_events(tree) if e["action"] == "delete"]
    assert [(e["date"], e["partition"], e["bytes"], e["files"], e["early"], e["severity"]) for e in evs] == [
        (yyyymmdd(TODAY - timedelta(days=a)), "metrics", sizes[a], 1, False, "INFO") for a in sorted(expired, reverse=True)]
    # the unreceipted market day is still reported as overdue (its metrics going changes nothing there)
    assert [e["date"] for e in retention_events(tree) if e["action"] == "overdue"] == [
        yyyymmdd(TODAY - timedelta(days=15))]
    # and the next run finds nothing more to do
    r = run_prog("observer-retention", "--config", cfg, *CALM, env=NOW)
    assert r.returncode == 0 and "nothing to delete" in r.stdout


def test_disk_pressure_deletes_younger_metrics_after_receipted_days(tree, tmp_path):
    files = write_metrics(tree, [0, 1, 2, 3])
    receipted, unreceipted = TODAY - timedelta(days=2), TODAY - timedelta(days=1)
    for d in (receipted, unreceipted):
        small_day(tree, d, False)
    package_day(tree, receipted)
    receipt(tree, receipted)
    unreceipted_before = day_paths(tree, unreceipted) - {str(files[1].relative_to(tree))}
    cfg = config(tmp_path, tree)

    r = run_prog("observer-retention", "--config", cfg, "--disk-pct", "90", "--dry-run", env=NOW)
    assert r.returncode == 0, r.stderr
    assert all(f.exists() for f in files.values())

    # a tmp file system far from full pretends to be 90 % full: freeing a few KB never gets it below
    # 80 %, so everything allowed goes - and the order shows what is given up first
    r = run_prog("observer-retention", "--config", cfg, "--disk-pct", "90", env=NOW)
    assert r.returncode == 0, r.stderr
    assert files[0].exists(), "today's metrics are being written: never deleted"
    assert not any(files[a].exists() for a in (1, 2, 3))
    assert day_paths(tree, unreceipted) == unreceipted_before, "unreceipted market data stays"
    evs = [(e["date"], e["partition"], e["early"]) for e in retention_events(tree)]
    # the receipted day (a copy on the PC) before any metrics (no copy anywhere), metrics oldest first
    market = [(yyyymmdd(receipted), p, True) for p in ("raw", "scalp", "swing", "system")]
    assert evs == market + [(yyyymmdd(receipted), rt.ARCHIVES, True)] + [
        (yyyymmdd(TODAY - timedelta(days=a)), "metrics", True) for a in (3, 2, 1)]
    assert all(e["severity"] == "WARNING" and "disk pressure" in e["why"]
               for e in retention_events(tree) if e["partition"] == "metrics")


def test_critical_disk_deletes_metrics_even_when_every_day_is_blocked(tree, tmp_path):
    files = write_metrics(tree, [0, 1, 8])
    small_day(tree, TODAY - timedelta(days=1), False)  # never packaged: blocks
    r = run_prog("observer-retention", "--config", config(tmp_path, tree), "--disk-pct", "97", env=NOW)
    assert r.returncode == 1, "still critical: the CRITICAL path's exit code"
    assert [a for a, f in files.items() if f.exists()] == [0]
    evs = retention_events(tree)
    assert [e["partition"] for e in evs if e["action"] == "delete"] == ["metrics", "metrics"]
    [blocked] = [e for e in evs if e["action"] == "blocked"]
    assert [b["date"] for b in blocked["blocking"]] == [yyyymmdd(TODAY - timedelta(days=1))]


def test_a_metrics_file_written_after_planning_is_kept(tree):
    files = write_metrics(tree, [20, 21])
    states, inv, manifests, _ = rt.day_states(tree)
    p = rt.plan(TODAY, states, rt.Disk(100 << 30, 10 << 30), rt.Policy())
    assert [(d.partition, (TODAY - d.day).days) for d in p.deletions] == [("metrics", 21), ("metrics", 20)]
    # a writer appends between the plan and the deletion (a clock stepped back, a late program)
    with open(files[20], "ab") as f:
        f.write(b'{"late":true}\n')
    events = []
    out = rt.execute(tree, p, inv, manifests, lambda sev, **f: events.append((sev, f)))
    assert not files[21].exists() and files[20].exists()
    assert out.kept_changed == [str(files[20].relative_to(tree))]
    assert [(sev, f["files"], f.get("kept_changed")) for sev, f in events] == [
        ("INFO", 1, None), ("WARNING", 0, [str(files[20].relative_to(tree))])]


def test_gapfill_checkpoints_go_with_their_days_data(tree, tmp_path):
    cfg = config(tmp_path, tree)
    expired, kept_young, blocked, orphan = (TODAY - timedelta(days=a) for a in (5, 2, 6, 40))
    late = TODAY - timedelta(days=4)
    for d in (expired, kept_young, blocked, late):
        small_day(tree, d, False)
    for d in (expired, kept_young, late):
        package_day(tree, d)
        receipt(tree, d)
    # `late` got an event after packaging: that file stays, so the day keeps its checkpoint too
    with open(paths.events_file(tree, "kis", late), "ab") as f:
        f.write(b'{"late":true}\n')
    cps = {d: checkpoint(tree, d) for d in (expired, kept_young, blocked, orphan, late, TODAY)}
    other = checkpoint(tree, expired, provider="upbit")

    r = run_prog("observer-retention", "--config", cfg, *CALM, "--dry-run", env=NOW)
    assert r.returncode == 0, r.stderr
    assert all(p.exists() for p in cps.values())
    r = run_prog("observer-retention", "--config", cfg, *CALM, env=NOW)
    assert r.returncode == 0, r.stderr
    assert day_paths(tree, expired) == set()
    assert not cps[expired].exists() and not other.exists(), "data gone: the checkpoints go with it"
    assert not cps[orphan].exists(), "a checkpoint whose day was deleted long ago"
    assert cps[kept_young].exists() and cps[blocked].exists(), "the day's data is still here"
    assert cps[TODAY].exists(), "today's: the gap-filler may be at it"
    assert cps[late].exists() and paths.events_file(tree, "kis", late).exists()
    evs = {(e["date"], e["partition"]): e for e in retention_events(tree)}
    assert evs[(yyyymmdd(expired), "gapfill-state")]["files"] == 2
    assert evs[(yyyymmdd(orphan), "gapfill-state")]["files"] == 1
    kept = evs[(yyyymmdd(late), "gapfill-state")]
    assert kept["files"] == 0 and kept["kept_changed"] == [str(cps[late].relative_to(tree))]
    assert kept["severity"] == "WARNING"


def test_backup_packages_neither_metrics_nor_checkpoints(tree):
    # the documented decision (docs/backup.md): they are not market data; a day's metrics file is still
    # being written at 21:00, so packaging it would outdate every receipt before it is written
    d = TODAY - timedelta(days=1)
    small_day(tree, d, False)
    write_metrics(tree, [1])
    checkpoint(tree, d)
    m, _ = load_manifest(package_day(tree, d).path)
    assert {e["path"].split("/", 1)[0] for e in m["files"]} == {"raw", "scalp", "swing", "system"}
    assert set(layout.ungated_inventory(tree)[d].parts) == {layout.METRICS, layout.GAPFILL_STATE}


def test_stray_names_are_not_taken_for_day_files(tree):
    mdir = paths.metrics_file(tree, TODAY).parent
    cdir = paths.gapfill_checkpoint_file(tree, "kis", TODAY).parent
    for p in (mdir / "20261399.jsonl", mdir / "notes.jsonl", mdir / ".20200101.jsonl.x.tmp", mdir / "observer.prom",
              cdir / "kis_2020010.json", cdir / "kis_20200101.json.tmp", cdir / ".kis_20200101.json.abc.tmp"):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x\n")
    assert layout.ungated_inventory(tree) == {}
    before = sorted(os.listdir(mdir)) + sorted(os.listdir(cdir))
    states, inv, manifests, _ = rt.day_states(tree)
    p = rt.plan(TODAY, states, rt.Disk(100, 99), rt.Policy())
    rt.execute(tree, p, inv, manifests, lambda *a, **k: None)
    assert sorted(os.listdir(mdir)) + sorted(os.listdir(cdir)) == before
