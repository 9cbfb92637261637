"""Retention as properties over generated histories (days, anomalies, receipts, disk levels), then the
same rules on a real tree: never an unreceipted day, 3/7/10, oldest first, the emergency path."""

import io
from datetime import date, datetime, timedelta
from pathlib import Path

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from observer.core.clock import KST, ManualClock, yyyymmdd
from observer.core.config import validate_config
from observer.lifecycle import layout
from observer.lifecycle import retention as rt
from observer.lifecycle.backup import load_manifest, package_day
from observer.lifecycle.pull import build_receipt
from observer.lifecycle.retention_run import run
from observer.store import paths
from observer.store.reader import read_file

TODAY = date(2026, 3, 20)
POLICY = rt.Policy()
GB = 1 << 30


@st.composite
def histories(draw):
    ages = draw(st.lists(st.integers(0, 20), min_size=0, max_size=14, unique=True))
    days = []
    for age in ages:
        parts = draw(st.dictionaries(st.sampled_from(rt.PARTITION_ORDER), st.integers(1, 3 * GB), min_size=0,
                                     max_size=len(rt.PARTITION_ORDER)))
        receipted = draw(st.booleans())
        # metrics and gap-filler checkpoints: any day may have them, receipted or not, with or without data
        extra = draw(st.dictionaries(st.sampled_from(layout.UNGATED), st.integers(1, GB), max_size=2))
        days.append(rt.DayState(TODAY - timedelta(days=age), parts, draw(st.booleans()), receipted,
                                "receipt ok" if receipted else draw(st.sampled_from(
                                    ["not packaged", "packaged, not pulled yet", "receipt is for another version"])),
                                draw(st.integers(0, GB)) if receipted else 0, extra))
    data = sum(d.bytes + d.archive_bytes + sum(d.extra.values()) for d in days)
    total = draw(st.integers(max(data, 1), max(data, 1) * 4 + 100 * GB))
    used = draw(st.integers(data, total))
    return days, rt.Disk(total, used)


