"""End to end: a simulated segment with faults recorded by Track B, then the gap-filler against the same
simulator. Recovered ticks equal ground truth exactly, the merged view has no duplicates, every
unrecoverable interval stays marked, the audit's numbers equal the ground-truth comparison; a kill -9
mid-run and a rerun give the same result; REST faults during the backfill are retried."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path

import orjson
import pytest

from observer.core.clock import ScaledClock, kst_datetime
from observer.markets import calendar_from_config
from observer.programs.verify import verify_tree
from observer.recover.audit import build_quality, write_quality
from observer.recover.gapfill import checkpoint_path
from observer.store.reader import day_files, iter_day, read_file
from tests.support import wait_for
from tests.support.scenario import (
    copy_tree,
    gap_fill,
    merged_keys,
    record_segment,
    scalp_keys,
    toml_config,
    truth_by_symbol,
    truth_keys,
    warm_token,
)

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / "bin"


@pytest.fixture(scope="module")
def seg(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("seg")
    env, syms = record_segment(tmp / "env")
    warm_token(env)
    yield env, syms, tmp
    env.close()


def events(root: Path, day) -> list[dict]:
    return list(iter_day(root, day, kinds=("events",)))


def recovered_records(root: Path, day) -> list[dict]:
    out = []
    for _, p in day_files(root, day, ("recovered",)):
        out.extend(read_file(p, partition="recovered"))
    return out


def assert_matches_truth(env, root: Path, syms) -> dict:
    """Merged view == ground truth over each symbol's recorded span; returns counts."""
    truth = truth_by_symbol(env, syms)
    merged = merged_keys(root, env.day, syms)
    scalp = scalp_keys(root, env.day, syms)
    n = {"scalp": 0, "merged": 0}
    for sym in syms:
        got = merged[sym]
        assert len(set(got)) == len(got), f"{sym}: duplicates in the merged view"
        lo, hi = got[0][0] - got[0][2] + 1, got[-1][0]
        want = truth_keys(env, truth[sym], lo, hi)
        assert got == want, f"{sym}: merged view differs from ground truth ({len(got)} vs {len(want)})"
        n["scalp"] += len(set(scalp[sym]))
        n["merged"] += len(got)
    return n


