"""observer-backup against a tree with a symlink and a FIFO named like day files (issue 12): a symlink's
target is never packaged (main packaged /outside as if it were the day's file), a FIFO never hangs the
build (main hung in open()), and both are reported as problems (event + stderr); the rest of the day is
packaged and verifies."""

import json
import os
import tarfile
from datetime import date

import pytest

from observer.lifecycle.backup import load_manifest, verify_package
from observer.store import paths
from observer.store.reader import read_file
from tests.support.daygen import make_day
from tests.support.procs import run_prog

pytestmark = pytest.mark.hostile
DAY = date(2026, 1, 5)


def test_lifecycle_backup_takes_regular_files_only(tree, tmp_path):
    make_day(tree, DAY, mb=0.5, quality_anomaly=False)
    secret = tmp_path / "outside-secret.jsonl"
    secret.write_bytes(b'{"secret": "not the tree\'s"}\n')
    link = tree / "raw" / "kis" / "20260105" / "16.jsonl"
    os.symlink(secret, link)
    fifo = tree / "scalp" / "kis" / "kr_stocks" / "20260105" / "15_00_00.jsonl"
    os.mkfifo(fifo)
    rep_link = tree / "reports" / "20260105" / "extra.html"
    os.symlink(secret, rep_link)
    cfg = tmp_path / "observer.toml"
    cfg.write_text(f'data_dir = "{tree}"\nhost_id = "test-host"\n')
    r = run_prog("observer-backup", "--config", cfg, "--date", "20260105", "--json", timeout=60)
    assert r.returncode == 0, r.stderr[-3000:]
    pkg = paths.backup_dir(tree, DAY)
    m, _ = load_manifest(pkg)
    packaged = {e["path"] for e in m["files"]}
    for p in (link, fifo, rep_link):
        assert str(p.relative_to(tree)) not in packaged
    for a in m["archives"]:
        with tarfile.open(pkg / a) as tf:
            for member in tf:
                assert b"not the tree" not in tf.extractfile(member).read()
    assert verify_package(pkg) == []
    [line] = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    probs = " | ".join(line["problems"])
    assert "raw/kis/20260105/16.jsonl: symlink" in probs and "15_00_00.jsonl: FIFO" in probs
    assert "reports/20260105/extra.html: symlink" in probs
    assert "problem: raw/kis/20260105/16.jsonl: symlink" in r.stderr
    ev = [e for f in sorted((tree / "system" / "events" / "system").glob("*.jsonl")) for e in read_file(f)
          if e["event"] == "backup"]
    assert ev and ev[-1]["severity"] == "WARNING" and ev[-1]["problems_count"] == 3
