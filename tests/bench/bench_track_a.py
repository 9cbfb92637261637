"""bench_track_a: one Track A sweep of N symbols against the simulator at the real-account limit,
sweep time vs the bound N / rate_limit (the client's configured rate), in one run.

    .venv/bin/python tests/bench/bench_track_a.py [--symbols 2500] [--server-limit 20] [--rate 19]

Target: sweep time <= 1.05 x N / rate, with zero rate-limit rejections from the server.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from observer.collect.track_a import TrackA  # noqa: E402
from observer.core.clock import NS  # noqa: E402
from observer.markets import calendar_from_config  # noqa: E402
from observer.providers.base import get_provider  # noqa: E402
from tests.support.simenv import SimEnv  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--symbols", type=int, default=2500)
    ap.add_argument("--server-limit", type=float, default=20.0, help="the simulator's per-key limit (KIS real: 20/s)")
    ap.add_argument("--rate", type=float, default=19.0, help="the client's configured rate (default 19 = 20 minus headroom)")
    ap.add_argument("--workers", type=int, default=None, help="track_a.workers (default: the config default)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        env = SimEnv(Path(d), start="09:59:59", speed=1.0, symbols=a.symbols, active=40,
                     sim_kw={"rate_limit": a.server_limit},
                     cfg_overrides={"providers": {"kis": {"rate_limit_per_s": a.rate}},
                                    "track_a": {"interval_minutes": 10,
                                                **({"workers": a.workers} if a.workers else {})}})
        try:
            store = env.store("bench")
            prov = get_provider("kis", env.cfg, env.secrets, store, env.clock)
            rest = prov.rest()
            rest.current_price(next(iter(env.universe_truth)))  # token + connection warm-up
            symbols = sorted(env.universe_truth)
            ta = TrackA(store=store, rest=rest, clock=env.clock, calendar=calendar_from_config(env.cfg),
                        cfg=env.cfg, provider="kis", symbols=symbols)
            def rate_limited():
                return sum(d.get("rate_limited", 0) for d in env.sim.stats()["per_app_key"].values())

            before = rate_limited()
            slot = env.clock.now_ns()
            t0 = time.monotonic()
            ev = ta.sweep(slot, slot + 3600 * NS)
            took = time.monotonic() - t0
            rejected = rate_limited() - before
            store.close()
        finally:
            env.close()
    bound = len(symbols) / a.rate
    ratio = took / bound
    print(f"symbols {len(symbols)}, ok {ev['ok']}, failed {ev['failed']}, coverage {ev['coverage_pct']}%")
    print(f"sweep {took:.1f} s; bound N/rate = {bound:.1f} s (server limit {a.server_limit}/s); "
          f"server rate-limit rejections (EGW00201): {rejected}")
    ok = ratio <= 1.05 and rejected == 0 and ev["failed"] == 0
    print(f"BENCH track_a value={took:.2f} s baseline={bound:.2f} ratio={ratio:.3f} target=1.05 {'pass' if ok else 'miss'}")


if __name__ == "__main__":
    main()
