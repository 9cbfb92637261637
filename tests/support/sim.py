"""The simulator as tests start it: in this process, its real HTTP and WebSocket servers on 127.0.0.1."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson

from observer.core.clock import Clock
from observer.sim import Simulator, run_in_thread

# the app key and secret the simulator accepts unless told otherwise
SIM_KIS_SECRETS = "KIS_APP_KEY=PStestappkey000001\nKIS_APP_SECRET=testsecret-0000000001\n"


@contextmanager
def simulators(tmp_path: Path, **defaults) -> Iterator[Callable[..., Simulator]]:
    """A factory: make(**kw) starts a simulator with `defaults` under `kw`, each with a ground-truth
    directory of its own under tmp_path (gt0, gt1, …); every one started is stopped on leaving."""
    started: list[Simulator] = []

    def make(**kw) -> Simulator:
        kw = {**defaults, **kw}
        kw.setdefault("ground_truth", str(tmp_path / f"gt{len(started)}"))
        sim = run_in_thread(**kw)
        started.append(sim)
        return sim

    try:
        yield make
    finally:
        for s in started:
            s.stop()


def start_on_clock(tmp: Path, clock: Clock, **kw) -> tuple[Simulator, list[dict]]:
    """A simulator on the market clock the code under test shares, its ground truth in tmp/gt (server rate
    limit 200/s unless kw says otherwise). Returns it with its universe, also written to tmp/symbols.txt
    (the candidates file, one symbol a line)."""
    sim = run_in_thread(clock=clock, **{"rate_limit": 200.0, **kw, "ground_truth": str(tmp / "gt")})
    universe = orjson.loads((tmp / "gt" / "universe.json").read_bytes())
    (tmp / "symbols.txt").write_text("".join(u["symbol"] + "\n" for u in universe))
    return sim, universe


def write_secrets(path: Path, extra: str = "") -> Path:
    """The secrets file the simulator accepts (mode 0600, as the loader requires), `extra` lines appended."""
    path.write_text(SIM_KIS_SECRETS + extra)
    os.chmod(path, 0o600)
    return path


def sim_config(sim: Simulator, root: Path, secrets_file: Path, candidates: Path) -> dict:
    """The config of a tree recorded from `sim` (before validation; tests merge their own keys in)."""
    urls = sim.urls()
    return {
        "data_dir": str(root), "secrets_file": str(secrets_file),
        "store": {"fsync_interval_ms": 200},
        "universe": {"candidates_file": str(candidates)},
        "providers": {"kis": {"env": "sim", "rest_url": urls["rest"], "ws_url": urls["ws"], "rate_limit_per_s": 150}},
    }


def merge_config(dst: dict, src: dict) -> dict:
    """dst with src merged in, tables key by key (a test's overrides on sim_config's base)."""
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            merge_config(dst[k], v)
        else:
            dst[k] = v
    return dst


def busiest(env, n: int) -> list[str]:
    """The n active symbols of env's ground-truth universe (`universe_truth`) that trade most often."""
    active = [s for s, u in env.universe_truth.items() if u["active"]]
    return sorted(active, key=lambda s: -env.universe_truth[s]["rate"])[:n]


__all__ = ["SIM_KIS_SECRETS", "busiest", "merge_config", "sim_config", "simulators", "start_on_clock", "write_secrets"]
