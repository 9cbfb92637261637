"""The shared credential cache on its own: a damaged cache file is treated as holding nothing (and never
crashes a caller), and discard() takes the value out while the issuance limit keeps counting."""

from __future__ import annotations

import stat
from datetime import date

import orjson

from observer.core.clock import NS, ManualClock, kst_ns
from observer.providers.credcache import CredentialCache

START = kst_ns(date(2026, 3, 16), "083000")


def make(tmp_path, clock):
    issued = []

    def fetch(urgent: bool) -> tuple[str, int]:
        issued.append(urgent)
        return f"VALUE{len(issued)}", clock.now_ns() + 3600 * NS

    cache = CredentialCache(tmp_path / "state" / "cred.json", fetch, clock, what="access token",
                            min_interval_s=30.0, refresh_ahead_s=600.0)
    return cache, issued


def test_a_damaged_cache_file_holds_nothing(tmp_path):
    clock = ManualClock(START)
    cache, issued = make(tmp_path, clock)
    cache.path.write_bytes(b'{"value": "OLD", "expires_ns": "tomorrow", "requested_ns": "x"}')
    assert cache.get() == "VALUE1" and issued == [True]
    assert stat.S_IMODE(cache.path.stat().st_mode) == 0o600
    cache.path.write_bytes(b"[1, 2")
    assert cache.peek() is None


def test_discard_takes_the_value_and_keeps_the_limit(tmp_path):
    clock = ManualClock(START)
    cache, issued = make(tmp_path, clock)
    assert cache.discard() is None
    assert cache.get() == "VALUE1"
    assert cache.discard() == "VALUE1"
    left = orjson.loads(cache.path.read_bytes())
    assert "value" not in left and left["requested_ns"] == START
    assert cache.next_request_in_s() == 30.0
    assert cache.get() == "VALUE2" and clock.now_ns() == START + 30 * NS  # waited out the limit
    assert issued == [True, True]
