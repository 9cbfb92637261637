"""observer-backup-pull against a real OpenSSH server on 127.0.0.1: pull, verify, receipt; resume after
kill -9; tampering caught; a changed host key, an unknown host and a wrong user key refused. Ends with
the whole chain: package -> pull -> receipt -> retention deletes the day."""

import hashlib
import json
import os
from datetime import date
from pathlib import Path

import orjson
import pytest

from observer.lifecycle import layout
from observer.lifecycle.backup import load_manifest, package_day
from observer.lifecycle.retention import receipt_status
from observer.store import paths
from observer.store.reader import read_file
from tests.support import wait_for
from tests.support.daygen import make_day
from tests.support.procs import kill9, run_prog, start_prog
from tests.support.sshd import SshServer, keygen

pytestmark = pytest.mark.sshd
DAY = date(2026, 1, 5)
PC_NOW = {"OBSERVER_CLOCK": "2026-01-05T21:30:00+09:00"}  # the PC pulls the evening of the day


def pull_config(tmp: Path, srv: SshServer, root: Path, local: Path, **over) -> Path:
    vals = {"host": "127.0.0.1", "port": srv.port, "user": srv.user, "key_file": str(srv.user_key),
            "known_hosts": str(srv.known_hosts), "remote_dir": str(root / "backup"), "local_dir": str(local),
            "pc_id": "test-pc", **over}
    body = "\n".join(f"{k} = {json.dumps(v)}" for k, v in vals.items())
    c = tmp / "pc.toml"
    c.write_text(f"[pull]\n{body}\n")
    return c


def logged(stderr: str, msg: str) -> list[dict]:
    out = []
    for line in stderr.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("msg") == msg:
            out.append(rec)
    return out


@pytest.fixture
def packaged(tree):
    make_day(tree, DAY, mb=2, quality_anomaly=False)
    r = package_day(tree, DAY)
    return tree, r.path


def test_pull_verify_receipt_then_retention_deletes(sshd, packaged, tmp_path):
    root, pkg = packaged
    local = tmp_path / "pc"
    cfg = pull_config(tmp_path, sshd, root, local)
    r = run_prog("observer-backup-pull", "--config", cfg, env=PC_NOW)
    assert r.returncode == 0, r.stderr
    m, msha = load_manifest(pkg)
    for name, a in m["archives"].items():
        assert hashlib.sha256((local / "20260105" / name).read_bytes()).hexdigest() == a["sha256"]
    receipt = orjson.loads((pkg / layout.RECEIPT).read_bytes())
    assert receipt["manifest_sha256"] == msha and receipt["verified"] is True and receipt["pc_id"] == "test-pc"
    assert receipt["archives"] == {n: a["sha256"] for n, a in m["archives"].items()}
    assert (local / "20260105" / "receipt.json").read_bytes() == (pkg / layout.RECEIPT).read_bytes()
    assert not list(pkg.glob(".pulled.json.tmp-*"))
    ok, why, _, _ = receipt_status(root, DAY)
    assert ok, why
    # a second run: already pulled, nothing fetched
    r = run_prog("observer-backup-pull", "--config", cfg, env=PC_NOW)
    assert r.returncode == 0
    assert [e["event_fields"]["status"] for e in logged(r.stderr, "backup_pull")] == ["already"]
    # retention on D+4 (keep 3): the day goes, partition by partition, each an event; the receipt stays
    day_bytes = sum(e["bytes"] for e in m["files"])
    srv_cfg = tmp_path / "srv.toml"
    srv_cfg.write_text(f'data_dir = "{root}"\n')
    r = run_prog("observer-retention", "--config", srv_cfg, env={"OBSERVER_CLOCK": "2026-01-09T22:00:00+09:00"})
    assert r.returncode == 0, r.stderr
    left = [p for p in root.rglob("*") if p.is_file() and "20260105" in str(p) and "backup" not in p.parts]
    assert left == []
    assert sorted(os.listdir(pkg)) == sorted([layout.MANIFEST, layout.MANIFEST_SHA, layout.RECEIPT])
    evs = [e for e in read_file(paths.events_file(root, "system", date(2026, 1, 9))) if e["event"] == "retention"]
    assert sum(e["bytes"] for e in evs if e["partition"] != "backup-archives") == day_bytes
    assert [e["partition"] for e in evs] == ["raw", "scalp", "swing", "recovered", "reports", "system", "backup-archives"]
    assert all(e["why"].startswith("expired: age 4 d > keep 3 d") for e in evs[:-1])


