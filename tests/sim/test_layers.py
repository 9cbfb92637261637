"""The simulator's layering: it imports core only (never the clients' decoders), and a provider's
servers see the simulator through sim/interfaces.py only, never the Simulator itself."""

import ast
from pathlib import Path

SIM = Path(__file__).resolve().parents[2] / "lib" / "observer" / "sim"
# the modules that assemble the simulator; every other one is a part it wires together
ASSEMBLY = {"__init__.py", "server.py", "process.py"}


def _imports(path: Path) -> set[str]:
    """Every module `path` imports (TYPE_CHECKING imports included), `from pkg import mod` as pkg.mod."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def test_the_simulator_imports_core_only():
    bad = {f.name: sorted(m for m in _imports(f) if m.startswith("observer.")
                          and not m.startswith(("observer.core", "observer.sim")))
           for f in SIM.glob("*.py")}
    assert not {k: v for k, v in bad.items() if v}, bad


def test_no_part_reaches_for_the_simulator():
    parts = [f for f in SIM.glob("*.py") if f.name not in ASSEMBLY]
    assert {"ws.py", "rest.py", "control.py", "quotes.py", "kis.py"} <= {f.name for f in parts}
    bad = {f.name: sorted(m for m in _imports(f) if m in ("observer.sim.server", "observer.sim.Simulator",
                                                           "observer.sim.run_in_thread"))
           for f in parts}
    assert not {k: v for k, v in bad.items() if v}, bad
    named = [f.name for f in parts if "Simulator" in {n.id for n in ast.walk(ast.parse(f.read_text()))
                                                      if isinstance(n, ast.Name)}]
    assert not named, f"these parts name the Simulator: {named}"
