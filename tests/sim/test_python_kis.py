"""observer-sim against a KIS client nobody here wrote: python-kis, installed from PyPI into a throwaway venv
of its own (cached per version; never a project dependency), checked against the simulator's ground truth."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from observer.core.clock import KST
from observer.sim import SimProcess
from observer.sim.market import Universe
from observer.sim.master import standard_code
from observer.sim.quotes import DailyHistory

from .kis import read_jsonl

pytestmark = pytest.mark.slow

PYKIS_VERSION = "2.1.6"
CLIENT = Path(__file__).with_name("pykis_client.py")
SEED, SYMBOLS, ACTIVE = 7, 20, 4
SYMBOL = "005930"
MIN_TRADES = 40
# pip's words when it cannot reach the index; any other failure to install is a failure, not a skip
_UNREACHABLE = ("No matching distribution found for python-kis", "Could not find a version that satisfies",
                "NewConnectionError", "Max retries exceeded", "Temporary failure in name resolution",
                "Network is unreachable", "ConnectTimeoutError", "ProxyError")


def _cache_root() -> Path:
    base = os.environ.get("OBSERVER_TEST_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "observer-tests")
    return Path(base)


def _usable(venv: Path) -> bool:
    py = venv / "bin" / "python"
    if not (venv / "ready").is_file() or not py.exists():
        return False
    check = f"import pykis, typing_extensions; assert pykis.__version__ == {PYKIS_VERSION!r}"
    return subprocess.run([str(py), "-c", check], capture_output=True, timeout=60).returncode == 0


@pytest.fixture(scope="session")
def pykis_python() -> str:
    """The python of a venv holding python-kis (and typing_extensions, which it uses without declaring it),
    built once per version and Python and reused by later runs."""
    root = _cache_root()
    venv = root / f"python-kis-{PYKIS_VERSION}-py{sys.version_info[0]}{sys.version_info[1]}"
    if _usable(venv):
        return str(venv / "bin" / "python")
    root.mkdir(parents=True, exist_ok=True)
    build = root / f".build-{os.getpid()}"
    shutil.rmtree(build, ignore_errors=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(build)], check=True, capture_output=True, timeout=120)
        r = subprocess.run([str(build / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
                            "--timeout", "20", "--retries", "1", f"python-kis=={PYKIS_VERSION}", "typing_extensions"],
                           capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            out = r.stdout + r.stderr
            tail = out.strip().splitlines()[-1] if out.strip() else f"rc={r.returncode}"
            if any(s in out for s in _UNREACHABLE):
                pytest.skip(f"PyPI unreachable, python-kis {PYKIS_VERSION} not installed: {tail}")
            pytest.fail(f"pip install python-kis=={PYKIS_VERSION} failed: {out[-3000:]}")
        (build / "ready").write_text(PYKIS_VERSION + "\n")
        if venv.exists() and not _usable(venv):  # a broken earlier copy (not one another run just finished)
            shutil.rmtree(venv, ignore_errors=True)
        try:
            build.rename(venv)
        except OSError:  # another run finished first: use its copy
            pass
    finally:
        shutil.rmtree(build, ignore_errors=True)
    assert _usable(venv), f"{venv} was built but python-kis {PYKIS_VERSION} does not import from it"
    return str(venv / "bin" / "python")


def test_python_kis_gets_token_quote_book_chart_info_and_trades(pykis_python, tmp_path):
    # python-kis checks token expiry against the real clock: the simulated day must be today (KST), so the
    # token (market time + its lifetime) ends after now whatever the hour; the session time is our choice
    today = datetime.now(KST).date()
    gt = tmp_path / "gt"
    result = tmp_path / "pykis.json"
    chart_from = f"{today - timedelta(days=60):%Y%m%d}"
    with SimProcess(["--seed", str(SEED), "--symbols", str(SYMBOLS), "--active", str(ACTIVE),
                     "--date", f"{today:%Y%m%d}", "--start", "09:05", "--speed", "5", "--ground-truth", str(gt)],
                    stderr_path=str(tmp_path / "sim.err")) as sim:
        r = subprocess.run([pykis_python, str(CLIENT), sim.rest, sim.ws, SYMBOL, chart_from, str(MIN_TRADES), "30",
                            str(result)], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                           env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)})
    assert r.returncode == 0 and result.is_file(), f"python-kis client failed: {(r.stdout + r.stderr)[-4000:]}"
    got = json.loads(result.read_text())
    universe = {u["symbol"]: u for u in json.loads((gt / "universe.json").read_text())}
    u = universe[SYMBOL]
    truth = [t for t in read_jsonl(gt / "trades.jsonl") if t["symbol"] == SYMBOL]

    # OAuth: a token, then EGW00133 on a second issuance within the minute
    assert got["token"] == {"type": "Bearer", "expired": False}
    assert got["second_issue"]["status"] == 403
    assert got["second_issue"]["body"]["error_code"] == "EGW00133"

    # search-info (CTPF1604R)
    assert got["info"] == {"symbol": SYMBOL, "std_code": standard_code(SYMBOL), "name": u["name"], "market": "KRX",
                           "domestic": True, "name_eng": f"SIM STOCK {SYMBOL}"}

    # current price: the last trade at the volume it reports
    q = got["quote"]
    at_vol = [t for t in truth if t["acml_vol"] == q["volume"]]
    assert at_vol and at_vol[0]["price"] == q["price"], q
    assert (q["name"], q["market"], q["prev_price"], q["high_limit"], q["low_limit"]) == \
        (u["name"], "KRX", u["prev_close"], u["upper"], u["lower"])

    # order book (FHKST01010200): one of the book states the market published
    ob = got["orderbook"]
    want = ([p for p, _ in ob["asks"]], [v for _, v in ob["asks"]], [p for p, _ in ob["bids"]], [v for _, v in ob["bids"]])
    assert len(ob["asks"]) == len(ob["bids"]) == 10
    assert any((b["askp"], b["askq"], b["bidp"], b["bidq"]) == want
               for b in read_jsonl(gt / "books.jsonl") if b["symbol"] == SYMBOL), ob

    # daily chart (FHKST03010100, paged by python-kis): the simulator's history, then today's bar so far
    info = Universe(SEED, SYMBOLS, ACTIVE).by_code[SYMBOL]
    past = [r for r in DailyHistory(SEED, today, info).rows if r[0] >= chart_from]
    assert got["daily"][:-1] == past
    d, o, h, lo, c, v = got["daily"][-1]
    assert d == f"{today:%Y%m%d}" and o == truth[0]["price"] and lo <= c <= h and 0 < v <= truth[-1]["acml_vol"]

    # real-time trades (H0STCNT0): exactly the trades after the subscription, in order, none lost
    sub = next(s for s in read_jsonl(gt / "subscriptions.jsonl")
               if s["event"] == "subscribe" and s["tr_id"] == "H0STCNT0" and s["symbol"] == SYMBOL)
    expected = [[t["time"], t["price"], t["acml_vol"]] for t in truth if t["t_ms"] > sub["from_t_ms"]]
    assert len(got["trades"]) >= MIN_TRADES
    assert got["trades"] == expected[:len(got["trades"])]
