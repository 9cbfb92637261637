"""The simulator as tests start it: in this process, its real HTTP and WebSocket servers on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from observer.sim import Simulator, run_in_thread


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


def busiest(env, n: int) -> list[str]:
    """The n active symbols of env's ground-truth universe (`universe_truth`) that trade most often."""
    active = [s for s, u in env.universe_truth.items() if u["active"]]
    return sorted(active, key=lambda s: -env.universe_truth[s]["rate"])[:n]


__all__ = ["busiest", "simulators"]
