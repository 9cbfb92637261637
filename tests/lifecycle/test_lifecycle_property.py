"""Property tests (hypothesis) for issue 12: for random manifests, receipts and trees - names with '..',
'/', absolute paths, NULs, unicode, symlinks and FIFOs, huge numbers, wrong types - retention and pull
never touch a path outside their root and never raise. Real files in a fresh sandbox per example
(root/ next to outside/, whose every byte is compared after the run); the pull runs against the real sshd."""

import hashlib
import json
import os
import shutil
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from observer.core.clock import KST, yyyymmdd
from observer.lifecycle import layout
from observer.lifecycle import pull as pl
from observer.lifecycle import retention as rt
from observer.store import paths
from tests.lifecycle.hostile_env import snapshot

pytestmark = pytest.mark.hostile
TODAY = date(2026, 3, 20)
DAYS = [TODAY - timedelta(days=a) for a in (4, 5, 6)]
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


# -- strategies -------------------------------------------------------------------------------------
HOSTILE_NAMES = ["../../victim.txt", "../../../outside/victim.txt", "/OUTSIDE/victim.txt", "..", ".", "",
                 "raw.tar.gz/../../x", "raw.tar.gz\x00", "räw.tar.gz", "raw.tar.gz\n", "sub/raw.tar.gz",
                 "\\..\\x", "~/x", "raw.tar.gz", "scalp.tar.gz", "system.tar.gz", "universe.tar.gz",
                 "manifest.json", "pulled.json", "../backup/20260315/raw.tar.gz"]
names = st.one_of(st.sampled_from(HOSTILE_NAMES), st.text(max_size=24))
numbers = st.one_of(st.integers(-5, 10_000), st.sampled_from([2**53, 2**63, 2**64 + 1, 10**30, -(2**63)]),
                    st.floats(allow_nan=True), st.text(max_size=5), st.none())
hexes = st.one_of(st.sampled_from(["0" * 64, "f" * 64]), st.text(max_size=70))
junk = st.recursive(st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=10)),
                    lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.text(max_size=6), c, max_size=3)),
                    max_leaves=8)


@st.composite
def archive_entry(draw, name):
    part = name[:-7] if name.endswith(".tar.gz") else draw(st.sampled_from(["raw", "../x", "", "scalp"]))
    e = {"partition": part, "bytes": draw(numbers), "sha256": draw(hexes), "files": draw(numbers),
         "data_bytes": draw(numbers), "records": draw(numbers)}
    if draw(st.booleans()):
        e = {"partition": part, "bytes": draw(st.integers(0, 4096)), "sha256": "a" * 64, "files": 1,
             "data_bytes": 1, "records": 1}
    return draw(st.one_of(st.just(e), junk)) if draw(st.integers(0, 5)) == 0 else e


@st.composite
def manifests(draw, ymd: str):
    """Mostly manifest-shaped (so the checks past the schema are reached), with hostile names and values."""
    if draw(st.integers(0, 6)) == 0:
        return draw(junk)
    anames = draw(st.lists(names, max_size=4, unique=True))
    archives = {n: draw(archive_entry(n)) for n in anames}
    files = []
    for _ in range(draw(st.integers(0, 3))):
        files.append({"path": draw(st.one_of(st.sampled_from([f"raw/kis/{ymd}/09.jsonl", "../../victim.txt",
                                                              "/etc/passwd", f"raw/kis/{ymd}/../../../x"]), names)),
                      "archive": draw(st.one_of(st.sampled_from(anames or ["raw.tar.gz"]), names)),
                      "partition": draw(st.sampled_from(["raw", "scalp", "../x", 5])),
                      "bytes": draw(numbers), "sha256": draw(hexes), "records": draw(numbers),
                      "mtime_ns": draw(numbers)})
    m = {"manifest_version": draw(st.sampled_from([1, 1, 1, 2, "1"])),
         "date": draw(st.sampled_from([ymd, ymd, "20260101", "../../x", 20260315])),
         "archives": archives, "files": files, "anomaly_day": draw(st.one_of(st.booleans(), junk))}
    for k in draw(st.lists(st.sampled_from(list(m)), max_size=1)):
        m[k] = draw(junk)
    return m


MUTATIONS = ["none", "none", "add_archive", "rename_archive", "file_path", "huge", "wrong_type", "date", "junk_value"]


