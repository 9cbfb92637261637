"""observer-decode prints only records that satisfy their contract, and the KIS guard rejects the values
that break one (symbol outside 1-40 characters, exchange time before 1970 or beyond 64 bits, numbers
beyond 64 bits) wherever the decoder runs: observer-decode, and the streamer (which still keeps the
raw frame)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import orjson
import pytest

from observer.core.contracts import check, explain
from observer.providers.base import BOOK, TRADES
from observer.providers.kis.parse import KisFrameDecoder

pytestmark = pytest.mark.hostile

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "tests" / "fixtures" / "samples"
RECV_NS = 1_773_624_000_000_000_000  # 2026-03-16 10:20 KST


def _sample(name: str, fields: int) -> str:
    return next(ln for ln in (SAMPLES / name).read_text(encoding="utf-8").splitlines()
                if ln.startswith("0|") and "|001|" in ln and len(ln.split("^")) == fields)


CNT = _sample("kis_h0stcnt0_frames.txt", 46)
ASP = _sample("kis_h0stasp0_frames.txt", 59)


def with_fields(frame: str, **by_index) -> str:
    head, payload = frame.rsplit("|", 1)
    f = payload.split("^")
    for k, v in by_index.items():
        f[int(k[1:])] = v
    return head + "|" + "^".join(f)


# (frame, what stderr must say about it); field indices per docs/providers (f0 symbol, f33 BSOP_DATE,
# f13 ACML_VOL, f14 ACML_TR_PBMN, f1 the HHMMSS time)
BAD_TRADES = [
    (with_fields(CNT, f0="A" * 41), "rejected: symbol of 41 characters (1-40)"),
    (with_fields(CNT, f0=""), "rejected: symbol of 0 characters (1-40)"),
    (with_fields(CNT, f33="19000101"), "BSOP_DATE '19000101' is not a YYYYMMDD trading date"),
    (with_fields(CNT, f33="99991231"), "BSOP_DATE '99991231' is not a YYYYMMDD trading date"),
    (with_fields(CNT, f14="9" * 25), "rejected: a number beyond the 64-bit range"),
    (with_fields(CNT, f13="-" + "9" * 20), "rejected: a number beyond the 64-bit range"),
]


def _decode(lines: list[str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "bin" / "observer-decode"), "--provider", "kis", *args],
                          input="\n".join(lines).encode() + b"\n", capture_output=True, timeout=60)


def _printed(r: subprocess.CompletedProcess) -> list[dict]:
    recs = [orjson.loads(x) for x in r.stdout.splitlines()]
    for rec in recs:
        assert explain(rec) == [], (rec, explain(rec))
    return recs


def test_decode_prints_only_records_that_satisfy_their_contract():
    lines = [CNT] + [f for f, _ in BAD_TRADES] + [CNT]
    r = _decode(lines)
    err = r.stderr.decode()
    assert "Traceback" not in err, err
    assert r.returncode == 1, err
    recs = _printed(r)
    assert len(recs) == 2 and all(x["symbol"] == recs[0]["symbol"] for x in recs)  # the good frames
    for n, (_, why) in enumerate(BAD_TRADES, 2):
        assert any(ln.startswith(f"line {n}: ") and why in ln for ln in err.splitlines()), (n, why, err)


def test_decode_books_with_a_trading_date_before_1970_are_invalid_not_printed():
    r = _decode([ASP], "--date", "19500101")
    err = r.stderr.decode()
    assert "Traceback" not in err and r.returncode == 1, err
    assert _printed(r) == []
    assert "line 1: invalid: H0STASP0 record 1/1: trading date outside 1970-2262" in err, err


def test_include_rejected_shows_them_on_stderr_never_on_stdout():
    r = _decode([with_fields(CNT, f0="B" * 41), with_fields(CNT, f2="0")], "--include-rejected")
    err = r.stderr.decode()
    assert r.returncode == 1 and _printed(r) == [], err
    assert "line 1: rejected: symbol of 41 characters (1-40): {" in err and "B" * 41 in err
    assert "line 2: rejected: price <= 0: {" in err


@pytest.mark.parametrize("frame", [
    "0|H0STCNT0|00²|" + CNT.split("|", 3)[3],   # str.isdigit() accepts superscripts, int() does not
    with_fields(CNT, f1="0²3354"),
    "0|H0STASP0|٠٠١|" + ASP.split("|", 3)[3],  # Arabic-Indic digits: int() takes them; not a KIS count
])
def test_non_ascii_digits_are_named_not_caught_by_the_safety_net(frame):
    """The decoder's catch-all is a safety net, not the parser: a count or time in non-ASCII digits
    gets its own error (found by bench_decode_fuzz)."""
    d = KisFrameDecoder().decode(frame, RECV_NS)
    assert d.records == [] and d.errors, d
    assert not any(e.startswith("decoder error") for e in d.errors), d.errors


def test_the_streamer_keeps_the_raw_frame_and_writes_no_record_that_breaks_its_contract(tmp_path):
    """The streamer's own path: the connection's decoder (subscribed symbols) feeds TrackB.sink, whose
    writer batch puts every frame into raw/ and the trades into scalp/. A 25-digit cumulative value
    used to pass the contract check (a JSON number) and then break the writer's serialiser."""
    from observer.collect.track_b import TrackB
    from observer.core.clock import ManualClock
    from observer.core.secrets import Secrets
    from observer.markets import calendar_from_config
    from observer.programs.verify import verify_tree
    from observer.providers.base import get_provider
    from observer.store.reader import iter_day
    from observer.store.store import Store

    clock = ManualClock(RECV_NS)
    cfg = {"data_dir": str(tmp_path)}
    store = Store(tmp_path, program="observer-track-b@kis", provider="kis", clock=clock)
    prov = get_provider("kis", cfg, Secrets({}, "none"), store, clock)
    tb = TrackB(store=store, provider=prov, clock=clock, calendar=calendar_from_config(cfg), cfg=cfg,
                stop=threading.Event(), fixed_symbols=["005930"])
    sym = CNT.split("|")[3].split("^")[0]
    dec = KisFrameDecoder(subscribed={TRADES: {sym, "A" * 41}, BOOK: {sym}})
    frames = [CNT, with_fields(CNT, f14="9" * 25), with_fields(CNT, f0="A" * 41), with_fields(CNT, f33="19000101")]
    for i, fr in enumerate(frames):
        recv = RECV_NS + i
        tb.sink(fr, recv, dec.decode(fr, recv).records)
    tb._write_batch(list(tb.q))
    tb.scalp.close()
    tb.raw.close()
    store.close()
    day = clock.today_kst()
    raw = [r["frame"] for r in iter_day(tmp_path, day, ("raw",))]
    assert raw == frames  # every frame as received
    trades = list(iter_day(tmp_path, day, ("scalp",)))
    assert len(trades) == 1 and trades[0]["symbol"] == sym
    for rec in trades:
        check(rec)
    assert verify_tree(tmp_path)["clean"]
