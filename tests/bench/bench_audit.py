"""bench_audit: MB/s of observer-audit scanning one day's tree (events, scalp, recovered, raw) vs `wc -l`
over the same files, side by side.

    .venv/bin/python tests/bench/bench_audit.py [--mb 200]

The tree is synthetic but shaped like a Track B day: 20 held symbols, trades + book samples in scalp/
(10-minute files), every frame in raw/, a few hundred events. wc -l only counts newlines; the audit
parses every scalp line as JSON and scans raw/ for receive times, so the ratio is printed for scale.
The issue sets no target; ours is operational: the largest day we plan for (20 slots with trades and
books at ~15 frames/s each over the 6.5-hour session, ~700 bytes of raw/ + scalp/ per frame: ~5 GB)
audited within 5 minutes of the 15:40 gap-fill, i.e. >= 17 MB/s on the B2s.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import orjson  # noqa: E402

from observer.core.clock import NS, kst_ns  # noqa: E402
from observer.recover.audit import build_quality  # noqa: E402
from observer.store import paths  # noqa: E402
from observer.store.reader import day_files  # noqa: E402

DAY = date(2026, 3, 16)
TARGET_MB_S = 17.0  # ~5 GB day in 5 min (docstring)


def build(root: Path, mb: float) -> None:
    t0 = kst_ns(DAY, "093000")
    syms = [f"{i:06d}" for i in range(20)]
    cum = dict.fromkeys(syms, 0)
    raw_lines, scalp_lines = {}, {}
    size = 0
    i = 0
    frame = "0|H0STCNT0|001|" + "^".join(["005930", "093000", "71000"] + ["1"] * 43)
    while size < mb * 1e6:
        sym = syms[i % 20]
        ns = t0 + i * 20_000_000
        cum[sym] += 10
        tr = {"v": 1, "kind": "trade", "provider": "kis", "market": "krx", "symbol": sym, "exch_ns": ns - ns % NS,
              "recv_ns": ns, "quality": "normal", "price": 71000, "qty": 10, "cum_vol": cum[sym], "side": "buy",
              "bid": 70900, "ask": 71000, "track": "B", "mitigation": 0, "slot": i % 20,
              "extra": {"hour_cls": "0", "halt": "N", "ask_size": 100, "bid_size": 100, "prev_close": 70000}}
        raw = {"v": 1, "kind": "raw", "provider": "kis", "recv_ns": ns, "frame": frame}
        a = orjson.dumps(tr) + b"\n"
        b = orjson.dumps(raw) + b"\n"
        scalp_lines.setdefault(paths.scalp_file(root, "kis", "krx", paths.window_start_ns(ns, 10)), []).append(a)
        raw_lines.setdefault(paths.raw_file(root, "kis", ns), []).append(b)
        size += len(a) + len(b)
        i += 1
    for d in (scalp_lines, raw_lines):
        for p, lines in d.items():
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"".join(lines))
    ev = paths.events_file(root, "kis", DAY)
    ev.parent.mkdir(parents=True, exist_ok=True)
    with open(ev, "wb") as f:
        for k, s in enumerate(syms):
            f.write(orjson.dumps({"v": 1, "kind": "event", "ts_ns": t0 - NS, "event": "slot", "severity": "INFO",
                                  "provider": "kis", "program": "observer-track-b@kis", "action": "allocate",
                                  "slot": k, "symbol": s}) + b"\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=200.0)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        build(root, a.mb)
        files = [str(p) for _, p in day_files(root, DAY, ("scalp", "raw", "events", "recovered"))]
        total = sum(Path(f).stat().st_size for f in files) / 1e6
        subprocess.run(["cat", *files], stdout=subprocess.DEVNULL, check=True)  # same page-cache state for both
        t0 = time.monotonic()
        subprocess.run(["wc", "-l", *files], stdout=subprocess.DEVNULL, check=True)
        t_wc = time.monotonic() - t0
        t0 = time.monotonic()
        q = build_quality(root, DAY, {"gapfill": {"tracks": ["B"]}})
        t_audit = time.monotonic() - t0
    wc_rate, audit_rate = total / t_wc, total / t_audit
    ratio = audit_rate / wc_rate
    print(f"tree {total:.0f} MB in {len(files)} files; audit found {q['completeness'][0]['recorded_trades']:,} trades "
          f"of {q['completeness'][0]['symbol']}, {q['connection']['raw_frames']:,} raw frames")
    print(f"wc -l {t_wc:.2f} s = {wc_rate:.0f} MB/s; audit {t_audit:.2f} s = {audit_rate:.0f} MB/s; ratio {ratio:.3f}")
    print(f"BENCH audit value={audit_rate:.1f} MB/s baseline={wc_rate:.1f} ratio={ratio:.3f} target=17MB/s "
          f"{'pass' if audit_rate >= TARGET_MB_S else 'miss'}")


if __name__ == "__main__":
    main()
