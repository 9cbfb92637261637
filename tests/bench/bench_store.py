"""bench_store: records/s through the store's writer (default durability policy) vs a bare loop
writing the same pre-serialised lines to a file, measured side by side in one run.

    .venv/bin/python tests/bench/bench_store.py [--records 300000] [--rounds 5]

Prints the medians and two BENCH lines:
  store_records  — validated dict records/s through JsonlWriter.append (target >= 100,000/s)
  store          — pre-serialised lines/s through JsonlWriter.append_line vs the bare loop (target >= 0.5x)
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

import orjson

from observer.store.writer import Durability, JsonlWriter


def make_records(n):
    base = 1_795_000_000_000_000_000
    out = []
    for i in range(n):
        out.append({"v": 1, "kind": "trade", "provider": "kis", "market": "krx", "symbol": f"{i % 2500:06d}",
                    "exch_ns": base + i * 1000, "recv_ns": base + i * 1000 + 137, "quality": "normal",
                    "price": 71900 + i % 40 * 100, "qty": 1 + i % 17, "cum_vol": 3_052_507 + i,
                    "cum_value": 219_853_241_700 + i * 71900, "side": "buy" if i % 3 else "sell",
                    "bid": 71800, "ask": 71900, "open": 72100, "high": 72400, "low": 71700, "phase": "20",
                    "session_id": "kis-main-1", "slot": i % 41, "mitigation": 0})
    return out


def bare(lines, path):
    t = time.perf_counter()
    with open(path, "ab") as f:
        for ln in lines:
            f.write(ln)
        f.flush()
        os.fsync(f.fileno())
    return len(lines) / (time.perf_counter() - t)


def store_lines(lines, path):
    t = time.perf_counter()
    w = JsonlWriter(path, durability=Durability())
    for ln in lines:
        w.append_line(ln)
    w.sync()
    r = len(lines) / (time.perf_counter() - t)
    w.close()
    return r


def store_records(records, path):
    t = time.perf_counter()
    w = JsonlWriter(path, durability=Durability())
    for rec in records:
        w.append(rec)
    w.sync()
    r = len(records) / (time.perf_counter() - t)
    w.close()
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=300_000)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    records = make_records(a.records)
    lines = [orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE) for r in records]
    size = statistics.mean(len(x) for x in lines)
    res = {"bare": [], "lines": [], "records": []}
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
        for k in range(a.rounds):
            for name, fn, data in (("bare", bare, lines), ("lines", store_lines, lines), ("records", store_records, records)):
                p = os.path.join(d, f"{name}{k}.jsonl")
                res[name].append(fn(data, p))
                os.unlink(p)
    med = {k: statistics.median(v) for k, v in res.items()}
    print(f"records: {a.records} x {a.rounds} rounds, mean line {size:.0f} bytes, python {sys.version.split()[0]}")
    for k, v in res.items():
        print(f"  {k:<8} median {med[k]:>12,.0f}/s  rounds: {', '.join(f'{x:,.0f}' for x in v)}")
    r1 = med["records"]
    print(f"BENCH store_records value={r1:.0f} records/s baseline={med['bare']:.0f} ratio={r1 / med['bare']:.3f} "
          f"target=100000 {'pass' if r1 >= 100_000 else 'miss'}")
    ratio = med["lines"] / med["bare"]
    print(f"BENCH store value={med['lines']:.0f} lines/s baseline={med['bare']:.0f} ratio={ratio:.3f} "
          f"target=0.5 {'pass' if ratio >= 0.5 else 'miss'}")


if __name__ == "__main__":
    main()