def test_faults_left_holes_that_the_gap_filler_recovers_exactly(seg, tmp_path):
    env, syms, _ = seg
    root = copy_tree(env, tmp_path / "t")
    scalp_before = sorted(p.name for _, p in day_files(root, env.day, ("scalp",)))
    ev0 = events(root, env.day)
    live = [e for e in ev0 if e["event"] == "gap_marker"]
    assert {e["cause"] for e in live} >= {"ws_eof", "ws_stall"}, "the faults produced no live markers"
    summary = gap_fill(env, root)
    n = assert_matches_truth(env, root, syms)
    assert n["merged"] > n["scalp"], "nothing was missing: the faults did not bite"
    assert summary["recovered_trades"] == n["merged"] - n["scalp"]
    assert summary["failed_jobs"] == 0 and summary["unrecoverable_holes"] == 0
    # recovered/ only, with provenance; scalp/ untouched
    assert sorted(p.name for _, p in day_files(root, env.day, ("scalp",))) == scalp_before
    recs = recovered_records(root, env.day)
    assert recs and all(r["quality"] == "recovered" and r["provenance"]["source_call"] == "FHPST01060000"
                        and r["provenance"]["gap_id"] for r in recs)
    keys = [(r["symbol"], r["cum_vol"]) for r in recs]
    assert len(keys) == len(set(keys)), "a trade recovered twice"
    # the silent losses (dropped symbol, malformed frames) were found offline and marked once each
    new = [e for e in events(root, env.day) if e["event"] == "gap_marker" and e.get("detected") == "offline"]
    assert new and all(e["cause"] == "cum_vol_jump" and e["missing_qty"] > 0 for e in new)
    assert syms[1] in {e["symbol"] for e in new}, "the dropped symbol's loss was not detected"
    ids = [e["gap_id"] for e in events(root, env.day) if e["event"] == "gap_marker"]
    assert len(ids) == len(set(ids))
    assert verify_tree(root, env.date)["clean"]
    # observer-replay --merged: the union without duplicates
    out = subprocess.run([sys.executable, str(BIN / "observer-replay"), str(root), "--date", env.date, "--merged",
                          "--symbols", ",".join(syms)], capture_output=True, check=True).stdout
    trades = [orjson.loads(x) for x in out.splitlines() if b'"trade"' in x]
    k = Counter((t["symbol"], t["exch_ns"], t["price"], t["qty"], t["cum_vol"]) for t in trades)
    assert k and max(k.values()) == 1 and len(k) == n["merged"]

    # a second full run adds nothing
    before = {p.name: p.read_bytes() for _, p in day_files(root, env.day, ("recovered",))}
    s2 = gap_fill(env, root)
    assert s2["recovered_trades"] == 0 and s2["markers_emitted"] == 0 and s2["calls"] == 0 and s2["jobs"] == 0
    assert {p.name: p.read_bytes() for _, p in day_files(root, env.day, ("recovered",))} == before

    # the audit's numbers equal the ground-truth comparison
    q = build_quality(root, env.day, env.cfg, clock=env.clock, calendar=calendar_from_config(env.cfg),
                      ground_truth=env.gt)
    gt = q["ground_truth"]
    assert gt["audit_equals_truth"] and gt["merged_pct"] == 100.0
    assert gt["recorded_pct"] < 100.0
    assert q["completeness_pct"] == 100.0 and q["recorded_pct"] < 100.0
    for row, t in zip(q["completeness"], gt["symbols"], strict=True):
        assert row["expected_qty"] == t["generated_qty"]
        assert row["recorded_trades"] + row["recovered_trades"] == t["generated_trades"] == t["merged_trades"]
        assert row["recorded_trades"] == t["recorded_trades"]
        assert row["missing_qty"] == 0
    st = q["gaps"]["by_status"]
    assert st.get("recovered", 0) >= 1 and st.get("pending", 0) == 0 and st.get("failed", 0) == 0
    # order books are never filled: the dataset is not complete, and the report says why
    assert st["unrecoverable"] == q["gaps"]["by_channel"]["book"] > 0
    assert not q["dataset_complete"] and any("order-book" in r for r in q["incomplete_reasons"])
    assert q["connection"]["reconnects"] == 2
    assert isinstance(q["anomaly_day"], bool)
    jp, hp = write_quality(root, env.day, q)
    assert json.loads(jp.read_text())["anomaly_day"] == q["anomaly_day"]
    assert "Dataset" in hp.read_text()


