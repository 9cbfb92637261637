"""Defaults live in the config schema only: the validated config has all of them, the typed sections equal
them, and no module of lib/observer restates one in a `.get(key, default)` on a config table."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import pytest

from observer.core import settings
from observer.core.config import config_schema, section, validate_config

LIB = Path(__file__).resolve().parents[2] / "lib" / "observer"
FRAGMENTS = LIB / "schemas" / "config"


# -- the schema's own defaults, read from the fragments (not through the loader under test) -----------
def _fragment(name: str) -> dict:
    frag = json.loads((FRAGMENTS / f"{name}.json").read_text())
    defs = frag.get("$defs", {})

    def resolve(node):
        if isinstance(node, dict) and "$ref" in node:
            return {**defs[node["$ref"].rsplit("/", 1)[-1]], **{k: v for k, v in node.items() if k != "$ref"}}
        return node

    def walk(node):
        node = resolve(node)
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        return node

    return walk(frag)


def _defaults(node: dict) -> dict:
    out = {}
    for key, sub in node["properties"].items():
        if "default" in sub:
            out[key] = sub["default"]
        elif sub.get("type") == "object":
            out[key] = _defaults(sub)
    return out


def _tuples(v):
    if isinstance(v, list):
        return tuple(_tuples(x) for x in v)
    if isinstance(v, dict):
        return {k: _tuples(x) for k, x in v.items()}
    return v


def _view(obj) -> dict:
    return dataclasses.asdict(obj)


MINIMAL = validate_config({})


def _expected_track_b() -> dict:
    d = _defaults(_fragment("track_b"))
    fields = {f.name for f in dataclasses.fields(settings.TrackBConfig)}
    flat = {k: v for k, v in d.items() if k in fields}
    return _tuples({**flat, "recording_rate_window_s": d["recording_rate"]["window_s"], "anomaly": d["anomaly"]})


CASES = {
    "windows.track_a": (lambda c: settings.TradingWindow.from_config(c, "track_a"),
                        lambda: _fragment("windows")["properties"]["track_a"]["default"]),
    "windows.track_b": (lambda c: settings.TradingWindow.from_config(c, "track_b"),
                        lambda: _fragment("windows")["properties"]["track_b"]["default"]),
    "track_a": (settings.TrackAConfig.from_config, lambda: _tuples(_defaults(_fragment("track_a")))),
    "track_b": (settings.TrackBConfig.from_config, _expected_track_b),
    "track_b.anomaly": (settings.AnomalyConfig.from_config,
                        lambda: _defaults(_fragment("track_b"))["anomaly"]),
    "gapfill": (settings.GapfillConfig.from_config, lambda: _tuples(_defaults(_fragment("gapfill")))),
    "audit": (settings.AuditConfig.from_config, lambda: _defaults(_fragment("audit"))),
    "watchdog": (settings.WatchdogConfig.from_config, lambda: _tuples(_defaults(_fragment("watchdog")))),
    "preflight": (settings.PreflightConfig.from_config, lambda: _tuples(_defaults(_fragment("preflight")))),
    "preflight.deploy_guard": (settings.DeployGuardConfig.from_config,
                               lambda: _defaults(_fragment("preflight"))["deploy_guard"]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_section_from_minimal_config_is_the_schema_defaults(name):
    build, expected = CASES[name]
    assert _view(build(MINIMAL)) == expected()
    # a partial dict that never went through validation gets the same defaults (tests build such dicts)
    assert _view(build({})) == expected()


def test_section_views_carry_every_key_of_their_table():
    """A key added to a fragment shows up in its view (or the view says where else it is read)."""
    full = {"track_a": settings.TrackAConfig, "gapfill": settings.GapfillConfig, "audit": settings.AuditConfig,
            "watchdog": settings.WatchdogConfig, "preflight": settings.PreflightConfig}
    for name, cls in full.items():
        assert {f.name for f in dataclasses.fields(cls)} == set(_fragment(name)["properties"]), name
    tb = set(_fragment("track_b")["properties"]) - {"triggers", "mitigation", "recording_rate"}
    assert tb <= {f.name for f in dataclasses.fields(settings.TrackBConfig)}
    assert {f.name for f in dataclasses.fields(settings.AnomalyConfig)} == set(
        _fragment("track_b")["properties"]["anomaly"]["properties"])
    assert {f.name for f in dataclasses.fields(settings.DeployGuardConfig)} == set(
        _fragment("preflight")["properties"]["deploy_guard"]["properties"])
    for track in _fragment("windows")["properties"]:
        assert settings.TradingWindow.from_config(MINIMAL, track)


def test_configured_values_reach_the_views():
    cfg = validate_config({"windows": {"track_b": {"start": "10:00", "end": "14:00"}},
                           "watchdog": {"no_data_s": 42, "providers": ["kis", "other"]},
                           "track_b": {"cooldown_s": 7, "recording_rate": {"window_s": 9},
                                       "anomaly": {"silences": 5}},
                           "gapfill": {"tracks": ["B"]}, "audit": {"track_b_target_pct": 90},
                           "track_a": {"interval_minutes": 5},
                           "preflight": {"providers": ["kis", "other"], "disk_warn_pct": 70,
                                         "deploy_guard": {"us_market": True, "kr_end": "17:00"}}})
    assert settings.TradingWindow.from_config(cfg, "track_b") == settings.TradingWindow("10:00", "14:00")
    assert str(settings.TradingWindow.from_config(cfg, "track_b")) == "10:00-14:00"
    w = settings.WatchdogConfig.from_config(cfg)
    assert (w.no_data_s, w.providers) == (42, ("kis", "other"))
    tb = settings.TrackBConfig.from_config(cfg)
    assert (tb.cooldown_s, tb.recording_rate_window_s, tb.anomaly.silences) == (7, 9, 5)
    assert settings.GapfillConfig.from_config(cfg).tracks == ("B",)
    assert settings.AuditConfig.from_config(cfg).track_b_target_pct == 90
    assert settings.TrackAConfig.from_config(cfg).interval_minutes == 5
    pf = settings.PreflightConfig.from_config(cfg)
    assert (pf.providers, pf.disk_warn_pct, pf.disk_fail_pct) == (("kis", "other"), 70, 95)
    assert (pf.deploy_guard.us_market, pf.deploy_guard.kr_start, pf.deploy_guard.kr_end) == (True, "08:00", "17:00")
    assert pf.deploy_guard == settings.DeployGuardConfig.from_config(cfg)
    with pytest.raises(dataclasses.FrozenInstanceError):
        tb.cooldown_s = 1  # type: ignore[misc]


def test_constructor_defaults_of_older_views_are_the_schema_defaults():
    """Durability, Policy, BackupOptions, PullConfig and MetricsWriter keep constructor defaults (tests
    build them bare); those must be the schema's, as from_config gives them."""
    import inspect

    from observer.lifecycle.backup import BackupOptions
    from observer.lifecycle.pull import PullConfig
    from observer.lifecycle.retention import Policy
    from observer.store.writer import Durability
    from observer.telemetry.metrics import MetricsWriter

    assert Durability.from_config(MINIMAL) == Durability()
    assert Policy.from_config(MINIMAL) == Policy()
    assert BackupOptions.from_config(MINIMAL) == BackupOptions()
    pull = _defaults(_fragment("pull"))
    for f in dataclasses.fields(PullConfig):
        if f.default is not dataclasses.MISSING:
            assert _same(f.default, pull[f.name]), f.name
    metrics = _defaults(_fragment("metrics"))
    params = inspect.signature(MetricsWriter).parameters
    assert {k: params[k].default for k in metrics} == metrics


