"""Readers that tail a growing file (the watchdog's flapping rule over the events log) go through the
same reader: a line that is JSON but not an object is reported and skipped, and the rule still
sees the reconnects around it (it used to fail the whole check, every pass, for the rest of the day)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from observer.core.clock import NS, ManualClock, kst_ns
from observer.store import paths
from observer.store.store import Store
from tests.store._tree import BIN, DAY

pytestmark = pytest.mark.hostile

NOW = kst_ns(DAY, "102000")


def test_watchdog_flapping_rule_survives_non_object_lines(tmp_path):
    root = tmp_path / "data"
    clock = ManualClock(NOW - 300 * NS)
    store = Store(root, program="observer-track-b@kis", provider="kis", clock=clock)
    ev = store.events("kis")
    for _ in range(5):  # five reconnects within the last 5 minutes: flapping (default: 5 in 600 s)
        clock.advance(30)
        ev.emit("reconnect", "WARNING", cause="eof", downtime_s=1.0, attempt=1)
    store.close()
    events = paths.events_file(root, "kis", DAY)
    data = events.read_bytes()
    events.write_bytes(b'["reconnect"]\n"reconnect"\n' + data)  # the rule pre-filters on this word
    cfg = tmp_path / "observer.toml"
    cfg.write_text(f'data_dir = "{root}"\nsecrets_file = "{tmp_path / "absent.env"}"\n')
    env = dict(os.environ, OBSERVER_CLOCK="2026-03-16T10:20:00+09:00")
    r = subprocess.run([sys.executable, str(BIN / "observer-watchdog"), "--config", str(cfg), "--once"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "kis WebSocket is flapping: 5 reconnects" in r.stdout, r.stdout + r.stderr[-3000:]
    skipped = [ln for ln in r.stderr.splitlines() if "unreadable line skipped" in ln and str(events) in ln]
    assert len(skipped) == 2 and "not a JSON object but list" in skipped[0], r.stderr[-3000:]
