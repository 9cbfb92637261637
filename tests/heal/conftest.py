import pytest

from tests.support.progenv import Env


@pytest.fixture
def env(tmp_path):
    """The simulator on a clock the programs share, a tree, a config and secrets (tests.support.progenv)."""
    e = Env(tmp_path)
    yield e
    e.close()
