"""Events emitted while the disk is full (a small tmpfs filled by the test) reach the tree once space
returns: in order, before newer events, with their own times and marked deferred; an event flood
during the outage keeps the backlog within its bounds and what did not fit is counted in one
events_dropped event."""

import time

import orjson
import pytest

from observer.store.store import Store
from observer.store.verify import verify_tree
from observer.store.writer import Durability
from tests.support import wait_for
from tests.support.diskfull import fill, tmpfs

pytestmark = pytest.mark.integration

T0 = 1_795_000_000_000_000_000


@pytest.fixture
def small_disk(tmp_path):
    with tmpfs(tmp_path / "mnt", "1m") as mnt:
        yield mnt


def events_on_disk(root, provider="kis"):
    d = root / "system" / "events" / provider
    if not d.is_dir():
        return []
    return [orjson.loads(x) for f in sorted(d.iterdir()) for x in f.read_bytes().splitlines()]


def marker(k):
    return {"market": "krx", "symbol": f"{k:06d}", "start_ns": 1_000 + k, "end_ns": 2_000 + k, "track": "B",
            "cause": "store_full", "recoverable": True, "channel": "trades", "gap_id": f"g{k}"}


def test_events_of_a_full_disk_are_written_when_space_returns(small_disk):
    root = small_disk / "data"
    s = Store(root, provider="kis", program="test",
              durability=Durability(interval_ms=10, max_records=50, retry_ms=50, max_buffer_bytes=256 * 1024))
    s.start_flusher(0.01)
    ev = s.events()
    # (no event before the fill: a tmpfs still takes appends into a file's last, partly used page)
    fill(small_disk / "filler")
    part = s.partition("raw", "kis")
    n = 0
    while not (part._w is not None and part._w.failing):  # data fills what little is left, then fails
        ts = T0 + n
        part.append({"v": 1, "kind": "raw", "provider": "kis", "recv_ns": ts, "frame": "y" * 300}, ts)
        n += 1
        if n % 20 == 0:
            time.sleep(0.01)
        assert n < 200_000, "the disk never refused"
    during = [ev.emit("gap_marker", "WARNING", **marker(k)) for k in range(5)]
    assert events_on_disk(root) == [], "an event got written while the disk was full"
    (small_disk / "filler").unlink()
    # the store's flusher retries by itself: no new event is needed to bring them out
    wait_for(lambda: sum(e["event"] == "gap_marker" for e in events_on_disk(root)) == 5, 10,
             "five gap markers on disk", interval=0.01)
    after = ev.emit("reconnect", "INFO", cause="eof", downtime_s=0.1)
    s.close()
    got = events_on_disk(root)
    kinds = [e["event"] for e in got]
    last = next(i for i, e in enumerate(got) if e["ts_ns"] == after["ts_ns"])
    assert "deferred" not in got[last]
    deferred = [e for e in got if e.get("deferred")]
    # the outage's own report (the data file's store_error, and the events file's) and the markers,
    # in the order they happened, all before the event emitted after space returned
    assert [e["ts_ns"] for e in deferred] == sorted(e["ts_ns"] for e in deferred)
    assert [{k: v for k, v in e.items() if k != "deferred"} for e in deferred if e["event"] == "gap_marker"] == during
    errors = [e for e in deferred if e["event"] == "store_error"]
    assert {e["errno"] for e in errors} == {"ENOSPC"}
    assert any("/raw/" in e["file"] for e in errors) and any("/events/" in e["file"] for e in errors)
    assert kinds.index("store_recovered") > kinds.index("store_error")
    assert all(got.index(e) < last for e in deferred)
    assert [e["ts_ns"] for e in got] == sorted(e["ts_ns"] for e in got)
    assert verify_tree(root)["clean"]


@pytest.mark.parametrize("bound", ["records", "bytes"])
def test_event_flood_during_the_outage_stays_bounded_and_the_rest_is_counted(small_disk, bound):
    root = small_disk / "data"
    cap = {"records": {"event_backlog_records": 100}, "bytes": {"event_backlog_bytes": 24 * 1024}}[bound]
    s = Store(root, provider="kis", program="test", durability=Durability(retry_ms=50, **cap))
    ev = s.events()
    fill(small_disk / "filler")
    flood = [ev.emit("reconnect", "WARNING", cause="eof", attempt=k, downtime_s=0.01) for k in range(3000)]
    d = s.durability
    assert len(ev._backlog) <= d.event_backlog_records and ev._backlog_bytes <= d.event_backlog_bytes
    assert ev._backlog_bytes == sum(len(x) for _, x in ev._backlog)
    assert events_on_disk(root) == []
    (small_disk / "filler").unlink()
    time.sleep(0.06)  # past the retry interval (50 ms): the next emit writes the backlog first
    after = ev.emit("restart", "INFO", unit="x", reason="after the outage")
    s.close()
    got = events_on_disk(root)
    assert got[-1]["ts_ns"] == after["ts_ns"]
    assert [e["ts_ns"] for e in got] == sorted(e["ts_ns"] for e in got)
    kept = [e for e in got if e.get("deferred") and e["event"] == "reconnect"]
    k = len(kept)
    assert 0 < k < 3000
    # the oldest are kept, in order, with their own times
    assert [{x: v for x, v in e.items() if x != "deferred"} for e in kept] == flood[:k]
    drops = [e for e in got if e["event"] == "events_dropped"]
    assert len(drops) == 1, "the overflow is reported in one event"
    dr = drops[0]
    assert dr["dropped"] == 3000 - k and dr["by_event"] == {"reconnect": 3000 - k}
    assert dr["first_ts_ns"] == flood[k]["ts_ns"] and dr["last_ts_ns"] == flood[-1]["ts_ns"]
    assert got.index(dr) > got.index(kept[-1]) and got.index(dr) < len(got) - 1
    assert verify_tree(root)["clean"]
