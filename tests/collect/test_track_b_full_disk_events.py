"""Track B records while the data tree's disk is full (a tmpfs filled by the test): the events it
emits meanwhile (store_error, the store_full recording event, gap markers) wait in memory and reach
the events file once space returns, byte for byte as they were kept: their own times, marked deferred."""

import orjson
import pytest

from observer.programs.verify import verify_tree
from observer.store.reader import iter_day
from tests.collect.test_track_b import HELD, START, WINDOWS, run_track_b
from tests.support import wait_for
from tests.support.diskfull import fill, tmpfs
from tests.support.sim import busiest
from tests.support.simenv import SimEnv

pytestmark = pytest.mark.integration


def test_track_b_events_of_a_full_disk_reach_the_tree(tmp_path):
    env = None
    with tmpfs(tmp_path / "data", "32m") as data:
        try:
            env = SimEnv(tmp_path, start=START, speed=30, symbols=40, active=10,
                         cfg_overrides={**WINDOWS, "store": {"max_buffer_bytes": 65536}})
            kept: dict = {}

            def fill_disk(env, tb):
                fill(data / "filler")
                wait_for(lambda: tb.store_refused > 0, 120, "the store to refuse a block")
                # the drops are reported while the disk is still full: those events wait
                wait_for(lambda: any(b'"gap_marker"' in x for _, x in tb.events._backlog), 120,
                         "a gap marker to be deferred")
                kept["lines"] = [x for _, x in list(tb.events._backlog)]
                kept["freed_ns"] = env.clock.now_ns()
                (data / "filler").unlink()

            tb = run_track_b(env, busiest(env, HELD), 30, during=fill_disk)
            events = [r for r in iter_day(env.root, env.day, kinds=("events",))]
            raw = b"".join((env.root / "system" / "events" / "kis").joinpath(p).read_bytes()
                           for p in sorted(x.name for x in (env.root / "system" / "events" / "kis").iterdir()))
            missing = [x for x in kept["lines"] if x not in raw]
            assert not missing, f"{len(missing)} deferred event(s) never reached the tree: {missing[0][:200]!r}"
            deferred = [orjson.loads(x) for x in kept["lines"]]
            assert all(e["deferred"] is True and e["ts_ns"] < kept["freed_ns"] for e in deferred)
            kinds = {e["event"] for e in deferred}
            assert "gap_marker" in kinds
            assert any(e["event"] == "store_error" and e["errno"] == "ENOSPC"
                       for e in events), "the outage itself was not recorded"
            assert any(e["event"] == "gap_marker" and e["cause"] == "store_full" and e.get("deferred")
                       for e in events)
            assert tb.events.dropped_total == 0
            assert verify_tree(env.root)["clean"]
        finally:
            if env is not None:
                env.close()
