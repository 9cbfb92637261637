import multiprocessing
import os
import time
from datetime import date, datetime

import orjson
import pytest

from observer.core.clock import KST, ManualClock, to_ns
from observer.core.contracts import ContractError
from observer.programs.verify import verify_tree
from observer.store import paths
from observer.store.reader import ReadIssue, iter_day, read_file
from observer.store.store import Store
from observer.store.writer import Durability, JsonlWriter, WriterBusy


def trade(i, recv_ns, symbol="005930"):
    return {"v": 1, "kind": "trade", "provider": "kis", "market": "krx", "symbol": symbol, "exch_ns": recv_ns,
            "recv_ns": recv_ns, "quality": "normal", "price": 1000 + i, "qty": 1}


T0 = to_ns(datetime(2026, 11, 23, 9, 0, 0, tzinfo=KST))


def test_torn_tail_is_cut_and_reported(tmp_path):
    p = tmp_path / "f.jsonl"
    good = orjson.dumps(trade(1, T0)) + b"\n"
    p.write_bytes(good + b'{"v":1,"kind":"tra')
    events = []
    with JsonlWriter(p, on_event=lambda ev, sev, **f: events.append((ev, sev, f))) as w:
        w.append(trade(2, T0 + 1))
    assert events[0][0] == "store_repaired" and events[0][2]["bytes"] == len(b'{"v":1,"kind":"tra')
    lines = p.read_bytes().splitlines()
    assert lines[0] == good.strip() and orjson.loads(lines[1])["price"] == 1002 and len(lines) == 2


def test_torn_tail_without_any_newline_cuts_to_empty(tmp_path):
    p = tmp_path / "f.jsonl"
    p.write_bytes(b'{"partial')
    with JsonlWriter(p, on_event=lambda *a, **k: None):
        pass
    assert p.read_bytes() == b""


def _hold(path, q):
    w = JsonlWriter(path)
    q.put("held")
    time.sleep(30)
    w.close()


def test_second_writer_gets_clear_error(tmp_path):
    p = tmp_path / "f.jsonl"
    q = multiprocessing.get_context("fork").Queue()
    proc = multiprocessing.get_context("fork").Process(target=_hold, args=(p, q))
    proc.start()
    try:
        assert q.get(timeout=20) == "held"
        with pytest.raises(WriterBusy, match="another writer"):
            JsonlWriter(p)
    finally:
        proc.kill()
        proc.join()
    JsonlWriter(p).close()  # the lock dies with its holder


def test_acknowledged_only_after_sync_and_within_interval(tmp_path):
    w = JsonlWriter(tmp_path / "f.jsonl", durability=Durability(interval_ms=200, max_records=1000))
    w.append(trade(1, T0))
    assert w.acked == 0 and w.pending == 1
    assert w.sync() == 1 and w.pending == 0
    w.append(trade(2, T0))
    deadline = time.monotonic() + 5
    while w.acked < 2 and time.monotonic() < deadline:
        w.maybe_flush()
        time.sleep(0.01)
    assert w.acked == 2
    w.close()


def test_max_records_triggers_durability(tmp_path):
    w = JsonlWriter(tmp_path / "f.jsonl", durability=Durability(interval_ms=60_000, max_records=10))
    for i in range(25):
        w.append(trade(i, T0))
    assert w.acked == 20 and w.pending == 5
    w.close()
    assert len((tmp_path / "f.jsonl").read_bytes().splitlines()) == 25


def test_invalid_record_is_refused_not_written(tmp_path):
    w = JsonlWriter(tmp_path / "f.jsonl")
    with pytest.raises(ContractError, match="price"):
        w.append(dict(trade(1, T0), price=0))
    w.close()
    assert (tmp_path / "f.jsonl").read_bytes() == b""


def _shared_appender(path, n, tag):
    w = JsonlWriter(path, shared=True, partition="events")
    for i in range(n):
        w.append({"v": 1, "kind": "event", "ts_ns": i, "event": "restart", "severity": "INFO",
                  "provider": "system", "program": tag, "unit": f"u{i}", "reason": "x" * (i % 300)})
    w.close()


def test_shared_mode_interleaves_whole_lines(tmp_path):
    p = tmp_path / "system" / "events" / "system" / "20261123.jsonl"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_shared_appender, args=(p, 300, f"p{k}")) for k in range(3)]
    for pr in procs:
        pr.start()
    for pr in procs:
        pr.join(60)
    recs = [orjson.loads(x) for x in p.read_bytes().splitlines()]
    assert len(recs) == 900
    for k in range(3):
        assert [r["ts_ns"] for r in recs if r["program"] == f"p{k}"] == list(range(300))


