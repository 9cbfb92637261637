"""ProgramAlerts, the one interface every program raises alerts through: the one-shot send, the
watchdog's drain of another program's undelivered alert, never raising into the caller, and the
store_error hook that never alerts about the outbox's own file. Messages are checked at the local
fake Telegram server."""

import os

import pytest

from observer.core.clock import ManualClock
from observer.store import paths
from observer.store.reader import read_file
from observer.store.store import Store
from observer.telemetry.alerts import KEY_BACKUP, KEY_STORE_ERROR, SEND_NOW_S, ProgramAlerts
from tests.support import wait_for
from tests.support.fake_telegram import SECRETS, TOKEN
from tests.telemetry.conftest import DAY_START, make_cfg


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "data", program="test", clock=ManualClock(DAY_START))
    yield s
    s.close()


def _outbox(store) -> list[dict]:
    return read_file(paths.alerts_file(store.root, DAY_START.date()))


def test_a_send_now_alert_has_arrived_when_alert_returns(store, tg):
    alerts = ProgramAlerts(store, make_cfg(tg), "backup", secrets=SECRETS, send_s=SEND_NOW_S)
    alerts.alert(KEY_BACKUP, "CRITICAL", "backup failed: ENOSPC", date="20260303")
    texts = tg.texts()   # no wait: alert() returned after the send
    assert len(texts) == 1 and "backup failed: ENOSPC" in texts[0] and "CRITICAL" in texts[0]
    assert [r["state"] for r in _outbox(store)] == ["pending", "sent"]
    assert alerts.raised == [KEY_BACKUP]


def test_unreadable_secrets_keep_the_alert_for_the_watchdogs_drain(store, tg, tmp_path):
    bad = tmp_path / "secrets.env"
    bad.write_text(f"TELEGRAM_BOT_TOKEN={TOKEN}\nTELEGRAM_CHAT_ID=1\n")
    os.chmod(bad, 0o644)   # refused: readable by others
    cfg = {**make_cfg(tg), "secrets_file": str(bad)}
    clock = ManualClock(DAY_START)
    ProgramAlerts(store, cfg, "retention", clock=clock, send_s=SEND_NOW_S).alert(
        KEY_BACKUP, "CRITICAL", "retention failed: blocked")
    assert tg.texts() == [] and [r["state"] for r in _outbox(store)] == ["pending"]

    clock.advance(60)   # past the writer's claim on its pending line
    wd = ProgramAlerts(store, make_cfg(tg), "watchdog", clock=clock, secrets=SECRETS, close_s=5)
    try:
        wait_for(lambda: wd.drain(5).get("undelivered") == 0, 30, "the drain to deliver it")
        assert wd.undelivered() == 0
    finally:
        wd.close()
    assert len(tg.texts()) == 1 and "retention failed: blocked" in tg.texts()[0]
    assert "retention @ testhost" in tg.texts()[0]   # still sent as the program that raised it


def test_a_broken_alert_config_never_raises_into_the_program(store, tg):
    # a value the schema would refuse: the Alerter cannot be built, the program goes on
    alerts = ProgramAlerts(store, make_cfg(tg, throttle_min="soon"), "track-a", secrets=SECRETS)
    alerts.alert(KEY_BACKUP, "CRITICAL", "x")
    assert alerts.drain(1) == {} and alerts.undelivered() is None
    alerts.close()
    assert tg.texts() == []


def test_store_error_hook_alerts_other_files_but_never_the_outbox_own(store, tg):
    alerts = ProgramAlerts(store, make_cfg(tg), "track-b@x", secrets=SECRETS)
    try:
        outbox = paths.alerts_file(store.root, DAY_START.date())
        alerts.store_error({"file": str(outbox), "errno": "ENOSPC", "error": "No space left on device"})
        assert alerts.raised == []
        alerts.store_error({"file": str(store.root / "scalp" / "x.jsonl"), "errno": "ENOSPC",
                            "error": "No space left on device"})
        assert alerts.raised == [KEY_STORE_ERROR]
        tg.wait_for_messages(1)
    finally:
        alerts.close()
    assert "the store cannot write (ENOSPC" in tg.texts()[0] and "scalp/x.jsonl" in tg.texts()[0]
