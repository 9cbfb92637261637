"""What every program shares on its command line: --config, --check-config, --self-test, --log-level,
exit codes, logging set-up, the argument types (--date), the data-dir check and the top-level guard.
A program module builds its parser with make_parser(), calls start() first thing in main(), and its
bin/ script runs main() through run() so nothing reaches the terminal as a traceback."""

from __future__ import annotations

import argparse
import os
import re
import stat
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from observer.core.clock import Clock, clock_from_env
from observer.core.config import ConfigError, load_config, validate_config

# exit codes, the same for every program (each program's --help says which it uses): re-exported here
from observer.core.exitcodes import EXIT_FAILED, EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE  # noqa: F401
from observer.core.logging import get_logger, setup_logging

EPILOG = ("exit codes: 0 ok, 1 problems found, 2 bad usage/config, 3 failed. "
          "Logs are JSON lines on stderr. Config: --config, else $OBSERVER_CONFIG, else /etc/observer/observer.toml.")


# What a program may do with the data tree (start(tree=...)). Only the collectors own the tree: they
# create data_dir when it is missing (the installer creates it too), and only at the configured path.
# Every other program refuses a missing data_dir, so a mistyped --data-dir never grows a second tree.
TREE_READ = "read"      # exists, is a directory, readable (verify, replay)
TREE_WRITE = "write"    # ... and writable (audit, backup, retention, gap-filler, watchdog)
TREE_OWN = "own"        # ... created when missing (track-a, track-b)
TREE_EXISTS = "exists"  # exists and is a directory; the program checks the rest itself (preflight's table)

_DATE_RE = re.compile(r"[0-9]{8}")           # ASCII only: str.isdigit() also takes full-width digits
_TIME_RE = re.compile(r"[0-9]{2}:[0-9]{2}(:[0-9]{2})?")


@dataclass
class Context:
    program: str
    cfg: dict
    clock: Clock
    args: argparse.Namespace
    root: Path | None = None  # the checked data tree (start(tree=...)), else None
    config_error: str | None = None  # start(config_as_check=True): why the config did not load (cfg = defaults)


class ObserverParser(argparse.ArgumentParser):
    """--self-test wins over everything else on the command line (even missing required arguments),
    so preflight can run `<program> --self-test` for every program the same way. Usage errors are one
    line (not the usage block), exit 2."""

    def parse_args(self, args=None, namespace=None):
        argv = sys.argv[1:] if args is None else list(args)
        if "--self-test" in argv:
            run_self_test(self.prog)
        return super().parse_args(argv, namespace)

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def date_arg(s: str) -> date:
    """argparse type for every --date: ASCII YYYYMMDD, a real day, inside the trading calendar's years."""
    if not _DATE_RE.fullmatch(s):
        raise argparse.ArgumentTypeError(f"bad date {s!r}: want YYYYMMDD (ASCII digits)")
    try:
        d = date(int(s[:4]), int(s[4:6]), int(s[6:8]))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"bad date {s!r}: {e}") from None
    from observer.markets import supported_years

    lo, hi = supported_years()
    if not lo <= d.year <= hi:
        raise argparse.ArgumentTypeError(f"bad date {s!r}: outside the trading calendar's years {lo}-{hi}")
    return d


def time_arg(s: str) -> str:
    """argparse type for a market time HH:MM[:SS] (ASCII, a real time of day); returns it unchanged."""
    if not _TIME_RE.fullmatch(s) or int(s[:2]) > 23 or int(s[3:5]) > 59 or (len(s) > 5 and int(s[6:]) > 59):
        raise argparse.ArgumentTypeError(f"bad time {s!r}: want HH:MM or HH:MM:SS")
    return s


def run_self_test(program: str) -> None:
    """Import everything the program needs and check the installed dependency closure
    (observer.core.selftest); print the result and exit (0 ok, 3 failed)."""
    from observer.core.selftest import self_test  # importlib.metadata: only when asked

    failures = self_test()
    for f in failures:
        print(f"self-test: {f}", file=sys.stderr)
    print(f"self-test: {program}: {'FAILED' if failures else 'ok'}", file=sys.stderr)
    sys.exit(EXIT_FAILED if failures else EXIT_OK)


def make_parser(program: str, description: str, *, dry_run: bool = False, epilog: str | None = None,
                formatter_class=argparse.HelpFormatter) -> argparse.ArgumentParser:
    p = ObserverParser(prog=program, description=description, formatter_class=formatter_class,
                       epilog=EPILOG if epilog is None else f"{epilog}\n{EPILOG}")
    p.add_argument("--config", metavar="PATH", help="observer.toml to use")
    p.add_argument("--check-config", action="store_true", help="validate the config (and show every error), then exit")
    p.add_argument("--self-test", action="store_true",
                   help="import every module and dependency of the program, then exit (preflight runs this)")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="override log.level")
    if dry_run:
        p.add_argument("--dry-run", action="store_true", help="say what would be done, change nothing")
    return p


