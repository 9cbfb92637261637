"""Hostile packages against the real bin/observer-retention (issue 12): a manifest or receipt written by
the SFTP backup user never makes retention delete outside the tree, never stops it for the other days,
and is reported (event + alert `backup_manifest_invalid`, which must ARRIVE at the fake Telegram server);
the bad day is kept. Plus the retention-growth items of issue 13: universe snapshots go with their day,
stale temp files and half-built packages are swept."""

import os
import time

import orjson
import pytest

from observer.core.clock import yyyymmdd
from observer.lifecycle import layout
from observer.lifecycle.backup import load_manifest
from observer.store import paths
from tests.lifecycle.hostile_env import (
    EXPIRED,
    OTHER,
    events,
    manifest_of,
    receipted_day,
    retention,
    sha,
    write_manifest,
)
from tests.lifecycle.test_retention import day_paths, receipt

pytestmark = pytest.mark.hostile


def assert_reported_and_arrived(root, telegram, day, r):
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    bad = [e for e in events(root, "backup_manifest_invalid") if e["date"] == yyyymmdd(day)]
    assert bad and bad[0]["severity"] == "WARNING", events(root)
    if telegram is not None:
        msgs = telegram.wait_for_messages(1, timeout=30)
        assert any(yyyymmdd(day) in m["text"] and "invalid" in m["text"] for m in msgs), [m["text"] for m in msgs]


def test_retention_traversal_names_delete_nothing_outside(tmp_path, tree, tg):
    """The issue's attack: archives '../../../victim.txt' and an absolute path, hashes recomputed, receipt
    forged to match. main deleted both victims and exited 0."""
    before = receipted_day(tree, EXPIRED)
    victim, victim_abs = tmp_path / "victim.txt", tmp_path / "victim2.txt"
    victim.write_bytes(b"precious\n")
    victim_abs.write_bytes(b"precious too\n")
    rel = os.path.relpath(victim, paths.backup_dir(tree, EXPIRED))
    assert rel.startswith("../")
    m = manifest_of(tree, EXPIRED)
    entry = {"partition": "raw", "bytes": 9, "sha256": sha(b"precious\n"), "files": 0, "data_bytes": 0, "records": 0}
    m["archives"][rel] = entry
    m["archives"][str(victim_abs)] = dict(entry, sha256=sha(b"precious too\n"), bytes=13)
    write_manifest(tree, EXPIRED, orjson.dumps(m), {n: a["sha256"] for n, a in m["archives"].items()})
    r = retention(tmp_path, tree, tg)
    assert victim.read_bytes() == b"precious\n" and victim_abs.read_bytes() == b"precious too\n"
    assert day_paths(tree, EXPIRED) == before, "a day with a bad manifest is kept whole"
    assert r.returncode == 0, r.stderr[-2000:]
    # the backup_manifest_invalid event is written and its alert arrived at the fake Telegram server
    assert_reported_and_arrived(tree, tg, EXPIRED, r)


@pytest.mark.parametrize("bad", ["list", "files_only", "not_json", "huge", "symlink_to_fifo", "date_of_other_day"])
def test_retention_one_bad_manifest_keeps_that_day_others_proceed(tmp_path, tree, bad):
    """`[]`, `{"files":[]}`, not JSON, 65 MB, a symlink to a FIFO, another day's manifest: the day is kept
    and reported, the other expired day is deleted. main crashed for every day (traceback) or hung."""
    bad_before = receipted_day(tree, EXPIRED)
    receipted_day(tree, OTHER)
    pkg = paths.backup_dir(tree, EXPIRED)
    if bad == "list":
        write_manifest(tree, EXPIRED, b"[]")
    elif bad == "files_only":
        write_manifest(tree, EXPIRED, b'{"files": []}')
    elif bad == "not_json":
        write_manifest(tree, EXPIRED, b"\x00\xffnot json{")
    elif bad == "huge":  # a valid JSON object padded past the size any real manifest has
        write_manifest(tree, EXPIRED, b'{"files": []' + b" " * (65 << 20) + b"}")
    elif bad == "symlink_to_fifo":
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        (pkg / layout.MANIFEST).unlink()
        os.symlink(fifo, pkg / layout.MANIFEST)
    elif bad == "date_of_other_day":
        m = manifest_of(tree, OTHER)   # a whole, valid manifest - of another day
        write_manifest(tree, EXPIRED, orjson.dumps(m), {n: a["sha256"] for n, a in m["archives"].items()})
    r = retention(tmp_path, tree, timeout=60)
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.returncode == 0, r.stderr[-2000:]
    assert day_paths(tree, EXPIRED) == bad_before
    assert day_paths(tree, OTHER) == set(), "the good day is deleted as usual"
    assert_reported_and_arrived(tree, None, EXPIRED, r)


@pytest.mark.parametrize("forgery", ["list", "verified_string", "other_hashes", "traversal_names", "other_date"])
def test_retention_forged_receipt_keeps_the_day_and_reports(tmp_path, tree, forgery):
    before = receipted_day(tree, EXPIRED)
    pkg = paths.backup_dir(tree, EXPIRED)
    r0 = orjson.loads((pkg / layout.RECEIPT).read_bytes())
    if forgery == "list":
        data = b"[1, 2]"
    elif forgery == "verified_string":
        data = orjson.dumps(dict(r0, verified="yes"))
    elif forgery == "other_hashes":
        data = orjson.dumps(dict(r0, archives={n: "0" * 64 for n in r0["archives"]}))
    elif forgery == "traversal_names":
        data = orjson.dumps(dict(r0, archives={**r0["archives"], "../../x": "0" * 64}))
    else:
        data = orjson.dumps(dict(r0, date=yyyymmdd(OTHER)))
    (pkg / layout.RECEIPT).write_bytes(data)
    r = retention(tmp_path, tree)
    assert r.returncode == 0, r.stderr[-2000:]
    assert day_paths(tree, EXPIRED) == before
    assert_reported_and_arrived(tree, None, EXPIRED, r)


