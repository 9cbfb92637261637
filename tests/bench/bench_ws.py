"""bench_ws: frames/s received and parsed by the KIS WebSocket client vs a bare websocket-client loop.

    .venv/bin/python tests/bench/bench_ws.py [--frames 100000] [--rounds 3]

The simulator runs in its own process (so it does not share our GIL) and sends a firehose of
H0STCNT0 frames as fast as loopback takes them to every connection that subscribes. Each round
measures, on the same feed:
  bare   - websocket-client with skip_utf8_validation=True (the fastest configuration), recv_data()
           in a loop, counting data frames: no decoding, no parsing;
  client - observer.providers.kis.ws.KisConnection: UTF-8 decode, parse + normalise every record,
           PINGPONG/ack handling, stall timers, and a sink that counts the records.
Target: client >= 50 % of bare.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
import websocket

from observer.core.clock import Clock
from observer.providers.kis.auth import KisAuth
from observer.providers.kis.parse import subscribe_message
from observer.providers.kis.ws import KisConnection

TARGET = 0.5
SIM = r"""
import json, sys
from observer.sim.server import run_in_thread
sim = run_in_thread(seed=3, symbols=30, active=2, start="10:00", firehose={"rate": 0, "frames": int(sys.argv[1])},
                    ground_truth=None)
print(json.dumps({**sim.urls(), "symbols": [s.info.code for s in sim.active_syms]}), flush=True)
sys.stdin.readline()
sim.stop()
"""
KEY, SECRET = "PSbenchappkey00000000000000", "benchsecret000000000000000000="


def approval(rest: str) -> str:
    r = requests.post(rest + "/oauth2/Approval", json={"grant_type": "client_credentials", "appkey": KEY,
                                                       "secretkey": SECRET}, timeout=5)
    return r.json()["approval_key"]


def wait_idle(control: str, timeout_s: float = 30.0) -> None:
    """Until the simulator holds no WebSocket session: like KIS, it refuses a second session of one app
    key (OPSP8996) while the previous one is still open on its side, and a closed socket takes a moment
    to be noticed there."""
    deadline = time.monotonic() + timeout_s
    while requests.get(control + "/stats", timeout=5).json()["ws"]["connections"]:
        if time.monotonic() > deadline:
            raise RuntimeError("the simulator still holds a session from the previous run")
        time.sleep(0.05)


def bare(ws_url: str, rest: str, sym: str, n: int) -> float:
    ws = websocket.create_connection(ws_url, skip_utf8_validation=True)
    ws.send(subscribe_message(approval(rest), "H0STCNT0", sym))
    got, t0 = 0, 0.0
    while got < n:
        op, data = ws.recv_data()
        if data[:2] == b"0|":
            if not got:
                t0 = time.perf_counter()
            got += 1
    dt = time.perf_counter() - t0
    ws.close()
    return (n - 1) / dt


def client(ws_url: str, rest: str, sym: str, n: int, state: Path) -> float:
    done = threading.Event()
    box = {"frames": 0, "records": 0, "t0": 0.0, "t1": 0.0}

    def sink(frame, recv_ns, records):
        if records:
            if not box["frames"]:
                box["t0"] = time.perf_counter()
            box["frames"] += 1
            box["records"] += len(records)
            if box["frames"] >= n:
                box["t1"] = time.perf_counter()
                done.set()

    auth = KisAuth(base_url=rest, app_key=KEY, app_secret=SECRET, state_dir=state, clock=Clock())
    conn = KisConnection(ws_url=ws_url, auth=auth, account="bench", wcfg={"gap_markers": False}, clock=Clock(),
                         sink=sink)
    conn.subscribe(sym, "trades")
    conn.start()
    done.wait(120)
    conn.stop()
    assert box["frames"] >= n, box
    return (n - 1) / (box["t1"] - box["t0"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    env = dict(os.environ)
    lib = str(Path(__file__).resolve().parents[2] / "lib")
    env["PYTHONPATH"] = lib + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    # every connection gets its own firehose of `frames` frames; one extra round of headroom
    p = subprocess.Popen([sys.executable, "-c", SIM, str(a.frames + 1000)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, env=env)
    try:
        info = json.loads(p.stdout.readline())
        sym = info["symbols"][0]
        state = Path(tempfile.mkdtemp())
        b_rates, c_rates = [], []
        for r in range(a.rounds):
            wait_idle(info["control"])
            b_rates.append(bare(info["ws"], info["rest"], sym, a.frames))
            wait_idle(info["control"])
            c_rates.append(client(info["ws"], info["rest"], sym, a.frames, state))
            print(f"round {r + 1}: bare websocket-client {b_rates[-1]:,.0f} frames/s  KIS client (recv+parse) "
                  f"{c_rates[-1]:,.0f} frames/s  ratio {c_rates[-1] / b_rates[-1]:.3f}")
    finally:
        p.stdin.write("\n")
        p.stdin.flush()
        p.wait(10)
    v, b = statistics.median(c_rates), statistics.median(b_rates)
    ratio = v / b
    print(f"{a.frames:,} frames per run over loopback; medians: client {v:,.0f} frames/s, bare {b:,.0f} frames/s")
    print(f"BENCH ws value={v:.0f} frames/s baseline={b:.0f} ratio={ratio:.3f} target={TARGET} "
          f"{'pass' if ratio >= TARGET else 'miss'}")
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