def test_unrecoverable_stays_marked_with_why(seg, tmp_path):
    """The next day the broker no longer serves the trades: every hole stays marked, with the reason."""
    env, syms, _ = seg
    root = copy_tree(env, tmp_path / "t")
    later = ScaledClock(kst_datetime(env.day + timedelta(days=1), "160000"), 1.0)
    from observer.providers.base import get_provider
    from observer.recover.gapfill import GapFiller
    from observer.store.store import Store

    store = Store(root, clock=later, program="observer-gap-filler", provider="kis")
    try:
        rest = get_provider("kis", env.cfg, env.secrets, store, later).rest()
        s = GapFiller(store=store, rest=rest, cfg=env.cfg, clock=later, day=env.day, progress=False).run()
    finally:
        store.close()
    assert s["calls"] == 0 and s["recovered_trades"] == 0 and s["unrecoverable_holes"] == s["holes"] > 0
    q = build_quality(root, env.day, env.cfg, clock=later, ground_truth=env.gt)
    trade_gaps = [g for g in q["gaps"]["list"] if g["channel"] == "trades"]
    assert any(g["status"] == "unrecoverable" and "current day only" in g["why"] for g in trade_gaps)
    assert not q["dataset_complete"] and any("shares missing" in r for r in q["incomplete_reasons"])
    # every trade the market made inside the recorded span that is not in the tree lies inside a marker
    truth = truth_by_symbol(env, syms)
    merged = merged_keys(root, env.day, syms)
    markers = [e for e in events(root, env.day) if e["event"] == "gap_marker" and e["channel"] == "trades"]
    for sym in syms:
        have = {k[0] for k in merged[sym]}
        lo, hi = merged[sym][0][0], merged[sym][-1][0]
        for t in truth[sym]:
            if lo < t["acml_vol"] <= hi and t["acml_vol"] not in have:
                ns = env.t_ns(t["t_ms"] - t["t_ms"] % 1000)
                assert any(m["symbol"] == sym and m["start_ns"] <= ns <= m["end_ns"] for m in markers), \
                    f"{sym} trade at {t['time']} cum {t['acml_vol']} missing and unmarked: " + repr(
                        [(m["start_ns"], m["end_ns"], m["cause"]) for m in markers if m["symbol"] == sym]) + f" ns={ns}"
    assert q["ground_truth"]["audit_equals_truth"]
    assert q["ground_truth"]["merged_pct"] < 100.0