def start(program: str, args: argparse.Namespace, *, need_config: bool = True, tree: str | None = None,
          config_as_check: bool = False) -> Context:
    """Set up logging and config; handle --check-config and --self-test (these exit). With `tree`
    (TREE_READ/WRITE/OWN/EXISTS) also check the data tree (args.data_dir, else data_dir from the
    config) and exit with one line when the program cannot use it. With `config_as_check` (preflight,
    whose table has a `config` row) a config that does not load is not an exit: Context.config_error
    says why, cfg holds the defaults, and the tree is not checked (its path is unknown)."""
    setup_logging(program, args.log_level or "INFO")
    log = get_logger(program)
    if args.self_test:
        run_self_test(program)
    config_error = None
    try:
        cfg = load_config(args.config) if need_config or args.config or args.check_config else {}
    except ConfigError as e:
        if not (config_as_check and not args.check_config):
            # --check-config lists every problem; a program's start says it on one line
            msg = str(e) if args.check_config else f"{e.path}: {'; '.join(one_line(p) for p in e.problems)}"
            print(f"{program}: config error: {msg}", file=sys.stderr)
            sys.exit(EXIT_USAGE)
        config_error, cfg = str(e), validate_config({})
    if args.check_config:
        print(f"{program}: config {cfg.get('_source')} is valid")
        sys.exit(EXIT_OK)
    if cfg and not args.log_level and config_error is None:
        setup_logging(program, cfg["log"]["level"])
    root = None
    if tree is not None and config_error is None:
        given = getattr(args, "data_dir", None) if tree != TREE_OWN else None
        root = Path(given or cfg["data_dir"])
        problem = check_tree(root, tree, flag="--data-dir" if given else "data_dir")
        if problem is not None:
            code, msg = problem
            print(f"{program}: {msg}", file=sys.stderr)
            sys.exit(code)
    log.debug("started", extra={"config": cfg.get("_source")})
    return Context(program, cfg, clock_from_env(), args, root, config_error)


def check_tree(root: Path, mode: str, *, flag: str = "data_dir") -> tuple[int, str] | None:
    """(exit code, one-line message) when a program with access `mode` cannot use the tree at `root`, else None.
    A path that is missing or not a directory is a configuration mistake (2); one the program may not
    read or write (permissions, a read-only file system) is a failure it cannot get past (3)."""
    if mode == TREE_OWN and not os.path.lexists(root):
        try:
            os.mkdir(root, 0o750)  # the last component only: a mistyped parent is still refused below
        except FileNotFoundError:
            return EXIT_USAGE, f"{flag} {root}: its parent directory does not exist (fix data_dir in the config)"
        except OSError as e:
            return EXIT_FAILED, f"{flag} {root}: cannot create it: {e.strerror}"
    try:
        st = os.stat(root)
    except FileNotFoundError:
        return EXIT_USAGE, (f"{flag} {root} does not exist (only the installer and the collectors create the tree; "
                            f"check the path)")
    except OSError as e:
        return EXIT_USAGE, f"{flag} {root}: {e.strerror}"
    if not stat.S_ISDIR(st.st_mode):
        return EXIT_USAGE, f"{flag} {root} is not a directory"
    if mode == TREE_EXISTS:
        return None
    if not os.access(root, os.R_OK | os.X_OK):
        return EXIT_FAILED, f"{flag} {root} is not readable (permission denied)"
    if mode in (TREE_WRITE, TREE_OWN):
        if not os.access(root, os.W_OK):
            return EXIT_FAILED, f"{flag} {root} is not writable ({_why_not_writable(root)})"
    return None


def _why_not_writable(path: Path) -> str:
    try:
        return "read-only file system" if os.statvfs(path).f_flag & os.ST_RDONLY else "permission denied"
    except OSError as e:
        return e.strerror or "permission denied"


def run(main, argv=None) -> int:
    """The top-level guard every bin/ script runs main() through: an exception nobody handled becomes
    one line and exit 3 on the terminal, with the full traceback in the JSON log at ERROR. (Tests that
    call main() directly still see the exception itself.)"""
    program = os.path.basename(sys.argv[0]) or "observer"
    try:
        return main(argv)
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        import logging

        if not any(getattr(h, "_observer", False) for h in logging.getLogger().handlers):
            setup_logging(program)
        get_logger(program).error("unexpected failure", exc_info=True)
        print(f"{program}: unexpected failure: {type(e).__name__}: {one_line(e)[:300]} "
              f"(traceback in the log above; exit {EXIT_FAILED})", file=sys.stderr)
        return EXIT_FAILED