def test_interrupted_pull_resumes_from_the_partial_file(sshd, tree, tmp_path):
    make_day(tree, DAY, mb=1, random_payload_mb=24)
    pkg = package_day(tree, DAY).path
    m, _ = load_manifest(pkg)
    raw = m["archives"]["raw.tar.gz"]
    assert raw["bytes"] > 10 << 20
    local = tmp_path / "pc"
    cfg = pull_config(tmp_path, sshd, tree, local)
    p = start_prog("observer-backup-pull", "--config", cfg, "--limit-mb-s", "8", env=PC_NOW)
    part = local / "20260105" / f"raw.tar.gz.{raw['sha256'][:16]}.part"
    wait_for(lambda: part.exists() and part.stat().st_size > (2 << 20), 60, "a partly downloaded raw.tar.gz", proc=p,
             interval=0.005)
    kill9(p)
    got = part.stat().st_size
    assert 0 < got < raw["bytes"], "killed mid-file"
    assert not (pkg / layout.RECEIPT).exists()
    r = run_prog("observer-backup-pull", "--config", cfg, env=PC_NOW)
    assert r.returncode == 0, r.stderr
    [ev] = logged(r.stderr, "backup_pull")
    fetched = ev["event_fields"]["fetched_bytes"]
    total = sum(a["bytes"] for a in m["archives"].values())
    reused = sum(m["archives"][n]["bytes"] for n in ev["event_fields"]["reused"])
    assert fetched == total - reused - got, "continued from the partial file's offset"
    assert hashlib.sha256((local / "20260105" / "raw.tar.gz").read_bytes()).hexdigest() == raw["sha256"]
    assert not part.exists()
    assert receipt_status(tree, DAY)[0]


def test_tampered_file_no_receipt_kept_aside(sshd, packaged, tmp_path):
    root, pkg = packaged
    f = pkg / "scalp.tar.gz"
    b = bytearray(f.read_bytes())
    b[1000] ^= 0x01  # same size, one bit
    f.write_bytes(bytes(b))
    local = tmp_path / "pc"
    cfg = pull_config(tmp_path, sshd, root, local)
    r = run_prog("observer-backup-pull", "--config", cfg, env=PC_NOW)
    assert r.returncode == 1, r.stderr
    assert "VERIFICATION FAILED" in r.stderr and "scalp.tar.gz" in r.stderr
    assert not (pkg / layout.RECEIPT).exists()
    assert not (local / "20260105" / "scalp.tar.gz").exists()
    [bad] = list((local / "quarantine" / "20260105").glob("*/scalp.tar.gz.*.part"))
    assert bad.read_bytes() == bytes(b)
    assert not receipt_status(root, DAY)[0]
    crit = [rec for rec in logged(r.stderr, "backup_pull") if rec["level"] == "CRITICAL"]
    assert crit and crit[0]["event_fields"]["status"] == "mismatch"


def test_tampered_manifest_refused(sshd, packaged, tmp_path):
    root, pkg = packaged
    mf = pkg / layout.MANIFEST
    mf.write_bytes(mf.read_bytes().replace(b'"host"', b'"HOST"'))
    cfg = pull_config(tmp_path, sshd, root, tmp_path / "pc")
    r = run_prog("observer-backup-pull", "--config", cfg, env=PC_NOW)
    assert r.returncode == 1 and "manifest.json: sha256" in r.stderr
    assert not (pkg / layout.RECEIPT).exists()


def test_wrong_user_key_refused(sshd, packaged, tmp_path):
    root, pkg = packaged
    other = keygen(tmp_path / "other_key", "intruder")
    cfg = pull_config(tmp_path, sshd, root, tmp_path / "pc", key_file=str(other))
    r = run_prog("observer-backup-pull", "--config", cfg, env=PC_NOW)
    assert r.returncode == 3
    assert "refused the key" in r.stderr
    assert "PRIVATE KEY" not in r.stderr + r.stdout
    assert not (pkg / layout.RECEIPT).exists()


def test_changed_and_unknown_host_keys_refused(packaged, tmp_path):
    root, pkg = packaged
    srv = SshServer(tmp_path / "sshd2").start()
    try:
        cfg = pull_config(tmp_path, srv, root, tmp_path / "pc")
        old_fp = srv.host_fingerprint()
        srv.restart_with_new_host_key()  # known_hosts still has the old key
        new_fp = srv.host_fingerprint()
        assert new_fp != old_fp
        r = run_prog("observer-backup-pull", "--config", cfg, env=PC_NOW)
        assert r.returncode == 3
        assert "CHANGED" in r.stderr and new_fp in r.stderr and old_fp in r.stderr
        # unknown host: an empty known_hosts refuses too, naming the key it was offered
        srv.known_hosts.write_text("")
        r = run_prog("observer-backup-pull", "--config", cfg, env=PC_NOW)
        assert r.returncode == 3
        assert "unknown" in r.stderr and new_fp in r.stderr
        assert not (pkg / layout.RECEIPT).exists()
    finally:
        srv.stop()
