"""Imports only point down: every module of lib/observer/ imports only its own package and packages on
lower floors (docs/architecture.md, "Library floors"). Every import counts, the ones inside functions too
(a lazy import is still a dependency: it fails at the first alert instead of at start)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[1] / "lib"

# Lowest first. A package may import its own modules and any package on a lower floor; never one on its
# own floor (no sideways imports) or above. The package root (observer/__init__: __version__) counts as core.
FLOORS: list[tuple[str, tuple[str, ...]]] = [
    ("core", ("core",)),                          # config, clock, calendar shape, contracts, exit codes, ...
    ("markets", ("markets",)),                    # market definitions: calendar, session, time zone, universe
    ("store", ("store",)),                        # the tree: paths, writer, reader, record and marker vocabulary
    ("services", ("telemetry", "providers", "sim")),  # alerts+metrics; broker adapters; the simulator
    ("domain", ("recover", "collect", "lifecycle")),  # what the programs do, independent of each other
    ("heal", ("heal",)),                          # looks after the domain: preflight, watchdog, expected symbols
    ("cli", ("cli",)),                            # what every program shares on its command line
    ("programs", ("programs",)),                  # one module per program: parse, cli.start, one call, exit code
    ("deploy", ("deploy",)),                      # install-time (shell scripts): nothing imports it
]
# Packages held to less than their floor allows. The simulator speaks the wire protocol written from the
# provider's reference, independently of the clients' decoders, so one misreading cannot pass both sides.
ONLY: dict[str, tuple[str, ...]] = {"sim": ("core",)}

FLOOR_OF = {pkg: i for i, (_, pkgs) in enumerate(FLOORS) for pkg in pkgs}


def module_name(path: Path, lib: Path) -> str:
    parts = list(path.relative_to(lib).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_module(name: str, lib: Path) -> bool:
    p = lib.joinpath(*name.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def imports_of(path: Path, lib: Path) -> list[tuple[int, str]]:
    """(line, module) for every import of an observer module in the file, nested ones included.
    `from observer.x import y` counts as observer.x.y when y is a module, else as observer.x."""
    me = module_name(path, lib)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "observer"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "observer":
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                out.append((node.lineno, sub if is_module(sub, lib) else target))
    return sorted(set(out))  # `from m import a, b`: one import of m


def package_of(module: str) -> str:
    """observer.collect.runtime -> collect; observer.cli -> cli; observer -> core."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "core"


def floor_name(pkg: str) -> str:
    i = FLOOR_OF[pkg]
    return f"{i} {FLOORS[i][0]}"


def violations(lib: Path) -> list[str]:
    problems = []
    for path in sorted((lib / "observer").rglob("*.py")):
        me = module_name(path, lib)
        mine = package_of(me)
        if mine not in FLOOR_OF:
            problems.append(f"{me}: package {mine!r} is on no floor (add it to FLOORS and docs/architecture.md)")
            continue
        for line, target in imports_of(path, lib):
            theirs = package_of(target)
            if theirs == mine:
                continue
            if theirs not in FLOOR_OF:
                problems.append(f"{me}:{line} -> {target} (package {theirs!r} is on no floor)")
            elif mine in ONLY and theirs not in ONLY[mine]:
                problems.append(f"{me}:{line} -> {target} (floor {floor_name(mine)}: {mine} imports only "
                                f"{', '.join(ONLY[mine])}, not {theirs})")
            elif FLOOR_OF[theirs] >= FLOOR_OF[mine]:
                how = "sideways" if FLOOR_OF[theirs] == FLOOR_OF[mine] else "up"
                problems.append(f"{me}:{line} -> {target} (floor {floor_name(mine)} imports floor "
                                f"{floor_name(theirs)}: {how})")
    return problems


def test_imports_only_point_down():
    problems = violations(LIB)
    assert not problems, "imports that do not point down:\n" + "\n".join(problems)


def test_every_package_is_on_a_floor():
    pkgs = {p.name for p in (LIB / "observer").iterdir() if (p / "__init__.py").is_file()}
    pkgs |= {p.stem for p in (LIB / "observer").glob("*.py") if p.stem != "__init__"}
    assert pkgs <= set(FLOOR_OF), f"not on a floor: {sorted(pkgs - set(FLOOR_OF))}"
    assert not set(FLOOR_OF) - pkgs, f"floors name packages that do not exist: {sorted(set(FLOOR_OF) - pkgs)}"


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in {"observer/__init__.py": "", **files}.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        for parent in p.relative_to(tmp_path).parents:
            if parent != Path("."):
                (tmp_path / parent / "__init__.py").touch()
        p.write_text(text)
    return tmp_path


@pytest.mark.parametrize("files, want", [
    # an import inside a function counts
    ({"observer/heal/w.py": "def f():\n    from observer.deploy.unitctl import request\n",
      "observer/deploy/unitctl.py": ""},
     ["observer.heal.w:2 -> observer.deploy.unitctl (floor 5 heal imports floor 8 deploy: up)"]),
    # `from package import module` is an import of that module, not of the package
    ({"observer/collect/r.py": "from observer import cli\n", "observer/cli.py": ""},
     ["observer.collect.r:1 -> observer.cli (floor 4 domain imports floor 6 cli: up)"]),
    # sideways on one floor
    ({"observer/collect/t.py": "import observer.recover.gaps\n", "observer/recover/gaps.py": ""},
     ["observer.collect.t:1 -> observer.recover.gaps (floor 4 domain imports floor 4 domain: sideways)"]),
    # relative imports resolve against the package
    ({"observer/store/s.py": "from ..telemetry import metrics\n", "observer/telemetry/metrics.py": ""},
     ["observer.store.s:1 -> observer.telemetry.metrics (floor 2 store imports floor 3 services: up)"]),
    # the simulator imports core only, though the store is below it
    ({"observer/sim/m.py": "from observer.store import paths\n", "observer/store/paths.py": ""},
     ["observer.sim.m:1 -> observer.store.paths (floor 3 services: sim imports only core, not store)"]),
    # a new package nobody placed
    ({"observer/extra/x.py": ""}, ["observer.extra: package 'extra' is on no floor (add it to FLOORS and "
                                   "docs/architecture.md)", "observer.extra.x: package 'extra' is on no floor "
                                   "(add it to FLOORS and docs/architecture.md)"]),
    # down, and within one package: fine
    ({"observer/programs/p.py": "from observer import cli\nfrom observer.heal import w\nfrom . import q\n",
      "observer/programs/q.py": "", "observer/cli.py": "from observer.core import x\n",
      "observer/core/x.py": "import observer\n", "observer/heal/w.py": "from observer.collect import r\n",
      "observer/collect/r.py": "from observer.store import s\n", "observer/store/s.py": ""}, []),
])
def test_the_check_names_each_violation(tmp_path, files, want):
    assert violations(_tree(tmp_path, files)) == want