def test_validated_config_has_every_schema_default():
    """Tables inside arrays too: a [[calendar.late_open]] entry gets its shift and reason defaults."""
    cfg = validate_config({"calendar": {"late_open": [{"date": "2026-11-19"}]}})

    def walk(node: dict, value: dict, path: str):
        for key, sub in node.get("properties", {}).items():
            assert key in value, f"{path}{key} missing from the validated config"
            if sub.get("type") == "object" and "properties" in sub:
                walk(sub, value[key], f"{path}{key}.")
            if sub.get("type") == "array" and isinstance(sub.get("items"), dict):
                for i, item in enumerate(value[key]):
                    walk(sub["items"], item, f"{path}{key}[{i}].")

    walk(config_schema(), cfg, "")
    assert cfg["calendar"]["late_open"] == [{"date": "2026-11-19", "open_shift_minutes": 60,
                                             "close_shift_minutes": 0, "reason": "config"}]
    assert section(cfg, "calendar") == cfg["calendar"]


# -- no module restates a default -----------------------------------------------------------------------
def _schema_keys() -> tuple[set[str], dict[str, list]]:
    """(table names, leaf key -> its defaults anywhere in the schema)."""
    tables: set[str] = set()
    leaves: dict[str, list] = {}

    def walk(node: dict):
        for key, sub in node.get("properties", {}).items():
            if sub.get("type") == "object" and "properties" in sub:
                tables.add(key)
                walk(sub)
            else:
                leaves.setdefault(key, []).extend([sub["default"]] if "default" in sub else [])
            if sub.get("type") == "array" and isinstance(sub.get("items"), dict):
                walk(sub["items"])

    walk(config_schema())
    return tables, leaves


TABLES, LEAVES = _schema_keys()


def _same(a, b) -> bool:
    num = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, num) and isinstance(b, num):
        return a == b
    return type(a) is type(b) and a == b


def _literal(node: ast.AST):
    try:
        return True, ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False, None


