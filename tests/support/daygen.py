"""Generate a day of the tree quickly (tests and benchmarks).

Market-data files are cut from a pool of realistic, distinct JSONL lines (a few MB) at random
offsets; deflate sees only 32 KB back, so the compression ratio is that of real records, not of a
repeated block. Events are emitted through the real Store (gap markers, anomaly markers).
"""

from __future__ import annotations

import os
import random
from datetime import date, datetime
from pathlib import Path

import orjson

from observer.core.clock import KST, ManualClock, kst_ns
from observer.store import paths
from observer.store.store import Store

SYMBOLS = [f"{i:06d}" for i in range(5930, 5930 + 400 * 7, 7)]


def line_pool(rng: random.Random, n_bytes: int = 4 << 20) -> bytes:
    out = []
    size = 0
    ns = 1_767_000_000_000_000_000
    while size < n_bytes:
        ns += rng.randrange(50_000, 5_000_000)
        sym = rng.choice(SYMBOLS)
        if rng.random() < 0.6:
            rec = {"v": 1, "kind": "trade", "provider": "kis", "market": "kr_stocks", "symbol": sym,
                   "exch_ts": f"{rng.randrange(9, 15):02d}{rng.randrange(60):02d}{rng.randrange(60):02d}",
                   "recv_ns": ns, "price": rng.randrange(1000, 900000, 5), "qty": rng.randrange(1, 5000),
                   "side": rng.choice(("buy", "sell")), "quality": "normal", "seq": rng.randrange(1 << 30)}
        else:
            rec = {"v": 1, "kind": "book", "provider": "kis", "market": "kr_stocks", "symbol": sym,
                   "recv_ns": ns, "quality": "normal",
                   "asks": [[rng.randrange(1000, 900000, 5), rng.randrange(1, 90000)] for _ in range(5)],
                   "bids": [[rng.randrange(1000, 900000, 5), rng.randrange(1, 90000)] for _ in range(5)]}
        b = orjson.dumps(rec, option=orjson.OPT_APPEND_NEWLINE)
        out.append(b)
        size += len(b)
    return b"".join(out)


def _write_from_pool(path: Path, pool: bytes, size: int, rng: random.Random) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with open(path, "wb") as f:
        while written < size:
            start = pool.find(b"\n", rng.randrange(len(pool) // 2)) + 1
            end = pool.rfind(b"\n", start, start + min(1 << 20, size - written + 400)) + 1
            if end <= start:
                end = pool.find(b"\n", start) + 1
            f.write(pool[start:end])
            written += end - start
    return written


def make_day(root: Path, day: date, mb: float = 4.0, *, seed: int = 1, gaps: int = 3, recoverable: int = 2,
             anomaly_event: bool = False, quality_anomaly: bool | None = None, random_payload_mb: float = 0.0) -> int:
    """A day's files in every DAY_PARTITION; returns the bytes written. `random_payload_mb` adds a
    raw file of incompressible lines (for transfer tests that need a large archive)."""
    rng = random.Random(seed)
    pool = line_pool(rng, min(4 << 20, max(256 << 10, int(mb * (1 << 20)))))
    total_target = int(mb * (1 << 20))
    ymd = day.strftime("%Y%m%d")
    total = 0
    # scalp 55 %, raw 30 %, swing 10 %, recovered 5 %
    specs = [("scalp", 0.55, 12), ("raw", 0.30, 6), ("swing", 0.10, 6), ("recovered", 0.05, 2)]
    for part, share, nfiles in specs:
        per = max(1, int(total_target * share / nfiles))
        for i in range(nfiles):
            if part == "scalp":
                p = Path(root, "scalp", "kis", "kr_stocks", ymd, f"{9 + i // 6:02d}_{(i % 6) * 10:02d}_00.jsonl")
            elif part == "raw":
                p = Path(root, "raw", "kis", ymd, f"{9 + i:02d}.jsonl")
            elif part == "swing":
                p = Path(root, "swing", "kis", "kr_stocks", ymd, f"{9 + i:02d}_00.jsonl")
            else:
                p = paths.recovered_file(Path(root), "kis", "kr_stocks", day, f"ticks_{i}")
            total += _write_from_pool(p, pool, per, rng)
    if random_payload_mb:
        p = Path(root, "raw", "upbit", ymd, "10.jsonl")
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "wb") as f:
            left = int(random_payload_mb * (1 << 20))
            while left > 0:
                b = os.urandom(min(left, 3 << 18)).hex().encode()[: min(left, 3 << 18)]
                f.write(b'{"v":1,"kind":"raw","frame":"' + b + b'"}\n')
                left -= len(b) + 30
                total += len(b) + 30
    clock = ManualClock(datetime(day.year, day.month, day.day, 10, 0, tzinfo=KST))
    with Store(root, program="gen", provider="kis", clock=clock) as st:
        ev = st.events("kis")
        for i in range(gaps):
            ev.emit("gap_marker", "WARNING", market="kr_stocks", symbol=SYMBOLS[i], start_ns=kst_ns(day, "100000"),
                    end_ns=kst_ns(day, "100500"), track="B", cause="ws_closed", recoverable=i < recoverable,
                    gap_id=f"g{i}")
            clock.advance(60)
        if anomaly_event:
            ev.emit("gap_marker", "CRITICAL", market="kr_stocks", symbol="005930", start_ns=kst_ns(day, "110000"),
                    end_ns=kst_ns(day, "111000"), track="B", cause="reconnect storm", recoverable=False,
                    gap_id="anomaly", anomaly_day=True)
    if quality_anomaly is not None:
        q = paths.reports_dir(Path(root), day)
        q.mkdir(parents=True, exist_ok=True)
        (q / "quality.json").write_bytes(orjson.dumps({"date": ymd, "anomaly_day": quality_anomaly}))
        (q / "quality.html").write_text("<html><body>quality</body></html>\n")
    return total