@settings(max_examples=600, deadline=None)
@given(histories(), st.sampled_from([POLICY, rt.Policy(metrics_keep_days=2)]))
def test_plan_properties(h, policy):
    days, disk = h
    p = rt.plan(TODAY, days, disk, policy)
    by_day = {d.day: d for d in days}
    market = [x for x in p.deletions if x.partition not in layout.UNGATED]
    metrics = [x for x in p.deletions if x.partition == layout.METRICS]
    checkpoints = [x for x in p.deletions if x.partition == layout.GAPFILL_STATE]
    deleted_days = {x.day for x in market}
    # never an unreceipted day's market data, whatever its age or the disk
    assert all(by_day[d].receipted for d in deleted_days)
    # every deletion is of bytes that exist, partitions in order, nothing twice
    seen = set()
    for x in p.deletions:
        assert (x.day, x.partition) not in seen
        seen.add((x.day, x.partition))
        if x.partition == rt.ARCHIVES:
            assert x.bytes == by_day[x.day].archive_bytes
        elif x.partition in layout.UNGATED:
            assert x.bytes == by_day[x.day].extra[x.partition]
        else:
            assert x.bytes == by_day[x.day].part_bytes[x.partition]
    for d in deleted_days:
        parts = [x.partition for x in market if x.day == d and x.partition != rt.ARCHIVES]
        assert parts == [q for q in rt.PARTITION_ORDER if q in parts]
    # 3/7/10: every receipted day past its keep goes; none inside its keep unless the disk is under pressure
    for d in days:
        age, keep = (TODAY - d.day).days, policy.keep(d.anomaly)
        assert keep == min(7 if d.anomaly else 3, 10)
        if d.receipted and age > keep and (d.bytes or d.archive_bytes):
            assert all((d.day, q) in seen for q in d.part_bytes), "an expired receipted day is deleted whole"
        # metrics past metrics_keep_days go whatever the receipt says; today's never
        if d.extra.get(layout.METRICS) and age > policy.metrics_keep_days:
            assert (d.day, layout.METRICS) in seen
    assert all((TODAY - x.day).days >= 1 for x in metrics + checkpoints), "today's files are never deleted"
    normal = [x for x in p.deletions if not x.early and x.partition != layout.GAPFILL_STATE]
    early = [x for x in market if x.early]
    early_metrics = [x for x in metrics if x.early]
    for x in normal:
        if x.partition == layout.METRICS:
            assert (TODAY - x.day).days > policy.metrics_keep_days
        else:
            assert (TODAY - x.day).days > policy.keep(by_day[x.day].anomaly)
    if early or early_metrics:
        assert p.pressure
        after_expired = disk.used - sum(x.bytes for x in normal)
        assert 100.0 * after_expired / disk.total >= policy.disk_high_pct
        assert all((TODAY - x.day).days >= 1 for x in early), "today's data is never deleted early"
        # stops once below the threshold: before each early deletion the disk was still >= high
        used = after_expired
        for x in early + early_metrics:
            if x.partition != rt.ARCHIVES:
                assert 100.0 * used / disk.total >= policy.disk_high_pct
            used -= x.bytes
    if early_metrics:
        # metrics (no copy anywhere) only once every receipted day inside its keep is gone
        for d in days:
            if d.receipted and 0 < (TODAY - d.day).days <= policy.keep(d.anomaly):
                assert all((d.day, q) in seen for q in d.part_bytes)
        assert [x.day for x in early_metrics] == sorted(x.day for x in early_metrics)
    # oldest first: expired in date order, then early ones normal days before anomaly days, each oldest first
    assert [x.day for x in normal] == sorted(x.day for x in normal)
    keys = [(by_day[x.day].anomaly, x.day) for x in early]
    assert keys == sorted(keys)
    assert p.deletions == normal + early + early_metrics + checkpoints
    # a checkpoint goes exactly when its day (not today) has no market data left after the plan
    for d in days:
        if d.extra.get(layout.GAPFILL_STATE):
            left = [q for q, n in d.part_bytes.items() if (d.day, q) not in seen]
            assert ((d.day, layout.GAPFILL_STATE) in seen) == ((TODAY - d.day).days >= 1 and not left)
    # blocked: exactly the unreceipted days holding data, oldest first; overdue = those past max_keep_days
    assert [b[0] for b in p.blocked] == sorted(d.day for d in days if not d.receipted and d.bytes > 0)
    assert p.overdue == [b[0] for b in p.blocked if (TODAY - b[0]).days > policy.max_keep_days]
    # the emergency path: critical iff still >= critical after everything allowed
    freed = sum(x.bytes for x in p.deletions)
    assert p.critical == (100.0 * (disk.used - freed) / disk.total >= policy.disk_critical_pct)
    if not any(d.receipted and (d.bytes or d.archive_bytes) for d in days):
        assert market == []


def test_plan_text_is_readable():
    days = [rt.DayState(TODAY - timedelta(days=5), {"raw": GB, "system": 1000}, False, True, "ok"),
            rt.DayState(TODAY - timedelta(days=2), {"raw": GB}, False, False, "packaged, not pulled yet")]
    p = rt.plan(TODAY, days, rt.Disk(100 * GB, 99 * GB), POLICY)
    text = "\n".join(p.lines())
    assert "delete 20260315 raw" in text and "expired: age 5 d > keep 3 d" in text
    assert "keep   20260318" in text and "not pulled yet" in text and "CRITICAL" in text


# -- on a real tree ------------------------------------------------------------------------------
def small_day(root: Path, day: date, anomaly: bool) -> None:
    ymd = yyyymmdd(day)
    for rel in (f"scalp/kis/kr_stocks/{ymd}/09_00_00.jsonl", f"raw/kis/{ymd}/09.jsonl",
                f"swing/kis/kr_stocks/{ymd}/09_00.jsonl"):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b'{"v":1,"kind":"trade","n":%d}\n' % day.toordinal() * 50)
    ev = {"v": 1, "kind": "event", "ts_ns": 0, "event": "gap_marker", "severity": "WARNING", "provider": "kis",
          "program": "t", "market": "kr_stocks", "symbol": "005930", "start_ns": 0, "end_ns": 1, "track": "B",
          "cause": "x", "recoverable": True, "gap_id": "g"}
    if anomaly:
        ev["anomaly_day"] = True
    e = paths.events_file(root, "kis", day)
    e.parent.mkdir(parents=True, exist_ok=True)
    e.write_bytes(orjson.dumps(ev) + b"\n")


