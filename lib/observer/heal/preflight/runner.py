"""The preflight driver: runs the checks in order (the host's, every program's self-test, each configured
provider's own, the universe, the units), each one at most once and only when --only asks for it; a check
that raises is that check's `fail`, never preflight's end. The report, its verdict and its exit code.

Each check bounds its own waits (self-tests: preflight.self_test_timeout_s; network: the provider's
timeouts and preflight.ws_answer_s / token_wait_s), and the driver pings the unit's watchdog after each.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from datetime import date

from observer.core import notify
from observer.core.calendar import Calendar
from observer.core.checks import RANK, VERDICTS, Check, CheckContext, CheckFn
from observer.core.clock import Clock
from observer.core.config import data_dir
from observer.core.exitcodes import EXIT_FAILED, EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE
from observer.core.logging import get_logger
from observer.core.settings import PreflightConfig, TrackAConfig
from observer.heal.preflight import host, programs
from observer.markets import calendar_from_config
from observer.providers.base import Provider, ProviderError, get_provider

log = get_logger(__name__)

# a failure of these rows is a configuration mistake, which every program answers with exit 2
CONFIG_CHECKS = ("config", "secrets")


@dataclass
class Report:
    day: date
    checks: list[Check]
    skipped_day: str | None = None  # closed-day reason when nothing else ran
    duration_s: float = 0.0

    @property
    def verdict(self) -> str:
        worst = max((RANK[c.verdict] for c in self.checks), default=0)
        return {0: "ok", 1: "warn", 2: "fail"}[worst]

    @property
    def exit_code(self) -> int:
        """0 all pass (or a closed day), 1 warnings only, 2 the config or the secrets are wrong, 3 another
        check failed (docs/exit-codes.md)."""
        if self.skipped_day:
            return EXIT_OK
        failed = self.failed()
        if any(c.name in CONFIG_CHECKS for c in failed):
            return EXIT_USAGE
        if failed:
            return EXIT_FAILED
        return EXIT_PROBLEMS if self.warned() else EXIT_OK

    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.verdict == "fail"]

    def warned(self) -> list[Check]:
        return [c for c in self.checks if c.verdict == "warn"]

    def counts(self) -> dict:
        out = {v: 0 for v in VERDICTS}
        for c in self.checks:
            out[c.verdict] += 1
        return out


def wanted(name: str, only: set[str] | None) -> bool:
    """--only NAMES: a check runs when a name is its own, or its family (`token` picks `token:<provider>`,
    `self-test` picks `self-test observer-verify`)."""
    if not only:
        return True
    return any(name == o or name.startswith(o + ":") or name.startswith(o + " ") for o in only)


class Preflight:
    def __init__(self, cfg: dict, clock: Clock, *, config_error: str | None = None, systemd: bool = False,
                 run_all: bool = False, only: set[str] | None = None, secrets=None, store=None,
                 program: str = "observer-preflight", program_path: str | None = None):
        self.cfg = cfg
        self.p = PreflightConfig.from_config(cfg)
        self.clock = clock
        self.config_error = config_error
        self.systemd = systemd
        self.run_all = run_all
        self.only = only
        self.root = data_dir(cfg)
        self.secrets = secrets
        self.store = store
        self.program = program
        self.program_path = program_path or sys.argv[0]
        self.calendar: Calendar | None = None
        self.checks: list[Check] = []
        self.day = clock.today_kst()
        self._providers: dict[str, Provider] = {}

    # -- driver --------------------------------------------------------------------------------
    def _run(self, name: str, fn: CheckFn) -> None:
        if not wanted(name, self.only):
            return
        t0 = time.monotonic()
        try:
            got = fn()
        except Exception as e:  # a check never takes preflight down
            log.exception("check crashed", extra={"check": name})
            got = Check(name, "fail", f"the check itself failed: {type(e).__name__}: {e}"[:400],
                        "a bug in observer-preflight: report it with the log above")
        for c in got if isinstance(got, list) else [got] if got else []:
            c.detail.setdefault("ms", round((time.monotonic() - t0) * 1000))
            self.checks.append(c)
            log.info("check", extra={"check": c.name, "verdict": c.verdict, "reason": c.reason})
        notify.progress()  # a check finished: real progress for the unit's watchdog

    def run(self) -> Report:
        t0 = time.monotonic()
        self._run("config", self._config)
        self.calendar = self.calendar or calendar_from_config({})
        closed = host.check_trading_day(self.calendar, self.day)
        if closed.verdict == "skip" and not self.run_all:
            self.checks.append(closed)
            return Report(self.day, self.checks, skipped_day=closed.detail.get("closed_reason"),
                          duration_s=time.monotonic() - t0)
        if wanted("trading_day", self.only):
            self.checks.append(closed)
        self._run("secrets", self._secrets)
        self._run("self-test", lambda: programs.check_programs(self.p, self.program_path))
        self._run("disk", lambda: host.check_disk(self.root, self.p))
        self._run("disk_write", lambda: host.check_disk_write(self.root, self.p))
        self._run("memory", lambda: host.check_memory(self.p))
        self._run("cpu", lambda: host.check_cpu(self.p))
        for name in self.p.providers:
            for check_name, fn in self.provider_checks(name):
                self._run(check_name, fn)
        self._run("universe", self._universe)
        if self.systemd:
            self._run("units", lambda: host.check_units(self.cfg, self.p))
        return Report(self.day, self.checks, duration_s=time.monotonic() - t0)

    # -- the rows that keep what they learn ---------------------------------------------------------
    def _config(self) -> Check:
        c, self.calendar = host.check_config(self.cfg, self.config_error)
        return c

    def _secrets(self) -> Check:
        c, self.secrets = host.check_secrets(self.cfg, self.p, self.secrets)
        return c

    # -- providers ----------------------------------------------------------------------------------
    def provider(self, name: str) -> Provider:
        """The provider `name`, built once (after the secrets row: with the secrets it loaded)."""
        if name not in self._providers:
            self._providers[name] = get_provider(name, self.cfg, self.secrets, self.store, self.clock)
        return self._providers[name]

    def provider_checks(self, name: str) -> list[tuple[str, CheckFn]]:
        """The provider's own checks (Provider.preflight_checks); one skip row when it has none."""
        row = f"provider:{name}"
        try:
            named = self.provider(name).preflight_checks(
                CheckContext(self.cfg, self.clock, self.day, self.root, self.secrets, self.store))
        except (ValueError, ProviderError) as e:
            why = str(e)[:400]
            return [(row, lambda: Check(row, "skip", why, "check preflight.providers"))]
        return named or [(row, lambda: Check(row, "skip", f"no preflight checks for provider {name!r} yet"))]

    def _universe(self) -> Check:
        from observer.heal.preflight.universe import check_universe

        # Track A's provider lists the universe; the first checked provider when that is empty
        name = TrackAConfig.from_config(self.cfg).provider or next(iter(self.p.providers), None)
        prov = self.provider(name) if name and self.store is not None else None
        return check_universe(self.root, self.day, self.cfg, self.calendar or calendar_from_config(self.cfg),
                              self.clock, self.store, prov, self.program)
