"""Metrics: JSONL lines satisfy the metric contract, observer.prom is strict Prometheus text format,
several programs share it, a stopped program goes stale, the file is replaced atomically."""

import math
import os
import re
import threading

from observer.core.clock import ManualClock
from observer.programs.verify import verify_tree
from observer.store import paths
from observer.store.reader import ReadIssue, read_file
from observer.telemetry import metrics
from observer.telemetry.metrics import LAST_WRITE, METRICS, MetricsWriter, merge_prom, system_sample
from tests.telemetry.conftest import DAY_START

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABELS = r'\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*")*)?\}'
_VALUE = r"(?:[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|NaN|[+-]Inf)"
HELP = re.compile(rf"^# HELP ({_NAME}) (.*)$")
TYPE = re.compile(rf"^# TYPE ({_NAME}) (counter|gauge|histogram|summary|untyped)$")
SAMPLE = re.compile(rf"^({_NAME})({_LABELS})? ({_VALUE})$")   # no timestamps: node_exporter refuses them


def parse_prom(text: str) -> dict[str, dict]:
    """A strict parser of the text format as node_exporter's textfile collector needs it: every line is
    HELP, TYPE or a sample; HELP/TYPE once per metric and before its samples; a metric's samples in one
    block; no duplicate series; no timestamps; final newline."""
    assert text.endswith("\n"), "no final newline"
    fams: dict[str, dict] = {}
    current = None
    done: set[str] = set()
    for n, line in enumerate(text[:-1].split("\n"), 1):
        if m := HELP.match(line):
            name = m.group(1)
            assert name not in fams, f"line {n}: second HELP for {name}"
            if current and current != name:
                done.add(current)
            fams[name] = {"help": m.group(2), "type": None, "samples": {}}
            current = name
        elif m := TYPE.match(line):
            name = m.group(1)
            assert name == current and fams[name]["type"] is None and not fams[name]["samples"], f"line {n}: TYPE"
            fams[name]["type"] = m.group(2)
        elif m := SAMPLE.match(line):
            name, labels, value = m.group(1), m.group(2) or "", m.group(3)
            assert name == current and name not in done, f"line {n}: sample of {name} outside its block"
            assert fams[name]["type"], f"line {n}: sample before TYPE"
            sid = name + labels
            assert sid not in fams[name]["samples"], f"line {n}: duplicate series {sid}"
            fams[name]["samples"][sid] = float(value.replace("Inf", "inf"))
        else:
            raise AssertionError(f"line {n} is not Prometheus text format: {line!r}")
    return fams


def test_parser_rejects_what_node_exporter_rejects():
    good = '# HELP a_b x\n# TYPE a_b gauge\na_b{x="1"} 2\n'
    assert parse_prom(good)["a_b"]["samples"] == {'a_b{x="1"}': 2.0}
    for bad in ('a_b 1\n', '# HELP a_b x\n# TYPE a_b gauge\na_b 1 1700000000\n',
                '# HELP a_b x\n# TYPE a_b gauge\na_b{x=1} 2\n', '# HELP a_b x\n# TYPE a_b gauge\na_b 1',
                '# HELP a_b x\n# TYPE a_b gauge\na_b 1\na_b 2\n'):
        try:
            parse_prom(bad)
        except AssertionError:
            continue
        raise AssertionError(f"accepted {bad!r}")


def test_jsonl_lines_satisfy_the_contract_and_prom_parses(tree):
    clock = ManualClock(DAY_START)
    m = MetricsWriter(tree, "track-b@kis", provider="kis", clock=clock, interval_s=15)
    m.set("observer_collection_ratio", 0.97, track="B")
    m.set("observer_mitigation_level", 1)
    m.set("observer_ws_connected", True)
    m.inc("observer_ws_reconnects_total")
    m.inc("observer_ws_reconnects_total", 2)
    m.set("observer_event_lag_seconds", None)           # unknown now: null in JSONL, absent in .prom
    m.sample_system()
    assert m.maybe_write() is True
    assert m.maybe_write() is False                     # not yet interval_s later
    clock.advance(14)
    assert m.maybe_write() is False
    clock.advance(1)
    m.set("observer_collection_ratio", 0.91, track="B")
    assert m.maybe_write() is True
    m.close()
    issues: list[ReadIssue] = []
    recs = list(read_file(paths.metrics_file(tree, DAY_START.date()), issues.append, validate=True))
    assert not issues and len(recs) == 2
    assert recs[1]["values"]['observer_collection_ratio{track="B"}'] == 0.91
    assert recs[1]["provider"] == "kis" and recs[1]["program"] == "track-b@kis"
    assert recs[0]["values"]["observer_event_lag_seconds"] is None
    assert recs[0]["values"]["observer_ws_reconnects_total"] == 3
    assert verify_tree(tree)["clean"]
    fams = parse_prom(paths.prom_file(tree).read_text())
    assert fams["observer_collection_ratio"]["samples"] == {
        'observer_collection_ratio{program="track-b@kis",provider="kis",track="B"}': 0.91}
    assert fams["observer_ws_reconnects_total"]["type"] == "counter"
    assert fams["observer_ws_connected"]["samples"] == {'observer_ws_connected{program="track-b@kis",provider="kis"}': 1}
    assert "observer_event_lag_seconds" not in fams
    for name, fam in fams.items():
        assert name in METRICS and fam["help"] == METRICS[name][1]
        assert all('program="track-b@kis"' in s for s in fam["samples"])
    assert fams[LAST_WRITE]["samples"] == {
        f'{LAST_WRITE}{{program="track-b@kis",provider="kis"}}': clock.now_ns() / 1e9}


