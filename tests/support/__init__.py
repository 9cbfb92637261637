"""Helpers every part of the test tree shares: one way to wait on a condition, one way to wait for an
alert at the fake Telegram server (tests/support/fake_telegram.py). Simulator fixtures: tests.support.sim."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.support.fake_telegram import FakeTelegram


class WaitTimeout(AssertionError, TimeoutError):
    """A wait_for that ran out: a test failure (AssertionError), and a TimeoutError for callers that
    add context to it (the systemd tests append the unit's status)."""


def wait_for(cond: Callable[[], Any], timeout: float, what: str | Callable[[], str] = "condition", *,
             interval: float = 0.02, proc: subprocess.Popen | None = None) -> Any:
    """Poll cond() (never a fixed sleep) until it returns something truthy and return that.

    Fails with WaitTimeout naming `what` once `timeout` seconds have passed (cond() is tried once more at
    the deadline). `what` may be a callable, evaluated only then, so the message shows the state at the
    failure. With `proc`, fails at once if that process exits first, with the end of its stderr."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}) before: {_text(what)}\n"
                                 f"{proc.stderr.read().decode()[-3000:]}")
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout:g} s waiting for {_text(what)}")
        time.sleep(interval)


def _text(what: str | Callable[[], str]) -> str:
    return what() if callable(what) else what


def arrived(tg: FakeTelegram, *parts: str, timeout: float = 30) -> str:
    """The first message holding every part, once it ARRIVED at the fake Telegram server (senders work in
    the background, so this waits)."""
    found: list[str] = []

    def match() -> bool:
        found[:] = [t for t in tg.texts() if all(p in t for p in parts)]
        return bool(found)

    wait_for(match, timeout, lambda: f"a Telegram message with {parts} (got {tg.texts()})")
    return found[0]


__all__ = ["WaitTimeout", "arrived", "wait_for"]