@st.composite
def real_mutations(draw):
    """A hostile edit of a real package's manifest (hash file recomputed, receipt forged to match):
    ('none' leaves it valid, so the deletion and the fetch paths are reached too)."""
    return (draw(st.sampled_from(MUTATIONS)), draw(names), draw(numbers), draw(junk),
            draw(st.sampled_from(["forged", "forged", "junk", "none"])))


def mutate(m: dict, mutation) -> dict:
    kind, name, number, junk_value, _ = mutation
    first = sorted(m["archives"])[0]
    if kind == "add_archive":
        m["archives"][name] = dict(m["archives"][first])
    elif kind == "rename_archive":
        m["archives"][name] = m["archives"].pop(first)
        for e in m["files"]:
            if e["archive"] == first:
                e["archive"] = name
    elif kind == "file_path" and m["files"]:
        m["files"][0]["path"] = name
    elif kind == "huge":
        m["archives"][first]["bytes"] = number
    elif kind == "wrong_type":
        m["archives"], m["files"] = m["files"], m["archives"]
    elif kind == "date":
        m["date"] = name
    elif kind == "junk_value":
        m["archives"][first] = junk_value
    return m


def apply_real(root: Path, day: date, mutation) -> None:
    """Package the day for real, then edit its manifest as an attacker with write access would."""
    from observer.lifecycle.backup import package_day

    pkg = package_day(root, day).path
    m = orjson.loads((pkg / layout.MANIFEST).read_bytes())
    if mutation[0] != "none":
        m = mutate(m, mutation)
    data = json.dumps(m).encode()
    (pkg / layout.MANIFEST).write_bytes(data)
    (pkg / layout.MANIFEST_SHA).write_text(f"{sha(data)}  {layout.MANIFEST}\n")
    rk = mutation[4]
    if rk == "forged":
        arch = {n: (a.get("sha256") if isinstance(a, dict) else a) for n, a in m["archives"].items()} \
            if isinstance(m["archives"], dict) else m["archives"]
        rec = json.dumps({"receipt_version": 1, "date": yyyymmdd(day), "pc_id": "pc",
                          "pulled_at": "2026-03-16T00:00:00+00:00", "manifest_sha256": sha(data),
                          "archives": arch, "verified": True}).encode()
        (pkg / layout.RECEIPT).write_bytes(rec)
    elif rk == "junk":
        (pkg / layout.RECEIPT).write_bytes(json.dumps(mutation[3]).encode())


@st.composite
def packages(draw):
    """day -> ('real', mutation) or ('synthetic', manifest bytes, sha line, receipt bytes or None), 1-3 days."""
    out = {}
    for day in draw(st.lists(st.sampled_from(DAYS), min_size=1, max_size=3, unique=True)):
        if draw(st.booleans()):
            out[day] = ("real", draw(real_mutations()))
            continue
        ymd = yyyymmdd(day)
        m = draw(manifests(ymd))
        # stdlib json: huge ints and NaN go out as written (orjson refuses to write them; readers must cope)
        data = json.dumps(m).encode() if draw(st.integers(0, 8)) else draw(st.binary(max_size=40))
        sha_line = f"{sha(data)}  manifest.json\n" if draw(st.integers(0, 6)) else draw(st.text(max_size=80))
        rec = None
        kind = draw(st.sampled_from(["forged", "forged", "junk", "none"]))
        if kind == "forged":  # names exactly this manifest and its archives: reaches the deletion path
            arch = {n: (a.get("sha256") if isinstance(a, dict) else a)
                    for n, a in (m.get("archives") or {}).items()} if isinstance(m, dict) and isinstance(
                m.get("archives"), dict) else draw(junk)
            rec = json.dumps({"receipt_version": 1, "date": ymd, "pc_id": "pc", "pulled_at": "2026-03-16T00:00:00+00:00",
                                "manifest_sha256": sha(data), "archives": arch, "verified": True}).encode()
        elif kind == "junk":
            rec = json.dumps(draw(junk)).encode()
        out[day] = ("synthetic", data, sha_line, rec)
    return out


TREE_HAZARDS = st.lists(st.sampled_from(["symlink_file", "symlink_dir", "fifo", "symlink_archive", "symlink_pkg",
                                         "symlink_reports", "odd_name", "stale_tmp", "symlink_manifest",
                                         "symlink_universe", "symlink_metrics"]),
                        max_size=4)


