"""bench_decode: H0STCNT0 records/s through observer-decode's library path vs a bare str.split('^') loop.

    .venv/bin/python tests/bench/bench_decode.py [--frames 200000] [--rounds 5]

The frames are the real sample frames (1-, 3-record and 47-field H0STCNT0) with the symbol, time and
volumes varied, so caches see a realistic spread. Both loops run side by side in each round over the
same list; the medians are compared. Target: >= 100,000 H0STCNT0 records/s on one core.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

from observer.providers.kis.parse import KisFrameDecoder

SAMPLES = Path(__file__).resolve().parent.parent / "fixtures" / "samples" / "kis_h0stcnt0_frames.txt"
TARGET = 100_000


def make_frames(n: int) -> tuple[list[str], int]:
    base = [line for line in SAMPLES.read_text().splitlines() if line.startswith("0|H0STCNT0|")]
    single = [b for b in base if "|001|" in b]
    out, records = [], 0
    for i in range(n):
        src = base[1] if i % 20 == 0 else single[i % len(single)]  # 1 in 20 frames carries 3 records
        head, payload = src.rsplit("|", 1)
        cnt = int(head.split("|")[2])
        f = payload.split("^")
        w = len(f) // cnt
        for k in range(cnt):
            o = k * w
            f[o] = f"{(i * 7 + k) % 2500:06d}"
            s = 32400 + (i // 50) % 23400
            f[o + 1] = f"{s // 3600:02d}{s // 60 % 60:02d}{s % 60:02d}"
            f[o + 13] = str(1_000_000 + i * 3 + k)
        out.append(f"{head}|{'^'.join(f)}")
        records += cnt
    return out, records


def run_lib(frames) -> tuple[float, int]:
    dec = KisFrameDecoder()
    decode = dec.decode
    n = 0
    t0 = time.perf_counter()
    for fr in frames:
        n += len(decode(fr, 1_795_000_000_000_000_000).records)
    return time.perf_counter() - t0, n


def run_bare(frames) -> tuple[float, int]:
    n = 0
    t0 = time.perf_counter()
    for fr in frames:
        _, _, cnt, payload = fr.split("|", 3)
        fields = payload.split("^")
        n += len(fields) // (len(fields) // int(cnt))
    return time.perf_counter() - t0, n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    frames, records = make_frames(a.frames)
    lib, bare = [], []
    for r in range(a.rounds):
        dt, n = run_lib(frames)
        assert n == records, (n, records)
        lib.append(n / dt)
        dt, n = run_bare(frames)
        assert n == records
        bare.append(n / dt)
        print(f"round {r + 1}: library {lib[-1]:,.0f} rec/s  bare split {bare[-1]:,.0f} rec/s  "
              f"ratio {lib[-1] / bare[-1]:.3f}")
    v, b = statistics.median(lib), statistics.median(bare)
    print(f"{a.frames:,} frames, {records:,} H0STCNT0 records per round; medians: library {v:,.0f} rec/s, "
          f"bare str.split {b:,.0f} rec/s")
    ok = v >= TARGET
    print(f"BENCH decode value={v:.0f} records/s baseline={b:.0f} ratio={v / b:.3f} target={TARGET} "
          f"{'pass' if ok else 'miss'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
