"""Flushing outside the append lock: a real flush whose fsync takes seconds (the writer's fsync is
wrapped by a function that waits for the test) does not hold up appends, nothing is acknowledged
before its fsync, one flush runs per file at a time, and order survives a failing fsync."""

import errno
import os
import threading
import time
from datetime import datetime

import orjson

from observer.core.clock import KST, to_ns
from observer.store.store import Store
from observer.store.writer import Durability, JsonlWriter
from tests.support import wait_for

T0 = to_ns(datetime(2026, 11, 23, 9, 0, 0, tzinfo=KST))
STALL_S = 2.0


def trade(i, recv_ns=T0):
    return {"v": 1, "kind": "trade", "provider": "kis", "market": "krx", "symbol": f"{i % 50:06d}",
            "exch_ns": recv_ns, "recv_ns": recv_ns, "quality": "normal", "price": 1000 + i % 500, "qty": 1 + i}


def line(i, recv_ns=T0):
    return orjson.dumps(trade(i, recv_ns), option=orjson.OPT_APPEND_NEWLINE)


class StallingFsync:
    """os.fsync for files whose path contains `match`; once armed, the next such fsync waits until
    release() (then really fsyncs). Counts how many run at once."""

    def __init__(self, match: str):
        self.match = match
        self.armed = False
        self.entered = threading.Event()
        self.released = threading.Event()
        self.calls = 0
        self.concurrent = 0
        self.max_concurrent = 0
        self._lock = threading.Lock()

    def __call__(self, fd: int) -> None:
        if self.match not in os.readlink(f"/proc/self/fd/{fd}"):
            return os.fsync(fd)
        with self._lock:
            self.calls += 1
            self.concurrent += 1
            self.max_concurrent = max(self.max_concurrent, self.concurrent)
            stall, self.armed = self.armed, False
        try:
            if stall:
                self.entered.set()
                assert self.released.wait(30), "the test never released the stalled fsync"
            os.fsync(fd)
        finally:
            with self._lock:
                self.concurrent -= 1


def append_paced(append, first: int, seconds: float) -> tuple[int, list[float]]:
    """Append records first.. for `seconds` at ~10,000/s, timing each call; returns (next index, times)."""
    took = []
    i = first
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(50):
            t = time.perf_counter()
            append(i)
            took.append(time.perf_counter() - t)
            i += 1
        time.sleep(0.005)
    return i, took


def test_fsync_stall_does_not_block_appends_and_acks_after_it(tmp_path):
    fs = StallingFsync("/scalp/")
    s = Store(tmp_path, provider="kis", durability=Durability(interval_ms=50, max_records=2000), fsync=fs)
    s.start_flusher(0.01)
    part = s.partition("scalp", "kis", "krx")
    for i in range(100):
        part.append(trade(i), T0)
    w = part._w
    wait_for(lambda: w.acked == 100, 10, "the flusher to make the first records durable", interval=0.005)
    fs.armed = True
    n = 100
    while not fs.entered.is_set():  # appends go on until the flusher is inside the stalled fsync
        part.append(trade(n), T0)
        n += 1
        assert n < 1_000_000
    acked_at_stall = w.acked
    t_stall = time.monotonic()
    n, took = append_paced(lambda i: part.append(trade(i), T0), n, STALL_S)
    assert w.acked == acked_at_stall, "records were acknowledged while their fsync had not returned"
    assert s.last_fsync_s >= STALL_S, "the fsync in progress is not visible to mitigation"
    assert w.pending == n - acked_at_stall
    fs.released.set()
    wait_for(lambda: w.acked == n, 20, lambda: f"every record acked after the stall (acked {w.acked} of {n})",
             interval=0.005)
    stalled = time.monotonic() - t_stall
    s.close()
    took.sort()
    assert len(took) > 5000 and stalled >= STALL_S
    # the flusher sat in fsync for STALL_S seconds; no append waited for it
    assert took[-1] < 0.1, f"slowest append during a {stalled:.1f} s fsync stall took {took[-1] * 1000:.1f} ms"
    assert fs.max_concurrent == 1, "two flushes of one file ran at once"
    lines = (tmp_path / "scalp" / "kis" / "krx" / "20261123" / "09_00_00.jsonl").read_bytes().splitlines(True)
    assert lines == [line(i) for i in range(n)]


def test_second_flusher_waits_and_appends_go_on(tmp_path):
    """Without a store's flusher the syncing thread does the I/O itself: another thread's appends
    still go on during its stalled fsync, and a second sync waits for the first instead of
    running beside it; both return with everything durable."""
    fs = StallingFsync("f.jsonl")
    w = JsonlWriter(tmp_path / "f.jsonl", durability=Durability(interval_ms=60_000, max_records=10**9), fsync=fs)
    for i in range(10):
        w.append_line(line(i))
    fs.armed = True
    results = {}
    t1 = threading.Thread(target=lambda: results.setdefault("first", w.sync()))
    t1.start()
    assert fs.entered.wait(10)
    n, took = append_paced(lambda i: w.append_line(line(i)), 10, 0.5)
    t2 = threading.Thread(target=lambda: results.setdefault("second", w.sync()))
    t2.start()
    t2.join(0.3)
    assert t2.is_alive() and fs.calls == 1, "the second sync did not wait for the flush in flight"
    assert w.acked == 0
    fs.released.set()
    t1.join(10)
    t2.join(10)
    assert results == {"first": 10, "second": n}, results
    assert max(took) < 0.1 and fs.max_concurrent == 1
    w.close()
    assert (tmp_path / "f.jsonl").read_bytes().splitlines(True) == [line(i) for i in range(n)]


