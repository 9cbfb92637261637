"""A simulator + data tree + config + secrets, in one object, for collector tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import orjson

from observer.core.clock import KST, ScaledClock, kst_datetime, parse_yyyymmdd
from observer.core.config import validate_config
from observer.core.secrets import load_secrets
from observer.store.store import Store
from observer.store.writer import Durability
from tests.support.sim import merge_config, sim_config, start_on_clock, write_secrets

DATE = "20260316"  # a Monday, a KRX trading day


@dataclass
class SimEnv:
    tmp: Path
    date: str = DATE
    start: str = "08:59:00"
    speed: float = 60.0
    symbols: int = 60
    active: int = 12
    sim_kw: dict = field(default_factory=dict)
    cfg_overrides: dict = field(default_factory=dict)

    def __post_init__(self):
        self.day: date = parse_yyyymmdd(self.date)
        self.root = self.tmp / "data"
        self.gt = self.tmp / "gt"
        self.clock = ScaledClock(kst_datetime(self.day, self.start), self.speed)
        kw = dict(seed=11, symbols=self.symbols, active=self.active, date=self.date, start=self.start,
                  speed=self.speed)
        kw.update(self.sim_kw)
        self.sim, uni = start_on_clock(self.tmp, self.clock, **kw)
        self.secrets_file = write_secrets(self.tmp / "secrets.env")
        self.candidates = self.tmp / "symbols.txt"
        self.universe_truth = {u["symbol"]: u for u in uni}
        base = sim_config(self.sim, self.root, self.secrets_file, self.candidates)
        merge_config(base, self.cfg_overrides)
        self.cfg = validate_config(base)
        self.secrets = load_secrets(self.cfg)

    def store(self, program: str) -> Store:
        s = Store(self.root, durability=Durability.from_config(self.cfg), clock=self.clock, program=program,
                  provider="kis")
        s.start_flusher()
        return s

    def truth(self, name: str) -> list[dict]:
        self.sim.truth.flush()
        p = self.gt / f"{name}.jsonl"
        return [orjson.loads(x) for x in p.read_bytes().splitlines() if x.strip()]

    def t_ns(self, t_ms: int) -> int:
        return int(kst_datetime(self.day, "000000").timestamp()) * 1_000_000_000 + t_ms * 1_000_000

    def close(self):
        self.sim.stop()


__all__ = ["SimEnv", "KST"]
