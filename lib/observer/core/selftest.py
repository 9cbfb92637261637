"""The self-test behind every program's --self-test (preflight runs it for each installed program).

It proves, before the open, that the program can import everything it will ever import:
- every observer.* module;
- every third-party module the code imports only inside a function (LAZY_IMPORTS): those fail
  only when their code path first runs, e.g. `telegram` at the first alert;
- the whole installed dependency closure, as `pip check` does: every requirement (markers
  evaluated, versions compared) of every distribution reachable from ours. On 2026-01-19 the
  recovery worker lacked `httpx`, a dependency of python-telegram-bot, not one of ours.

Each failure is one line starting with its kind (FAILURE_KINDS); fix_for() turns lines of that
form (or a traceback's last line) into the suggested fix, so a broken import in our own code is
never answered with "install the missing package".
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from importlib import metadata

OUR_DIST = "stock-trading-observer"

# Third-party modules imported inside functions in lib/observer, by full dotted name. The one list:
# tests/heal/test_selftest.py scans lib for function-level imports and fails when one is missing
# here (or when an entry here is no longer imported anywhere).
LAZY_IMPORTS = (
    "holidays",          # heal/preflight/guard.py: NYSE holidays (only with deploy_guard.us_market)
    "jsonschema",        # core/config.py: only when a config is loaded (a refused flag starts faster)
    "packaging.requirements",  # core/selftest.py itself: so a missing `packaging` is reported, not a crash
    "packaging.version",  # core/selftest.py
    "telegram",          # alerts/transport.py: the Telegram sender (needs httpx)
    "telegram.request",  # alerts/transport.py
)

# the first word(s) of every failure line, and what to do about it
MISSING, CONFLICT, OUR_CODE, IMPORT = "missing dependency", "version conflict", "our code", "import"
FAILURE_KINDS = (MISSING, CONFLICT, OUR_CODE, IMPORT)

FIX_INSTALL = ("install the missing package(s) (or the required version) named above into the venv: "
               "reinstall with sudo ./install.sh (a package removed or replaced by hand, or an incomplete wheel set)")
FIX_OUR_CODE = ("our own code is broken, not a missing package: deploy a release that passes its tests "
                "(sudo ./install.sh from a good checkout)")
FIX_UNDECLARED = ("a module is missing that no installed package declares: install the package that provides it "
                  "and, if our code imports it, declare it in pyproject.toml")


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _dist(name: str) -> metadata.Distribution | None:
    try:
        return metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None


def _version_ok(specifier, version: str) -> bool:
    from packaging.version import InvalidVersion, Version

    try:
        return specifier.contains(Version(version), prereleases=True)
    except InvalidVersion:  # a legacy version string: pip check reports nothing either
        return True


def dependency_failures(root: str = OUR_DIST) -> list[str]:
    """Every unmet requirement in the installed closure of `root`, one line each, naming the missing
    package, the package that needs it and the chain from `root`."""
    try:
        from packaging.requirements import InvalidRequirement, Requirement
    except ImportError:
        # our declared dependency (it evaluates markers and versions exactly as pip does); without
        # it the closure cannot be checked, which is itself the failure to report
        return [f"{MISSING} packaging: not installed (required by {root}; the self-test needs it to "
                "check the dependency closure)"]
    top = _dist(root)
    if top is None:
        return [f"{MISSING} {root}: not installed (the package itself: its dependencies cannot be checked)"]
    failures: list[str] = []
    seen: set[tuple[str, frozenset]] = set()
    # (distribution, extras asked of it, chain of names from root)
    todo: list[tuple[metadata.Distribution, frozenset, tuple[str, ...]]] = [(top, frozenset(), (root,))]
    while todo:
        dist, extras, chain = todo.pop()
        key = (_canon(dist.metadata["Name"] or ""), extras)
        if key in seen:
            continue
        seen.add(key)
        here = f"{dist.metadata['Name']} {dist.version}"
        for spec in dist.requires or []:
            try:
                req = Requirement(spec)
            except InvalidRequirement as e:
                failures.append(f"{CONFLICT} {dist.metadata['Name']}: unreadable requirement {spec!r}: {e}")
                continue
            # a requirement applies when its marker holds for the base install or for an extra asked of it
            if req.marker is not None and not any(req.marker.evaluate({"extra": x}) for x in ("", *sorted(extras))):
                continue
            via = " -> ".join((*chain, req.name))
            dep = _dist(req.name)
            if dep is None:
                failures.append(f"{MISSING} {req.name}: not installed (required by {here} as '{spec}'; via {via})")
                continue
            if req.specifier and not _version_ok(req.specifier, dep.version):
                failures.append(f"{CONFLICT} {req.name} {dep.version}: {here} requires '{spec}' (via {via})")
            todo.append((dep, frozenset(req.extras), (*chain, req.name)))
    return sorted(set(failures))


def _import_failure(module: str, e: BaseException) -> str:
    text = f"{module}: {type(e).__name__}: {e}"
    missing = getattr(e, "name", None) if isinstance(e, ModuleNotFoundError) else None
    if missing and not missing.split(".")[0] == "observer":
        return f"{IMPORT} {text}"  # a third-party module is absent: the closure lines say which package
    return f"{OUR_CODE} {text}"


def import_failures() -> list[str]:
    import observer

    failures = []
    for mod in pkgutil.walk_packages(observer.__path__, "observer."):
        try:
            importlib.import_module(mod.name)
        except Exception as e:  # ImportError, but also a SyntaxError or NameError at import time
            failures.append(_import_failure(mod.name, e))
    for name in LAZY_IMPORTS:
        try:
            importlib.import_module(name)
        except Exception as e:
            failures.append(f"{IMPORT} {name} (imported lazily by observer): {type(e).__name__}: {e}")
    return failures


def self_test() -> list[str]:
    """All failures, the dependency closure first (it names the package to install)."""
    return dependency_failures() + import_failures()


def fix_for(lines: list[str]) -> str:
    """The suggested fix for self-test failure lines (or a traceback's last line)."""
    if any(ln.startswith((MISSING, CONFLICT)) for ln in lines):
        return FIX_INSTALL
    if any(ln.startswith(OUR_CODE) for ln in lines):
        return FIX_OUR_CODE
    for ln in lines:
        m = re.search(r"No module named '([^']+)'", ln)
        if m:
            return FIX_OUR_CODE if m.group(1).split(".")[0] == "observer" else FIX_UNDECLARED
    return FIX_OUR_CODE