def test_failing_fsync_under_load_keeps_order_and_acks_nothing_until_it_succeeds(tmp_path):
    """fsync fails with EIO (the disk) while appends go on: no record is acknowledged, one
    store_error is recorded, the retry acknowledges everything in order, store_recovered follows."""
    failures = {"left": 3}

    def eio_fsync(fd):
        if "/scalp/" in os.readlink(f"/proc/self/fd/{fd}") and failures["left"] > 0:
            failures["left"] -= 1
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        os.fsync(fd)

    s = Store(tmp_path, provider="kis", durability=Durability(interval_ms=20, max_records=500, retry_ms=100),
              fsync=eio_fsync)
    s.start_flusher(0.005)
    part = s.partition("scalp", "kis", "krx")
    n = 0
    while failures["left"] > 0:
        part.append(trade(n), T0)
        n += 1
        if n % 100 == 0:
            assert part._w.acked == 0, "acknowledged although every fsync failed"
            time.sleep(0.002)
        assert n < 2_000_000, "fsync was never called"
    n, _ = append_paced(lambda i: part.append(trade(i), T0), n, 0.2)
    w = part._w
    wait_for(lambda: w.acked == n, 20, lambda: f"every record acked (acked {w.acked} of {n})", interval=0.005)
    s.close()
    lines = (tmp_path / "scalp" / "kis" / "krx" / "20261123" / "09_00_00.jsonl").read_bytes().splitlines(True)
    assert lines == [line(i) for i in range(n)]
    events = [orjson.loads(x) for x in next((tmp_path / "system" / "events" / "kis").iterdir()).read_bytes().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds.count("store_error") == 1 and events[kinds.index("store_error")]["errno"] == "EIO"
    assert kinds.index("store_recovered") > kinds.index("store_error")


def test_rotation_does_not_wait_for_the_old_files_stalled_flush(tmp_path):
    """The file rotated out is closed by the flusher: the new window's appends do not wait for it."""
    fs = StallingFsync("09_00_00")
    s = Store(tmp_path, provider="kis", durability=Durability(interval_ms=20, max_records=10**6), fsync=fs)
    s.start_flusher(0.005)
    part = s.partition("scalp", "kis", "krx", rotation_minutes=10)
    for i in range(100):
        part.append(trade(i), T0)
    fs.armed = True
    assert fs.entered.wait(10)
    old = part._w
    t1 = T0 + 10 * 60 * 10**9
    t = time.perf_counter()
    for i in range(100, 200):
        part.append(trade(i, t1), t1)  # rotates to 09_10_00
    took = time.perf_counter() - t
    assert part.current_path.name == "09_10_00.jsonl"
    assert took < 0.1, f"100 appends after the rotation took {took * 1000:.0f} ms"
    assert not old.closed and old.acked == 0
    fs.released.set()
    wait_for(lambda: old.closed and old.acked == 100, 10, "the old writer to close with 100 acked", interval=0.005)
    s.sync_all()
    s.close()
    day = tmp_path / "scalp" / "kis" / "krx" / "20261123"
    assert (day / "09_00_00.jsonl").read_bytes().splitlines(True) == [line(i) for i in range(100)]
    assert (day / "09_10_00.jsonl").read_bytes().splitlines(True) == [line(i, t1) for i in range(100, 200)]


def test_a_stall_longer_than_the_buffer_holds_makes_appends_wait_not_grow(tmp_path):
    """Memory stays bounded during a stall: past max_buffer_bytes an append waits for the flush in
    flight (the disk is slow, not refusing, so nothing is dropped), then goes on."""
    fs = StallingFsync("f.jsonl")
    bound = 64 * 1024
    w = JsonlWriter(tmp_path / "f.jsonl", fsync=fs,
                    durability=Durability(interval_ms=60_000, max_records=10**9, max_buffer_bytes=bound))
    w.append_line(line(0))
    fs.armed = True
    t1 = threading.Thread(target=w.sync)
    t1.start()
    assert fs.entered.wait(10)
    progress = {"n": 1}

    def appender():
        for i in range(1, 2001):  # ~300 KB: well past the bound
            w.append_line(line(i))
            progress["n"] = i + 1

    t2 = threading.Thread(target=appender)
    t2.start()
    wait_for(lambda: len(w._buf) + len(line(0)) > bound, 10, "the buffer to reach its bound", interval=0.005)
    stuck_at = progress["n"]
    t2.join(0.5)
    assert t2.is_alive() and progress["n"] == stuck_at, "appends went on past the bound during the stall"
    assert len(w._buf) <= bound and w.acked == 0
    fs.released.set()
    t1.join(10)
    t2.join(10)
    assert not t2.is_alive() and w.sync() == 2001
    w.close()
    assert (tmp_path / "f.jsonl").read_bytes().splitlines(True) == [line(i) for i in range(2001)]
