"""The alert table is the single source: every alert a program in lib/ raises uses a key constant of
observer.telemetry.alerts.table, every key of the table is raised somewhere, and routing derives from it."""

import ast
from pathlib import Path

import pytest

from observer.lifecycle.notify import FAILURE_KEYS
from observer.telemetry.alerts import alerts_config
from observer.telemetry.alerts.table import BY_KEY, CONSTANTS, TABLE, routed_warning_keys

LIB = Path(__file__).resolve().parents[2] / "lib" / "observer"
ALERT_METHODS = ("alert", "_alert")
# raisers land from other branches in parallel (retention/pull, collectors + gap-filler, universe manager)
NOT_YET_RAISED: set[str] = set()


# every row's end-to-end test: the condition caused for real, the message waited for at the fake Telegram server
DELIVERY = {
    "track_a_rate": "tests/telemetry/test_delivery.py::test_track_a_rate_below_95_percent_for_10_minutes_alerts",
    "track_b_rate": "tests/telemetry/test_delivery.py::test_track_b_rate_below_90_percent_for_the_configured_time_alerts",
    "reconnects": "tests/heal/test_watchdog.py::test_flapping_websocket_is_reported_and_alerted",
    "backup": "tests/telemetry/test_delivery.py::test_backup_failure_alert_arrives",
    "disk": "tests/heal/test_watchdog.py::test_full_disk_and_missing_backup_alerts_arrive",
    "cpu": "tests/telemetry/test_delivery.py::test_cpu_above_90_percent_for_the_configured_time_alerts",
    "ws_down": "tests/telemetry/test_delivery.py::test_ws_down_pauses_alerts_marks_the_day_keeps_retrying_and_records_again",
    "store_error": "tests/telemetry/test_delivery.py::test_store_error_on_a_full_disk_alerts",
    "ws_flapping": "tests/heal/test_watchdog.py::test_flapping_websocket_is_reported_and_alerted",
    "backup_missing": "tests/heal/test_watchdog.py::test_full_disk_and_missing_backup_alerts_arrive",
    "retention": "tests/telemetry/test_delivery.py::test_retention_blocked_on_a_full_disk_alert_arrives",
    "preflight_fail": "tests/telemetry/test_delivery.py::test_preflight_fail_pages_and_preflight_warn_waits_for_the_summary",
    "preflight_warn": "tests/telemetry/test_delivery.py::test_daily_summary_arrives_from_the_watchdog",
    "crash_loop": "tests/heal/test_watchdog_system.py::test_crash_loop_on_an_import_error_is_stopped_and_reported",
    "restart": "tests/heal/test_watchdog_system.py::test_frozen_streamer_is_restarted_through_the_broker",
    "cannot_restart": "tests/heal/test_watchdog.py::test_dead_feed_with_a_live_loop_is_caught_quiet_symbol_is_not",
    "oom": "tests/heal/test_watchdog_system.py::test_oom_kill_is_detected_and_reported",
    "daily_summary": "tests/telemetry/test_delivery.py::test_daily_summary_arrives_from_the_watchdog",
    "backup_manifest_invalid": "tests/lifecycle/test_retention_hostile.py::test_retention_traversal_names_delete_nothing_outside",
    "credentials_refused": "tests/providers/test_credentials_refused.py::test_refused_secret_ends_track_a_with_exit_3_and_a_critical_alert",
    "universe_fallback": "tests/collect/test_universe_master.py::test_download_fails_last_good_copy_used_and_warning_delivered",
}


class _Unresolved(Exception):
    pass


def _key_of(node, assigns: dict, params: set) -> str | None:
    """The key name an alert call's first argument resolves to; None = a forwarder's parameter."""
    if isinstance(node, ast.Name):
        if node.id in CONSTANTS:
            return CONSTANTS[node.id]
        if node.id in assigns:
            return _key_of(assigns[node.id], assigns, params)
        if node.id in params:
            return None
        raise _Unresolved(f"name {node.id}")
    if isinstance(node, ast.JoinedStr) and node.values:
        head = node.values[0]
        if (isinstance(head, ast.FormattedValue) and isinstance(head.value, ast.Name)
                and head.value.id in CONSTANTS
                and (len(node.values) == 1 or (isinstance(node.values[1], ast.Constant)
                                                and str(node.values[1].value).startswith(":")))):
            return CONSTANTS[head.value.id]
        raise _Unresolved("an f-string that does not start with a KEY_ constant and ':'")
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
            and isinstance(node.func.value, ast.Name) and node.func.value.id == "FAILURE_KEYS"):
        return None  # lifecycle/notify.py: checked through notify_failure's call sites
    raise _Unresolved(ast.dump(node)[:120])


