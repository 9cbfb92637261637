"""The real observer-sim program: command line, ready line, signals, determinism, firehose."""

import json
import os
import subprocess
import sys
import time

import requests
import websocket

from observer.sim import SimProcess
from observer.sim.process import BIN

from .kis import read_jsonl, records, sub_msg

BASE = ["--symbols", "150", "--active", "10", "--date", "20260316"]


def test_help_documents_the_command_line():
    out = subprocess.run([sys.executable, BIN, "--help"], capture_output=True, text=True, timeout=30,
                         env={**os.environ, "PYTHONPATH": os.path.join(os.path.dirname(BIN), "..", "lib")})
    assert out.returncode == 0
    for opt in ("--seed", "--symbols", "--speed", "--rest-port", "--ws-port", "--ground-truth", "--faults",
                "--control-port", "--date", "--app-key", "--app-secret", "--rate-limit", "--pingpong-interval",
                "--firehose", "--active", "--start"):
        assert opt in out.stdout


def test_ready_line_health_and_clean_stop(tmp_path):
    gt = tmp_path / "gt"
    sim = SimProcess(["--seed", "3", "--speed", "60", "--start", "09:00", "--ground-truth", str(gt), *BASE],
                     stderr_path=str(tmp_path / "err.log"))
    try:
        assert set(sim.urls) == {"rest", "ws", "control", "clock"}
        from observer.core.clock import parse_clock_spec

        # the clock spec gives another process the simulator's market time
        assert abs(parse_clock_spec(sim.urls["clock"]).now_ns() - requests.get(
            sim.control + "/health", timeout=5).json()["t_ms"] * 10**6 - _midnight_ns()) < 30 * 10**9
        h = requests.get(sim.control + "/health", timeout=5).json()
        assert h["ok"] and h["date"] == "20260316" and h["rest"] == sim.rest
    finally:
        rc = sim.stop()
    assert rc == 0
    meta = json.loads((gt / "meta.json").read_text())
    assert meta["generated_until_t_ms"] >= 9 * 3600_000 and "app_key" not in meta["config"]
    assert (gt / "summary.json").exists()
    assert (gt / "trades.jsonl").read_bytes().endswith(b"\n")
    logs = [json.loads(x) for x in (tmp_path / "err.log").read_text().splitlines() if x.startswith("{")]
    assert any(x["msg"] == "simulator stopped" for x in logs)


def _run_until(tmp_path, name, seed, stop_at="09:00:45"):
    gt = tmp_path / name
    sim = SimProcess(["--seed", str(seed), "--speed", "60", "--start", "09:00", "--stop-at", stop_at,
                      "--ground-truth", str(gt), *BASE])
    assert sim.proc.wait(30) == 0  # --stop-at ends it by itself
    sim.stop()
    cut = (9 * 3600 + 45) * 1000
    return [x for x in read_jsonl(str(gt / "trades.jsonl")) if x["t_ms"] <= cut]


def test_same_seed_same_market(tmp_path):
    a = _run_until(tmp_path, "a", 5)
    b = _run_until(tmp_path, "b", 5)
    key = lambda x: (x["symbol"], x["seq"])  # noqa: E731 - files interleave symbols by generation order
    assert len(a) > 100 and sorted(a, key=key) == sorted(b, key=key)


def test_firehose_feeds_a_bare_reader(tmp_path):
    gt = tmp_path / "gt"
    n_frames = 40_000
    with SimProcess(["--seed", "1", "--speed", "1", "--start", "09:00", "--ground-truth", str(gt), "--firehose", "0",
                     "--firehose-frames", str(n_frames), *BASE]) as sim:
        key = requests.post(sim.rest + "/oauth2/Approval", json={"grant_type": "client_credentials",
                                                                 "appkey": "K", "secretkey": "S"}).json()
        codes = [s["symbol"] for s in json.loads((gt / "universe.json").read_text()) if s["active"]][:5]
        ws = websocket.create_connection(sim.ws, skip_utf8_validation=True, timeout=20)
        for c in codes:
            ws.send(sub_msg(key["approval_key"], "H0STCNT0", c))
        last = {}
        n = 0
        t0 = None
        while n < n_frames:
            m = ws.recv()
            if m[0] != "0":
                continue
            if t0 is None:
                t0 = time.perf_counter()
            n += 1
            if n % 97 == 0:  # spot-check the chain without slowing the reader down
                tr, recs = records(m)
                r = recs[0]
                assert tr == "H0STCNT0" and len(r) == 46
                last[r[0]] = int(r[13])
        rate = n / (time.perf_counter() - t0)
        ws.close()
        print(f"firehose: {rate:.0f} frames/s to a bare websocket-client reader")
        assert rate > 5000
    lines = read_jsonl(str(gt / "firehose.jsonl"))
    assert lines[-1]["done"] and lines[-1]["frames"] == n_frames
    assert sum(x["n"] for x in lines if "n" in x) == n_frames


def _midnight_ns() -> int:
    from observer.core.clock import kst_datetime, parse_yyyymmdd

    return int(kst_datetime(parse_yyyymmdd("20260316"), "000000").timestamp()) * 10**9
