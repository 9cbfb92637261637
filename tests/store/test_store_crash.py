"""kill -9 a writing process at random moments: every acknowledged record survives byte-identical,
no torn line remains after reopening, observer-verify finds the tree clean."""

import random
import select
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from observer.programs.verify import verify_tree
from observer.store.writer import JsonlWriter
from tests.store.crash_writer import record

pytestmark = pytest.mark.integration

TRIALS = 50


def expected_line(i: int) -> bytes:
    return orjson.dumps(record(i), option=orjson.OPT_APPEND_NEWLINE)


def acked_bytes(n: int, _memo=[0, 0]) -> int:  # noqa: B006 - a running total, records are sequential
    """Size of the file holding exactly records 0..n-1."""
    if n < _memo[0]:
        _memo[:] = [0, 0]
    while _memo[0] < n:
        _memo[1] += len(expected_line(_memo[0]))
        _memo[0] += 1
    return _memo[1]


def run_and_kill(path: Path, start: int, rng: random.Random, in_flight: bool = False) -> int:
    """Start the writer at record `start`, kill -9 it after a random delay (in_flight: as soon as the
    file holds more than the last acknowledged record, i.e. with records written but not yet
    acknowledged - a moment the random delay may miss on a loaded machine); return the last ACK seen."""
    p = subprocess.Popen([sys.executable, "-m", "tests.store.crash_writer", str(path), str(start)],
                         stdout=subprocess.PIPE, cwd=Path(__file__).resolve().parents[2])
    acked = start
    # wait for the first ACK so the kill lands while it is writing, not while importing
    deadline = time.monotonic() + 30
    kill_at = None
    buf = b""
    while True:
        r, _, _ = select.select([p.stdout], [], [], 0.001 if in_flight else 0.01)
        if r:
            chunk = p.stdout.read1(4096)
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for ln in lines:
                if ln.startswith(b"ACK "):
                    acked = int(ln[4:])
                    if kill_at is None:
                        kill_at = time.monotonic() + rng.uniform(0.0, 0.05)
        if in_flight and kill_at is not None and path.stat().st_size > acked_bytes(acked):
            p.kill()
            break
        if not in_flight and kill_at is not None and time.monotonic() >= kill_at:
            p.kill()  # SIGKILL
            break
        assert time.monotonic() < deadline, "writer never acknowledged anything"
    p.wait()
    # ACKs already in the pipe were printed before the kill: they count too
    rest = buf + p.stdout.read()
    for ln in rest.split(b"\n"):
        if ln.startswith(b"ACK "):
            acked = int(ln[4:])
    p.stdout.close()
    return acked


def test_kill9_never_loses_acknowledged_records(tmp_path):
    rng = random.Random(20261122)
    root = tmp_path / "data"
    path = root / "scalp" / "kis" / "krx" / "20261122" / "09_00_00.jsonl"
    repaired_total = 0
    unacked_seen = 0
    start = 0
    for trial in range(TRIALS):
        acked = run_and_kill(path, start, rng, in_flight=trial % 5 == 4)
        events: list = []
        w = JsonlWriter(path, on_event=lambda ev, sev, _e=events, **f: _e.append((ev, f)))
        w.close()
        repaired_total += sum(f["bytes"] for ev, f in events if ev == "store_repaired")
        data = path.read_bytes()
        assert data.endswith(b"\n"), f"trial {trial}: torn line left after reopen"
        lines = data.splitlines(keepends=True)
        # every line is a complete record of the deterministic sequence, in order, byte-identical
        assert len(lines) >= acked, f"trial {trial}: {acked} acknowledged, only {len(lines)} on disk"
        for i in (0, acked // 2, acked - 1, len(lines) - 1):
            if 0 <= i < len(lines):
                assert lines[i] == expected_line(i), f"trial {trial}: line {i} differs"
        unacked_seen += len(lines) > acked
        start = len(lines)
    # full check once at the end: every line is exactly the expected record
    lines = path.read_bytes().splitlines(keepends=True)
    assert all(ln == expected_line(i) for i, ln in enumerate(lines))
    rep = verify_tree(root)
    assert rep["clean"], rep["problems"][:5]
    # the kills landed while records were in flight (written but not yet acknowledged) in some
    # trials (every fifth waits for that moment), otherwise the test would only prove that idle
    # processes lose nothing. A SIGKILL can
    # also cut a write(2) short (Linux checks for fatal signals between pages), leaving a torn
    # tail; when that happened it was repaired and reported above (repaired_total), and
    # tests/store/test_store.py covers the repair directly either way.
    assert unacked_seen > 0
