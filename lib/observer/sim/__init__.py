"""The market simulator: a deterministic KRX market speaking the KIS REST and WebSocket protocols on 127.0.0.1.

    from observer.sim import run_in_thread, SimProcess
    with run_in_thread(seed=1, symbols=200, active=20, speed=60, ground_truth=tmp) as sim:
        sim.urls()  # {"rest": ..., "ws": ..., "control": ...}

See docs/simulator.md.
"""

from observer.sim.process import SimProcess
from observer.sim.server import SimConfig, Simulator, run_in_thread

__all__ = ["SimConfig", "SimProcess", "Simulator", "run_in_thread"]