def receipt(root: Path, day: date) -> None:
    pkg = paths.backup_dir(root, day)
    m, msha = load_manifest(pkg)
    (pkg / layout.RECEIPT).write_bytes(build_receipt(yyyymmdd(day), "pc", datetime(2026, 3, 1),
                                                     msha, {n: a["sha256"] for n, a in m["archives"].items()}))


def day_paths(root: Path, day: date) -> set[str]:
    ymd = yyyymmdd(day)
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and ymd in p.name + str(p.parent)
            and p.relative_to(root).parts[0] != "backup"}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(1, 14), st.booleans(), st.sampled_from(["none", "packaged", "receipt"])),
                min_size=1, max_size=6, unique_by=lambda t: t[0]),
       st.sampled_from([10.0, 85.0, 97.0]))
def test_real_tree_never_loses_unreceipted_data(tmp_path_factory, hist, disk_pct):
    root = tmp_path_factory.mktemp("tree")
    cfg = validate_config({"data_dir": str(root)})
    for age, anomaly, state in hist:
        d = TODAY - timedelta(days=age)
        small_day(root, d, anomaly)
        if state != "none":
            package_day(root, d)
        if state == "receipt":
            receipt(root, d)
    before = {TODAY - timedelta(days=a): day_paths(root, TODAY - timedelta(days=a)) for a, _, _ in hist}
    clock = ManualClock(datetime(2026, 3, 20, 22, 0, tzinfo=KST))
    disk = rt.Disk(100 * GB, int(disk_pct * GB))
    # dry run: prints the plan, changes nothing
    out = io.StringIO()
    run(root, cfg, clock, dry_run=True, disk=disk, out=out)
    assert "retention plan" in out.getvalue() and "dry run" in out.getvalue()
    assert {d: day_paths(root, d) for d in before} == before
    code = run(root, cfg, clock, disk=disk, out=io.StringIO())
    events = [e for e in read_file(paths.events_file(root, "system", TODAY)) if e["event"] == "retention"] \
        if paths.events_file(root, "system", TODAY).exists() else []
    deletes = [e for e in events if e["action"] == "delete"]
    for age, anomaly, state in hist:
        d = TODAY - timedelta(days=age)
        now = day_paths(root, d)
        if state != "receipt":
            assert now == before[d], f"unreceipted day {d} lost data"
        else:
            keep = 7 if anomaly else 3
            if age > keep:
                assert now == set(), f"receipted day {d} past its keep still has {now}"
            elif disk_pct < 80:
                assert now == before[d]
    # every deletion is an event with what, why and bytes; bytes add up to what vanished
    assert all(e["why"] and e["partition"] and e["bytes"] >= 0 for e in deletes)
    unreceipted = [TODAY - timedelta(days=a) for a, _, s in hist if s != "receipt"]
    no_receipt_days = {yyyymmdd(d) for d in unreceipted}
    assert not {e["date"] for e in deletes} & no_receipt_days
    critical = [e for e in events if e["action"] == "blocked"]
    if disk_pct >= 95 and not any(s == "receipt" for _, _, s in hist):
        # the emergency path: nothing deleted, one CRITICAL naming every blocking day
        assert deletes == [] and code == 1
        [c] = critical
        assert c["severity"] == "CRITICAL"
        assert {b["date"] for b in c["blocking"]} == no_receipt_days
    if disk_pct < 95:
        assert critical == [] and code == 0


def test_file_changed_after_packaging_is_kept(tree):
    d = TODAY - timedelta(days=5)
    small_day(tree, d, False)
    package_day(tree, d)
    receipt(tree, d)
    ev = paths.events_file(tree, "kis", d)
    with open(ev, "ab") as f:
        f.write(b'{"late":true}\n')
    cfg = validate_config({"data_dir": str(tree)})
    clock = ManualClock(datetime(2026, 3, 20, 22, 0, tzinfo=KST))
    assert run(tree, cfg, clock, disk=rt.Disk(100 * GB, 10 * GB), out=io.StringIO()) == 0
    assert ev.exists() and day_paths(tree, d) == {str(ev.relative_to(tree))}
    [sysdel] = [e for e in read_file(paths.events_file(tree, "system", TODAY))
                if e["event"] == "retention" and e["partition"] == "system"]
    assert sysdel["kept_changed"] == [str(ev.relative_to(tree))] and sysdel["severity"] == "WARNING"
