"""A simulator + data tree + config + secrets, in one object, for collector tests."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import orjson

from observer.core.clock import KST, ScaledClock, kst_datetime, parse_yyyymmdd
from observer.core.config import validate_config
from observer.core.secrets import load_secrets
from observer.sim import run_in_thread
from observer.store.store import Store
from observer.store.writer import Durability

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
                  speed=self.speed, ground_truth=str(self.gt), rate_limit=200.0)
        kw.update(self.sim_kw)
        self.sim = run_in_thread(clock=self.clock, **kw)
        self.secrets_file = self.tmp / "secrets.env"
        self.secrets_file.write_text("KIS_APP_KEY=PStestappkey000001\nKIS_APP_SECRET=testsecret-0000000001\n")
        os.chmod(self.secrets_file, 0o600)
        self.candidates = self.tmp / "symbols.txt"
        uni = orjson.loads((self.gt / "universe.json").read_bytes())
        self.candidates.write_text("".join(u["symbol"] + "\n" for u in uni))
        self.universe_truth = {u["symbol"]: u for u in uni}
        urls = self.sim.urls()
        base = {
            "data_dir": str(self.root), "secrets_file": str(self.secrets_file),
            "store": {"fsync_interval_ms": 200},
            "universe": {"candidates_file": str(self.candidates)},
            "providers": {"kis": {"env": "sim", "rest_url": urls["rest"], "ws_url": urls["ws"],
                                  "rate_limit_per_s": 150}},
        }
        _merge(base, self.cfg_overrides)
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


def _merge(dst, src):
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        else:
            dst[k] = v


__all__ = ["SimEnv", "KST"]
