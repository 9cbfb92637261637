from datetime import datetime

import pytest

from observer.core import redact
from observer.core.clock import KST

DAY_START = datetime(2026, 3, 3, 10, 0, tzinfo=KST)   # a Tuesday


@pytest.fixture(autouse=True)
def _clean_redaction():
    yield
    redact.clear_for_tests()


def make_cfg(tg=None, **alerts):
    a = {"send_timeout_s": 1, "retry_backoff_s": 0, "claim_timeout_s": 1}
    if tg is not None:
        a["telegram_api_base"] = tg.base
    a.update(alerts)
    return {"alerts": a, "host_id": "testhost"}
