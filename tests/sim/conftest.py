import pytest

from observer.sim import run_in_thread

DATE = "20260316"  # a Monday


@pytest.fixture
def make_sim(tmp_path):
    """Start simulators in this process; all are stopped at the end of the test."""
    started = []

    def make(**kw):
        kw.setdefault("seed", 7)
        kw.setdefault("symbols", 120)
        kw.setdefault("active", 12)
        kw.setdefault("date", DATE)
        kw.setdefault("start", "09:01")
        kw.setdefault("speed", 20)
        kw.setdefault("ground_truth", str(tmp_path / f"gt{len(started)}"))
        sim = run_in_thread(**kw)
        started.append(sim)
        return sim

    yield make
    for s in started:
        s.stop()