def test_programs_share_observer_prom_and_a_stopped_one_goes_stale(tree):
    clock = ManualClock(DAY_START)
    b = MetricsWriter(tree, "track-b@kis", provider="kis", clock=clock, stale_after_s=60)
    backup = MetricsWriter(tree, "backup", clock=clock, stale_after_s=None)    # one-shot: never stale
    wd = MetricsWriter(tree, "watchdog", clock=clock, stale_after_s=60)
    b.set("observer_collection_ratio", 0.99, track="B")
    b.write_now()
    backup.set("observer_backup_last_status", 1)
    backup.write_now()
    wd.inc("observer_watchdog_restarts_total", unit='observer-track-b@kis.service')
    wd.set("observer_disk_used_ratio", 0.5)
    wd.write_now()
    fams = parse_prom(paths.prom_file(tree).read_text())
    assert set(fams[LAST_WRITE]["samples"]) == {f'{LAST_WRITE}{{program="{p}"{x}}}' for p, x in
                                                (("track-b@kis", ',provider="kis"'), ("backup", ""), ("watchdog", ""))}
    assert 'observer_watchdog_restarts_total{program="watchdog",unit="observer-track-b@kis.service"}' in \
        fams["observer_watchdog_restarts_total"]["samples"]
    # track-b stops; two minutes later the watchdog writes again
    clock.advance(120)
    wd.write_now()
    fams = parse_prom(paths.prom_file(tree).read_text())
    assert "observer_collection_ratio" not in fams                   # a dead collector's rate is gone
    assert f'{LAST_WRITE}{{program="track-b@kis",provider="kis"}}' in fams[LAST_WRITE]["samples"]  # its age shows
    assert fams["observer_backup_last_status"]["samples"] == {'observer_backup_last_status{program="backup"}': 1}
    for w in (b, backup, wd):
        w.close()


def test_observer_prom_is_replaced_atomically(tree):
    clock = ManualClock(DAY_START)
    m = MetricsWriter(tree, "track-a", clock=clock)
    for name in ("observer_collection_ratio", "observer_messages_per_second", "observer_slots_used"):
        m.set(name, 1)
    m.write_now()
    prom = paths.prom_file(tree)
    stop = threading.Event()
    reads, bad = [0], []

    def reader():
        while not stop.is_set():
            text = prom.read_text()
            try:
                fams = parse_prom(text)
                assert len(fams) == 4, sorted(fams)
            except AssertionError as e:
                bad.append(str(e))
            reads[0] += 1

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(300):
            clock.advance(1)
            m.set("observer_messages_per_second", i * 1.5)
            m.set("observer_collection_ratio", (i % 100) / 100, track="A")
            m.set("observer_collection_ratio", None)
            m.write_now()
    finally:
        stop.set()
        t.join()
    assert not bad, bad[:3]
    assert reads[0] > 0
    # a new file is renamed over the old one (compared across one write: over many writes the file
    # system may hand a freed inode number out again)
    ino1 = os.stat(prom).st_ino
    m.set("observer_messages_per_second", 1.0)
    m.write_now()
    m.close()
    assert os.stat(prom).st_ino != ino1
    assert oct(os.stat(prom).st_mode & 0o777) == "0o640"
    leftovers = [p.name for p in prom.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []
    assert sorted(p.name for p in prom.parent.iterdir() if p.name.endswith(".prom")) == ["observer.prom"]


def test_bad_names_and_labels_never_raise(tree):
    m = MetricsWriter(tree, "t", clock=ManualClock(DAY_START))
    m.set("Not-A-Metric", 1)
    m.set("observer_made_up_here", 2)              # unregistered: written, HELP says so
    m.set("observer_slots_used", 3, program="spoof", **{"bad-label": "x"})
    m.set("observer_collection_ratio", 0.5, track='A "quoted"\nnewline\\')
    m.set("observer_mitigation_level", math.nan)   # JSON has no NaN: null in JSONL, absent in .prom
    m.set("observer_messages_per_second", math.inf)
    assert m.write_now() is not None
    m.close()
    fams = parse_prom(paths.prom_file(tree).read_text())
    assert "observer_made_up_here" in fams and "unregistered" in fams["observer_made_up_here"]["help"]
    assert list(fams["observer_slots_used"]["samples"]) == ['observer_slots_used{program="t"}']
    (sid, v), = fams["observer_collection_ratio"]["samples"].items()
    assert v == 0.5 and r'track="A \"quoted\"\nnewline\\"' in sid
    assert "observer_mitigation_level" not in fams and "observer_messages_per_second" not in fams


def test_write_failure_is_logged_not_raised(tree):
    (tree / "metrics").write_text("a file where the directory should be")
    m = MetricsWriter(tree, "t", clock=ManualClock(DAY_START))
    m.set("observer_slots_used", 1)
    m.write_now()
    m.close()


def test_system_sample():
    system_sample("/")                       # CPU needs a previous sample
    s = system_sample("/")
    for name in metrics.SYSTEM_METRICS:
        assert name in METRICS
    for name in ("observer_disk_used_ratio", "observer_cpu_usage_ratio", "observer_memory_used_ratio"):
        assert 0 <= s[name] <= 1, (name, s[name])
    assert s["observer_disk_free_bytes"] > 0 and s["observer_process_rss_bytes"] > 0


def test_merge_without_parts_writes_an_empty_valid_file(tree):
    assert merge_prom(tree) == ""
    assert paths.prom_file(tree).read_text() == ""
