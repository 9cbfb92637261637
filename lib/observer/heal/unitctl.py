"""Client side of the restart broker: how the watchdog restarts a collector without any privilege.

The watchdog runs as the unprivileged `observer` user with an empty capability set, so it cannot
call `systemctl restart` itself. It creates an empty file named ``VERB:UNIT`` in the request
directory (``paths.unitctl_dir``: ``<data_dir>/state/unitctl/``); ``observer-unitctl.path`` notices it
and ``observer-unitctl.service`` (root, no capabilities, no network) carries the request out if it is
one of ALLOWED, and deletes it either way. docs/deployment.md ("The watchdog's restart exception") has the reasoning.

    from observer.heal.unitctl import request
    request("restart", "observer-track-b@kis.service")
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from observer.store import fs, paths

# Mirrors lib/observer/deploy/unitctl.sh (installed by install_vm.sh), which is the authority: it
# re-checks every request. This copy only refuses early, with a clear error, what the broker would ignore.
ALLOWED = re.compile(
    r"^(restart:observer-track-a\.service"
    r"|restart:observer-track-b@[a-z0-9]{1,32}\.service"
    r"|restart:observer-sim\.service"
    r"|start:observer-retention\.service)$"
)


class UnitctlError(ValueError):
    pass


def request_path(verb: str, unit: str, data_dir: str | os.PathLike = "/var/lib/observer") -> Path:
    name = f"{verb}:{unit}"
    if not ALLOWED.match(name):
        raise UnitctlError(f"{name!r} is not a request the restart broker carries out")
    return paths.unitctl_dir(Path(data_dir)) / name


def request(verb: str, unit: str, data_dir: str | os.PathLike = "/var/lib/observer") -> Path:
    """Ask for `verb` (restart/start) on `unit`; returns the request file. Asking twice before the
    broker ran is one request. The broker queues the job with --no-block and logs to the journal
    (SyslogIdentifier=observer-unitctl); check the unit's state to see the outcome."""
    path = request_path(verb, unit, data_dir)
    fs.ensure_dir(path.parent)
    try:
        fs.write_new(path, b"", mode=0o660)  # the broker (root) deletes it; group-writable for the watchdog
    except FileExistsError:
        pass
    return path
