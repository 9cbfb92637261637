"""Track A against the simulator: universe, aligned sweeps, snapshots consistent with ground truth."""

from collections import defaultdict

import pytest

from observer.collect.track_a import TrackA
from observer.collect.universe import ensure_universe
from observer.core.clock import NS
from observer.markets import calendar_from_config
from observer.programs.verify import verify_tree
from observer.providers.base import get_provider
from observer.store import paths
from observer.store.reader import iter_day
from observer.store.state import read_json
from tests.support.simenv import SimEnv

pytestmark = pytest.mark.e2e


@pytest.fixture
def env(tmp_path):
    e = SimEnv(tmp_path, start="08:58:00", speed=30, symbols=60, active=12,
               cfg_overrides={"windows": {"track_a": {"start": "09:00", "end": "09:20"}}})
    yield e
    e.close()


def test_universe_is_filtered_frozen_and_reused(env):
    store = env.store("t")
    prov = get_provider("kis", env.cfg, env.secrets, store, env.clock)
    cal = calendar_from_config(env.cfg)
    uni = ensure_universe(env.root, env.day, prov.rest(), env.cfg, cal, store.events("kis"), env.clock)
    want = sorted(s for s, u in env.universe_truth.items() if u["prev_close"] >= 4000)
    assert sorted(s["symbol"] for s in uni["symbols"]) == want
    assert 0 < len(want) < len(env.universe_truth), "the sim should have symbols on both sides of 4,000"
    path = paths.universe_file(env.root, env.day, "kr_stocks")
    before = path.read_bytes()
    again = ensure_universe(env.root, env.day, prov.rest(), env.cfg, cal, store.events("kis"), env.clock)
    assert again == uni and path.read_bytes() == before
    store.close()


def test_sweeps_are_aligned_complete_and_match_ground_truth(env):
    store = env.store("observer-track-a")
    prov = get_provider("kis", env.cfg, env.secrets, store, env.clock)
    cal = calendar_from_config(env.cfg)
    rest = prov.rest()
    uni = ensure_universe(env.root, env.day, rest, env.cfg, cal, store.events("kis"), env.clock)
    symbols = [s["symbol"] for s in uni["symbols"]]
    ta = TrackA(store=store, rest=rest, clock=env.clock, calendar=cal, cfg=env.cfg, provider="kis", symbols=symbols)
    assert ta.run_day(env.day) == 3
    store.close()

    recs = list(iter_day(env.root, env.day, kinds=("swing", "events")))
    snaps = [r for r in recs if r["kind"] == "snapshot"]
    sweeps = [r for r in recs if r.get("event") == "sweep"]
    assert [s["slot"] for s in sweeps] == ["09:00", "09:10", "09:20"]
    assert all(s["coverage_pct"] == 100.0 and not s["degraded"] for s in sweeps), [(s["ok"], s["errors"], s["duration_s"], s["degraded"]) for s in sweeps]
    by_slot = defaultdict(list)
    for s in snaps:
        by_slot[s["sweep_ns"]].append(s)
    assert sorted(by_slot) == [s["sweep_ns"] for s in sweeps]
    for slot_ns, group in by_slot.items():
        assert sorted(x["symbol"] for x in group) == sorted(symbols)
        assert all(x["recv_ns"] >= slot_ns for x in group), "a sweep started before its slot"
    # every snapshot shows the state after a real trade: the ground-truth trade with the same
    # cumulative volume has the same price and happened before we received the snapshot
    truth = defaultdict(dict)
    for t in env.truth("trades"):
        truth[t["symbol"]][t["acml_vol"]] = t
    checked = set()
    for s in snaps:
        if not s.get("cum_vol"):
            continue
        t = truth[s["symbol"]].get(s["cum_vol"])
        assert t is not None, f"{s['symbol']}: cum_vol {s['cum_vol']} is no trade's acml_vol"
        assert t["price"] == s["price"]
        assert env.t_ns(t["t_ms"]) <= s["recv_ns"] + NS
        checked.add(s["symbol"])
    traded = {sym for sym in symbols if truth[sym]}
    assert traded and checked == traded, "every symbol that traded was compared with ground truth"
    # bid/ask from the asking-price call: the best levels the market really had for that symbol at or
    # before we received the snapshot (trades and book events of the ground truth carry them)
    assert all(s["book"] == {"filled": True, "failed": 0} for s in sweeps)
    quotes = defaultdict(list)
    for t in env.truth("trades"):
        quotes[t["symbol"]].append((t["t_ms"], t["bidp1"], t["askp1"]))
    for b in env.truth("books"):
        quotes[b["symbol"]].append((b["t_ms"], b["bidp"][0], b["askp"][0]))
    with_book = [s for s in snaps if s.get("bid") is not None]
    opened = [s for s in snaps if any(env.t_ns(q[0]) < s["recv_ns"] - NS for q in quotes[s["symbol"]])]
    assert opened and {id(s) for s in opened} <= {id(s) for s in with_book}, \
        "a symbol the market had a book for got a snapshot without bid/ask"
    for s in with_book:
        assert 0 < s["bid"] <= s["ask"] and s["bid_size"] > 0 and s["ask_size"] > 0, s  # auction books may lock
        seen = {(b, a) for t_ms, b, a in quotes[s["symbol"]] if env.t_ns(t_ms) <= s["recv_ns"] + NS}
        assert (s["bid"], s["ask"]) in seen, f"{s['symbol']}: bid/ask {s['bid']}/{s['ask']} never in the market"
    # the hour file of the slot, and a clean tree
    assert paths.swing_file(env.root, "kis", "krx", sweeps[0]["sweep_ns"]).exists()
    assert verify_tree(env.root)["clean"]
    hb = read_json(paths.heartbeat_file(env.root, "track-a"))
    assert hb["sweeps"] >= 2


def test_bid_ask_only_when_the_budget_allows():
    """2 calls per symbol must fit in 80 % of a slot's requests at the client's rate."""
    from observer.collect.track_a import book_fits

    assert book_fits(2_600, 19.0, 10)          # every KRX common stock on a real account: 5,200 ≤ 9,120
    assert book_fits(4_560, 19.0, 10) and not book_fits(4_561, 19.0, 10)
    assert not book_fits(600, 2.0, 10)          # paper account: 1,200 > 960
    assert book_fits(480, 2.0, 10)
    assert not book_fits(10, None, 10)
