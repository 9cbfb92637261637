"""What every broker's protocol provider shares (interfaces.Provider): its REST and WebSocket servers, its
OAuth state and request counters, and how the simulator's calls reach them. A broker's module (kis.py,
kiwoom.py) builds its own parts from the views in `__init__` and binds its servers in `bind`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from observer.sim.interfaces import Counters

if TYPE_CHECKING:
    from observer.sim.auth import Auth
    from observer.sim.config import SimConfig
    from observer.sim.faults import Active
    from observer.sim.interfaces import FaultView, MarketView, Recorder
    from observer.sim.rest import RestServer
    from observer.sim.ws import WsServer


class BrokerProvider:
    name = ""
    auth: Auth

    def __init__(self, cfg: SimConfig, market: MarketView, faults: FaultView, truth: Recorder):
        self.cfg = cfg
        self.market = market
        self.faults = faults
        self.truth = truth
        self.counters = Counters()
        self.rest: RestServer | None = None
        self.ws: WsServer | None = None

    def bind(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self.rest.start()
        self.ws.start()

    def stop(self) -> None:
        if self.ws:
            self.ws.stop()
        if self.rest:
            self.rest.stop()

    def urls(self) -> dict[str, str | None]:
        host = self.cfg.host
        return {"rest": f"http://{host}:{self.rest.port}" if self.rest else None,
                "ws": f"ws://{host}:{self.ws.port}" if self.ws else None}

    def housekeeping(self) -> None:
        if self.ws:
            self.ws.housekeeping()

    def fault_started(self, a: Active) -> int | None:
        kind = a.kind
        if kind.startswith("ws_"):
            return self.ws.fault_started(a) if self.ws else None
        if kind in ("token_expire", "token_invalidate"):
            return self.auth.fault_tokens("expired" if kind == "token_expire" else "invalid",
                                          bool(a.spec.get("reset_issue_limit")))
        if kind == "approval_invalidate":
            return self.auth.fault_approvals(a.spec.get("app_key"))
        return None  # REST, clock and master faults act when a request asks the fault view

    def fault_ended(self, a: Active) -> None:
        if self.ws and a.kind.startswith("ws_"):
            self.ws.fault_ended(a)

    def key_id(self, app_key: str | None) -> str | None:
        return self.auth.key_id(app_key)

    def set_firehose(self, rate: float | None, frames: int | None = None, conn_id: int | None = None) -> int:
        return self.ws.set_firehose(rate, frames, conn_id) if self.ws else 0

    def stats(self) -> dict:
        counters, keys = self.counters.snapshot()
        for kid, d in self.auth.per_key.items():
            keys.setdefault(kid, {}).update(d)
        ws = self.ws
        return {"auth": dict(self.auth.stats), "per_app_key": keys, "counters": counters,
                "ws": {**(dict(ws.stats) if ws else {}), "connections": ws.snapshot() if ws else []}}
