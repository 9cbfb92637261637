"""Slot manager: capacity, allocation order, min hold, cooldown, displacement, overflow (unit + property)."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from observer.collect.slots import Plan, SlotManager, capacity_for, slot_capacity
from observer.collect.triggers import TRIGGERS, Candidate
from observer.core.clock import NS
from observer.core.config import validate_config

T0 = 1_773_100_000 * NS


def C(sym, trigger="volume_surge", score=1.0, filler=False):
    return Candidate(sym, trigger, float(score), f"{trigger} {score}", filler)


def step(m: SlotManager, cands, now) -> Plan:
    p = m.plan(cands, now)
    m.apply(p, now)
    return p


# -- capacity ----------------------------------------------------------------------------------------
def test_capacity_for_kis():
    assert capacity_for(41) == 20                      # one key, ticks + book
    assert capacity_for(41, 1) == 41                  # ticks only
    assert capacity_for(41, 2, 2) == 40               # two keys
    assert SlotManager.capacity_for(41, 2, 3) == 60
    with pytest.raises(ValueError):
        capacity_for(41, 0)


def test_slot_capacity_from_config():
    assert slot_capacity(validate_config({})) == 20
    assert slot_capacity(validate_config({"track_b": {"channels": ["trades"]}})) == 41
    assert slot_capacity(validate_config({"track_b": {"connections": 2}})) == 40
    assert slot_capacity(validate_config({"track_b": {"slots": 12}})) == 12
    assert slot_capacity(validate_config({}), total_registrations=82) == 41
    with pytest.raises(ValueError, match="21"):
        slot_capacity(validate_config({"track_b": {"slots": 21}}))


# -- allocation ----------------------------------------------------------------------------------------
def test_fills_lowest_free_slots_best_first_and_overflows_the_rest():
    m = SlotManager(3, min_hold_s=600, cooldown_s=600)
    cands = [C("E", "manual", 5), C("A", "volume_surge", 2), C("B", "volume_surge", 1),
             C("D", "volatility_spike", 9), C("C", "trade_velocity", 1)]
    p = step(m, cands, T0)
    assert [(s, c.symbol) for s, c in p.allocate] == [(0, "A"), (1, "B"), (2, "C")]
    assert [c.symbol for c in p.overflow] == ["D", "E"]
    assert "3 slots" in p.overflow_reason["D"]
    assert m.held() == {0: "A", 1: "B", 2: "C"}
    assert p.release == []


def test_min_hold_blocks_displacement_until_it_passes():
    m = SlotManager(2, min_hold_s=600, cooldown_s=900)
    step(m, [C("A", "manual"), C("B", "manual")], T0)
    strong = [C("X", "volume_surge", 5), C("A", "manual"), C("B", "manual")]
    p = step(m, strong, T0 + 599 * NS)
    assert p.allocate == [] and [c.symbol for c in p.overflow] == ["X"]
    p = step(m, strong, T0 + 600 * NS)
    # weakest held: A and B tie as manual; A scores 1 = B; ties -> held longest (same) -> higher slot number
    assert len(p.release) == 1 and p.release[0][1] == "B" and "displaced by X" in p.release[0][2]
    assert p.allocate[0][0] == p.release[0][0] and p.allocate[0][1].symbol == "X"
    assert m.held() == {0: "A", 1: "X"}
    assert [c.symbol for c in p.overflow] == ["B"] and "displaced" in p.overflow_reason["B"]


def test_untriggered_held_symbol_goes_first_and_equal_rank_never_displaces():
    m = SlotManager(2, min_hold_s=0, cooldown_s=0)
    step(m, [C("A", "volatility_spike", 3), C("B", "volatility_spike", 2)], T0)
    # B no longer triggered: the weakest; a manual candidate (lowest priority) still beats "nothing"
    p = step(m, [C("A", "volatility_spike", 3), C("M", "manual", 1)], T0 + NS)
    assert [r[1] for r in p.release] == ["B"] and m.held() == {0: "A", 1: "M"}
    # same trigger, same score: no churn
    p = step(m, [C("A", "volatility_spike", 3), C("M", "manual", 1), C("N", "manual", 1)], T0 + 2 * NS)
    assert p.release == [] and [c.symbol for c in p.overflow] == ["N"]


def test_displaces_the_weakest_past_min_hold_not_a_younger_weaker_one():
    m = SlotManager(3, min_hold_s=600, cooldown_s=600)
    step(m, [C("A", "volume_surge", 9), C("B", "volatility_spike", 1)], T0)
    step(m, [C("A", "volume_surge", 9), C("B", "volatility_spike", 1), C("M", "manual", 1)], T0 + 300 * NS)
    # at +700 s: M is weakest but only 400 s held; B is past its hold -> B goes
    p = step(m, [C("X", "trade_velocity", 1), C("A", "volume_surge", 9), C("B", "volatility_spike", 1),
                 C("M", "manual", 1)], T0 + 700 * NS)
    assert [r[1] for r in p.release] == ["B"] and m.slot_of("X") == 1


def test_cooldown_keeps_a_released_symbol_out():
    m = SlotManager(1, min_hold_s=0, cooldown_s=600)
    step(m, [C("A", "manual")], T0)
    step(m, [C("B", "volume_surge")], T0 + NS)                      # A displaced at T0+1s
    assert m.in_cooldown("A", T0 + 2 * NS) and m.cooldown_until("A") == T0 + 601 * NS
    m.release("B", T0 + 2 * NS, "halted")                            # slot free, but A cools down
    p = step(m, [C("A", "volume_surge", 99)], T0 + 600 * NS)
    assert p.allocate == [] and [c.symbol for c in p.overflow] == ["A"]
    assert "cooldown" in p.overflow_reason["A"]
    p = step(m, [C("A", "volume_surge", 99)], T0 + 601 * NS)
    assert m.held() == {0: "A"}


def test_fillers_take_only_idle_slots_and_never_overflow():
    m = SlotManager(2, min_hold_s=0, cooldown_s=0)
    p = step(m, [C("F1", filler=True, score=0.5), C("F2", filler=True, score=0.4),
                 C("F3", filler=True, score=0.3)], T0)
    assert m.held() == {0: "F1", 1: "F2"} and p.overflow == []
    p = step(m, [C("F9", filler=True, score=0.9)], T0 + NS)           # a filler never displaces
    assert p.release == [] and p.overflow == []
    p = step(m, [C("X", "manual")], T0 + 2 * NS)                       # any real trigger does
    assert [r[1] for r in p.release] == ["F2"]          # both untriggered, same age: higher slot


def test_apply_refuses_a_stale_plan_and_changes_nothing():
    m = SlotManager(1, min_hold_s=0, cooldown_s=0)
    p1 = m.plan([C("A")], T0)
    p2 = m.plan([C("B")], T0)
    m.apply(p1, T0)
    with pytest.raises(ValueError, match="already holds"):
        m.apply(p2, T0)
    assert m.held() == {0: "A"}
    with pytest.raises(ValueError):
        m.apply(Plan(release=[(0, "Z", "x")]), T0)
    assert m.held() == {0: "A"}


def test_overflow_new_only_reports_changes():
    m = SlotManager(1, min_hold_s=600, cooldown_s=0)
    p = step(m, [C("A"), C("B", score=0.5)], T0)
    assert [c.symbol for c in p.overflow_new] == ["B"]
    p = step(m, [C("A"), C("B", score=0.5)], T0 + 60 * NS)
    assert [c.symbol for c in p.overflow] == ["B"] and p.overflow_new == []
    p = step(m, [C("A"), C("B", "manual")], T0 + 120 * NS)
    assert [c.trigger for c in p.overflow_new] == ["manual"]


def test_release_all_and_refresh():
    m = SlotManager(3, min_hold_s=600, cooldown_s=600)
    step(m, [C("A"), C("B")], T0)
    m.refresh([C("A", "trade_velocity", 7)])
    assert m.holdings()[0].trigger == "trade_velocity" and m.holdings()[0].score == 7
    assert m.utilization() == pytest.approx(2 / 3)
    assert sorted(r[1] for r in m.release_all(T0 + NS)) == ["A", "B"]
    assert m.held() == {} and m.release("A", T0) is None
    assert SlotManager(0, 1, 1).plan([C("A")], T0).overflow_reason["A"] == "no slots configured"


# -- properties --------------------------------------------------------------------------------------
SYMS = [f"S{i:02d}" for i in range(14)]
cand_st = st.builds(C, st.sampled_from(SYMS), st.sampled_from(TRIGGERS),
                    st.floats(0.0, 10.0, allow_nan=False), st.booleans())
rounds_st = st.lists(st.tuples(st.lists(cand_st, max_size=20), st.integers(0, 400)), min_size=1, max_size=25)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cap=st.integers(0, 6), hold=st.sampled_from([0, 60, 300]), cool=st.sampled_from([0, 120, 600]),
       rounds=rounds_st)
def test_invariants(cap, hold, cool, rounds):
    m = SlotManager(cap, min_hold_s=hold, cooldown_s=cool)
    now = T0
    since: dict[str, int] = {}
    released_at: dict[str, int] = {}
    for cands, dt in rounds:
        now += dt * NS
        before = m.held()
        p = m.plan(cands, now)
        m.apply(p, now)
        held = m.held()
        # best version of each symbol
        best = {}
        for c in sorted(cands, key=lambda c: c.rank_key):
            best.setdefault(c.symbol, c)
        # capacity and uniqueness
        assert len(held) <= cap and all(0 <= s < cap for s in held)
        assert len(set(held.values())) == len(held)
        # releases only after min hold; allocations only after cooldown
        for slot, sym, _ in p.release:
            assert before[slot] == sym
            assert now - since[sym] >= hold * NS
            released_at[sym] = now
        for _slot, c in p.allocate:
            if c.symbol in released_at and released_at[c.symbol] != now:
                assert now - released_at[c.symbol] >= cool * NS
            assert c.symbol not in before.values()
            since[c.symbol] = now
        on = set(held.values())
        over = {c.symbol for c in p.overflow}
        # a release is a displacement by a strictly better, non-filler candidate into the same slot
        into = dict(p.allocate)
        for slot, sym, _ in p.release:
            c = into[slot]
            hc = best.get(sym)
            assert not c.filler and c.rank_key[:3] < (hc.rank_key[:3] if hc else (2, 0, 0.0))
        # every non-filler candidate holds a slot or is in overflow; fillers never in overflow
        for sym, c in best.items():
            if not c.filler:
                assert (sym in on) != (sym in over), sym
            else:
                assert sym not in over
        # no idle slot while an eligible candidate overflows
        if len(held) < cap:
            for c in p.overflow:
                assert "cooldown" in p.overflow_reason[c.symbol] or "displaced" in p.overflow_reason[c.symbol]
        # priority: an overflowed candidate (not cooling down) never ranks above a held symbol that was
        # displaceable (past its min hold) and strictly weaker
        for c in p.overflow:
            if "cooldown" in p.overflow_reason[c.symbol] or "displaced" in p.overflow_reason[c.symbol]:
                continue
            for sym in held.values():
                if now - since[sym] < hold * NS or sym not in before.values():
                    continue
                hc = best.get(sym)
                hk = hc.rank_key[:3] if hc else (2, 0, 0.0)
                assert not (c.rank_key[:3] < hk), (c, sym)