def scan(root: Path = LIB):
    """(raised keys, problems): every `.alert(`/`._alert(` call and every notify_failure( call in lib."""
    raised: dict[str, list[str]] = {}
    problems: list[str] = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        funcs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        for fn in funcs:
            params = {a.arg for a in fn.args.args + fn.args.kwonlyargs}
            assigns = {}
            for n in ast.walk(fn):
                if isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name):
                    assigns[n.targets[0].id] = n.value
            for n in ast.walk(fn):
                if not isinstance(n, ast.Call):
                    continue
                where = f"{path.relative_to(root.parent)}:{n.lineno}"
                f = n.func
                name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
                if name == "notify_failure":
                    ev = n.args[1] if len(n.args) > 1 else None
                    has_cfg = len(n.args) > 2 or any(k.arg == "cfg" for k in n.keywords)
                    if not has_cfg:
                        continue  # no config: a log line only (the PC), no alert
                    if not (isinstance(ev, ast.Constant) and ev.value in FAILURE_KEYS):
                        problems.append(f"{where}: notify_failure event not in lifecycle.notify.FAILURE_KEYS")
                        continue
                    raised.setdefault(FAILURE_KEYS[ev.value], []).append(where)
                    continue
                if name not in ALERT_METHODS or not isinstance(f, ast.Attribute) or not n.args:
                    continue
                if isinstance(f.value, ast.Name) and f.value.id in ("cond", "c"):
                    continue
                try:
                    key = _key_of(n.args[0], assigns, params)
                except _Unresolved as e:
                    problems.append(f"{where}: alert key is not a KEY_ constant of observer.telemetry.alerts.table ({e})")
                    continue
                if key is None:
                    continue
                if key not in BY_KEY:
                    problems.append(f"{where}: key {key!r} is not in the alert table")
                raised.setdefault(key, []).append(where)
    return raised, problems


def test_every_alert_a_program_raises_is_in_the_table():
    raised, problems = scan()
    assert not problems, "\n".join(problems)
    assert raised, "the scan found no alert call at all"


def test_every_key_of_the_table_is_raised_by_some_program():
    raised, _ = scan()
    never = {r.key for r in TABLE} - set(raised)
    assert never == NOT_YET_RAISED, f"listed but never raised: {sorted(never - NOT_YET_RAISED)}"


def test_the_scan_catches_a_literal_and_an_unknown_constant(tmp_path):
    pkg = tmp_path / "observer"
    pkg.mkdir()
    (pkg / "x.py").write_text(
        "from observer.telemetry.alerts.table import KEY_DISK\n"
        "def f(a, p):\n"
        "    a.alert('disk_pressure', 'WARNING', 'x')\n"
        "    a.alert(f'{KEY_DISK}:{p}', 'WARNING', 'x')\n"
        "    k = f'{KEY_NOPE}:{p}'\n"
        "    a._alert(k, 'WARNING', 'x')\n")
    raised, problems = scan(pkg)
    assert set(raised) == {"disk"}
    assert len(problems) == 2 and all("x.py" in p for p in problems)


def test_default_routing_derives_from_the_table():
    defaults = alerts_config({})  # the schema's
    warning_keys = defaults["warning_keys"]
    assert warning_keys == routed_warning_keys()
    for k in ("disk", "reconnects", "ws_flapping", "track_a_rate", "track_b_rate", "cpu"):
        assert k in warning_keys, k
    for r in TABLE:
        assert r.severity in ("INFO", "WARNING", "ERROR", "CRITICAL") and r.condition and r.raised_by
        if r.severity in ("ERROR", "CRITICAL"):
            assert r.severity in defaults["always_send"] and r.routed


@pytest.mark.parametrize("row", TABLE, ids=lambda r: r.key)
def test_rows_are_documented(row):
    doc = (LIB.parents[1] / "docs" / "alerts.md").read_text()
    line = (f"| `{row.key}` | {row.severity} | {row.condition} | {row.raised_by} | "
            f"{'yes' if row.routed else 'no (daily summary)'} | {', '.join(f'`{x}`' for x in row.rules)} |")
    assert line in doc, f"docs/alerts.md's table row of {row.key} differs from observer.telemetry.alerts.table:\n{line}"


def test_every_row_has_an_end_to_end_delivery_test():
    assert set(DELIVERY) == {r.key for r in TABLE} - NOT_YET_RAISED
    repo = LIB.parents[1]
    for key, where in DELIVERY.items():
        path, name = where.split("::")
        tree = ast.parse((repo / path).read_text())
        fn = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name), None)
        assert fn is not None, f"{key}: {where} does not exist"
        src = ast.get_source_segment((repo / path).read_text(), fn)
        assert f"{key}" in src and ("arrived(" in src or "wait_for_messages(" in src), \
            f"{key}: {where} must wait for the message with the key at the fake Telegram server"


def test_sustained_fires_once_per_episode_after_its_duration():
    from observer.telemetry.alerts.table import Sustained

    s = Sustained(600)
    assert [s.update(t, True) for t in (0, 300, 599)] == [False, False, False]
    assert s.update(600, True) and s.held_s(600) == 600
    assert not s.update(1200, True), "once per episode"
    assert not s.update(1300, False) and s.held_s(1300) == 0
    assert not s.update(1400, True) and s.update(2000, True), "a new episode fires again"
    assert Sustained(0).update(5, True), "for 0 s: at once"
