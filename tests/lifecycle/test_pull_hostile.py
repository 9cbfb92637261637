"""observer-backup-pull against a hostile server (a real OpenSSH server on 127.0.0.1; issue 12): names from
the server never become paths outside local_dir, server-side symlinks are refused, local symlinks never
followed, one malformed manifest does not stop the other days; and the PC's own cleanup (ages from the
receipt's pulled_at, never the run that pulled it, a minimum keep; quarantine cleaned, issue 13)."""

import hashlib
import os
from datetime import date
from pathlib import Path

import orjson
import pytest

from observer.lifecycle import layout
from observer.lifecycle.backup import load_manifest, package_day
from observer.store import paths
from tests.lifecycle.hostile_env import snapshot
from tests.lifecycle.test_pull import pull_config
from tests.support.daygen import make_day
from tests.support.procs import run_prog

pytestmark = [pytest.mark.hostile, pytest.mark.sshd]
D1, D2 = date(2026, 1, 5), date(2026, 1, 6)
EVENING = {"OBSERVER_CLOCK": "2026-01-06T21:30:00+09:00"}


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture
def two_days(tree):
    for i, d in enumerate((D1, D2)):
        make_day(tree, d, mb=0.2, seed=i + 1, quality_anomaly=False)
        package_day(tree, d)
    return tree


def rewrite(root: Path, day: date, data: bytes) -> None:
    """What a compromised server does: a new manifest and a hash file that matches it."""
    pkg = paths.backup_dir(root, day)
    (pkg / layout.MANIFEST).write_bytes(data)
    (pkg / layout.MANIFEST_SHA).write_text(f"{sha(data)}  {layout.MANIFEST}\n")


def pull(tmp: Path, srv, root: Path, local: Path, env=EVENING, **over):
    return run_prog("observer-backup-pull", "--config", pull_config(tmp, srv, root, local, **over), env=env)


@pytest.mark.parametrize("kind", ["relative", "absolute"])
def test_pull_traversal_and_absolute_names_write_nothing_outside(sshd, two_days, tmp_path, kind):
    root = two_days
    home = tmp_path / "pc"
    local = home / "a" / "backups"
    local.mkdir(parents=True)
    payload = b"planted by the server\n"
    m, _ = load_manifest(paths.backup_dir(root, D1))
    entry = {"partition": "raw", "bytes": len(payload), "sha256": sha(payload), "files": 0, "data_bytes": 0,
             "records": 0}
    # server-side files the names point at, so main's puller found something to fetch
    (root.parent / "outside.txt").write_bytes(payload)
    absolute = home / "abs_outside.txt"
    if kind == "relative":
        m["archives"]["../../../outside.txt"] = entry
    else:
        m["archives"][str(absolute)] = entry
        Path(str(paths.backup_dir(root, D1)) + str(absolute)).parent.mkdir(parents=True, exist_ok=True)
        Path(str(paths.backup_dir(root, D1)) + str(absolute)).write_bytes(payload)
    rewrite(root, D1, orjson.dumps(m))
    before = snapshot(home, skip=local)
    r = pull(tmp_path, sshd, root, local)
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert snapshot(home, skip=local) == before, "nothing written outside local_dir"
    assert not (local.parent.parent / "outside.txt").exists() and not absolute.exists()
    assert r.returncode == 1 and "20260105: REFUSED" in r.stderr
    assert not (paths.backup_dir(root, D1) / layout.RECEIPT).exists(), "not counted as pulled"
    assert (paths.backup_dir(root, D2) / layout.RECEIPT).exists(), "the other day is pulled"


def test_pull_server_symlinks_refused(sshd, two_days, tmp_path):
    root = two_days
    secret = tmp_path / "server-secret.bin"
    secret.write_bytes(b"server file outside the backup directory\n" * 100)
    pkg = paths.backup_dir(root, D1)
    m, _ = load_manifest(pkg)
    (pkg / "raw.tar.gz").unlink()
    os.symlink(secret, pkg / "raw.tar.gz")
    m["archives"]["raw.tar.gz"].update(bytes=secret.stat().st_size, sha256=sha(secret.read_bytes()))
    rewrite(root, D1, orjson.dumps(m))
    os.symlink(paths.backup_dir(root, D2), paths.backup_dir(root, date(2026, 1, 7)))
    local = tmp_path / "pc"
    r = pull(tmp_path, sshd, root, local)
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.returncode == 1
    assert "raw.tar.gz on the server is a symlink" in r.stderr
    assert "20260107: REFUSED" in r.stderr and "20260107 on the server is a symlink" in r.stderr
    assert not (local / "20260105" / "raw.tar.gz").exists() and not (pkg / layout.RECEIPT).exists()
    assert not (local / "20260107").exists()
    assert (paths.backup_dir(root, D2) / layout.RECEIPT).exists()