# -- the sandbox ------------------------------------------------------------------------------------
def sandbox(base: Path) -> tuple[Path, Path, Path]:
    box = Path(tempfile.mkdtemp(dir=base))
    outside = box / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "victim.txt").write_bytes(b"must survive\n")
    (outside / "dir" / "09.jsonl").write_bytes(b'{"v":1}\n')
    (outside / "20260315").mkdir()
    (outside / "20260315" / "quality.json").write_bytes(b"{}")
    root = box / "root"
    root.mkdir()
    return box, outside, root


def day_tree(root: Path, day: date) -> None:
    ymd = yyyymmdd(day)
    for rel in (f"raw/kis/{ymd}/09.jsonl", f"scalp/kis/kr_stocks/{ymd}/09_00_00.jsonl",
                f"system/events/kis/{ymd}.jsonl", f"reports/{ymd}/quality.json", f"universe/{ymd}_kr_stocks.json"):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b'{"v":1,"kind":"x"}\n')


def hazards(root: Path, outside: Path, day: date, which: list[str]) -> None:
    ymd = yyyymmdd(day)
    pkg = paths.backup_dir(root, day)
    for h in which:
        try:
            if h == "symlink_file":
                os.symlink(outside / "victim.txt", root / "raw" / "kis" / ymd / "10.jsonl")
            elif h == "symlink_dir":
                os.symlink(outside / "dir", root / "raw" / "kis" / "20260301")
            elif h == "fifo":
                os.mkfifo(root / "scalp" / "kis" / "kr_stocks" / ymd / "10_00_00.jsonl")
            elif h == "symlink_archive" and pkg.is_dir():
                (pkg / "raw.tar.gz").unlink(missing_ok=True)
                os.symlink(outside / "victim.txt", pkg / "raw.tar.gz")
            elif h == "symlink_pkg":
                os.symlink(outside, paths.backup_dir(root, date(2026, 3, 1)))
            elif h == "symlink_reports":
                os.symlink(outside / "20260315", root / "reports" / "20260301")
            elif h == "odd_name":
                (root / "reports" / ymd / "a b\u00e9.html").write_bytes(b"x")
            elif h == "stale_tmp":
                t = root / "state" / ".x.json.tmp"
                t.parent.mkdir(parents=True, exist_ok=True)
                t.write_bytes(b"x")
                os.utime(t, (time.time() - 3 * 86400,) * 2)
            elif h == "symlink_universe" and not os.path.islink(root / "universe"):
                # the packaged universe files, copied with their mtimes: only lstat tells them apart
                (outside / "uni").mkdir(exist_ok=True)
                for f in (root / "universe").iterdir():
                    shutil.copy2(f, outside / "uni" / f.name)
                shutil.rmtree(root / "universe")
                os.symlink(outside / "uni", root / "universe")
            elif h == "symlink_metrics" and not os.path.lexists(root / "metrics"):
                (outside / "met").mkdir(exist_ok=True)
                (outside / "met" / "20260101.jsonl").write_bytes(b'{"v":1}\n')
                os.symlink(outside / "met", root / "metrics")
            elif h == "symlink_manifest" and pkg.is_dir():
                (pkg / layout.MANIFEST).unlink(missing_ok=True)
                os.symlink(outside / "victim.txt", pkg / layout.MANIFEST)
        except FileExistsError:
            pass


def write_packages(root: Path, pk: dict) -> None:
    for day, spec in pk.items():
        if spec[0] == "real":
            apply_real(root, day, spec[1])
            continue
        _, data, sha_line, rec = spec
        pkg = paths.backup_dir(root, day)
        pkg.mkdir(parents=True, exist_ok=True)
        (pkg / layout.MANIFEST).write_bytes(data)
        (pkg / layout.MANIFEST_SHA).write_text(sha_line)
        if rec is not None:
            (pkg / layout.RECEIPT).write_bytes(rec)
        for n in ("raw.tar.gz", "scalp.tar.gz", "universe.tar.gz"):
            (pkg / n).write_bytes(os.urandom(64))