def test_scalp_rotation_follows_level_and_day(tmp_path):
    s = Store(tmp_path, provider="kis")
    part = s.partition("scalp", "kis", "krx", rotation_minutes=10)
    minute = 60 * 10**9
    for m in (0, 5, 9, 10, 25):
        part.append(trade(m, T0 + m * minute), T0 + m * minute)
    part.set_rotation(30)  # mitigation level 1 at 09:25: the open file (09:20) now runs to 09:30
    for m in (26, 29, 31, 59, 61):
        part.append(trade(m, T0 + m * minute), T0 + m * minute)
    s.close()
    day = tmp_path / "scalp" / "kis" / "krx" / "20261123"
    names = sorted(os.listdir(day))
    assert names == ["09_00_00.jsonl", "09_10_00.jsonl", "09_20_00.jsonl", "09_30_00.jsonl", "10_00_00.jsonl"]
    counts = {n: len((day / n).read_bytes().splitlines()) for n in names}
    assert counts == {"09_00_00.jsonl": 3, "09_10_00.jsonl": 1, "09_20_00.jsonl": 3,
                      "09_30_00.jsonl": 2, "10_00_00.jsonl": 1}
    assert verify_tree(tmp_path)["clean"]


def test_events_log_and_reader_merge(tmp_path):
    clock = ManualClock(T0)
    s = Store(tmp_path, provider="kis", program="test", clock=clock)
    part = s.partition("scalp", "kis", "krx")
    for i in range(5):
        clock.advance(1)
        part.append(trade(i, clock.now_ns()), clock.now_ns())
        if i == 2:
            s.events().emit("reconnect", "WARNING", cause="eof", downtime_s=1.5)
    s.close()
    recs = list(iter_day(tmp_path, date(2026, 11, 23)))
    kinds = [r["kind"] for r in recs]
    assert kinds == ["trade", "trade", "trade", "event", "trade", "trade"]
    ev = recs[3]
    assert ev["event"] == "reconnect" and ev["program"] == "test" and ev["provider"] == "kis"


def test_unknown_event_kind_is_a_programming_error(tmp_path):
    s = Store(tmp_path)
    with pytest.raises(ContractError, match="unknown event kind"):
        s.events().emit("no_such_event", "INFO")
    s.close()


def test_reader_reports_corrupt_lines(tmp_path):
    p = paths.scalp_file(tmp_path, "kis", "krx", T0)
    p.parent.mkdir(parents=True)
    good = orjson.dumps(trade(1, T0)).decode()
    p.write_text(good + "\nnot json\n" + orjson.dumps(dict(trade(2, T0), price=-5)).decode() + "\n" + good)
    issues: list[ReadIssue] = []
    recs = list(read_file(p, issues.append, validate=True))
    assert len(recs) == 1
    assert [i.line for i in issues] == [2, 3, 4]
    assert "not JSON" in issues[0].problem and "price" in issues[1].problem and "torn" in issues[2].problem
    rep = verify_tree(tmp_path)
    assert not rep["clean"] and len(rep["problems"]) == 3


def test_verify_flags_misplaced_records_and_files(tmp_path):
    p = paths.swing_file(tmp_path, "kis", "krx", T0)
    p.parent.mkdir(parents=True)
    p.write_text(orjson.dumps(trade(1, T0)).decode() + "\n")  # a trade in swing/
    (tmp_path / "scalp").mkdir()
    (tmp_path / "scalp" / "stray.jsonl").write_text("")
    probs = [x["problem"] for x in verify_tree(tmp_path)["problems"]]
    assert any("does not belong in swing" in x for x in probs)
    assert any("not where the tree layout allows" in x for x in probs)


def test_file_and_dir_modes(tmp_path):
    s = Store(tmp_path / "d")
    s.events().emit("restart", "INFO", unit="x", reason="test")
    s.close()
    f = next((tmp_path / "d" / "system" / "events" / "system").iterdir())
    assert f.stat().st_mode & 0o777 == 0o640
    assert f.parent.stat().st_mode & 0o777 == 0o750


def test_repair_on_open_is_an_event_in_the_tree(tmp_path):
    """A torn tail found when the store opens a data file is reported through the events log
    (told after the store's lock is released, so an emit on another thread cannot deadlock)."""
    p = paths.scalp_file(tmp_path, "kis", "krx", T0)
    p.parent.mkdir(parents=True)
    p.write_bytes(orjson.dumps(trade(1, T0)) + b"\n" + b'{"v":1,"ki')
    s = Store(tmp_path, provider="kis", program="test", clock=ManualClock(T0))
    s.partition("scalp", "kis", "krx").append(trade(2, T0), T0)
    s.close()
    evs = [r for r in iter_day(tmp_path, date(2026, 11, 23), kinds=("events",))]
    assert [(e["event"], e["bytes"], e["file"]) for e in evs] == [("store_repaired", 10, str(p))]
    assert len(p.read_bytes().splitlines()) == 2
