"""Faults the system tests inject into a real program (tests/heal/test_watchdog_system.py): loaded only
when OBSERVER_TEST_FAULTS names a directory, which lies outside the data tree (production code never
reads test files from the tree, and a unit without the variable never imports this module).

Trigger files in that directory, each consumed when read so a restarted process starts clean:
  leak_mb_per_s   a number N (0-1024): from then on the process leaks N MiB every second, until the
                  kernel's MemoryMax kills it.
"""

from __future__ import annotations

import os
from pathlib import Path

from observer.core.logging import get_logger

log = get_logger(__name__)

ENV = "OBSERVER_TEST_FAULTS"
LEAK_FILE = "leak_mb_per_s"
MAX_LEAK_MB = 1024


class FaultHooks:
    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self._leak: list[bytes] = []
        self.leak_mb = 0

    @classmethod
    def from_env(cls) -> FaultHooks | None:
        d = os.environ.get(ENV, "")
        if not d:
            return None
        if not os.path.isabs(d):
            log.error(f"{ENV} must name an absolute directory of fault triggers; test faults off", extra={"value": d})
            return None
        return cls(Path(d))

    def tick(self) -> None:
        """Called once a second by the program's main loop."""
        trigger = self.dir / LEAK_FILE
        try:
            fd = os.open(trigger, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            fd = -1
        if fd >= 0:
            try:
                text = os.read(fd, 32).decode("ascii", "replace").strip()
            finally:
                os.close(fd)
                trigger.unlink(missing_ok=True)
            try:
                mb = int(text or "0")
            except ValueError:
                mb = -1
            if not 0 <= mb <= MAX_LEAK_MB:
                log.error("test fault: bad leak rate; ignored", extra={"file": str(trigger), "value": text})
            else:
                self.leak_mb = mb
                log.warning("test fault: leaking memory", extra={"mb_per_s": mb})
        if self.leak_mb:
            self._leak.append(b"x" * (self.leak_mb << 20))
