import os
import sys
from pathlib import Path

import pytest

from tests.support.fake_telegram import TOKEN, FakeTelegram

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"


@pytest.fixture
def repo() -> Path:
    return REPO


def venv_bin(name: str) -> str:
    """Path of an installed program (the venv's copy of bin/<name>)."""
    p = VENV_BIN / name
    return str(p) if p.exists() else str(Path(sys.executable).parent / name)


@pytest.fixture
def tree(tmp_path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
def tg():
    """The local fake Telegram Bot API (tests/support/fake_telegram.py), answering for TOKEN."""
    f = FakeTelegram(TOKEN)
    yield f
    f.stop()


def pytest_report_header(config):
    return f"observer repo: {REPO}; uid={os.getuid()}"