def _run_gap_filler(env, cfg_path: Path, root: Path, *extra) -> subprocess.Popen:
    e = dict(os.environ, OBSERVER_CLOCK=env.clock.spec(), PYTHONPATH=str(REPO / "lib"))
    return subprocess.Popen([sys.executable, str(BIN / "observer-gap-filler"), "--config", str(cfg_path), "--date",
                             env.date, "--progress", "off", *extra], env=e, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def test_kill_mid_run_then_rerun_gives_the_same_result(seg, tmp_path):
    env, syms, _ = seg
    ref = copy_tree(env, tmp_path / "ref")
    gap_fill(env, ref)
    root = copy_tree(env, tmp_path / "k")
    cfg = toml_config(env, root, tmp_path / "k.toml", rate=0.3)  # market calls/s: 9 real calls/s
    p = _run_gap_filler(env, cfg, root, "--no-audit")
    cp = checkpoint_path(root, "kis", env.day)

    def some_done():
        try:
            d = json.loads(cp.read_text())
        except (OSError, ValueError):
            return False
        return sum(1 for h in d["holes"].values() if h.get("status") == "recovered") >= 1

    wait_for(lambda: some_done() or p.poll() is not None, 120, "a hole recovered (or the gap-filler to end)")
    assert p.poll() is None, "the gap-filler finished before it could be killed: " + p.stderr.read().decode()[-500:]
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    d = json.loads(cp.read_text())
    assert 1 <= sum(1 for h in d["holes"].values() if h.get("status") == "recovered") < len(d["holes"]) or \
        d["holes"], d
    r = _run_gap_filler(env, toml_config(env, root, tmp_path / "k2.toml", rate=5), root)
    out, err = r.communicate(timeout=120)
    assert r.returncode == 0, err.decode()[-2000:]
    assert json.loads(out.splitlines()[-1])["summary"]["failed_jobs"] == 0
    assert (root / "reports" / env.date / "quality.html").is_file()
    # same final result: the same recovered trades, each once, and the tree verifies clean (a torn
    # line left by the kill was repaired)
    a = sorted((r["symbol"], r["cum_vol"], r["price"], r["qty"], r["exch_ns"]) for r in recovered_records(ref, env.day))
    b = sorted((r["symbol"], r["cum_vol"], r["price"], r["qty"], r["exch_ns"]) for r in recovered_records(root, env.day))
    assert a == b
    assert verify_tree(root, env.date)["clean"]
    assert_matches_truth(env, root, syms)
    # and once more: nothing to add
    again = _run_gap_filler(env, cfg, root, "--no-audit")
    out, _ = again.communicate(timeout=120)
    s = json.loads(out.splitlines()[-1])["summary"]
    assert s["recovered_trades"] == 0 and s["calls"] == 0


def test_rest_faults_during_backfill_are_retried_without_duplicates(seg, tmp_path):
    env, syms, _ = seg
    root = copy_tree(env, tmp_path / "t")
    env.sim.apply_fault({"kind": "rest_5xx", "duration": 2})
    env.sim.apply_fault({"kind": "rate_limit_storm", "duration": 3})
    s = gap_fill(env, root)
    assert s["failed_jobs"] == 0 and s["unrecoverable_holes"] == 0
    assert_matches_truth(env, root, syms)
    recs = recovered_records(root, env.day)
    assert len({(r["symbol"], r["cum_vol"]) for r in recs}) == len(recs)
    # a 5xx outage longer than the retries: the job fails honestly and the rerun completes it
    root2 = copy_tree(env, tmp_path / "t2")
    env.sim.apply_fault({"kind": "rest_5xx", "duration": 3600})
    try:
        s = gap_fill(env, root2)
    finally:
        env.sim.clear_faults()
    assert s["failed_jobs"] == s["jobs"] > 0 and s["recovered_trades"] == 0
    q = build_quality(root2, env.day, env.cfg, clock=env.clock)
    assert q["gaps"]["by_status"].get("failed", 0) > 0 and not q["dataset_complete"]
    s = gap_fill(env, root2)
    assert s["failed_jobs"] == 0
    assert_matches_truth(env, root2, syms)


@pytest.mark.browser
def test_quality_html_in_headless_chromium(seg, tmp_path):
    """observer-audit's page loads in a real Chromium with networking off and shows the numbers."""
    import shutil
    import tempfile

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip("Debian chromium not installed (install.sh --dev)")
    env, syms, _ = seg
    root = copy_tree(env, tmp_path / "t")
    gap_fill(env, root)
    cfg = toml_config(env, root, tmp_path / "a.toml")
    r = subprocess.run([sys.executable, str(BIN / "observer-audit"), "--config", str(cfg), "--date", env.date,
                        "--ground-truth", str(env.gt), "--json"], capture_output=True,
                       env=dict(os.environ, OBSERVER_CLOCK=env.clock.spec(), PYTHONPATH=str(REPO / "lib")))
    assert r.returncode == 1, r.stderr.decode()[-1000:]  # order-book gaps: not complete
    q = json.loads(r.stdout)
    html = root / "reports" / env.date / "quality.html"
    text = html.read_text()
    assert "http://" not in text and "https://" not in text and "<script" not in text
    art = REPO / "test-artifacts"
    art.mkdir(exist_ok=True)
    shot = art / "quality.png"
    if shot.exists():
        shot.unlink()
    common = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    with tempfile.TemporaryDirectory() as prof1, tempfile.TemporaryDirectory() as prof2:
        dom = subprocess.run(common + [f"--user-data-dir={prof1}", "--dump-dom", html.as_uri()],
                             capture_output=True, timeout=120)
        subprocess.run(common + [f"--user-data-dir={prof2}", f"--screenshot={shot}", "--window-size=1280,2000",
                                 html.as_uri()], capture_output=True, timeout=120)
    page = dom.stdout.decode()
    assert "Dataset NOT complete" in page and "order-book gaps" in page
    from observer.recover.report import _fmt  # truncated, never rounded up (99.9996 is not 100.000)

    assert _fmt(q["completeness_pct"], 3, "%") in page  # the headline number, as rendered
    assert _fmt(q["ground_truth"]["merged_pct"], 3, "%") in page
    for sym in syms:
        assert sym in page
    assert page.count("<rect") > 10  # the timelines and the gap chart rendered
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    import struct

    w, h = struct.unpack(">II", data[16:24])
    assert (w, h) == (1280, 2000)
