"""observer-backup: the manifest says exactly what the archives hold; a killed build leaves nothing half
in place; re-running is a no-op; the current day is refused until the collectors are done."""

import hashlib
import os
import subprocess
import tarfile
from datetime import date
from pathlib import Path

import orjson
import pytest

from observer.lifecycle import layout
from observer.lifecycle.backup import BackupOptions, load_manifest, package_day, verify_package
from observer.store import paths
from observer.store.reader import read_file
from tests.support import wait_for
from tests.support.daygen import make_day
from tests.support.procs import kill9, run_prog, start_prog

DAY = date(2026, 1, 5)


def write_config(tmp: Path, root: Path, extra: str = "") -> Path:
    c = tmp / "observer.toml"
    c.write_text(f'data_dir = "{root}"\nhost_id = "test-host"\n{extra}\n')
    return c


def test_manifest_matches_contents(tree, tmp_path):
    make_day(tree, DAY, mb=3, gaps=4, recoverable=3, quality_anomaly=True)
    # a torn tail (a crash mid-line): packaged byte for byte, not counted as a record
    torn = tree / "raw" / "kis" / "20260105" / "15.jsonl"
    torn.write_bytes(b'{"v":1,"kind":"raw"}\n{"v":1,"ki')
    cfg = write_config(tmp_path, tree)
    r = run_prog("observer-backup", "--config", cfg, "--date", "20260105", "--json")
    assert r.returncode == 0, r.stderr
    pkg = paths.backup_dir(tree, DAY)
    m, msha = load_manifest(pkg)
    # the manifest's own hash, in sha256sum -c format
    assert subprocess.run(["sha256sum", "-c", layout.MANIFEST_SHA], cwd=pkg, capture_output=True).returncode == 0
    assert (pkg / layout.MANIFEST_SHA).read_text() == f"{msha}  manifest.json\n"
    assert m["date"] == "20260105" and m["host"] == "test-host" and m["schema_version"] == 1
    assert m["manifest_version"] == 1 and m["created_at"].startswith("20")
    assert m["gaps"] == {"total": 4, "recoverable": 3, "unrecoverable": 1}
    assert m["anomaly_day"] is True
    # every file of the day, independently hashed and counted
    day_files = {}
    for dirpath, _, files in os.walk(tree):
        for f in files:
            rel = os.path.relpath(os.path.join(dirpath, f), tree)
            if rel.split("/")[0] in paths.DAY_PARTITIONS and "20260105" in rel:
                day_files[rel] = (tree / rel).read_bytes()
    listed = {e["path"]: e for e in m["files"]}
    assert set(listed) == set(day_files)
    for rel, data in day_files.items():
        e = listed[rel]
        assert e["bytes"] == len(data) and e["sha256"] == hashlib.sha256(data).hexdigest()
        if rel.endswith(".jsonl") and rel != "raw/kis/20260105/15.jsonl":
            assert e["records"] == sum(1 for _ in read_file(tree / rel))
    assert listed["raw/kis/20260105/15.jsonl"]["records"] == 1 and listed["raw/kis/20260105/15.jsonl"]["torn_tail"]
    assert set(m["archives"]) == {layout.archive_name(p) for p in paths.DAY_PARTITIONS}
    # archives: size and hash as listed; GNU tar extracts exactly the listed files
    out = tmp_path / "x"
    out.mkdir()
    for name, a in m["archives"].items():
        data = (pkg / name).read_bytes()
        assert len(data) == a["bytes"] and hashlib.sha256(data).hexdigest() == a["sha256"]
        subprocess.run(["tar", "xzf", str(pkg / name), "-C", str(out)], check=True)
        with tarfile.open(pkg / name) as tf:
            assert sorted(tf.getnames()) == sorted(e["path"] for e in m["files"] if e["archive"] == name)
    for rel, data in day_files.items():
        assert (out / rel).read_bytes() == data
    assert verify_package(pkg) == []
    ev = [rec for p in (tree / "system" / "events" / "system").glob("*.jsonl") for rec in read_file(p)
          if rec["event"] == "backup"]
    assert any(e["ok"] and e["action"] == "built" and e["manifest_sha256"] == msha for e in ev)


