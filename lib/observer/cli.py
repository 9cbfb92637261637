"""What every program shares on its command line: --config, --check-config, --self-test, --log-level,
exit codes, logging set-up. A program module builds its parser with make_parser() and calls
start() first thing in main()."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from observer.core.clock import Clock, clock_from_env
from observer.core.config import ConfigError, load_config
from observer.core.logging import get_logger, setup_logging
from observer.core.selftest import self_test

# Exit codes (the same for every program; each program's --help says which it uses)
EXIT_OK = 0          # done, nothing wrong
EXIT_PROBLEMS = 1    # ran, found problems (verify: damage; preflight: warnings; guard: refused)
EXIT_USAGE = 2       # bad arguments or configuration
EXIT_FAILED = 3      # could not do its job (broker unreachable, disk refuses, ...)

EPILOG = ("exit codes: 0 ok, 1 problems found, 2 bad usage/config, 3 failed. "
          "Logs are JSON lines on stderr. Config: --config, else $OBSERVER_CONFIG, else /etc/observer/observer.toml.")


@dataclass
class Context:
    program: str
    cfg: dict
    clock: Clock
    args: argparse.Namespace


class ObserverParser(argparse.ArgumentParser):
    """--self-test wins over everything else on the command line (even missing required arguments),
    so preflight can run `<program> --self-test` for every program the same way."""

    def parse_args(self, args=None, namespace=None):
        argv = sys.argv[1:] if args is None else list(args)
        if "--self-test" in argv:
            run_self_test(self.prog)
        return super().parse_args(argv, namespace)


def run_self_test(program: str) -> None:
    """Import everything the program needs and check the installed dependency closure
    (observer.core.selftest); print the result and exit (0 ok, 3 failed)."""
    failures = self_test()
    for f in failures:
        print(f"self-test: {f}", file=sys.stderr)
    print(f"self-test: {program}: {'FAILED' if failures else 'ok'}", file=sys.stderr)
    sys.exit(EXIT_FAILED if failures else EXIT_OK)


def make_parser(program: str, description: str, *, dry_run: bool = False) -> argparse.ArgumentParser:
    p = ObserverParser(prog=program, description=description, epilog=EPILOG)
    p.add_argument("--config", metavar="PATH", help="observer.toml to use")
    p.add_argument("--check-config", action="store_true", help="validate the config (and show every error), then exit")
    p.add_argument("--self-test", action="store_true",
                   help="import every module and dependency of the program, then exit (preflight runs this)")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="override log.level")
    if dry_run:
        p.add_argument("--dry-run", action="store_true", help="say what would be done, change nothing")
    return p


def start(program: str, args: argparse.Namespace, *, need_config: bool = True) -> Context:
    """Set up logging and config; handle --check-config and --self-test (these exit)."""
    setup_logging(program, args.log_level or "INFO")
    log = get_logger(program)
    if args.self_test:
        run_self_test(program)
    try:
        cfg = load_config(args.config) if need_config or args.config or args.check_config else {}
    except ConfigError as e:
        print(f"{program}: config error: {e}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    if args.check_config:
        print(f"{program}: config {cfg.get('_source')} is valid")
        sys.exit(EXIT_OK)
    if cfg and not args.log_level:
        setup_logging(program, cfg["log"]["level"])
    log.debug("started", extra={"config": cfg.get("_source")})
    return Context(program, cfg, clock_from_env(), args)
