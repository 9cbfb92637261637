"""What a protocol server may see of the simulator, and what the simulator asks of a protocol server.

The simulator is one seeded market served to brokers' protocols. A broker's protocol (KIS: `auth`,
`rest`, `ws`, `quotes`, `master`, `encode`, bundled by `kis.KisProvider`; Kiwoom: the `kiwoom_*` modules,
bundled by `kiwoom.KiwoomProvider`) is given only these views:

- `MarketView`  the market as every protocol sees it: the clock, the listing, each symbol's live state and
                the tick-by-tick event feed (implemented by `feed.Market`, shared by every provider);
- `FaultView`   the faults in force *for this provider* (implemented by `faults.ProviderFaults`; a fault with
                `provider` set applies to that provider only);
- `Recorder`    where this provider's ground truth goes (what it sent, to whom, when; `truth.GroundTruth`).

A provider implements `Provider`; the simulator drives it (start, housekeeping, faults, stats) and never
hands it the `Simulator`. The control endpoint gets `SimControl` only. Nothing here names a broker.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from datetime import date
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from observer.sim.faults import Active
    from observer.sim.market import SymbolSim, Universe


class MarketView(Protocol):
    seed: int
    date: date  # the trading date
    date_str: str  # YYYYMMDD
    universe: Universe  # the listing: every symbol's static facts, active or not
    # The pump's tick lock: held for a whole tick (advance, ground truth, feed). A protocol server takes it to
    # make a (un)subscription or a close fall between two ticks, so "the events with t <= dispatched_ms were
    # handed to the feed" is exact (an RLock: a feed listener may close a connection from inside a tick).
    tick_lock: threading.RLock
    dispatched_ms: int  # market time up to which every event has been handed to the feed listeners

    def market_ms(self) -> int:
        """Market time now, ms since midnight KST of `date`."""
        ...

    def now_ns(self) -> int:
        """The market clock as epoch ns (what a server's clock shows)."""
        ...

    def symbol(self, code: str) -> SymbolSim | None:
        """A symbol's live state (lock it and `advance(market_ms())` before reading: never ahead of the clock)."""
        ...

    def symbols(self) -> Iterable[SymbolSim]:
        """Every listed symbol's live state, in listing order."""
        ...

    def listen(self, listener: Callable[[list], None]) -> None:
        """Call `listener(events)` with every tick's trades and books (market-time order, each symbol's own
        order kept), under `tick_lock`. Listeners must not block: the pump serves every provider."""
        ...


class FaultView(Protocol):
    provider: str
    data_active: bool  # a data fault (faults.DATA_KINDS) is in force for this provider: read on the hot path

    def first(self, kind: str) -> Active | None:
        """The oldest fault of `kind` in force for this provider."""
        ...

    def data_faults(self) -> list[Active]:
        """The data faults in force for this provider, oldest first."""
        ...

    def expire_now(self, a: Active) -> None:
        """End a fault's window now, with no end event (its effect stays where the provider keeps it)."""
        ...


class Recorder(Protocol):
    def line(self, kind: str, obj: dict) -> None:
        """Append one ground-truth line to file `kind` (truth.FILES)."""
        ...


class Provider(Protocol):
    """One broker's protocol served over the shared market: its own auth state, servers, faults and truth."""

    name: str

    def bind(self) -> None:
        """Open the servers' listening sockets (before the market catches up: a port in use fails at once)."""
        ...

    def start(self) -> None:
        """Serve (after the market caught up)."""
        ...

    def stop(self) -> None:
        ...

    def urls(self) -> dict[str, str | None]:
        """{"rest": URL, "ws": URL} once started (None before)."""
        ...

    def housekeeping(self) -> None:
        """Called every ~20 ms: keep-alives, scheduled drops."""
        ...

    def fault_started(self, a: Active) -> int | None:
        """Act on a fault that just came into force for this provider; how many things it hit (None: not
        counted)."""
        ...

    def fault_ended(self, a: Active) -> None:
        ...

    def key_id(self, app_key: str | None) -> str | None:
        """The non-secret label of a credential, for ground truth and stats."""
        ...

    def set_firehose(self, rate: float | None, frames: int | None = None, conn_id: int | None = None) -> int:
        ...

    def stats(self) -> dict:
        """This provider's part of GET /stats."""
        ...


class SimControl(Protocol):
    """What the control endpoint may do (sim/control.py)."""

    def health(self) -> dict: ...

    def stats(self) -> dict: ...

    def fault_snapshot(self) -> dict: ...

    def apply_fault(self, spec: dict, scheduled: bool = False) -> dict: ...

    def schedule_fault(self, spec: dict) -> None: ...

    def clear_faults(self) -> int: ...

    def set_firehose(self, rate: float | None, frames: int | None = None, conn_id: int | None = None) -> int: ...

    def request_stop(self) -> None: ...


class Counters:
    """Request counters a provider keeps for GET /stats: overall ("counters") and per credential label."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counters: dict[str, int] = {}
        self.key_counts: dict[str, dict[str, int]] = {}

    def count(self, what: str, n: int = 1) -> None:
        with self._lock:
            self.counters[what] = self.counters.get(what, 0) + n

    def count_key(self, kid: str, what: str) -> None:
        with self._lock:
            d = self.key_counts.setdefault(kid, {})
            d[what] = d.get(what, 0) + 1

    def snapshot(self) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
        with self._lock:
            return dict(self.counters), {k: dict(v) for k, v in self.key_counts.items()}
