"""Readers survive every line: JSON that is not an object, and a 100 MB line, in a real tree read by
the real programs (replay, verify, audit, gap-filler). Each bad line is reported where observer-verify
reports it, the good records around it are still read, memory stays bounded, nothing crashes."""

from __future__ import annotations

import orjson
import pytest

from tests.store._tree import N_TRADES, append, make_tree, reported, run, trade

pytestmark = pytest.mark.hostile

PROGRAMS = ["observer-replay", "observer-verify", "observer-audit", "observer-gap-filler"]
NOT_OBJECTS = [b"[1,2]", b"3", b'"x"', b"null"]


def _check_good_records_read(name: str, r, root) -> None:
    if name == "observer-replay":
        recs = [orjson.loads(x) for x in r.stdout.splitlines()]
        assert len(recs) == N_TRADES + 1 and all(x["kind"] == "trade" for x in recs)
    elif name == "observer-verify":
        assert f"{'scalp':<12}{1:>8}{N_TRADES + 1:>12}" in r.stdout, r.stdout


# observer-verify already reported these (its contract check); the other three crashed on them
@pytest.mark.parametrize("name", ["observer-replay", "observer-audit", "observer-gap-filler"])
def test_json_that_is_not_an_object_is_reported_and_skipped(name, tmp_path):
    root = tmp_path / "data"
    f = make_tree(root)
    append(f, *NOT_OBJECTS, orjson.dumps(trade(N_TRADES)))
    r = run(name, root)
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.code in (0, 1), (r.code, r.stderr[-2000:])
    text = reported(name, r, root)
    for n, what in zip(range(N_TRADES + 1, N_TRADES + 5), ("list", "int", "str", "NoneType"), strict=True):
        assert f"{f.name}:{n}: not a JSON object but {what}" in text, text
    _check_good_records_read(name, r, root)
    if name == "observer-replay":
        assert r.code == 1  # problems found
    if name == "observer-gap-filler":
        summary = orjson.loads(r.stdout.splitlines()[-1])["summary"]
        assert summary["read_issues"] == len(NOT_OBJECTS)


@pytest.mark.parametrize("name", PROGRAMS)
def test_a_100_mb_line_is_skipped_without_holding_it(name, tmp_path):
    """The line is read past in bounded chunks: the program's peak RSS stays far below the line's
    size (reading the file whole needed over 400 MB), and the record after it is still read."""
    root = tmp_path / "data"
    f = make_tree(root)
    size = 100 << 20
    head = b'{"v":1,"kind":"trade","pad":"'
    with open(f, "ab") as fh:
        fh.write(head)
        chunk = b"x" * (1 << 20)
        for _ in range(size >> 20):
            fh.write(chunk)
        fh.write(b'"}\n')
    append(f, orjson.dumps(trade(N_TRADES)))
    r = run(name, root, timeout=180)
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.code in (0, 1), (r.code, r.stderr[-2000:])
    text = reported(name, r, root)
    assert f"{f.name}:{N_TRADES + 1}: line too long ({len(head) + size + 2} bytes" in text, text
    _check_good_records_read(name, r, root)
    assert r.rss_mb < 100, f"{name} peaked at {r.rss_mb:.0f} MB reading a tree with a 100 MB line"


BROKEN_OBJECTS = [
    b'{"v":1,"kind":"trade","provider":"kis","market":"krx","symbol":"005930","exch_ns":"y","recv_ns":"x",'
    b'"quality":"normal","price":"p","qty":"q","cum_vol":"z"}',  # the right keys, the wrong types
    b"{}",
    b'{"kind":"trade","exch_ns":5}',
]


@pytest.mark.parametrize("name", ["observer-replay", "observer-audit", "observer-gap-filler"])
def test_objects_that_break_their_contract_are_reported_and_skipped(name, tmp_path):
    """Readers that compute with the fields (ordering by time, summing volumes) take only records
    that satisfy their contract; the rest are reported like any unreadable line."""
    root = tmp_path / "data"
    f = make_tree(root)
    append(f, *BROKEN_OBJECTS, orjson.dumps(trade(N_TRADES)))
    r = run(name, root)
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.code in (0, 1), (r.code, r.stderr[-2000:])
    text = reported(name, r, root)
    for n in range(N_TRADES + 1, N_TRADES + 1 + len(BROKEN_OBJECTS)):
        assert f"{f.name}:{n}: breaks its contract: " in text, text
    _check_good_records_read(name, r, root)
