"""Kiwoom's access token shared between processes, against the simulator's Kiwoom side (real HTTP on
127.0.0.1, real files, two real OS processes on the simulator's market clock).

Two processes starting together on an empty cache issue one token between them; once the server has
revoked it, a refusal seen by both (one on a REST call, one as the WebSocket LOGIN reports it through
token(refused=...)) replaces it exactly once. The simulator counts every issuance (/stats and the ground
truth's kiwoom/auth.jsonl), and no secret reaches a log or any file other than the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import orjson
import requests

from observer.sim.kiwoom_auth import OK_MSG

KW_KEY = "KW-APPKEY-shared-0001"
KW_SECRET = "KW-SECRET-shared-0001"

WORKER = r"""
import hashlib, json, sys
from pathlib import Path
from observer.core.clock import clock_from_env
from observer.core.logging import setup_logging
from observer.providers.kiwoom.rest import KiwoomRest
setup_logging("kiwoom-token-worker", "DEBUG")
url, state, code = sys.argv[1], sys.argv[2], sys.argv[3]
key, secret = sys.stdin.readline().strip(), sys.stdin.readline().strip()   # never on a command line
issued = []
rest = KiwoomRest(url, app_key=key, secret_key=secret, state_dir=Path(state), clock=clock_from_env(),
                  on_issue=lambda what, reason: issued.append(reason))
h = lambda s: hashlib.sha256(s.encode()).hexdigest()
def report(token, price):
    print(json.dumps({"token": h(token), "price": price, "issued": issued, **rest.stats}), flush=True)
print("READY", flush=True)
sys.stdin.readline()  # start together
first = rest.token()
report(first, rest.current_price(code)["price"])
how = sys.stdin.readline().strip()  # after the server revoked the token: see it refused, as a call or a LOGIN does
if how == "call":
    price = rest.current_price(code)["price"]
    report(rest.token(), price)
else:
    token = rest.token(refused=first)
    report(token, rest.current_price(code)["price"])
rest.close()
"""


def sha(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


def kiwoom_stats(sim) -> dict:
    return sim.stats()["kiwoom"]["auth"]


def busiest(sim) -> str:
    return min((s for s in sim.universe.symbols if s.active), key=lambda s: s.rank).code


def send_all(procs, line: str) -> None:
    for p in procs:
        p.stdin.write(line + "\n")
        p.stdin.flush()


def read_reports(procs) -> list[dict]:
    out = []
    for p in procs:
        line = p.stdout.readline().strip()
        assert line.startswith("{"), (line, p.stderr.read() if p.poll() is not None else "")
        out.append(json.loads(line))
    return out


def test_two_processes_issue_one_token_and_replace_a_refused_one_once(sim_factory, tmp_path):
    sim = sim_factory(providers=["kis", "kiwoom"], app_key=KW_KEY, app_secret=KW_SECRET, kiwoom_rate_limit=200)
    url = sim.urls()["kiwoom"]["rest"]
    state = tmp_path / "state"
    code = busiest(sim)
    env = {**os.environ, "OBSERVER_CLOCK": sim.clock.spec()}  # token expiry is on the market clock
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, url, str(state), code], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    try:
        send_all(procs, f"{KW_KEY}\n{KW_SECRET}")
        for p in procs:
            assert p.stdout.readline().strip() == "READY", p.stderr.read()
        send_all(procs, "go")  # both at once, on an empty cache
        first = read_reports(procs)

        a = kiwoom_stats(sim)
        assert a["token_requests"] == 1 and a["tokens_issued"] == 1, a
        token1 = sim.providers["kiwoom"].auth.latest[KW_KEY]
        assert [r["token"] for r in first] == [sha(token1)] * 2
        assert sorted(r["tokens_issued"] for r in first) == [0, 1]
        assert sorted(x for r in first for x in r["issued"]) == ["none cached"]
        assert all(r["price"] > 0 for r in first)
        files = list(state.glob("kiwoom_token_*.json"))
        assert len(files) == 1 and KW_KEY not in files[0].name
        assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
        assert orjson.loads(files[0].read_bytes())["value"] == token1

        # the server forgets the token: every process now sees it refused (8005)
        rv = requests.post(url + "/oauth2/revoke", headers={"api-id": "au10002"}, timeout=10,
                           json={"appkey": KW_KEY, "secretkey": KW_SECRET, "token": token1}).json()
        assert rv == {"return_code": 0, "return_msg": OK_MSG}
        procs[0].stdin.write("call\n")
        procs[1].stdin.write("login\n")
        for p in procs:
            p.stdin.flush()
        second = read_reports(procs)
        errs = []
        for p in procs:
            _, err = p.communicate(timeout=30)
            assert p.returncode == 0, err
            errs.append(err)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    a = kiwoom_stats(sim)
    assert a["token_requests"] == 2 and a["tokens_issued"] == 2 and a["revoked"] == 1, a
    token2 = sim.providers["kiwoom"].auth.latest[KW_KEY]
    assert token2 != token1
    assert [r["token"] for r in second] == [sha(token2)] * 2
    assert sum(r["tokens_issued"] for r in second) == 2  # over both phases, whichever process asked first
    assert [r["token_refreshes"] for r in second] == [1, 1]
    assert sorted(x for r in second for x in r["issued"]) == ["invalidated", "none cached"]
    assert orjson.loads(files[0].read_bytes())["value"] == token2
    sim.truth.flush()
    truth = [orjson.loads(line) for line in Path(sim.truth.dir, "kiwoom", "auth.jsonl").read_bytes().splitlines()]
    assert [t["event"] for t in truth] == ["token_issued", "token_issued"]
    for err in errs:
        for s in (token1, token2, KW_KEY, KW_SECRET):
            assert s not in err
    for f in state.rglob("*"):
        if f.is_file() and not f.name.startswith("kiwoom_token_"):
            data = f.read_bytes()
            assert not any(s.encode() in data for s in (token1, token2, KW_KEY, KW_SECRET)), f
