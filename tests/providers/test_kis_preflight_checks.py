"""KisProvider.preflight_checks in-process, against the simulator on 127.0.0.1: the rows and their names,
what they share (the token row's one REST call is the REST row's answer, its Date header a clock sample),
a cached token reused, the WebSocket probe standing aside while Track B streams, missing keys named."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from observer.core.checks import CheckContext
from observer.core.clock import ScaledClock, kst_datetime, parse_yyyymmdd
from observer.core.config import validate_config
from observer.core.secrets import load_secrets
from observer.providers.base import get_provider
from observer.store import paths
from observer.store.state import write_json_atomic
from tests.support.sim import merge_config, sim_config, start_on_clock, write_secrets

DAY = parse_yyyymmdd("20260316")


@pytest.fixture
def kis(tmp_path):
    """(simulator, make(secrets_text=None) -> (provider, ctx)) on one market clock."""
    clock = ScaledClock(kst_datetime(DAY, "08:30:00"), 1.0, time.time_ns())
    sim, _ = start_on_clock(tmp_path, clock, seed=5, symbols=20, active=6, date="20260316", start="08:30:00",
                            speed=1.0)
    root = tmp_path / "data"
    root.mkdir()

    def make(secrets_text: str | None = None):
        secrets_file = write_secrets(tmp_path / "secrets.env")
        if secrets_text is not None:
            secrets_file.write_text(secrets_text)
        cfg = validate_config(merge_config(sim_config(sim, root, secrets_file, tmp_path / "symbols.txt"),
                                           {"preflight": {"ws_answer_s": 3}}))
        secrets = load_secrets(cfg)
        return get_provider("kis", cfg, secrets, None, clock), CheckContext(cfg, clock, DAY, root, secrets, None)

    yield sim, make
    sim.stop()


def run(named) -> dict:
    out = {}
    for _name, fn in named:
        got = fn()
        for c in got if isinstance(got, list) else [got]:
            out[c.name] = c
    return out


def test_every_row_passes_and_the_token_is_reused(kis):
    sim, make = kis
    prov, ctx = make()
    named = prov.preflight_checks(ctx)
    assert [n for n, _ in named] == ["token:kis", "rest:kis", "clock:kis", "websocket:kis"]
    rows = run(named)
    assert {n: c.verdict for n, c in rows.items()} == {n: "ok" for n, _ in named}, rows
    assert "no cached token: obtained a new one; accepted by the broker" == rows["token:kis"].reason
    assert "HTTP 200" in rows["rest:kis"].reason and "inquire-price 005930" in rows["rest:kis"].reason
    # six HEAD samples plus the REST call's Date header
    assert rows["clock:kis"].detail["samples"] == 7 and abs(rows["clock:kis"].detail["skew_s"]) < 1
    assert "unsubscribed" in rows["websocket:kis"].reason
    # a second run: the cached token is valid past 15:40, so none is requested
    issued = sim.stats()["auth"]["tokens_issued"]
    again = run(make()[0].preflight_checks(ctx)[:2])
    assert again["token:kis"].verdict == "ok" and "none requested" in again["token:kis"].reason
    assert sim.stats()["auth"]["tokens_issued"] == issued


def test_websocket_probe_stands_aside_while_track_b_streams(kis, tmp_path):
    _, make = kis
    prov, ctx = make()
    hb = paths.heartbeat_file(Path(ctx.root), "track-b@kis")
    hb.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(hb, {"name": "track-b@kis", "pid": os.getpid(), "wall_ns": time.time_ns()})
    ws = dict(prov.preflight_checks(ctx))["websocket:kis"]()
    assert ws.verdict == "skip" and "observer-track-b@kis is streaming" in ws.reason
    # the streamer's process is gone: the probe runs
    write_json_atomic(hb, {"name": "track-b@kis", "pid": 2**22 + 1, "wall_ns": time.time_ns()})
    assert dict(prov.preflight_checks(ctx))["websocket:kis"]().verdict == "ok"


def test_missing_keys_are_named_and_nothing_is_asked(kis):
    sim, make = kis
    prov, ctx = make("KIS_APP_KEY=PStestappkey000001\n")
    rows = run(prov.preflight_checks(ctx))
    assert rows["token:kis"].verdict == "fail" and "KIS_APP_SECRET" in rows["token:kis"].reason
    assert "KIS_APP_KEY / KIS_APP_SECRET" in rows["token:kis"].fix
    assert rows["rest:kis"].verdict == "skip"
    assert rows["websocket:kis"].verdict == "fail"
    assert sim.stats().get("auth", {}).get("tokens_issued", 0) == 0
