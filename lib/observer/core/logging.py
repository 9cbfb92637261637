"""Structured JSON-line logs to stderr (journald stores them as they are), secrets redacted.

Use the standard library: `log = get_logger(__name__)`; `log.info("reconnected", extra={"cause": "eof"})`.
Every key given in `extra` becomes a field of the JSON line.
"""

from __future__ import annotations

import logging
import os
import sys
import time

import orjson

from observer.core.redact import redact

_STD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
_program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "observer"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "program": _program,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in record.__dict__.items():
            if k not in _STD_ATTRS and not k.startswith("_"):
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        line = orjson.dumps(out, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        return redact(line)


def setup_logging(program: str | None = None, level: str | int = "INFO", stream=None) -> None:
    """Configure the root logger once per process (idempotent)."""
    global _program
    if program:
        _program = program
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_observer", False):
            root.removeHandler(h)
    h = logging.StreamHandler(stream or sys.stderr)
    h.setFormatter(JsonFormatter())
    h._observer = True  # type: ignore[attr-defined]
    root.addHandler(h)
    root.setLevel(level if isinstance(level, int) else level.upper())
    # urllib3 debug lines can carry full URLs and headers
    logging.getLogger("urllib3").setLevel(logging.WARNING)


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)
