"""store/ is the only code that touches the data tree: an `ast` scan of lib/observer outside store/
for the calls that create, change, rename, lock or delete files. Each one found fails the test with
its file:line, unless ALLOWED lists it with the reason it writes outside the tree.

The scan is syntactic: a method call named like a Path writer (`x.unlink()`, `x.rename(...)`) counts
whatever `x` is, so a file that writes outside the tree by design is allowed as a whole or by function.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

LIB = Path(__file__).resolve().parents[1] / "lib" / "observer"
OWNER = LIB / "store"

# module functions that change the file system (or lock a file)
MODULE_CALLS = {
    "os": {"replace", "rename", "renames", "unlink", "remove", "rmdir", "removedirs", "mkdir", "makedirs",
           "link", "symlink", "truncate", "chmod", "chown", "mkfifo", "utime"},
    "shutil": {"rmtree", "move", "copy", "copy2", "copyfile", "copytree", "copymode", "copystat"},
    "fcntl": {"flock", "lockf"},
}
# Path methods that change the file system
METHODS = {"write_text", "write_bytes", "unlink", "rename", "mkdir", "touch", "rmdir", "symlink_to",
           "hardlink_to", "chmod"}
OPEN_WRITE_FLAGS = {"O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND"}

# (path relative to lib/observer, function name or "*" for the whole file) -> why it is not the tree
ALLOWED: dict[tuple[str, str], str] = {
    ("heal/preflight/host.py", "check_disk_write"):
        "the disk-write probe writes and fsyncs a scratch file to measure the disk itself",
    ("cli.py", "check_tree"):
        "creates data_dir itself (its last component only) for the collectors, before any store exists",
    ("lifecycle/pull.py", "*"):
        "runs on the user's PC: writes the local copy of the packages (not a data tree) and, over SFTP, "
        "the receipt on the server (sftp.rename, not a local file system call)",
    ("programs/demo.py", "*"): "the demo's own work directory (a temp dir or --keep DIR): config, secrets, logs",
    ("sim/truth.py", "*"): "the simulator's ground truth, written to its own output directory",
    ("sim/process.py", "*"): "the simulator process's stderr log, in the caller's directory",
    ("sim/testfaults.py", "*"):
        "test-only fault triggers, consumed from the directory OBSERVER_TEST_FAULTS names (outside the tree)",
}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def _names(node: ast.AST) -> set[str]:
    return {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)} | \
        {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


_MODE = re.compile(r"^[rwxabt+]+(?::\w*)?$")


def _open_mode(call: ast.Call, builtin: bool) -> str | None:
    """The mode of an open-like call: open()'s second argument; for the other opens (Path.open,
    os.fdopen, tarfile.open ...) the mode keyword or a positional string that looks like a mode."""
    mode = next((k.value for k in call.keywords if k.arg == "mode"), None)
    if mode is None and builtin:
        mode = call.args[1] if len(call.args) > 1 else None
    elif mode is None:
        mode = next((a for a in call.args if isinstance(a, ast.Constant) and isinstance(a.value, str)
                     and _MODE.match(a.value)), None)
    if isinstance(mode, ast.Constant) and isinstance(mode.value, str):
        return mode.value
    return None if mode is None or not builtin else "?"  # open() with a computed mode: counted as a write


def writes(tree: ast.AST) -> list[tuple[int, str, str]]:
    """(line, enclosing function, what) of every file-system change in a module."""
    out: list[tuple[int, str, str]] = []

    def visit(node: ast.AST, func: str) -> None:
        for child in ast.iter_child_nodes(node):
            f = child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else func
            if isinstance(child, ast.Import | ast.ImportFrom):
                mods = [a.name for a in child.names] if isinstance(child, ast.Import) else [child.module or ""]
                if "tempfile" in mods:
                    out.append((child.lineno, func, "imports tempfile"))
            if isinstance(child, ast.Call):
                name = _dotted(child.func)
                mod, _, attr = name.rpartition(".")
                if (name == "open" or attr in ("open", "fdopen")) and \
                        any(c in (_open_mode(child, name == "open") or "r") for c in "wax+?"):
                    out.append((child.lineno, func, f"{name or attr}(..., {_open_mode(child, name == 'open')!r})"))
                elif name == "os.open" and len(child.args) > 1 and _names(child.args[1]) & OPEN_WRITE_FLAGS:
                    out.append((child.lineno, func, "os.open for writing"))
                elif attr in MODULE_CALLS.get(mod, ()):
                    out.append((child.lineno, func, f"{name}()"))
                elif mod and mod not in MODULE_CALLS and attr in METHODS:
                    out.append((child.lineno, func, f".{attr}()"))
            visit(child, f)

    visit(tree, "<module>")
    return out


def scan() -> list[str]:
    found = []
    for path in sorted(LIB.rglob("*.py")):
        if OWNER in path.parents:
            continue
        rel = path.relative_to(LIB).as_posix()
        for line, func, what in writes(ast.parse(path.read_text(), str(path))):
            if (rel, "*") not in ALLOWED and (rel, func) not in ALLOWED:
                found.append(f"lib/observer/{rel}:{line} in {func}(): {what}")
    return found


def test_only_store_writes_the_tree():
    found = scan()
    assert not found, ("file-system writes outside lib/observer/store/ (use observer.store.fs / state / "
                       "writer, or add an ALLOWED entry saying why it is not the data tree):\n  " +
                       "\n  ".join(found))


def test_allowlist_has_no_stale_entries():
    """Every ALLOWED entry still names a file (and function) that writes: a cleaned-up module leaves it."""
    stale = []
    for rel, func in ALLOWED:
        path = LIB / rel
        if not path.is_file():
            stale.append(f"{rel}: no such file")
            continue
        hits = writes(ast.parse(path.read_text(), str(path)))
        if not any(func in ("*", f) for _, f, _ in hits):
            stale.append(f"{rel} {func}: writes nothing")
    assert not stale, stale


def test_the_scan_finds_each_kind_of_write():
    """The detector itself: each primitive the rule covers is found, reads are not."""
    src = '''
import os, shutil, fcntl, tempfile
def f(p, fd):
    open(p, "w"); open(p, "ab"); open(p, mode="r+"); open(p, "rb"); open(p)
    os.open(p, os.O_WRONLY | os.O_CREAT, 0o600); os.open(p, os.O_RDONLY)
    os.replace(p, p); os.rename(p, p); os.unlink(p); os.remove(p); shutil.rmtree(p); shutil.move(p, p)
    fcntl.flock(fd, fcntl.LOCK_EX)
    p.write_text("x"); p.write_bytes(b""); p.unlink(); p.rename(p); p.mkdir(); p.touch()
    p.open("w"); os.fdopen(fd, "wb"); p.open(); os.fdopen(fd, "rb"); tarfile.open(fileobj=p, mode="r|")
    p.read_text(); "a".replace("a", "b"); os.stat(p)
'''
    got = [w for _, _, w in writes(ast.parse(src))]
    assert got == ["imports tempfile", "open(..., 'w')", "open(..., 'ab')", "open(..., 'r+')", "os.open for writing",
                   "os.replace()", "os.rename()", "os.unlink()", "os.remove()", "shutil.rmtree()", "shutil.move()",
                   "fcntl.flock()", ".write_text()", ".write_bytes()", ".unlink()", ".rename()", ".mkdir()",
                   ".touch()", "p.open(..., 'w')", "os.fdopen(..., 'wb')"], got
