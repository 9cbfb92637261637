"""Child process for the kill -9 test: appends deterministic records forever and prints
'ACK <n>' after each sync, i.e. once records 0..n-1 are durable. The parent kills it at random."""

import sys

from observer.store.writer import Durability, JsonlWriter


def record(i: int) -> dict:
    return {"v": 1, "kind": "trade", "provider": "kis", "market": "krx", "symbol": f"{i % 997:06d}",
            "exch_ns": 1_790_000_000_000_000_000 + i, "recv_ns": 1_790_000_000_000_000_000 + i,
            "quality": "normal", "price": 71900 + i % 50, "qty": 1 + i % 13, "cum_vol": i,
            "side": "buy", "extra": {"pad": "x" * (i % 200)}}


def main():
    path = sys.argv[1]
    start = int(sys.argv[2])
    w = JsonlWriter(path, durability=Durability(interval_ms=2, max_records=37))
    i = start
    out = sys.stdout
    batches = 0
    while True:
        for _ in range(50):
            w.append(record(i))
            i += 1
        batches += 1
        if batches % 4 == 0:
            w.sync()
            out.write(f"ACK {i}\n")
            out.flush()


if __name__ == "__main__":
    main()
