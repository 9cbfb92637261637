"""Fixtures for provider tests: the simulator (real HTTP + WebSocket on 127.0.0.1) is the broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from observer.core.config import validate_config
from observer.core.secrets import Secrets
from observer.store.store import Store
from tests.support.sim import simulators

SAMPLES = Path(__file__).resolve().parent.parent / "fixtures" / "samples"
APP_KEY = "PStestappkey0000000000000001"
APP_SECRET = "testsecret/AAAAAAAAAAAAAAAAAAAAAAAAAAAA="
APP_KEY2 = "PStestappkey0000000000000002"
APP_SECRET2 = "testsecret/BBBBBBBBBBBBBBBBBBBBBBBBBBBB="


def sample_frames(name: str) -> list[tuple[str, str]]:
    """(label, frame) for every frame line of a samples file; the label is the [tag] of the comment above."""
    out, label = [], ""
    for line in (SAMPLES / name).read_text().splitlines():
        if line.startswith("# ["):
            label = line[3:].split("]", 1)[0]
        elif line and not line.startswith("#"):
            out.append((label, line))
    return out


@pytest.fixture
def sim_factory(tmp_path):
    with simulators(tmp_path, seed=7, symbols=60, active=12, start="09:06") as make:
        yield make


@pytest.fixture
def sim(sim_factory):
    return sim_factory()


def kis_config(sim, data_dir: Path, **kis) -> dict:
    ws = kis.pop("ws", {})
    base = {"env": "sim", "rest_url": sim.rest_url, "ws_url": sim.ws_url,
            "retry": {"base_s": 0.05, "max_s": 0.5, "rate_limit_backoff_s": 0.05},
            "token": {"min_interval_s": 1},
            "ws": {"backoff_s": [0.2, 0.4, 0.8], "backoff_reset_s": 1.0, "poll_s": 0.05, **ws}}
    for k, v in kis.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k] = {**base[k], **v}
        else:
            base[k] = v
    return validate_config({"data_dir": str(data_dir), "providers": {"kis": base}})


def secrets(two: bool = False) -> Secrets:
    v = {"KIS_APP_KEY": APP_KEY, "KIS_APP_SECRET": APP_SECRET}
    if two:
        v.update({"KIS_APP_KEY2": APP_KEY2, "KIS_APP_SECRET2": APP_SECRET2})
    return Secrets(v, "test")


@pytest.fixture
def store(tree):
    s = Store(tree, program="test", provider="kis")
    yield s
    s.close()


def events(store: Store, kind: str | None = None) -> list[dict]:
    import orjson

    out = []
    for f in sorted((store.root / "system" / "events" / "kis").glob("*.jsonl")):
        for line in f.read_bytes().splitlines():
            if line.strip():
                e = orjson.loads(line)
                if kind is None or e["event"] == kind:
                    out.append(e)
    return out


@pytest.fixture
def streams():
    """Streams a test started; stopped at teardown."""
    made = []
    yield made
    for s in made:
        s.stop()
