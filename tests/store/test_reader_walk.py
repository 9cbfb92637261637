"""The tree walkers take regular files only: a FIFO named *.jsonl must not hang a reader (each run has
a timeout, so a hang fails fast), a symlink is never followed; both are reported as problems."""

from __future__ import annotations

import os

import orjson
import pytest

from tests.store._tree import N_TRADES, make_tree, reported, run, scalp_path, trade

pytestmark = pytest.mark.hostile

PROGRAMS = ["observer-verify", "observer-replay", "observer-audit", "observer-gap-filler"]
HANG_S = 60  # the clean tree takes a few seconds; a reader blocked on the FIFO never ends


@pytest.mark.parametrize("name", PROGRAMS)
def test_fifo_named_jsonl_is_reported_not_opened(name, tmp_path):
    root = tmp_path / "data"
    make_tree(root)
    fifo = scalp_path(root, "110000")
    os.mkfifo(fifo)
    r = run(name, root, timeout=HANG_S)
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.code in (0, 1), (r.code, r.stderr[-2000:])
    rel = str(fifo.relative_to(root))
    text = reported(name, r, root)
    assert any(rel in line and "not a regular file (FIFO)" in line for line in text.splitlines()), text
    if name == "observer-verify":
        assert r.code == 1 and "problem(s)" in r.stdout
    if name == "observer-replay":
        assert len(r.stdout.splitlines()) == N_TRADES


@pytest.mark.parametrize("name", PROGRAMS)
def test_symlink_in_the_tree_is_reported_not_followed(name, tmp_path):
    """A *.jsonl symlink to a file outside the tree (valid records in it) is not read as part of the
    tree; the walk names it."""
    root = tmp_path / "data"
    make_tree(root)
    outside = tmp_path / "outside.jsonl"
    outside.write_bytes(orjson.dumps(trade(N_TRADES, symbol="OUTSIDE")) + b"\n")
    link = scalp_path(root, "110000")
    link.symlink_to(outside)
    r = run(name, root, timeout=HANG_S)
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.code in (0, 1), (r.code, r.stderr[-2000:])
    rel = str(link.relative_to(root))
    text = reported(name, r, root)
    assert any(rel in line and "symlink" in line and "not followed" in line for line in text.splitlines()), text
    assert "OUTSIDE" not in r.stdout
    if name == "observer-verify":
        assert r.code == 1
        assert f"{'scalp':<12}{1:>8}{N_TRADES:>12}" in r.stdout, r.stdout  # only the real file counted
