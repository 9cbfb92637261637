"""bin/observer-decode --provider kis: frames or raw/ records in, JSONL out, bad lines on stderr, exit 1."""

from __future__ import annotations

import subprocess
import sys

import orjson

from observer.core.contracts import check
from observer.core.ratelimit import TokenBucket
from observer.store.fs import SharedRecord

from .conftest import SAMPLES


def run(repo, data: bytes, *args):
    return subprocess.run([sys.executable, str(repo / "bin" / "observer-decode"), "--provider", "kis", *args],
                          input=data, capture_output=True, timeout=60)


def test_samples_decode_clean(repo):
    data = (SAMPLES / "kis_h0stcnt0_frames.txt").read_bytes() + (SAMPLES / "kis_h0stasp0_frames.txt").read_bytes()
    r = run(repo, data, "--date", "20260720")
    assert r.returncode == 0, r.stderr.decode()
    recs = [orjson.loads(line) for line in r.stdout.splitlines()]
    assert [x["kind"] for x in recs] == ["trade"] * 5 + ["book"] * 3
    for x in recs:
        check(x)


def test_invalid_lines_reported_with_line_numbers(repo):
    good = next(line for line in (SAMPLES / "kis_h0stcnt0_frames.txt").read_text().splitlines() if line.startswith("0|"))
    raw = orjson.dumps({"v": 1, "kind": "raw", "provider": "kis", "recv_ns": 1_790_000_000_000_000_000, "frame": good})
    lines = [good.encode(), b"garbage \xff\xfe", b"0|H0STCNT0|001|005930^0933", raw, b"", b'{"header":{"tr_id":"PINGPONG"}}',
             b"1|H0STCNI0|001|abcd"]
    r = run(repo, b"\n".join(lines) + b"\n")
    assert r.returncode == 1
    err = r.stderr.decode()
    assert "line 2: invalid" in err and "line 3: invalid" in err and "line 7: skipped" in err
    recs = [orjson.loads(line) for line in r.stdout.splitlines()]
    assert len(recs) == 2 and recs[1]["recv_ns"] == 1_790_000_000_000_000_000


def test_never_crashes_on_binary_noise(repo):
    import random

    rnd = random.Random(5)
    noise = bytes(rnd.randrange(256) for _ in range(20000))
    r = run(repo, noise)
    assert r.returncode in (0, 1) and b"Traceback" not in r.stderr


def test_bucket_penalty_is_shared(tmp_path):
    from observer.core.clock import ManualClock

    clock = ManualClock(1_790_000_000_000_000_000)
    a = TokenBucket(SharedRecord(tmp_path / "b"), rate=10, burst=1, clock=clock)
    b = TokenBucket(SharedRecord(tmp_path / "b"), rate=10, burst=1, clock=clock)
    assert a.try_acquire() == 0.0
    assert b.try_acquire() > 0  # the same file: b sees a's spend
    clock.advance(0.1)
    assert b.try_acquire() == 0.0
    a.penalize(2.0)
    assert b.try_acquire() >= 1.9
    waited = b.acquire()  # ManualClock.sleep advances time
    assert 1.9 <= waited <= 2.2
