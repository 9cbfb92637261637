"""KIS credential paths against the simulator (real HTTP + WebSocket, real files, real processes).

1. OPSP0011 on the WebSocket: a NEW approval key is fetched (never the refused one again), the
   connection is re-made, every registration re-sent, and data flows again.
2. The access token: replaced ahead of expiry (inside token.refresh_ahead_s), a failed refresh keeps
   the valid token and is not retried for 10 min, and a token the broker refuses (EGW00121) is
   replaced once and the call retried. Time is a ManualClock shared by the simulator and the client,
   so a day of token lifetime passes in no time.
3. Two OS processes starting together on an empty cache share one token and one approval key: one
   issuance of each reaches the simulator.

Secrets (app key/secret, token, approval key) must never appear in logs, events or the ground truth.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import subprocess
import sys
from datetime import date
from pathlib import Path

import orjson
import pytest

from observer.core.clock import NS, ManualClock, kst_datetime
from observer.core.contracts import check
from observer.providers.base import BOOK, TRADES, AuthError, ProviderError, get_provider
from observer.providers.kis.auth import KisAuth
from observer.store.paths import state_dir
from tests.support import wait_for

from .conftest import APP_KEY, APP_SECRET, events, kis_config, secrets
from .test_kis_ws_sim import Sink, expected_subs, server_subs

DATE = "20260316"  # a Monday


def sha(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


def key_stats(sim) -> dict:
    return sim.stats()["per_app_key"].get(sim.auth.key_id(APP_KEY), {})


def cache_value(tree: Path, what: str) -> dict:
    files = list(state_dir(tree).glob(f"kis_{what}_*.json"))
    assert len(files) == 1, files
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert APP_KEY not in files[0].name
    return orjson.loads(files[0].read_bytes())


def assert_nowhere(secret_values: list[str], *roots: Path) -> None:
    """No secret in any file under these directories other than the credential caches themselves."""
    for root in roots:
        for f in root.rglob("*"):
            if not f.is_file() or f.name.startswith(("kis_token_", "kis_approval_")):
                continue
            data = f.read_bytes()
            for s in secret_values:
                assert s.encode() not in data, f"a secret leaked into {f}"


# -- 1. OPSP0011 ------------------------------------------------------------------------------------
def two_symbol_stream(sim, tree, store, streams):
    """A started KIS stream holding trades and book of the first two of three active symbols."""
    sink = Sink()
    stream = get_provider("kis", kis_config(sim, tree), secrets(), store, sim.clock).stream(sink)
    streams.append(stream)
    syms = [s.info.code for s in sim.active_syms[:3]]
    for s in syms[:2]:
        stream.subscribe(s, TRADES)
        stream.subscribe(s, BOOK)
    stream.start()
    return sink, stream, syms


@pytest.mark.parametrize("trigger", ["subscribe", "reconnect"])
def test_opsp0011_fetches_a_new_approval_key_and_resubscribes(sim_factory, tree, store, streams, caplog, trigger):
    caplog.set_level(logging.DEBUG)
    # speed 10: the 5-s spacing between two approval requests is 0.5 s of real time
    sim = sim_factory(speed=10)
    sink, stream, syms = two_symbol_stream(sim, tree, store, streams)
    wait_for(lambda: server_subs(sim) == [expected_subs(syms[:2])], 10, what="first registrations")
    wait_for(lambda: sink.count() > 0, 10, what="first records")
    old_key = cache_value(tree, "approval")["value"]
    assert sim.stats()["auth"]["approvals"] == 1
    old_session = stream.stats()["connections"]["main"]["session_id"]

    assert sim.apply_fault({"kind": "approval_invalidate"})["affected"] == 1
    if trigger == "subscribe":  # the live connection offers the dead key with its next request
        stream.subscribe(syms[2], TRADES)
        stream.subscribe(syms[2], BOOK)
        want = expected_subs(syms)
    else:  # the connection drops; the re-subscription offers the cached (dead) key
        sim.apply_fault({"kind": "ws_close_abrupt"})
        want = expected_subs(syms[:2])

    wait_for(lambda: any(e["cause"] == "approval_invalid" for e in events(store, "reconnect")), 15,
             what="a reconnect caused by OPSP0011")
    wait_for(lambda: server_subs(sim) == [want], 10, what="every registration on the new connection")
    new_session = stream.stats()["connections"]["main"]["session_id"]
    assert new_session != old_session
    wait_for(lambda: {r["symbol"] for r in sink.records() if r["session_id"] == new_session} == set(
        syms if trigger == "subscribe" else syms[:2]), 15, what="data from every symbol on the new connection")

    # exactly one new key, not one per OPSP0011 reply, and never the refused one again
    st = sim.stats()
    assert st["auth"]["approvals"] == 2, st["auth"]
    assert st["ws"]["invalid_approval"] >= 1
    new_key = cache_value(tree, "approval")["value"]
    assert new_key != old_key and list(sim.auth.approvals) == [new_key]
    errs = [e for e in events(store, "subscription_error") if e.get("code") == "OPSP0011"]
    assert len(errs) == 1, errs
    # the client did not keep reconnecting with the dead key: one approval_invalid episode
    assert [e["cause"] for e in events(store, "reconnect")].count("approval_invalid") == 1
    # every issuance is an event, the stream's approval keys included (the value itself never is)
    issued = [e for e in events(store, "credential_issued") if e["what"] == "approval key"]
    assert len(issued) >= 2 and issued[-1]["account"] == "main", issued
    # secrets: not in events, logs or the simulator's ground truth
    logs = "\n".join(r.getMessage() + repr(r.__dict__) for r in caplog.records)
    assert "approval key" in logs or "KIS WebSocket lost" in logs  # the log was captured at all
    for s in (old_key, new_key, APP_KEY, APP_SECRET):
        assert s not in logs
    sim.truth.flush()
    assert_nowhere([old_key, new_key, APP_KEY, APP_SECRET], store.root, Path(sim.truth.dir))


@pytest.mark.parametrize("trigger", ["subscribe", "reconnect"])
def test_opsp0011_downtime_is_covered_by_gap_markers(sim_factory, tree, store, streams, trigger):
    """OPSP0011 ends the session; the new approval key is fetched by the next connect (an HTTP round
    trip, slowed here), inside the downtime: the gap markers cover everything from the refusal to the
    resubscription, including a connection that never delivered data, and raw/ keeps the OPSP0011."""
    sim = sim_factory(speed=10)
    sink, stream, syms = two_symbol_stream(sim, tree, store, streams)
    wait_for(lambda: len(sink.records()) > 20, 10, what="records")
    session = stream.stats()["connections"]["main"]["session_id"]
    sim.apply_fault({"kind": "approval_invalidate"})
    # the new approval key takes 0.5 real s (5 market s) to come: the interval a marker must cover
    sim.apply_fault({"kind": "rest_slow", "delay": 0.5, "duration_real": 30, "scope": "all"})
    before = stream.stats()["reconnects"]
    if trigger == "subscribe":
        stream.subscribe(syms[2], TRADES)
    else:
        sim.apply_fault({"kind": "ws_close_abrupt"})
    wait_for(lambda: stream.stats()["reconnects"] >= before + (1 if trigger == "subscribe" else 2), 15,
             what="the reconnect after OPSP0011")
    last_data = max(r["recv_ns"] for r in sink.records() if r["session_id"] == session)
    gaps = [g for g in events(store, "gap_marker") if g["symbol"] in syms[:2]]
    for sym in syms[:2]:
        for ch in (TRADES, BOOK):
            mine = sorted((g["start_ns"], g["end_ns"]) for g in gaps if (g["symbol"], g["channel"]) == (sym, ch))
            assert mine, (sym, ch)
            # the downtime starts when data stopped (give or take 1.5 market s between frames), not 5 s later ...
            assert mine[0][0] <= last_data + 1.5 * NS, (sym, ch, (mine[0][0] - last_data) / NS)
            # ... and the markers chain without holes
            assert all(y[0] <= x[1] for x, y in zip(mine, mine[1:], strict=False)), (sym, ch, mine)
    with sink.lock:  # the sink gets every frame (raw/ keeps it), the OPSP0011 that ended the session too
        assert any("OPSP0011" in f for f, _, _ in sink.frames)


# -- 2. access token --------------------------------------------------------------------------------
@pytest.fixture
def manual(sim_factory, tree, store):
    """A simulator and a KIS REST client on one ManualClock (a token's day passes instantly)."""
    clock = ManualClock(kst_datetime(date(2026, 3, 16), "09:06"))
    sim = sim_factory(clock=clock, date=DATE, symbols=20, active=1, activity=0.01)  # a quiet market: cheap to jump a day
    cfg = kis_config(sim, tree, token={"min_interval_s": 61, "refresh_ahead_s": 3600})
    rest = get_provider("kis", cfg, secrets(), store, clock).rest()
    return sim, clock, rest, sim.active_syms[0].info.code


def _issued_reasons(store) -> list[str]:
    return [e["reason"] for e in events(store, "credential_issued") if e["what"] == "access token"]


def test_token_inside_the_refresh_margin_is_replaced_before_use(manual, tree, store):
    sim, clock, rest, sym = manual
    check(rest.current_price(sym))
    t1 = cache_value(tree, "token")["value"]
    exp1 = cache_value(tree, "token")["expires_ns"]
    assert exp1 == clock.now_ns() + 86400 * NS  # expires_in of the simulator, on our clock
    # 30 min before expiry: still valid for the broker (a call with it would succeed), but inside the margin
    clock.advance(86400 - 1800)
    check(rest.current_price(sym))
    c = cache_value(tree, "token")
    assert c["value"] != t1 and c["expires_ns"] == clock.now_ns() + 86400 * NS
    ks = key_stats(sim)
    assert ks["tokens_issued"] == 2 and ks.get("issue_rejected", 0) == 0
    assert not any(k.startswith("EGW001") for k in ks), ks  # never refused: replaced before use
    assert rest.stats["token_refreshes"] == 0  # proactive, not the EGW00123 path
    assert sim.auth.tokens[t1].state == "ok" and sim.auth.latest[APP_KEY] == c["value"]
    # the new token is used from now on; nothing more is issued
    for _ in range(3):
        check(rest.current_price(sym))
    assert key_stats(sim)["tokens_issued"] == 2 and key_stats(sim)["token_requests"] == 2
    assert _issued_reasons(store) == ["none cached", "refresh"]


def test_failed_refresh_keeps_the_valid_token_and_waits_10_min(manual, tree, store):
    sim, clock, rest, sym = manual
    check(rest.current_price(sym))
    t1 = cache_value(tree, "token")["value"]
    clock.advance(86400 - 3000)  # 50 min left: inside the 1-h margin
    sim.apply_fault({"kind": "rest_5xx", "duration": 3600, "scope": "all", "status": 503})
    t0 = clock.now_ns()
    assert rest.auth.token() == t1  # the refresh failed (503 on /oauth2/tokenP): the valid token is kept
    # with a valid token in hand: one attempt, no backoff sleeps (every process waits on the cache lock)
    assert sim.stats()["counters"]["rest_5xx"] == 1 and clock.now_ns() == t0
    sim.clear_faults()
    failed_at = cache_value(tree, "token")["requested_ns"]
    assert failed_at > cache_value(tree, "token")["issued_ns"]  # the failed attempt is remembered
    check(rest.current_price(sym))  # no new attempt within 10 min of the failed one; t1 still works
    assert cache_value(tree, "token")["value"] == t1 and key_stats(sim)["token_requests"] == 1
    clock.set(failed_at + 601 * NS)
    check(rest.current_price(sym))
    assert cache_value(tree, "token")["value"] != t1
    assert key_stats(sim)["tokens_issued"] == 2 and key_stats(sim)["token_requests"] == 2
    assert _issued_reasons(store) == ["none cached", "refresh"]


def test_broker_5xx_on_issuance_is_not_a_credential_refusal(manual, tree):
    sim, clock, rest, sym = manual  # empty cache: no token to fall back on
    sim.apply_fault({"kind": "rest_5xx", "duration": 3600, "scope": "all", "status": 502})
    with pytest.raises(ProviderError) as e:
        rest.current_price(sym)
    # AuthError would tell the collector "credentials refused" (it exits, runtime.py); a 502 is an outage
    assert not isinstance(e.value, AuthError) and "502" in str(e.value)
    assert sim.stats()["counters"]["rest_5xx"] == rest.auth.max_attempts  # urgent: retried with backoff
    sim.clear_faults()
    check(rest.current_price(sym))
    assert key_stats(sim)["tokens_issued"] == 1


def test_refresh_refused_by_the_issuance_limit_does_not_hold_up_calls(manual, tree, store):
    """Someone else (another host, a tool with its own state/) took this minute's issuance just before
    our refresh-ahead: the broker answers EGW00133. We hold a valid token, so the call goes on with it
    at once - no 61-s wait (which would also block every process waiting on the cache lock)."""
    sim, clock, rest, sym = manual
    check(rest.current_price(sym))
    t1 = cache_value(tree, "token")["value"]
    clock.advance(86400 - 1800)
    other = KisAuth(base_url=sim.rest_url, app_key=APP_KEY, app_secret=APP_SECRET, state_dir=tree / "elsewhere",
                    clock=clock)
    other.token()
    clock.advance(1)
    t0 = clock.now_ns()
    check(rest.current_price(sym))
    assert clock.now_ns() - t0 < 2 * NS, f"the call waited {(clock.now_ns() - t0) / NS:.0f} s of clock time"
    assert cache_value(tree, "token")["value"] == t1
    ks = key_stats(sim)
    assert ks["issue_rejected"] == 1 and ks["tokens_issued"] == 2, ks  # ours was refused once, not retried
    assert not any(k.startswith("EGW001") for k in ks), ks  # t1 was still good
    clock.advance(601)  # the next refresh window: now it goes through
    check(rest.current_price(sym))
    # within 6 h of the other's issuance the broker hands out that same token again (KIS rule)
    assert cache_value(tree, "token")["value"] == sim.auth.latest[APP_KEY] == other.token() != t1
    ks = key_stats(sim)
    assert ks["tokens_issued"] == 2 and ks["tokens_reused"] == 1 and ks["issue_rejected"] == 1, ks


@pytest.mark.parametrize("kind,code", [("token_invalidate", "EGW00121"), ("token_expire", "EGW00123")])
def test_refused_token_is_replaced_once_and_the_call_retried(manual, tree, store, kind, code):
    sim, clock, rest, sym = manual
    check(rest.current_price(sym))
    t1 = cache_value(tree, "token")["value"]
    clock.advance(5)
    # no reset of the simulator's 1-per-minute window: the client itself must wait it out (61 s)
    sim.apply_fault({"kind": kind})
    t0 = clock.now_ns()
    check(rest.current_price(sym))
    c = cache_value(tree, "token")
    assert c["value"] != t1 and sim.auth.tokens[t1].state != "ok"
    assert c["requested_ns"] >= t0 - 5 * NS + 61 * NS  # waited out the issuance limit
    ks = key_stats(sim)
    assert ks[code] == 1, ks  # refused once, then the retry went through with the new token
    assert ks["tokens_issued"] == 2 and ks["token_requests"] == 2 and ks.get("issue_rejected", 0) == 0
    assert rest.stats["token_refreshes"] == 1
    assert _issued_reasons(store) == ["none cached", "invalidated"]
    check(rest.current_price(sym))
    assert key_stats(sim)[code] == 1 and key_stats(sim)["tokens_issued"] == 2


# -- 3. two processes -------------------------------------------------------------------------------
WORKER = r"""
import hashlib, json, sys
from pathlib import Path
from observer.core.clock import Clock
from observer.core.logging import setup_logging
from observer.providers.kis.auth import KisAuth
setup_logging("auth-worker", "DEBUG")
rest_url, state, order = sys.argv[1], sys.argv[2], sys.argv[3]
key, secret = sys.stdin.readline().strip(), sys.stdin.readline().strip()   # never on a command line
issued = []
auth = KisAuth(base_url=rest_url, app_key=key, app_secret=secret, state_dir=Path(state), clock=Clock(),
               on_issue=lambda what, reason: issued.append([what, reason]))
print("READY", flush=True)
sys.stdin.readline()  # start together
got = {}
for what in order.split(","):
    got[what] = auth.token() if what == "token" else auth.approval_key()
h = lambda s: hashlib.sha256(s.encode()).hexdigest()
print(json.dumps({"token": h(got["token"]), "approval": h(got["approval"]), "issued": issued}), flush=True)
"""


def test_two_processes_share_one_token_and_one_approval_key(sim, tree):
    assert not state_dir(tree).exists() or not list(state_dir(tree).glob("kis_*"))  # empty cache
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, sim.rest_url, str(state_dir(tree)), order],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=dict(os.environ))
             for order in ("token,approval", "approval,token")]
    try:
        for p in procs:
            p.stdin.write(f"{APP_KEY}\n{APP_SECRET}\n")
            p.stdin.flush()
        for p in procs:
            line = p.stdout.readline().strip()
            assert line == "READY", p.stderr.read()
        for p in procs:  # both at once
            p.stdin.write("go\n")
            p.stdin.flush()
        res = []
        for p in procs:
            out, err = p.communicate(timeout=30)  # a second issuance would have met EGW00133 and waited 61 s
            assert p.returncode == 0, err
            res.append((json.loads(out.strip().splitlines()[-1]), err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    a = sim.stats()["auth"]
    assert a["token_requests"] == 1 and a["tokens_issued"] == 1 and a["issue_rejected"] == 0, a
    assert a["approvals"] == 1, a
    token = sim.auth.latest[APP_KEY]
    approval = next(iter(sim.auth.approvals))
    assert [r["token"] for r, _ in res] == [sha(token)] * 2
    assert [r["approval"] for r, _ in res] == [sha(approval)] * 2
    issued = sorted(tuple(x) for r, _ in res for x in r["issued"])
    assert issued == [("access token", "none cached"), ("approval key", "none cached")]
    assert cache_value(tree, "token")["value"] == token
    assert cache_value(tree, "approval")["value"] == approval
    for _, err in res:
        for s in (token, approval, APP_KEY, APP_SECRET):
            assert s not in err
    sim.truth.flush()
    assert_nowhere([token, approval, APP_KEY, APP_SECRET], tree, Path(sim.truth.dir))
