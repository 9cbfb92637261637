"""A small real day tree (written by the real Store) and the real programs run on it as subprocesses,
with their peak memory (wait4 in a small launcher) and a timeout, for the hostile-input reader tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import orjson

from observer.core.clock import NS, kst_ns
from observer.store import paths
from observer.store.store import Store

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / "bin"
DAY = date(2026, 3, 16)  # a Monday, a KRX trading day
YMD = "20260316"
T0 = kst_ns(DAY, "100000")
N_TRADES = 20


def trade(i: int, symbol: str = "005930") -> dict:
    return {"v": 1, "kind": "trade", "provider": "kis", "market": "krx", "symbol": symbol,
            "exch_ns": T0 + i * NS, "recv_ns": T0 + i * NS + 1000, "quality": "normal", "price": 1000,
            "qty": 10, "cum_vol": 1000 + 10 * (i + 1), "side": "buy"}


def make_tree(root: Path) -> Path:
    """N_TRADES valid trades in one scalp file (the real writer) and a config for the programs that
    need one; returns the scalp file."""
    root.mkdir(parents=True, exist_ok=True)
    store = Store(root, program="test", provider="kis")
    part = store.partition("scalp", "kis", "krx")
    for i in range(N_TRADES):
        r = trade(i)
        part.append(r, r["recv_ns"])
    part.close()
    store.close()
    (f,) = [p for _, p in _scalp_files(root)]
    (root.parent / "observer.toml").write_text(f'data_dir = "{root}"\nsecrets_file = "{root.parent / "absent.env"}"\n')
    return f


def _scalp_files(root: Path):
    from observer.store.reader import day_files

    return day_files(root, DAY, ("scalp",))


def scalp_path(root: Path, hhmmss: str) -> Path:
    """Where the layout puts a 10-minute scalp file starting at hhmmss (for a FIFO or symlink)."""
    return paths.scalp_file(root, "kis", "krx", paths.window_start_ns(kst_ns(DAY, hhmmss), 10))


def append(path: Path, *lines: bytes) -> None:
    with open(path, "ab") as f:
        for line in lines:
            f.write(line + b"\n")


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    rss_mb: float
    seconds: float


def program_args(name: str, root: Path) -> list[str]:
    """The program's command line for the tree's day (dry where the program has no side effects to
    avoid; the gap-filler has no REST credentials here, so it detects and marks only)."""
    cfg = str(root.parent / "observer.toml")
    return {
        "observer-replay": [str(root), "--date", YMD],
        "observer-verify": [str(root)],
        "observer-audit": ["--config", cfg, "--date", YMD, "--data-dir", str(root), "--json"],
        "observer-gap-filler": ["--config", cfg, "--date", YMD, "--progress", "off"],
    }[name]


# Runs the program as its own child and reports that child's peak RSS: measured from the test process
# itself, a forked child inherits the parent's high-water mark across exec (and pytest may be large).
_LAUNCHER = """
import os, sys
rss_path, *cmd = sys.argv[1:]
pid = os.fork()
if pid == 0:
    os.execv(cmd[0], cmd)
_, status, ru = os.wait4(pid, 0)
with open(rss_path, "w") as f:
    f.write(str(ru.ru_maxrss))
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def run(name: str, root: Path, timeout: float = 120.0) -> Run:
    """Run bin/<name> on the tree; a hang ends at `timeout` (its process group is killed, TimeoutError)."""
    t0 = time.monotonic()
    env = dict(os.environ, OBSERVER_CONFIG=str(root.parent / "observer.toml"))
    out_p, err_p, rss_p = (root.parent / f"{name}.{x}" for x in ("out", "err", "rss"))
    with open(out_p, "wb") as out, open(err_p, "wb") as err:
        p = subprocess.Popen([sys.executable, "-c", _LAUNCHER, str(rss_p), sys.executable, str(BIN / name),
                              *program_args(name, root)], stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                             env=env, start_new_session=True)
    try:
        code = p.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        raise TimeoutError(f"{name} did not finish within {timeout:.0f} s (hangs on the tree)") from None
    return Run(code, out_p.read_text("utf-8", "replace"), err_p.read_text("utf-8", "replace"),
               int(rss_p.read_text()) / 1024, time.monotonic() - t0)


def reported(name: str, r: Run, root: Path) -> str:
    """The text in which the program reports the tree's unreadable lines (the issue path of
    observer-verify): replay and verify print them, the audit and the gap-filler put them into
    quality.json's read_issues."""
    if name == "observer-replay":
        return r.stderr
    if name == "observer-verify":
        return r.stdout
    q = orjson.loads((root / "reports" / YMD / "quality.json").read_bytes())
    return "\n".join(q["read_issues"])
