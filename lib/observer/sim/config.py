"""The simulator's settings (one object, read-only once the simulator runs; docs/simulator.md)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SimConfig:
    seed: int = 1
    symbols: int = 2500
    active: int = 60
    activity: float = 1.0
    speed: float = 1.0
    date: str | None = None  # YYYYMMDD, default today (KST)
    start: str = "08:55"  # market time at start
    host: str = "127.0.0.1"
    rest_port: int = 0
    ws_port: int = 0
    control_port: int | None = None  # None: no control endpoint; 0: a free port
    ground_truth: str | None = None
    faults_file: str | None = None
    faults: list = field(default_factory=list)  # scheduled fault dicts (in addition to faults_file)
    app_key: str | None = None
    app_secret: str | None = None
    rate_limit: float = 20.0  # REST calls/s per app key (paper: 2)
    token_issue_interval: float = 60.0  # market seconds between two issuances per app key (EGW00133)
    token_lifetime: float = 86400.0  # market seconds
    token_reuse_hours: float = 6.0
    pingpong_interval: float = 100.0  # real seconds
    max_subscriptions: int = 41
    cnt_fields: int = 46
    asp_fields: int = 62
    firehose: dict | None = None  # {"rate": msgs/s (0 = as fast as possible), "frames": N or None}
    stop_at: str | None = None  # market time HH:MM[:SS] to stop by itself
    tick_ms: float = 10.0  # pump period, real milliseconds
    latency_ms: float = 0.0  # KIS: real ms every REST reply and WebSocket frame waits before it goes out
    # the broker protocols served (kis.KisProvider.name, kiwoom.KiwoomProvider.name); KIS alone by default
    providers: list = field(default_factory=lambda: ["kis"])
    kiwoom_rest_port: int = 0
    kiwoom_ws_port: int = 0
    kiwoom_latency_ms: float = 0.0
    kiwoom_rate_limit: float = 5.0  # REST calls/s per app key before 1700 / HTTP 429 (reference: ~4-5, UNCONFIRMED)
    kiwoom_ping_interval: float = 60.0  # real seconds between PINGs (interval UNCONFIRMED)
    kiwoom_page_rows: int = 900  # chart rows per page (reference: about 900, UNCONFIRMED)
    # trade-rate bursts (deterministic, part of the generated day): [{"symbol", "at": "HH:MM[:SS]",
    # "duration": market s, "factor": x}] multiply the symbol's trade rate inside the window
    bursts: list = field(default_factory=list)
