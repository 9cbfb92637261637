"""A broker credential (access token, approval key) shared between processes through one file.

Issuing a credential is often limited, and may notify the account holder, so one is requested only
when no valid one is cached. The cache is a 0600 JSON file under the state directory; every decision
to issue is taken while holding flock on a lock file beside it, so processes that start together issue
one credential and the others read it. The provider names the file (a hash of server and key: the key
itself never appears in a file name, and a credential of one server is never offered to another) and
supplies fetch(), the issuance itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import orjson

from observer.core.clock import NS, Clock
from observer.core.logging import get_logger
from observer.core.redact import register_secret
from observer.providers.base import ProviderError
from observer.store.fs import PRIVATE_MODE, ensure_dir, locked
from observer.store.state import write_bytes_atomic

log = get_logger(__name__)


def key_hash(base_url: str, app_key: str) -> str:
    """The part of a cache file name that tells servers and keys apart without spelling the key."""
    return hashlib.sha256(f"{base_url}\n{app_key}".encode()).hexdigest()[:16]


class CredentialCache:
    """A secret with an expiry, cached on disk and shared under flock.

    fetch(urgent) -> (value, expires_ns) performs the issuance; it is called only under the lock, only
    when the cache holds nothing usable (urgent=True: wait out limits and retry) or the value is due
    for a refresh ahead of expiry (urgent=False: one attempt, no waiting - a valid value is in hand, and
    every process needing the credential waits on this lock), and never sooner than min_interval_s
    after the previous request (by any process) for this key. A failed refresh keeps the valid value and
    is not tried again for refresh_retry_s. on_issue(what, reason) hears of every issuance by this process.
    """

    def __init__(self, path: Path, fetch: Callable[[bool], tuple[str, int]], clock: Clock, *, what: str,
                 min_interval_s: float, refresh_ahead_s: float, safety_s: float = 60.0,
                 refresh_retry_s: float = 600.0, on_issue: Callable[[str, str], None] | None = None):
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")
        self._fetch = fetch
        self.clock = clock
        self.what = what
        self.min_interval_s = min_interval_s
        self.refresh_ahead_s = refresh_ahead_s
        self.safety_s = safety_s
        self.refresh_retry_s = refresh_retry_s
        self.on_issue = on_issue
        self._mem: dict | None = None
        self.issued = 0  # issuances by this process
        ensure_dir(path.parent)

    def _read(self) -> dict | None:
        try:
            c = orjson.loads(self.path.read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError, OSError):
            return None
        if not isinstance(c, dict):
            return None
        if not isinstance(c.get("value"), str) or not isinstance(c.get("expires_ns"), int):
            c.pop("value", None)  # a damaged record: nothing usable, but its request time still counts
            c.pop("expires_ns", None)
        if not isinstance(c.get("requested_ns", 0), int):
            c["requested_ns"] = 0
        if c.get("value"):
            register_secret(c["value"])
        return c

    def _write(self, record: dict) -> None:
        write_bytes_atomic(self.path, orjson.dumps(record), mode=PRIVATE_MODE)

    def peek(self) -> dict | None:
        """What the cache holds now ({value, expires_ns, requested_ns, ...}), issuing nothing; None when
        there is no readable cache. For a caller that decides itself whether to ask (preflight)."""
        return self._read()

    def next_request_in_s(self) -> float:
        """Seconds until the issuance limit lets any process ask again for this key (<= 0: now)."""
        c = self._read() or {}
        return (c.get("requested_ns", 0) + self.min_interval_s * NS - self.clock.now_ns()) / NS

    def _usable(self, c: dict | None, now: int, invalid: str | None) -> bool:
        return bool(c and c.get("value") and c["value"] != invalid
                    and c.get("expires_ns", 0) - self.safety_s * NS > now)

    def _refresh_due(self, c: dict, now: int) -> bool:
        return (c["expires_ns"] - self.refresh_ahead_s * NS < now
                and now - c.get("requested_ns", 0) > max(self.min_interval_s, self.refresh_retry_s) * NS)

    def get(self, invalid: str | None = None) -> str:
        """A valid value. `invalid`: the value the server just refused (expired/invalid): never return it."""
        now = self.clock.now_ns()
        m = self._mem
        if self._usable(m, now, invalid) and not self._refresh_due(m, now):
            return m["value"]
        # another process may hold the lock through an issuance wait: with a stop event on the clock
        # the wait ends (Stopped) as soon as the program is told to stop
        with locked(self.lock_path, stop_event=self.clock.stop_event):
            c = self._read()
            now = self.clock.now_ns()
            if self._usable(c, now, invalid) and not self._refresh_due(c, now):
                self._mem = c
                return c["value"]
            try:
                fresh = self._issue(c, invalid)
            except ProviderError as e:
                if self._usable(c, self.clock.now_ns(), invalid):  # refresh-ahead failed: keep the valid one
                    log.warning(f"{self.what} refresh failed; keeping the cached one until it expires",
                                extra={"error": str(e)[:200]})
                    self._mem = self._read() or c  # with the attempt time: no new attempt for a while
                    return c["value"]
                raise
            self._mem = fresh
            return fresh["value"]

    def discard(self) -> str | None:
        """Take the cached value out of the cache (to give it back to the server): the value, or None when
        none is cached. The time of the last request stays, so the issuance limit still holds."""
        with locked(self.lock_path, stop_event=self.clock.stop_event):
            self._mem = None
            c = self._read()
            if not c or not c.get("value"):
                return None
            value = c.pop("value")
            c.pop("expires_ns", None)
            self._write(c)
            return value

    def _issue(self, cached: dict | None, invalid: str | None) -> dict:
        last = (cached or {}).get("requested_ns", 0)
        wait = (last + self.min_interval_s * NS - self.clock.now_ns()) / NS
        if wait > 0:
            log.info(f"waiting {wait:.1f} s before requesting a new {self.what} (issuance limit)")
            self.clock.sleep(wait)
        now = self.clock.now_ns()
        urgent = not self._usable(cached, now, invalid)
        record = dict(cached or {})
        record["requested_ns"] = now
        try:
            value, expires_ns = self._fetch(urgent)
        except BaseException:
            # remember the attempt so no process asks again within the limit
            self._write(record)
            raise
        register_secret(value)
        record.update({"value": value, "expires_ns": expires_ns, "issued_ns": now, "requested_ns": now})
        self._write(record)
        self.issued += 1
        if self.on_issue:
            self.on_issue(self.what, "invalidated" if invalid else ("refresh" if cached and cached.get("value") else "none cached"))
        return record