# -- retention --------------------------------------------------------------------------------------
@settings(max_examples=200, **SETTINGS)
@given(packages(), TREE_HAZARDS, st.sampled_from([10.0, 99.0]))
def test_lifecycle_retention_never_leaves_its_root_never_raises(tmp_path_factory, pk, which, pct):
    box, outside, root = sandbox(tmp_path_factory.getbasetemp())
    for day in DAYS:
        day_tree(root, day)
    write_packages(root, pk)
    for day in pk:
        hazards(root, outside, day, which)
    before = snapshot(outside)
    for h in which:
        event(f"hazard {h}")
    events = []
    survey = rt.day_states(root)
    temp = layout.stale_temp_files(root, time.time_ns(), 3600)
    p = rt.plan(TODAY, survey.states, rt.Disk(100 << 30, int(pct * (1 << 30))), rt.Policy(), temp)
    rt.execute(root, p, survey.inv, survey.manifests, lambda sev, **f: events.append(f))
    assert snapshot(outside) == before, "retention touched a path outside its root"
    for d in p.deletions:  # --hypothesis-show-statistics: how often each path was exercised
        event(f"deleted {d.partition}")
    event(f"invalid days: {sum(1 for s in survey.states if s.invalid)}")
    for s in survey.states:
        if s.invalid:
            assert not any(d.day == s.day and d.partition not in layout.UNGATED for d in p.deletions), \
                "a day with an invalid manifest or receipt is never deleted"


# -- pull -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sftp_session(sshd, tmp_path_factory):
    base = tmp_path_factory.mktemp("pullprop")
    cfg = pl.PullConfig(host="127.0.0.1", port=sshd.port, user=sshd.user, key_file=str(sshd.user_key),
                        known_hosts=str(sshd.known_hosts), local_dir=str(base / "unused"), pc_id="prop")
    t, sftp = pl.connect(cfg)
    yield base, cfg, sftp
    t.close()


LOCAL_HAZARDS = st.lists(st.sampled_from(["dest_symlink", "part_symlink", "day_symlink"]), max_size=2)


@settings(max_examples=60, **SETTINGS)
@given(packages(), st.booleans(), LOCAL_HAZARDS, st.booleans())
def test_pull_never_leaves_local_dir_never_raises(sftp_session, pk, server_symlink, local_h, unreceipted):
    base, cfg0, sftp = sftp_session
    box, outside, server = sandbox(base)
    for day in pk:
        day_tree(server, day)
    write_packages(server, pk)
    if unreceipted:  # not pulled yet: the fetch path runs instead of "already"
        for day in pk:
            paths.backup_dir(server, day).joinpath(layout.RECEIPT).unlink(missing_ok=True)
    if server_symlink:
        for day in pk:
            hazards(server, outside, day, ["symlink_archive", "symlink_pkg"])
    local = box / "pc"
    local.mkdir()
    for day in pk:
        ymd = yyyymmdd(day)
        if "day_symlink" in local_h:
            os.symlink(outside / "dir", local / ymd)
            continue
        (local / ymd).mkdir()
        if "dest_symlink" in local_h:
            os.symlink(outside / "victim.txt", local / ymd / "raw.tar.gz")
        if "part_symlink" in local_h:
            for n in ("raw.tar.gz", "scalp.tar.gz"):
                os.symlink(outside / "victim.txt", local / ymd / f"{n}.{'a' * 16}.part")
    cfg = pl.PullConfig(**{**cfg0.__dict__, "local_dir": str(local), "remote_dir": str(server / "backup")})
    def outside_both():
        return {k: v for k, v in snapshot(box, skip=local).items() if not k.startswith("root")}

    before, server_before = outside_both(), snapshot(server)
    days = pl.remote_days(sftp, cfg)
    for d in days:
        r = pl.pull_day(sftp, cfg, d, now=datetime(2026, 3, 20, 21, 40, tzinfo=KST))
        assert r.status in ("pulled", "already", "mismatch", "invalid", "skipped")
        event(f"pull status {r.status}")
    pl.local_retention(cfg, datetime(2026, 3, 20, 21, 40, tzinfo=KST), set(days))
    assert outside_both() == before, "pull touched a path outside local_dir"
    # the server may gain a receipt (pulled.json) inside a package directory: that is the protocol
    server_after = snapshot(server)
    for k in set(server_after) - set(server_before):
        assert k.startswith("backup/") and k.endswith("/" + layout.RECEIPT), k
    def not_receipt(d):
        return {k: v for k, v in d.items() if not k.endswith("/" + layout.RECEIPT)}

    assert not_receipt({k: v for k, v in server_after.items() if k in server_before}) == not_receipt(server_before)
