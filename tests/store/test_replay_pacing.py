"""observer-replay --speed: records are held back until their exchange time is due at that speed."""

from observer.core.clock import NS
from observer.store.replay import paced

T0 = 1_773_619_200 * NS  # any exchange time


class FakeTime:
    def __init__(self):
        self.now = 100.0
        self.slept: list[float] = []
        self.flushes = 0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s

    def flush(self) -> None:
        self.flushes += 1


def test_waits_for_each_record_at_the_speed():
    t = FakeTime()
    recs = [{"exch_ns": T0}, {"exch_ns": T0 + 10 * NS}, {"exch_ns": T0 + 10 * NS}, {"exch_ns": T0 + 40 * NS}]
    out = list(paced(recs, 10.0, before_wait=t.flush, sleep=t.sleep, monotonic=t.monotonic))
    assert out == recs
    assert t.slept == [1.0, 3.0]  # 10 s and 40 s of exchange time at 10x; the same-time record waits not
    assert t.flushes == 2


def test_time_spent_elsewhere_counts():
    t = FakeTime()
    got = []
    for rec in paced([{"exch_ns": T0}, {"exch_ns": T0 + 4 * NS}], 2.0, sleep=t.sleep, monotonic=t.monotonic):
        got.append(rec)
        t.now += 1.5  # the consumer took 1.5 s to write the first record
    assert t.slept == [0.5] and len(got) == 2
