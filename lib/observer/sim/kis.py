"""The KIS protocol as one provider of the simulator (interfaces.Provider): its OAuth state, REST and
WebSocket servers, quotation answers and master files, over the shared market.

It is built from the views only (market, this provider's faults, a ground-truth recorder); a second
broker's protocol (kiwoom.py) is a sibling module of the same shape with its own servers, faults view and
recorder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from observer.sim.auth import Auth
from observer.sim.master import Masters
from observer.sim.provider import BrokerProvider
from observer.sim.quotes import Quotes
from observer.sim.rest import RateLimiter, RestServer
from observer.sim.ws import WsServer

if TYPE_CHECKING:
    from observer.sim.config import SimConfig
    from observer.sim.interfaces import FaultView, MarketView, Recorder


class KisProvider(BrokerProvider):
    name = "kis"

    def __init__(self, cfg: SimConfig, market: MarketView, faults: FaultView, truth: Recorder):
        super().__init__(cfg, market, faults, truth)
        self.auth = Auth(cfg, market, truth)
        self.limiter = RateLimiter(cfg.rate_limit)
        self.quotes = Quotes(market)
        self.masters = Masters(market.universe, cfg.seed)

    def bind(self) -> None:
        cfg = self.cfg
        latency = cfg.latency_ms / 1000
        self.rest = RestServer(cfg.host, cfg.rest_port, market=self.market, faults=self.faults, auth=self.auth,
                               limiter=self.limiter, quotes=self.quotes, masters=self.masters,
                               counters=self.counters, latency=latency)
        self.ws = WsServer(cfg.host, cfg.ws_port, cfg=cfg, market=self.market, faults=self.faults, auth=self.auth,
                           truth=self.truth, latency=latency)
