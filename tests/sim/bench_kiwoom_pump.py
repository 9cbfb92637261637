"""How much serving Kiwoom beside KIS costs the market pump (run by hand: python -m tests.sim.bench_kiwoom_pump).

For each setting — KIS only, KIS + Kiwoom — a simulator on a manual clock at 09:01 gets one subscriber per
provider to the 10 busiest symbols' trades and books (a reader thread drains each), then the clock jumps
10 market minutes at a time and the time the pump takes to catch up is measured (every event encoded for
every provider and queued to every subscriber). Also the start-up catch-up (08:30 → 11:00) with no client.
Prints one JSON line per setting."""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time

from observer.core.clock import ManualClock, kst_ns, parse_yyyymmdd
from observer.sim import run_in_thread
from tests.sim.kis import Rest, Ws, sub_msg
from tests.sim.kiwoom import KRest, KWs

DATE = "20260316"
JUMPS = 6


def _drain(ws, counter: list[int]) -> None:
    """Read the connection's raw bytes (no frame parsing: a Python reader in this process would take the GIL
    from the pump and measure itself)."""
    sock = ws.sock
    try:
        while True:
            b = sock.recv(1 << 20)
            if not b:
                return
            counter[0] += len(b)
    except OSError:
        return


def run(providers: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        sim0 = run_in_thread(seed=1, symbols=500, active=60, date=DATE, start="11:00", speed=1,
                             providers=providers, ground_truth=f"{tmp}/a")
        startup = time.monotonic() - t0
        sim0.stop()
        clock = ManualClock(kst_ns(parse_yyyymmdd(DATE), "000000") + (9 * 3600 + 60) * 1_000_000_000)
        sim = run_in_thread(clock=clock, seed=1, symbols=500, active=60, date=DATE, providers=providers,
                            kiwoom_rate_limit=100, ground_truth=f"{tmp}/b")
        codes = [s.code for s in sorted(sim.universe.symbols, key=lambda s: s.rank) if s.active][:10]
        counts: list[list[int]] = []
        kis = Ws(sim.ws_url)
        key = Rest(sim.rest_url).approval()
        for c in codes:
            for tr in ("H0STCNT0", "H0STASP0"):
                kis.send(sub_msg(key, tr, c))
                kis.control("OPSP0000")
        clients = [kis.ws]
        if "kiwoom" in providers:
            k = KRest(sim.urls()["kiwoom"]["rest"])
            k.login()
            kw = KWs(sim.urls()["kiwoom"]["ws"])
            kw.login(k.token)
            kw.reg(codes, ["0B", "0D"])
            clients.append(kw.ws)
        threads = []
        for ws in clients:
            counts.append([0])
            t = threading.Thread(target=_drain, args=(ws, counts[-1]), daemon=True)
            t.start()
            threads.append(t)
        took = []
        for _ in range(JUMPS):
            target = sim.market_ms() + 600_000
            clock.advance(600)
            t0 = time.monotonic()
            while sim.dispatched_ms < target:
                time.sleep(0.001)
            took.append(time.monotonic() - t0)
        events = sim.generated["trades"] + sim.generated["books"]
        sim.stop()
        for t in threads:
            t.join(10)
        return {"providers": providers, "startup_catchup_s": round(startup, 2),
                "pump_s_per_10min": [round(x, 3) for x in took], "pump_s_total": round(sum(took), 2),
                "events_generated": events, "bytes_received": [c[0] for c in counts]}


if __name__ == "__main__":
    order = [["kis"], ["kis", "kiwoom"]] * (int(sys.argv[1]) if len(sys.argv) > 1 else 1)
    for p in order:
        print(json.dumps(run(p)), flush=True)
