"""bench_gapfill: backfill one-hour holes of several symbols from the simulator's time-sliced conclusions,
measured side by side against
- the minimum possible REST calls for this API: the fewest pages any pager could use, computed by an
  oracle that knows every trade's time and picks each cursor second with that knowledge. The paging
  API returns the newest 30 rows at or before a whole second, so a page that ends inside a second must
  be followed by a page at that same second (re-reading its rows) unless one knows the second holds no
  older trade; ceil(missing trades / 30) is printed too, but no pager can reach it with this API;
- the time bound: calls / the configured rate limit.

    .venv/bin/python tests/bench/bench_gapfill.py [--symbols 4] [--rate 19] [--server-limit 20]

The tree is built from the simulator's ground truth: every trade of the symbol from 09:00 to 10:40
recorded, except those of 09:30:00-10:29:59 (the hole). The gap-filler must find the hole (cumulative
volume), page it back and match ground truth exactly.
Targets: calls <= 1.05 x minimum possible, time <= 1.1 x bound.
"""

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from observer.core.clock import NS  # noqa: E402
from observer.providers.base import get_provider  # noqa: E402
from observer.recover.gapfill import GapFiller  # noqa: E402
from observer.store.replay import merged_trades  # noqa: E402
from tests.support.pager_oracle import ROWS, oracle_calls  # noqa: E402
from tests.support.simenv import SimEnv  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--symbols", type=int, default=4)
    ap.add_argument("--rate", type=float, default=19.0)
    ap.add_argument("--server-limit", type=float, default=20.0)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        env = SimEnv(Path(d), start="10:40:00", speed=1.0, symbols=40, active=12,
                     sim_kw={"rate_limit": a.server_limit},
                     cfg_overrides={"providers": {"kis": {"rate_limit_per_s": a.rate}}, "gapfill": {"tracks": ["B"]}})
        try:
            ranked = sorted((s for s, u in env.universe_truth.items() if u["active"]),
                            key=lambda s: -env.universe_truth[s]["rate"])
            syms = ranked[:: max(1, len(ranked) // a.symbols)][: a.symbols]
            truth = {s: [] for s in syms}
            for t in env.truth("trades"):
                if t["symbol"] in truth:
                    truth[t["symbol"]].append(t)
            day0 = env.t_ns(0)
            h0, h1, end = env.t_ns(9 * 3600_000 + 1800_000), env.t_ns(10 * 3600_000 + 1800_000), env.t_ns(
                10 * 3600_000 + 2400_000)
            store = env.store("observer-track-b@kis")
            part = store.partition("scalp", "kis", "krx")
            from observer.core.clock import ManualClock
            from observer.store.store import Store

            evstore = Store(env.root, clock=ManualClock(env.t_ns(9 * 3600_000 - 60_000)), program="observer-track-b@kis",
                            provider="kis")
            ev = evstore.events("kis")
            minimum = oracle = 0
            rows = []
            missing_total = 0
            for s in syms:
                ev.emit("slot", "INFO", action="allocate", slot=0, symbol=s)
                ts = truth[s]
                inside = [i for i, t in enumerate(ts) if h0 <= env.t_ns(t["t_ms"]) < h1]
                missing_total += len(inside)
                minimum += math.ceil(len(inside) / ROWS)
                oracle += oracle_calls([t["t_ms"] // 1000 for t in ts], inside[0], inside[-1])
                for t in ts:
                    ns = env.t_ns(t["t_ms"])
                    if ns >= end or h0 <= ns < h1 or ns < env.t_ns(9 * 3600_000):
                        continue
                    rows.append({"v": 1, "kind": "trade", "provider": "kis", "market": "krx", "symbol": s,
                                 "exch_ns": day0 + (t["t_ms"] // 1000) * NS, "recv_ns": ns + 1000,
                                 "quality": "normal", "price": t["price"], "qty": t["qty"], "cum_vol": t["acml_vol"],
                                 "side": t["side"] if t["side"] in ("buy", "sell") else "none"})
            for r in sorted(rows, key=lambda r: r["recv_ns"]):  # files are in arrival order, as Track B writes
                part.append(r, r["recv_ns"])
            part.close()
            store.close()
            evstore.close()
            store = env.store("observer-gap-filler")
            rest = get_provider("kis", env.cfg, env.secrets, store, env.clock).rest()
            rest.current_price(syms[0])  # token + connection warm-up
            t0 = time.monotonic()
            s = GapFiller(store=store, rest=rest, cfg=env.cfg, clock=env.clock, day=env.day, progress=False).run()
            took = time.monotonic() - t0
            store.close()
            got = {x: [] for x in syms}
            for r in merged_trades(env.root, env.day, symbols=set(syms)):
                got[r["symbol"]].append((r["cum_vol"], r["price"], r["qty"]))
            exact = all(got[x] == [(t["acml_vol"], t["price"], t["qty"]) for t in truth[x]
                                   if env.t_ns(9 * 3600_000) <= env.t_ns(t["t_ms"]) < end] for x in syms)
            for x in syms:
                want = [(t["acml_vol"], t["price"], t["qty"]) for t in truth[x]
                        if env.t_ns(9 * 3600_000) <= env.t_ns(t["t_ms"]) < end]
                if got[x] != want:
                    bad = next(i for i, (p, q) in enumerate(zip(got[x], want, strict=False)) if p != q) \
                        if any(p != q for p, q in zip(got[x], want, strict=False)) else min(len(got[x]), len(want))
                    print(f"{x}: {len(got[x])} merged vs {len(want)} truth; first difference at {bad}: "
                          f"{got[x][bad:bad + 2]} vs {want[bad:bad + 2]}")
        finally:
            env.close()
    calls = s["calls"]
    bound = calls / a.rate
    r_calls = calls / minimum
    r_time = took / bound
    print(f"symbols {syms}; missing trades {missing_total} in {len(syms)} symbol-hours; recovered "
          f"{s['recovered_trades']}; exact match with ground truth: {exact}")
    print(f"calls {calls} vs minimum possible (oracle pager) {oracle} (ratio {calls / oracle:.3f}); "
          f"ceil(n/{ROWS}) {minimum} (ratio {r_calls:.3f}, unreachable by any pager with a one-second cursor: "
          f"the oracle itself needs {oracle / minimum:.3f}x); per symbol-hour {calls / len(syms):.1f} calls")
    print(f"time {took:.2f} s vs bound calls/rate {bound:.2f} s at {a.rate}/s (ratio {r_time:.3f}); "
          f"rate-limited replies {rest.stats.get('rate_limited', 0)}")
    ok_t = r_time <= 1.1
    r_min = calls / oracle
    print(f"BENCH gapfill_time value={took:.2f} s baseline={bound:.2f} ratio={r_time:.3f} target=1.1 "
          f"{'pass' if ok_t and exact else 'miss'}")
    print(f"BENCH gapfill value={calls / len(syms):.1f} calls/symbol-hour baseline={oracle / len(syms):.1f} "
          f"ratio={r_min:.3f} target=1.05 {'pass' if r_min <= 1.05 and exact else 'miss'}")


if __name__ == "__main__":
    main()
