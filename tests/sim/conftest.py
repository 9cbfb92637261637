import pytest

from tests.support.sim import simulators

DATE = "20260316"  # a Monday


@pytest.fixture
def make_sim(tmp_path):
    """Start simulators in this process; all are stopped at the end of the test."""
    with simulators(tmp_path, seed=7, symbols=120, active=12, date=DATE, start="09:01", speed=20) as make:
        yield make
