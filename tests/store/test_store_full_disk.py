"""A full disk (a small tmpfs mounted by the test): clear error and event, earlier data intact,
writing resumes once space is freed, nothing accepted is lost."""


import orjson
import pytest

from observer.store.verify import verify_tree
from observer.store.writer import Durability, JsonlWriter, StoreError, StoreFull
from tests.store.crash_writer import record
from tests.support.diskfull import tmpfs

pytestmark = pytest.mark.integration


@pytest.fixture
def small_disk(tmp_path):
    with tmpfs(tmp_path / "mnt", "256k") as mnt:
        yield mnt


def test_enospc_reports_keeps_data_and_recovers(small_disk):
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * 150 * 1024)
    path = small_disk / "scalp" / "kis" / "krx" / "20261123" / "09_00_00.jsonl"
    events = []
    w = JsonlWriter(path, durability=Durability(interval_ms=1, max_records=20, retry_ms=0,
                                                max_buffer_bytes=64 * 1024),
                    on_event=lambda ev, sev, **f: events.append((ev, sev, f)))
    i = 0
    while not w.failing:
        w.append(record(i))
        i += 1
        assert i < 100_000, "the disk never filled"
    acked_at_failure = w.acked
    err = [e for e in events if e[0] == "store_error"]
    assert len(err) == 1 and err[0][1] == "CRITICAL" and err[0][2]["errno"] == "ENOSPC"
    assert str(path) in err[0][2]["file"]
    with pytest.raises(StoreError, match="not yet durable"):
        w.sync()
    # what is on disk is exactly the acknowledged prefix: no partial line from the failed write
    lines = path.read_bytes().splitlines(keepends=True)
    assert len(lines) == acked_at_failure
    assert all(ln == orjson.dumps(record(k), option=orjson.OPT_APPEND_NEWLINE) for k, ln in enumerate(lines))
    # keep appending while full: accepted into the bounded buffer until it refuses, loudly
    accepted = i
    with pytest.raises(StoreFull):
        while True:
            w.append(record(accepted))
            accepted += 1
    assert len([e for e in events if e[0] == "store_error"]) == 1, "one store_error per outage"
    # space returns
    filler.unlink()
    assert w.sync() == accepted
    assert any(e[0] == "store_recovered" for e in events)
    w.close()
    lines = path.read_bytes().splitlines(keepends=True)
    assert len(lines) == accepted
    assert all(ln == orjson.dumps(record(k), option=orjson.OPT_APPEND_NEWLINE) for k, ln in enumerate(lines))
    assert verify_tree(small_disk)["clean"]