def test_pull_never_follows_a_local_symlink(sshd, two_days, tmp_path):
    root = two_days
    local = tmp_path / "pc"
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"user's file\n")
    m, _ = load_manifest(paths.backup_dir(root, D1))
    part = local / "20260105" / f"raw.tar.gz.{m['archives']['raw.tar.gz']['sha256'][:16]}.part"
    part.parent.mkdir(parents=True)
    os.symlink(victim, part)
    r = pull(tmp_path, sshd, root, local)
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert victim.read_bytes() == b"user's file\n", "never written through a symlink"
    assert r.returncode == 1 and "is a symlink, not a regular file; not followed" in r.stderr
    assert not (paths.backup_dir(root, D1) / layout.RECEIPT).exists()
    assert (paths.backup_dir(root, D2) / layout.RECEIPT).exists()


MALFORMED = {"list": lambda: b"[]", "files_only": lambda: b'{"files": []}', "not_json": lambda: b"not json at all",
             "huge": lambda: b'{"files": []' + b" " * (65 << 20) + b"}"}   # refused by its size, never read


@pytest.mark.parametrize("bad", sorted(MALFORMED))
def test_pull_one_malformed_manifest_does_not_stop_the_others(sshd, two_days, tmp_path, bad):
    root = two_days
    rewrite(root, D1, MALFORMED[bad]())
    local = tmp_path / "pc"
    r = pull(tmp_path, sshd, root, local)
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.returncode == 1 and "20260105: REFUSED" in r.stderr
    assert not (paths.backup_dir(root, D1) / layout.RECEIPT).exists()
    assert (paths.backup_dir(root, D2) / layout.RECEIPT).exists()
    assert (local / "20260106" / "receipt.json").exists() and not (local / "20260105" / "receipt.json").exists()


def test_pull_late_day_kept_from_its_pull_not_its_date(sshd, tree, tmp_path):
    """The PC was off for six weeks: the day it pulls now is older than keep_days by its date. main
    deleted it locally in the same run - and the receipt let the server delete it too."""
    make_day(tree, D1, mb=0.2, quality_anomaly=False)
    package_day(tree, D1)
    local = tmp_path / "pc"
    late = {"OBSERVER_CLOCK": "2026-02-20T21:30:00+09:00"}
    r = pull(tmp_path, sshd, tree, local, env=late)  # keep_days 30 by default; the day's date is 46 days ago
    assert r.returncode == 0, r.stderr[-2000:]
    assert (paths.backup_dir(tree, D1) / layout.RECEIPT).exists()
    assert (local / "20260105" / "raw.tar.gz").exists(), "never deleted in the run that pulled it"
    # 6 days after the pull: keep_days 1 has passed but not min_keep_days 7
    r = pull(tmp_path, sshd, tree, local, env={"OBSERVER_CLOCK": "2026-02-26T21:30:00+09:00"}, keep_days=1,
             min_keep_days=7)
    assert r.returncode == 0 and (local / "20260105" / "raw.tar.gz").exists()
    # 8 days after: past both
    r = pull(tmp_path, sshd, tree, local, env={"OBSERVER_CLOCK": "2026-02-28T21:30:00+09:00"}, keep_days=1,
             min_keep_days=7)
    assert r.returncode == 0 and not (local / "20260105").exists()


def test_pull_local_receipt_unusable_keeps_the_package(sshd, tree, tmp_path):
    (tree / "backup").mkdir()  # a server with nothing new to pull
    local = tmp_path / "pc"
    day = local / "20251201"
    day.mkdir(parents=True)
    (day / "raw.tar.gz").write_bytes(b"only copy")
    (day / "receipt.json").write_bytes(b'{"pulled_at": "long ago"}')
    r = pull(tmp_path, sshd, tree, local, env={"OBSERVER_CLOCK": "2026-03-01T21:30:00+09:00"})
    assert "Traceback" not in r.stderr
    assert (day / "raw.tar.gz").read_bytes() == b"only copy"
    assert r.returncode == 1 and "20251201: kept" in r.stderr


def test_pull_quarantine_cleaned_after_its_keep(sshd, tree, tmp_path):
    (tree / "backup").mkdir()  # a server with nothing new to pull
    local = tmp_path / "pc"
    q = local / "quarantine"
    old = q / "20260105" / "20260106T123000Z"
    young = q / "20260201" / "20260202T123000Z"
    for d in (old, young):
        d.mkdir(parents=True)
        (d / "raw.tar.gz.0123456789abcdef.part").write_bytes(b"bad bytes")
    outside = tmp_path / "kept-elsewhere"
    (outside / "20251231T000000Z").mkdir(parents=True)
    os.symlink(outside, q / "20260104")
    r = pull(tmp_path, sshd, tree, local, env={"OBSERVER_CLOCK": "2026-02-20T21:30:00+09:00"},
             quarantine_keep_days=30)
    assert r.returncode == 0, r.stderr[-2000:]
    assert not old.exists() and not old.parent.exists()
    assert young.exists()
    assert (outside / "20251231T000000Z").is_dir(), "a symlink in quarantine/ is never followed"
