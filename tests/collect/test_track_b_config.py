"""The [track_b] config table: defaults, documented keys, refusals."""

import json
from importlib import resources

import pytest

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