def _is_table_read(v: ast.AST) -> bool:
    """cfg.get("track_b", ...), cfg["track_b"], (cfg.get("track_b") or {}), dict(cfg.get("pull", {}))."""
    if isinstance(v, ast.BoolOp):
        return any(_is_table_read(x) for x in v.values)
    if isinstance(v, ast.Call) and isinstance(v.func, ast.Attribute) and v.func.attr == "get" and v.args:
        return isinstance(v.args[0], ast.Constant) and v.args[0].value in TABLES
    if isinstance(v, ast.Call) and isinstance(v.func, ast.Name) and v.func.id == "dict" and v.args:
        return _is_table_read(v.args[0])
    if isinstance(v, ast.Subscript):
        return isinstance(v.slice, ast.Constant) and v.slice.value in TABLES
    return False


def _name(n: ast.AST) -> str | None:
    return n.id if isinstance(n, ast.Name) else n.attr if isinstance(n, ast.Attribute) else None


def restated_defaults(source: str) -> list[tuple[int, str, str]]:
    """(line, key, code) of each config read in `source` that carries its own default:
    - `.get(key, d)` where d is the schema's default of some key of that name;
    - `.get(table, {...})` or `.get(table) or {...}` with a non-empty literal fallback for a whole table;
    - `.get(key, d)` on a name bound to a config table (`tb = cfg.get("track_b", {})`, `self.w = ...`)
      whatever d is (a default that drifted from the schema's is still a second copy)."""
    tree = ast.parse(source)
    attrs: set[str] = set()  # self.x bound to a table anywhere in the module: read across its methods
    scopes = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Module))]
    for scope in scopes:
        for n in ast.walk(scope):
            if isinstance(n, ast.Assign) and _is_table_read(n.value):
                attrs.update(t.attr for t in n.targets if isinstance(t, ast.Attribute))
    found: set[tuple[int, str, str]] = set()
    for scope in scopes:
        names = set() if isinstance(scope, ast.Module) else {
            t.id for n in ast.walk(scope) if isinstance(n, ast.Assign) and _is_table_read(n.value)
            for t in n.targets if isinstance(t, ast.Name)}
        for n in ast.walk(scope):
            if isinstance(n, ast.BoolOp) and isinstance(n.op, ast.Or) and _is_table_read(n.values[0]):
                ok, d = _literal(n.values[-1])
                if ok and d:
                    found.add((n.lineno, "", ast.unparse(n)))
            if not (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "get"
                    and len(n.args) == 2 and isinstance(n.args[0], ast.Constant)
                    and isinstance(n.args[0].value, str)):
                continue
            key = n.args[0].value
            ok, d = _literal(n.args[1])
            if not ok or d is None:
                continue
            recv = n.func.value
            bound = (isinstance(recv, ast.Name) and recv.id in names) or (
                isinstance(recv, ast.Attribute) and recv.attr in attrs) or _is_table_read(recv)
            if (key in LEAVES and any(_same(d, x) for x in LEAVES[key])) or (key in TABLES and d != {}) or (
                    bound and (key in LEAVES or key in TABLES) and d != {}):
                found.add((n.lineno, key, ast.unparse(n)))
    return sorted(found)


def test_the_scan_finds_restated_defaults():
    src = '''
def f(cfg):
    tb = cfg.get("track_b", {})
    a = tb.get("cooldown_s", 300)                      # drifted from the schema's 600: still a copy
    b = cfg.get("windows", {}).get("track_a", {"start": "09:00", "end": "15:30"})
    c = (cfg.get("watchdog") or {}).get("no_data_s", 300)
    d = (cfg.get("windows") or {}).get("track_b") or {"start": "09:30", "end": "15:00"}
    e = cfg.get("track_a", {})                         # a table read alone is fine
    f = rec.get("symbols", 0)                          # not a config key
    return a, b, c, d, e, f


class C:
    def __init__(self, cfg):
        self.w = cfg.get("watchdog") or {}

    def g(self):
        return self.w.get("alert_repeat_s", 1)
'''
    keys = [(line, key) for line, key, _ in restated_defaults(src)]
    assert keys == [(4, "cooldown_s"), (5, "track_a"), (6, "no_data_s"), (7, ""), (18, "alert_repeat_s")]


def _findings() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for f in sorted(LIB.rglob("*.py")):
        rel = f.relative_to(LIB).as_posix()
        if rel == "core/config.py":  # the loader that applies the schema's defaults
            continue
        for _line, key, _code in restated_defaults(f.read_text()):
            out.setdefault(rel, set()).add(key)
    return out


def test_no_module_restates_a_schema_default():
    found = {f: sorted(k) for f, k in _findings().items()}
    assert not found, ("config defaults restated in code (read the typed section from observer.core.settings, "
                       f"or config.section(), instead): {found}")
