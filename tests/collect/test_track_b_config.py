"""The [track_b] config table: defaults, documented keys, refusals."""

import json
from importlib import resources

import pytest

from observer.collect.mitigation import ANOMALY_DEFAULTS, MITIGATION_DEFAULTS
from observer.collect.triggers import TRIGGER_DEFAULTS
from observer.core.config import ConfigError, config_schema, validate_config


def test_defaults():
    tb = validate_config({})["track_b"]
    assert tb["slots"] == 0 and tb["channels"] == ["trades", "book"] and tb["connections"] == 1
    assert tb["registrations_per_connection"] == 41
    assert (tb["min_hold_s"], tb["cooldown_s"], tb["reallocate_interval_s"]) == (600, 600, 60)
    assert tb["queue_max"] == 100_000
    assert tb["manual_override_file"] == "state/manual_slots.txt" and tb["fill_idle_slots"] is True
    assert tb["mitigation"]["window_s"] == 300
    assert tb["recording_rate"]["window_s"] == 60


def test_module_fallbacks_equal_schema_defaults():
    """The modules work on a bare dict too; their fallbacks must be the schema's defaults."""
    tb = validate_config({})["track_b"]
    assert {k: tb["triggers"][k] for k in TRIGGER_DEFAULTS} == TRIGGER_DEFAULTS
    assert {k: tb["mitigation"][k] for k in MITIGATION_DEFAULTS} == MITIGATION_DEFAULTS
    assert {k: tb["anomaly"][k] for k in ANOMALY_DEFAULTS} == ANOMALY_DEFAULTS
    assert set(TRIGGER_DEFAULTS) == set(tb["triggers"])
    assert set(MITIGATION_DEFAULTS) == set(tb["mitigation"])
    assert set(ANOMALY_DEFAULTS) == set(tb["anomaly"])


def test_every_key_has_a_description():
    frag = json.loads((resources.files("observer") / "schemas" / "config" / "track_b.json").read_text())
    assert frag["additionalProperties"] is False

    def walk(node, path):
        for k, sub in node.get("properties", {}).items():
            assert "description" in sub, f"{path}{k}"
            if sub.get("type") == "object":
                assert sub.get("additionalProperties") is False, f"{path}{k}"
                walk(sub, f"{path}{k}.")
            else:
                assert "default" in sub, f"{path}{k}"

    walk(config_schema()["properties"]["track_b"], "track_b.")


@pytest.mark.parametrize("bad", [
    {"slotz": 3},
    {"channels": []},
    {"channels": ["trades", "trades"]},
    {"channels": ["quotes"]},
    {"min_hold_s": -1},
    {"queue_max": 10},
    {"triggers": {"volume_surge_ratio": 0}},
    {"triggers": {"nope": 1}},
    {"mitigation": {"lag_s": [2, 5, 9]}},
    {"anomaly": {"disk_pct": 120}},
])
def test_refusals(bad):
    with pytest.raises(ConfigError):
        validate_config({"track_b": bad})
