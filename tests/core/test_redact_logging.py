import io
import json
import logging

import pytest

from observer.core import redact
from observer.core.logging import get_logger, setup_logging
from observer.store.store import Store

SECRET_KEY = "PSx8kA9QzT1mB7cLwN2v"
SECRET_TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.tok.en"


@pytest.fixture(autouse=True)
def secrets():
    redact.clear_for_tests()
    redact.register_secret(SECRET_KEY)
    redact.register_secret(SECRET_TOKEN)
    redact.register_secret("abc")  # too short to be a real secret: never masks ordinary text
    yield
    redact.clear_for_tests()


def test_json_log_lines_carry_fields_and_never_secrets():
    buf = io.StringIO()
    setup_logging("test-prog", "DEBUG", stream=buf)
    log = get_logger("t")
    log.info("token refreshed %s", SECRET_TOKEN, extra={"appkey": SECRET_KEY, "n": 3})
    try:
        raise RuntimeError(f"401 for https://x/?appkey={SECRET_KEY}")
    except RuntimeError:
        log.exception("call failed")
    out = buf.getvalue()
    assert SECRET_KEY not in out and SECRET_TOKEN not in out
    first = json.loads(out.splitlines()[0])
    assert first["program"] == "test-prog" and first["level"] == "INFO" and first["n"] == 3
    assert first["appkey"] == "***" and "***" in first["msg"]
    assert "abc" not in redact.redact("xyz") and redact.redact("abcdef abc") == "abcdef abc"
    logging.getLogger().handlers.clear()


def test_events_are_redacted_on_disk(tmp_path):
    s = Store(tmp_path)
    s.events().emit("restart", "WARNING", unit="observer-track-b@kis.service",
                    reason=f"auth failed with key {SECRET_KEY}", detail={SECRET_TOKEN: [SECRET_TOKEN]})
    s.close()
    blob = b"".join(p.read_bytes() for p in tmp_path.rglob("*.jsonl"))
    assert SECRET_KEY.encode() not in blob and SECRET_TOKEN.encode() not in blob
    assert b"auth failed with key ***" in blob
