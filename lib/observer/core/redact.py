"""Secrets never reach a log, the journal, an event or an alert.

Every program registers the secret values it loads (app keys, secrets, tokens, approval keys,
bot tokens) here; the log formatter, the events log and the alert outbox pass their text through
redact() before it leaves the process. Matching is by value, so a secret is caught wherever it
hides (a URL, an exception message, a response body).
"""

from __future__ import annotations

import re
import threading

_MIN_LEN = 6  # shorter values would redact ordinary words and numbers
_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None

MASK = "***"


def register_secret(value: str | None) -> None:
    global _pattern
    if not value or len(value) < _MIN_LEN:
        return
    with _lock:
        if value in _secrets:
            return
        _secrets.add(value)
        # longest first so a secret containing another is masked whole
        alts = sorted(_secrets, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(s) for s in alts))


def redact(text: str) -> str:
    p = _pattern
    if p is None or not text:
        return text
    return p.sub(MASK, text)


def redact_obj(obj):
    """Redact every string inside a JSON-like structure (dict keys included)."""
    if _pattern is None:
        return obj
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {redact_obj(k): redact_obj(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_obj(v) for v in obj]
    return obj


def clear_for_tests() -> None:
    global _pattern
    with _lock:
        _secrets.clear()
        _pattern = None
