"""On a day KRX is closed, both collectors and the gap-filler stand down the same way (collect.runtime.stand_down):
one `standing_down` event naming the reason, exit 0, nothing recorded. Real programs as subprocesses, the
simulator's market clock on a Saturday."""

import pytest

from tests.support.progenv import Env

SATURDAY = "20260314"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = Env(tmp_path_factory.mktemp("closed"), start="10:00:00", day=SATURDAY)
    yield e
    e.close()


@pytest.mark.parametrize("program, args", [("observer-track-a", ()), ("observer-track-b", ("--provider", "kis")),
                                           ("observer-gap-filler", ("--date", SATURDAY, "--no-audit"))])
def test_stands_down_on_a_closed_day(env, program, args):
    before = len(env.events("collector", provider="kis"))
    r = env.run(program, *args, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    new = env.events("collector", provider="kis")[before:]
    assert [e["state"] for e in new] == ["standing_down"], new
    assert new[0]["reason"] == "2026-03-14: not a KRX trading day (weekend)"
    assert new[0]["program"].startswith(program)
    assert not list(env.root.glob("scalp/**/*.jsonl")) and not list(env.root.glob("swing/**/*.jsonl"))
