"""config/monitoring/: the Prometheus rules and the Grafana dashboard parse, use only metrics the code
writes, and mirror the alert table; docs list every metric and every alert key."""

import json
import re
from pathlib import Path

import yaml

from observer.alerts import ALERT_TABLE, DEFAULTS
from observer.core.config import validate_config
from observer.metrics import METRICS

REPO = Path(__file__).resolve().parents[2]
MON = REPO / "config" / "monitoring"
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
            assert row.severity != "WARNING" or row.key in DEFAULTS["warning_keys"]
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
