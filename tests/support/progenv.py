"""The real programs against the simulator: the simulator (in a thread, sharing an anchored market clock
with the programs through OBSERVER_CLOCK), a data tree, a config file, and the programs run as
subprocesses (the preflight and watchdog tests, and the end-to-end tests of other packages)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import orjson

from observer.core.clock import ScaledClock, kst_datetime, parse_yyyymmdd
from tests.support.sim import merge_config, sim_config, start_on_clock, write_secrets

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / "bin"
PY = sys.executable
DAY = "20260316"  # a Monday, a KRX trading day


def toml_dump(d: dict, prefix: str = "") -> str:
    """Just enough TOML for test configs: scalars, lists of scalars, nested tables."""
    def val(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        raise TypeError(v)

    lines, tables = [], []
    for k, v in d.items():
        if isinstance(v, dict):
            tables.append((k, v))
        else:
            lines.append(f"{k} = {val(v)}")
    out = "\n".join(lines) + "\n"
    for k, v in tables:
        name = f"{prefix}.{k}" if prefix else k
        out += f"\n[{name}]\n" + toml_dump(v, name)
    return out


class Env:
    """A simulator on 127.0.0.1 whose market clock the programs share, a tree, a config, secrets."""

    def __init__(self, tmp: Path, start: str = "08:30:00", day: str = DAY, sim_kw: dict | None = None,
                 cfg: dict | None = None, programs=("observer-track-a", "observer-track-b", "observer-verify")):
        self.tmp = tmp
        self.day = parse_yyyymmdd(day)
        self.clock = ScaledClock(kst_datetime(self.day, start), 1.0, time.time_ns())
        kw = dict(seed=5, symbols=20, active=6, date=day, start=start, speed=1.0)
        kw.update(sim_kw or {})
        self.sim, self.universe = start_on_clock(tmp, self.clock, **kw)
        self.root = tmp / "data"
        self.root.mkdir(exist_ok=True)
        self.secrets = write_secrets(tmp / "secrets.env", "TELEGRAM_BOT_TOKEN=123456:test-token\nTELEGRAM_CHAT_ID=42\n")
        self.progs = tmp / "progs"
        self.progs.mkdir(exist_ok=True)
        for p in programs:
            (self.progs / p).symlink_to(BIN / p)
        self.cfg = {
            **sim_config(self.sim, self.root, self.secrets, tmp / "symbols.txt"),
            "preflight": {"programs_dir": str(self.progs), "ws_answer_s": 3, "token_wait_s": 5,
                          "load_warn_per_cpu": 1000, "load_fail_per_cpu": 2000, "memory_warn_mb": 64,
                          "memory_fail_mb": 32, "disk_min_free_mb": 1, "disk_warn_pct": 99.5,
                          "disk_fail_pct": 99.9},
        }
        merge_config(self.cfg, cfg or {})
        self.write_config()

    def write_config(self) -> Path:
        self.config = self.tmp / "observer.toml"
        self.config.write_text(toml_dump(self.cfg))
        return self.config

    def env(self, **more) -> dict:
        e = dict(os.environ)
        e["OBSERVER_CLOCK"] = self.clock.spec()
        e.pop("NOTIFY_SOCKET", None)
        e.pop("INVOCATION_ID", None)
        e.update(more)
        return e

    def run(self, program: str, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([PY, str(BIN / program), "--config", str(self.config), *args], capture_output=True,
                              text=True, env=env or self.env(), timeout=timeout)

    def preflight(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.run("observer-preflight", "--json", "--no-alert", *args, **kw)

    def events(self, event: str | None = None, provider: str = "system") -> list[dict]:
        p = self.root / "system" / "events" / provider / f"{self.day:%Y%m%d}.jsonl"
        if not p.exists():
            return []
        recs = [orjson.loads(x) for x in p.read_bytes().splitlines() if x.strip()]
        return [r for r in recs if event is None or r["event"] == event]

    def close(self) -> None:
        self.sim.stop()


def report(r: subprocess.CompletedProcess) -> dict:
    try:
        return json.loads(r.stdout)
    except ValueError:
        raise AssertionError(f"no JSON report (exit {r.returncode}):\n{r.stdout}\n{r.stderr[-3000:]}") from None


def checks(rep: dict) -> dict[str, dict]:
    return {c["name"]: c for c in rep["checks"]}


def make_venv(dest: Path, *, drop: tuple[str, ...] = (), broken_package: Path | None = None) -> Path:
    """A second installed environment: a fresh venv whose site-packages links every package of ours
    except `drop`; with `broken_package`, that directory is installed as `observer` (a real copy, not
    the editable link) with our dist-info, so it is what `import observer` finds."""
    subprocess.run([PY, "-m", "venv", "--without-pip", str(dest)], check=True, capture_output=True)
    ours = Path(sysconfig.get_paths()["purelib"])
    theirs = Path(subprocess.run([str(dest / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 capture_output=True, text=True, check=True).stdout.strip())
    for entry in ours.iterdir():
        name = entry.name
        if any(name == d or name.startswith(d + "-") or name.startswith(d.replace("-", "_") + "-") for d in drop):
            continue
        if broken_package is not None and name.startswith("__editable__.stock_trading_observer"):
            continue
        if name.startswith("__editable___stock_trading_observer") and broken_package is not None:
            continue
        if name in ("pip", "__pycache__") or name.startswith("pip-"):
            continue
        (theirs / name).symlink_to(entry)
    if broken_package is not None:
        shutil.copytree(broken_package, theirs / "observer")
    return dest / "bin" / "python"
