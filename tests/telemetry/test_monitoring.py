"""config/monitoring/: the Prometheus rules and the Grafana dashboard parse, use only metrics the code
writes, and mirror the alert table; docs list every metric and every alert key."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from observer.core.config import validate_config
from observer.telemetry.alerts import ALERT_TABLE, alerts_config
from observer.telemetry.metrics import METRICS

REPO = Path(__file__).resolve().parents[2]
MON = REPO / "config" / "monitoring"
BIN = REPO / ".venv" / "bin"
METRIC_RE = re.compile(r"\bobserver_[a-z0-9_]+")


def _rules():
    doc = yaml.safe_load((MON / "observer-alerts.rules.yml").read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def test_rules_parse_and_use_only_metrics_the_code_writes():
    rules = _rules()
    assert rules
    for r in rules:
        assert set(r) >= {"alert", "expr", "labels", "annotations"}, r
        assert r["labels"]["severity"] in ("warning", "critical") and r["annotations"]["summary"]
        names = METRIC_RE.findall(r["expr"])
        assert names, r["alert"]
        for n in names:
            assert n in METRICS, f"{r['alert']}: {n} is not a metric the code writes"
        if "for" in r:
            assert re.fullmatch(r"\d+[smh]", r["for"]), r["for"]


def test_rules_mirror_the_alert_table():
    by_name = {r["alert"]: r for r in _rules()}
    durations = {"track_a_rate": "10m", "track_b_rate": "5m", "cpu": "10m"}
    thresholds = {"track_a_rate": "< 0.95", "track_b_rate": "< 0.90", "reconnects": "> 20",
                  "disk": "> 0.80", "cpu": "> 0.90", "backup": "== 0"}
    mirrored = set()
    for row in ALERT_TABLE:
        for rule in row.rules:
            r = by_name[rule]
            mirrored.add(rule)
            assert r["labels"]["alert_key"] == row.key
            if rule == "ObserverBackupMissing":
                continue  # no program twin: the watchdog's backup_missing alert covers the same ground
            assert r.get("for") == durations.get(row.key), rule
            assert r["expr"].rstrip().endswith(thresholds[row.key]), (rule, r["expr"])
        # the same condition raises the programs' own Telegram alert, and it is sent
        if row.rules:
            assert row.severity != "WARNING" or row.key in alerts_config({})["warning_keys"]
    # every rule either mirrors a row of the table or watches the observer itself
    assert set(by_name) - mirrored == {"ObserverAlertsUndelivered", "ObserverWatchdogMetricsStale"}


def test_grafana_dashboard_parses_and_uses_only_written_metrics():
    dash = json.loads((MON / "grafana-dashboard.json").read_text())
    assert dash["uid"] and dash["title"] and dash["panels"]
    seen = set()
    for p in dash["panels"]:
        assert p["targets"], p["title"]
        for t in p["targets"]:
            for n in METRIC_RE.findall(t["expr"]):
                assert n in METRICS, f"panel {p['title']!r}: {n}"
                seen.add(n)
    for n in ("observer_collection_ratio", "observer_ws_reconnects_today", "observer_disk_used_ratio",
              "observer_cpu_usage_ratio", "observer_backup_last_status"):
        assert n in seen


def test_docs_list_every_metric_and_config_key():
    mdoc = (REPO / "docs" / "metrics.md").read_text()
    for n in METRICS:
        assert f"`{n}`" in mdoc, f"docs/metrics.md does not describe {n}"
    for n in set(METRIC_RE.findall(mdoc)):
        assert n in METRICS or n.startswith("observer_prom"), f"docs/metrics.md names unknown metric {n}"
    adoc = (REPO / "docs" / "alerts.md").read_text()
    for key in validate_config({})["alerts"]:
        assert f"`{key}`" in adoc, f"docs/alerts.md does not describe alerts.{key}"
    for row in ALERT_TABLE:
        assert f"`{row.key}`" in adoc


# -- promtool (Debian's prometheus package, install.sh) -------------------------------------------------------
def _promtool() -> str:
    p = shutil.which("promtool")
    if p is None:
        pytest.skip("promtool not installed (install.sh --dev installs Debian's prometheus package)")
    return p


def test_promtool_checks_the_rules_file():
    r = subprocess.run([_promtool(), "check", "rules", str(MON / "observer-alerts.rules.yml")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in r.stdout


def test_promtool_every_rule_fires_on_its_sample_series():
    tests = yaml.safe_load((MON / "observer-alerts.rules.test.yml").read_text())
    fired = {c["alertname"] for t in tests["tests"] for c in t["alert_rule_test"] if c["exp_alerts"]}
    assert fired == {r["alert"] for r in _rules()}, "every rule needs a case that makes it fire"
    r = subprocess.run([_promtool(), "test", "rules", "observer-alerts.rules.test.yml"], cwd=MON,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


def test_promtool_fails_a_rule_that_does_not_fire(tmp_path):
    """The promtool test can fail: the same cases against rules with a raised threshold."""
    (tmp_path / "observer-alerts.rules.yml").write_text(
        (MON / "observer-alerts.rules.yml").read_text().replace("> 0.80", "> 0.99"))
    shutil.copy(MON / "observer-alerts.rules.test.yml", tmp_path)
    r = subprocess.run([_promtool(), "test", "rules", "observer-alerts.rules.test.yml"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "ObserverDiskFull" in r.stdout + r.stderr


# -- the metrics the rules and the dashboard use are metrics the programs write -------------------------------
PROM_LINE = re.compile(r"^(observer_[a-z0-9_]+)(\{[^}]*\})?\s+(\S+)")


def _prom_series(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        m = PROM_LINE.match(line)
        if m:
            out.setdefault(m.group(1), []).append(m.group(2) or "")
    return out


def test_every_metric_of_the_rules_and_the_dashboard_is_written(tmp_path):
    """Run the demo (simulator + both collectors, short), then the backup, the gap-filler and one
    watchdog pass over its tree; every metric a rule or a dashboard panel names is in a .prom file
    they wrote (node_exporter's textfile collector reads exactly those)."""
    work = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "OBSERVER_CLOCK")}
    r = subprocess.run([str(BIN / "observer-demo"), "--minutes", "15", "--speed", "20", "--symbols", "60",
                        "--active", "12", "--keep", str(work)], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    cfg = work / "observer.toml"
    assert cfg.exists()
    written: dict[str, list[str]] = {}
    seen: list[str] = []

    def collect():  # each program's write: a later merge under another clock may age earlier parts out
        proms = list(work.rglob("*.prom"))
        assert proms, "no .prom file written"
        for p in proms:
            text = p.read_text()
            seen.append(text)
            for k, v in _prom_series(p).items():
                written.setdefault(k, []).extend(v)

    collect()
    # exit 1 = problems found and reported (the gap-filler: holes its simulator, now stopped, cannot fill;
    # the watchdog: the demo's collectors are gone), never a crash
    for prog, args, ok in (("observer-backup", ["--date", "20260316"], (0,)),
                           ("observer-gap-filler", ["--date", "20260316"], (0, 1)),
                           ("observer-watchdog", ["--once"], (0, 1))):
        r = subprocess.run([str(BIN / prog), "--config", str(cfg), *args], capture_output=True, text=True,
                           timeout=300, env=env)
        assert r.returncode in ok, f"{prog}: exit {r.returncode}\n{r.stderr[-3000:]}"
        collect()
    used = {n for r in _rules() for n in METRIC_RE.findall(r["expr"])}
    dash = json.loads((MON / "grafana-dashboard.json").read_text())
    used |= {n for p in dash["panels"] for t in p["targets"] for n in METRIC_RE.findall(t["expr"])}
    missing = sorted(used - set(written))
    assert not missing, f"named by the rules/dashboard but written by no program: {missing}"
    # the series the rules select exist with the labels they select on
    assert any('track="A"' in s for s in written["observer_collection_ratio"])
    assert any('track="B"' in s for s in written["observer_collection_ratio"])
    assert any('program="watchdog"' in s for s in written["observer_metrics_last_write_timestamp_seconds"])
    backup_ok = [line for text in seen for line in text.splitlines() if line.startswith("observer_backup_last_status")]
    assert backup_ok and all(line.rstrip().endswith(" 1") for line in backup_ok), backup_ok