def test_verify_catches_a_flipped_byte(tree):
    make_day(tree, DAY, mb=1)
    r = package_day(tree, DAY, opts=BackupOptions(workers=2))
    f = r.path / "scalp.tar.gz"
    b = bytearray(f.read_bytes())
    b[len(b) // 2] ^= 0xFF
    f.write_bytes(bytes(b))
    problems = verify_package(r.path)
    assert problems and any("scalp.tar.gz" in p for p in problems)


def test_rerun_is_noop_force_rebuilds_and_late_changes_repackage(tree, tmp_path):
    make_day(tree, DAY, mb=1)
    r1 = package_day(tree, DAY)
    assert r1.action == "built"
    st = os.stat(r1.path / layout.MANIFEST)
    r2 = package_day(tree, DAY)
    assert r2.action == "noop"
    assert os.stat(r1.path / layout.MANIFEST).st_mtime_ns == st.st_mtime_ns  # untouched
    r3 = package_day(tree, DAY, force=True)
    assert r3.action == "rebuilt" and r3.manifest["created_ns"] >= r1.manifest["created_ns"]
    # an event appended to the day after packaging: the next run re-packages (only if changed)
    ev = next((tree / "system" / "events" / "kis").glob("20260105.jsonl"))
    with open(ev, "ab") as f:
        f.write(orjson.dumps({"late": True}) + b"\n")
    r4 = package_day(tree, DAY, only_if_packaged=True)
    assert r4.action == "rebuilt" and "system/events/kis/20260105.jsonl" in r4.reason
    assert verify_package(r4.path) == []
    assert layout.leftover_dirs(tree) == []


def test_killed_backup_leaves_no_half_package(tree, tmp_path):
    make_day(tree, DAY, mb=24)
    cfg = write_config(tmp_path, tree)
    p = start_prog("observer-backup", "--config", cfg, "--date", "20260105", "--limit-mb-s", "12", "--workers", "1")
    final = paths.backup_dir(tree, DAY)

    def building():
        for what, d in layout.leftover_dirs(tree, DAY):
            if what == "tmp" and any(f.stat().st_size > 0 for f in d.glob("*.tar.gz")):
                return d
        return None

    tmp = wait_for(building, 60, "the temporary package to hold a partly written archive", proc=p,
                   interval=0.005)
    kill9(p)
    assert not final.exists(), "a killed build must not leave a package in place"
    assert tmp.exists() and not (tmp / layout.MANIFEST).exists()
    r = run_prog("observer-backup", "--config", cfg, "--date", "20260105")
    assert r.returncode == 0, r.stderr
    assert "built" in r.stdout
    assert layout.leftover_dirs(tree) == [], "the next run sweeps the half-built directory"
    assert verify_package(final) == []
    r = run_prog("observer-backup", "--config", cfg, "--date", "20260105")
    assert r.returncode == 0 and "noop" in r.stdout


@pytest.mark.parametrize("now,expect", [("2026-01-05T14:00:00+09:00", "refused"),
                                        ("2026-01-05T16:10:00+09:00", "built")])
def test_current_day_waits_for_the_collectors(tree, tmp_path, now, expect):
    make_day(tree, DAY, mb=0.5)
    make_day(tree, date(2026, 1, 2), mb=0.5)
    cfg = write_config(tmp_path, tree)
    env = {"OBSERVER_CLOCK": now}
    r = run_prog("observer-backup", "--config", cfg, "--date", "20260105", env=env)
    if expect == "refused":
        assert r.returncode == 1
        assert "refusing to package today (20260105)" in r.stderr and "15:30" in r.stderr and "16:00" in r.stderr
        assert not paths.backup_dir(tree, DAY).exists()
        # without --date it packages the previous day instead of refusing
        r = run_prog("observer-backup", "--config", cfg, env=env)
        assert r.returncode == 0, r.stderr
        assert not paths.backup_dir(tree, DAY).exists()
    else:
        assert r.returncode == 0, r.stderr
        assert paths.backup_dir(tree, DAY).is_dir()
