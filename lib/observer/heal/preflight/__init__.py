"""Preflight: everything the trading day needs, checked at 08:30 (docs/preflight.md).

Each check returns a Check(name, verdict ok/warn/fail/skip, one-line reason, how to fix it) and never
takes preflight down: an exception inside one is that check's `fail`. The incident of 2026-01-19 is the
list's origin: an ImportError and a missing dependency (the self-test rows start every installed
program), a WebSocket that connects but never answers or drops without a close frame, an OOM-prone host
(`memory`), plus what a broker day needs (token, REST, clock, disk, universe, units).

  runner.py    the driver, the report, its verdict and exit code
  host.py      config, trading day, secrets file, disk, disk write, memory, CPU, systemd units
  programs.py  every installed program's --self-test
  universe.py  the day's universe snapshot
  guard.py     the deploy guard (market-hours time lock)
  table.py     the table, the JSON report, the stderr line, the alert text
  run.py       the run of observer-preflight: checks, event, alert

A provider's own checks (token, REST, clock, WebSocket) come from the provider: Provider.preflight_checks.

The names below are loaded on first use, so a program that needs one helper (the watchdog:
last_error_line) does not import every check.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "Check": "observer.core.checks", "estimate_skew": "observer.core.checks",
    "Preflight": "observer.heal.preflight.runner", "Report": "observer.heal.preflight.runner",
    "deploy_guard": "observer.heal.preflight.guard",
    "format_table": "observer.heal.preflight.table", "summary_text": "observer.heal.preflight.table",
    "last_error_line": "observer.heal.preflight.programs",
    "run_preflight": "observer.heal.preflight.run",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
