"""Memory of the real observer-sim program with ground truth on, at high speed with many symbols.

It once grew by hundreds of MiB a second: each pump tick generated everything since the last one as one list
and the ground truth kept every line as its own orjson bytes object until the next flush (~4 KiB of RSS per
line). A late start or a pump that fell behind made ticks bigger, which made the pump slower, which made the
next tick bigger still. Now a tick is at most SLICE_MS of market time and ground truth streams through a
bounded buffer, so memory grows only with the compact per-trade history that REST serves.
"""

import os

import psutil
import requests

from observer.sim import SimProcess
from tests.support import wait_for

MIB = 1 << 20


def _peak_rss(pid: int) -> int | None:
    """The process's high-water mark of RSS (Linux), which also catches a spike between two samples."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for ln in f:
                if ln.startswith("VmHWM:"):
                    return int(ln.split()[1]) * 1024
    except OSError:
        pass
    return None


def test_rss_stays_bounded_with_ground_truth_at_high_speed(tmp_path):
    gt = tmp_path / "gt"
    # 09:20 start: the catch-up alone generates 50 market minutes of 200 active symbols (~300k events)
    args = ["--seed", "1", "--symbols", "1000", "--active", "200", "--speed", "600", "--date", "20260316",
            "--start", "09:20", "--ground-truth", str(gt)]
    with SimProcess(args, stderr_path=str(tmp_path / "err.log")) as sim:
        proc = psutil.Process(sim.proc.pid)

        def dispatched() -> int:
            return requests.get(sim.control + "/health", timeout=10).json()["dispatched_t_ms"]

        # Waits are on market time the pump has actually generated (not on wall time), with deadlines that
        # allow a pump twenty times slower than real-time-×600 (which this machine keeps up with: ~30k events/s).
        t1 = dispatched() + 5 * 60_000
        wait_for(lambda: dispatched() >= t1, timeout=40, interval=0.1, what="5 market minutes")
        rss1 = proc.memory_info().rss
        t2 = t1 + 20 * 60_000
        wait_for(lambda: dispatched() >= t2, timeout=40, interval=0.1, what="20 more market minutes")
        rss2 = proc.memory_info().rss
        peak = _peak_rss(proc.pid)
    written = os.path.getsize(gt / "books.jsonl") + os.path.getsize(gt / "trades.jsonl")
    print(f"sim RSS {rss1 / MIB:.0f} → {rss2 / MIB:.0f} MiB over 20 market minutes, peak "
          f"{(peak or 0) / MIB:.0f} MiB, ground truth {written / MIB:.0f} MiB")
    assert written > 40 * MIB  # it really generated and logged a lot
    # Measured +2..6 MiB (the REST trade history, ~40 B a trade); before the fix a pump that had fallen
    # behind grew by hundreds of MiB a second.
    assert rss2 - rss1 < 64 * MIB
    # Measured ~50 MiB throughout; before the fix ~1.1 GiB after the catch-up, which alone peaked at ~1.3 GiB.
    assert rss2 < 400 * MIB
    if peak is not None:
        assert peak < 400 * MIB
