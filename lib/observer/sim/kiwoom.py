"""The Kiwoom REST API (2025) as one provider of the simulator (interfaces.Provider), a sibling of kis.py:
its own tokens, REST server (kiwoom_rest.py, answers from kiwoom_quotes.py) and WebSocket server
(kiwoom_ws.py), rate limit, latency, faults view and ground-truth recorder, over the same market as KIS.
Encoded from providers.md §2 and the Kiwoom samples; it shares no code with the client's decoder."""

from __future__ import annotations

from typing import TYPE_CHECKING

from observer.sim.kiwoom_auth import KiwoomAuth
from observer.sim.kiwoom_quotes import KiwoomQuotes
from observer.sim.kiwoom_rest import KiwoomHandler
from observer.sim.kiwoom_ws import KiwoomWsServer
from observer.sim.provider import BrokerProvider
from observer.sim.rest import RateLimiter, RestServer

if TYPE_CHECKING:
    from observer.sim.config import SimConfig
    from observer.sim.interfaces import FaultView, MarketView, Recorder


class KiwoomProvider(BrokerProvider):
    name = "kiwoom"

    def __init__(self, cfg: SimConfig, market: MarketView, faults: FaultView, truth: Recorder):
        super().__init__(cfg, market, faults, truth)
        self.auth = KiwoomAuth(cfg, market, truth)
        self.limiter = RateLimiter(cfg.kiwoom_rate_limit)
        self.quotes = KiwoomQuotes(market, cfg.kiwoom_page_rows)

    def bind(self) -> None:
        cfg = self.cfg
        latency = cfg.kiwoom_latency_ms / 1000
        self.rest = RestServer(cfg.host, cfg.kiwoom_rest_port, handler=KiwoomHandler, market=self.market,
                               faults=self.faults, auth=self.auth, limiter=self.limiter, quotes=self.quotes,
                               counters=self.counters, latency=latency)
        self.ws = KiwoomWsServer(cfg.host, cfg.kiwoom_ws_port, cfg=cfg, market=self.market, faults=self.faults,
                                 auth=self.auth, truth=self.truth, ping_interval=cfg.kiwoom_ping_interval,
                                 latency=latency)