def test_retention_symlinked_archive_is_not_followed(tmp_path, tree):
    """An archive replaced by a symlink to a file outside: retention removes its own regular files
    only; the target survives, and the symlink is not counted as freed bytes."""
    receipted_day(tree, EXPIRED)
    pkg = paths.backup_dir(tree, EXPIRED)
    target = tmp_path / "outside.bin"
    target.write_bytes(b"x" * 5000)
    (pkg / "raw.tar.gz").unlink()
    os.symlink(target, pkg / "raw.tar.gz")
    r = retention(tmp_path, tree)
    assert r.returncode == 0, r.stderr[-2000:]
    assert target.read_bytes() == b"x" * 5000
    [arch] = [e for e in events(tree, "retention") if e.get("partition") == "backup-archives"]
    assert arch["files"] == len(manifest_of(tree, EXPIRED)["archives"]) - 1


def test_retention_universe_snapshot_is_packaged_and_goes_with_its_day(tmp_path, tree):
    """Issue 13: universe/YYYYMMDD_kr_stocks.json was never packaged nor deleted."""
    uni = paths.universe_file(tree, EXPIRED, "kr_stocks")
    uni.parent.mkdir(parents=True, exist_ok=True)
    uni.write_bytes(orjson.dumps({"date": yyyymmdd(EXPIRED), "symbols": [{"symbol": "005930"}]}) + b"\n")
    receipted_day(tree, EXPIRED)
    m, _ = load_manifest(paths.backup_dir(tree, EXPIRED))
    assert "universe.tar.gz" in m["archives"]
    assert [e["path"] for e in m["files"] if e["partition"] == "universe"] == [str(uni.relative_to(tree))]
    r = retention(tmp_path, tree)
    assert r.returncode == 0, r.stderr[-2000:]
    assert not uni.exists()
    assert any(e.get("partition") == "universe" and e["files"] == 1 for e in events(tree, "retention"))


def test_retention_sweeps_stale_temp_files_and_build_leftovers(tmp_path, tree):
    """Issue 13: a crash between write and rename leaves `.name.XXXX.tmp`; a killed backup leaves
    backup/.YYYYMMDD.tmp-<pid>/ of a day it will never build again. Old ones go, a live one stays."""
    old = time.time() - 2 * 86400
    stale = [tree / "universe" / ".20260301_kr_stocks.json.abc123.tmp", tree / "state" / "gapfill" / ".kis.json.x.tmp",
             tree / "reports" / "20260301" / ".quality.html.tmp"]
    for p in stale:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"half")
        os.utime(p, (old, old))
    live = tree / "state" / ".heartbeat.json.y.tmp"
    live.write_bytes(b"being written")
    build = layout.backup_root(tree) / ".20260301.tmp-424242"
    build.mkdir(parents=True)
    (build / "raw.tar.gz").write_bytes(b"partial archive")
    r = retention(tmp_path, tree, None, "--dry-run")
    assert r.returncode == 0 and ".quality.html.tmp" in r.stdout and all(p.exists() for p in stale)
    r = retention(tmp_path, tree)
    assert r.returncode == 0, r.stderr[-2000:]
    assert not any(p.exists() for p in stale) and live.exists()
    assert not build.exists()
    [tmpev] = [e for e in events(tree, "retention") if e.get("partition") == "stale-tmp"]
    assert tmpev["files"] == 3 and tmpev["bytes"] == 12


def test_retention_day_walk_takes_regular_files_only(tmp_path, tree):
    """A symlink and a FIFO named like day files: never deleted, never followed, reported."""
    before = receipted_day(tree, EXPIRED)
    outside = tmp_path / "outside.jsonl"
    outside.write_bytes(b'{"v":1}\n')
    ymd = yyyymmdd(EXPIRED)
    link = tree / "raw" / "kis" / ymd / "10.jsonl"
    os.symlink(outside, link)
    fifo = tree / "scalp" / "kis" / "kr_stocks" / ymd / "10_00_00.jsonl"
    os.mkfifo(fifo)
    r = retention(tmp_path, tree, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    assert outside.read_bytes() == b'{"v":1}\n' and os.path.islink(link) and fifo.exists()
    assert not (before & day_paths(tree, EXPIRED)), "the day's regular files went as usual"
    [sk] = [e for e in events(tree, "retention") if e["action"] == "skipped"]
    assert any("10.jsonl: symlink" in p for p in sk["problems"]) and any("FIFO" in p for p in sk["problems"])


def test_retention_receipt_helper_still_matches(tmp_path, tree):
    """The forger above is only meaningful if an untouched receipt is accepted: it is."""
    receipted_day(tree, EXPIRED)
    receipt(tree, EXPIRED)
    r = retention(tmp_path, tree)
    assert r.returncode == 0 and day_paths(tree, EXPIRED) == set()
    assert events(tree, "backup_manifest_invalid") == []
