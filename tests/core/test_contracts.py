import pytest

from observer.core.contracts import ContractError, check, explain, record_schemas

BASE = {"v": 1, "provider": "kis", "market": "krx", "symbol": "005930", "exch_ns": 1, "recv_ns": 2, "quality": "normal"}
GOOD = {
    "trade": dict(BASE, kind="trade", price=71900, qty=5, cum_vol=100, side="buy"),
    "book": dict(BASE, kind="book", asks=[[72000, 10]], bids=[[71900, 3]], total_ask=10, total_bid=3),
    "snapshot": dict(BASE, kind="snapshot", price=71900, sweep_ns=5, cum_vol=10),
    "bar": dict(BASE, kind="bar", open=1, high=2, low=1, close=2, volume=10),
    "raw": {"v": 1, "kind": "raw", "provider": "kis", "recv_ns": 5, "frame": "0|H0STCNT0|001|..."},
    "event": {"v": 1, "kind": "event", "ts_ns": 1, "event": "restart", "severity": "WARNING", "provider": "system",
              "program": "observer-watchdog", "unit": "observer-track-a.service", "reason": "stale heartbeat"},
    "overflow": {"v": 1, "kind": "overflow", "ts_ns": 1, "provider": "kis", "market": "krx", "symbol": "000660",
                 "trigger": "volume_surge", "score": 3.2},
    "alert": {"v": 1, "kind": "alert", "ts_ns": 1, "id": "a1", "key": "disk", "severity": "CRITICAL",
              "text": "disk 91%", "state": "pending", "attempts": 0},
    "metric": {"v": 1, "kind": "metric", "ts_ns": 1, "program": "track-b", "values": {"msgs_per_s": 120.5}},
}
BAD = {
    "trade": [("price", 0), ("qty", "5"), ("side", "long"), ("quality", "great"), ("recv_ns", None)],
    "book": [("asks", [[1]]), ("bids", "x")],
    "snapshot": [("price", -1), ("sweep_ns", "now")],
    "bar": [("volume", -1)],
    "raw": [("frame", 5)],
    "event": [("severity", "LOUD"), ("event", "Bad-Name")],
    "overflow": [("trigger", "whim")],
    "alert": [("state", "lost")],
    "metric": [("values", {"x": "high"})],
}


def test_every_kind_has_a_schema():
    assert set(GOOD) | {"recovered"} == set(record_schemas())


@pytest.mark.parametrize("kind", sorted(GOOD))
def test_good_records_pass(kind):
    check(GOOD[kind])
    assert explain(GOOD[kind]) == []


@pytest.mark.parametrize("kind,field,value", [(k, f, v) for k, lst in BAD.items() for f, v in lst])
def test_bad_records_fail_naming_the_field(kind, field, value):
    rec = dict(GOOD[kind], **{field: value})
    with pytest.raises(ContractError):
        check(rec)
    assert any(field in p for p in explain(rec)), explain(rec)


def test_unknown_fields_and_kinds_rejected():
    with pytest.raises(ContractError):
        check(dict(GOOD["trade"], surprise=1))
    with pytest.raises(ContractError, match="unknown record kind"):
        check({"kind": "tweet"})


def test_event_kind_schema_applies():
    ev = dict(GOOD["event"])
    del ev["unit"]
    with pytest.raises(ContractError):
        check(ev)
    assert any("unit" in p for p in explain(ev))


def test_recovered_partition_needs_provenance():
    rec = dict(GOOD["trade"], quality="recovered")
    with pytest.raises(ContractError):
        check(rec, "recovered")
    rec["provenance"] = {"source_call": "FHPST01060000", "fetched_at_ns": 9, "gap_id": "g1"}
    check(rec, "recovered")
    with pytest.raises(ContractError):
        check(dict(rec, quality="normal"), "recovered")
