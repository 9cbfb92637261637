"""The provider adapter interface (the design's IMarketDataProvider): one shape for KIS, Kiwoom, Upbit.

A collector written against this module works with any provider:

    provider = get_provider("kis", cfg, secrets, store, clock)
    rest = provider.rest()                       # MarketRest: provider-neutral REST calls
    snap = rest.current_price("005930")          # -> snapshot record
    stream = provider.stream(sink, trading_date=day)  # StreamClient (all accounts/connections)
    stream.subscribe("005930", TRADES); stream.subscribe("005930", BOOK)
    stream.start()
    ...
    def sink(frame: str, recv_ns: int, records: list[dict]) -> None:
        raw.append(...frame...); scalp.append(...records...)

Every record a provider returns satisfies observer/schemas/records/<kind>.json: v=1, kind, provider,
market, symbol, exch_ns (exchange time, UTC ns, or None when the provider gives none), recv_ns (local
receive time, UTC ns), quality, optional flags/extra/session_id.

Times at this interface are UTC ns; providers convert to their wire formats (KIS: KST HHMMSS).
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

from observer.core.checks import CheckContext, NamedCheck

# what a listing record's `type` may be (universe.include_types chooses among them)
INSTRUMENT_TYPES = ("stock", "preferred", "etf", "etn", "spac", "reit", "fund", "foreign", "depositary", "other")

TRADES = "trades"
BOOK = "book"
CHANNELS = (TRADES, BOOK)

# (raw frame text, local receive time UTC ns, normalised records decoded from it)
FrameSink = Callable[[str, int, list[dict]], None]


class ProviderError(Exception):
    """Base of every provider error."""


class AuthError(ProviderError):
    """Credentials refused (bad app key/secret, 4xx from the auth endpoint). Not retried."""


class RateLimitedError(ProviderError):
    """Still rate-limited after the configured retries."""


class ApiError(ProviderError):
    """The broker answered with an error that is not retried (rt_cd != 0, 4xx)."""

    def __init__(self, message: str, *, code: str = "", status: int | None = None):
        super().__init__(message)
        self.code = code
        self.status = status


class RegistrationLimitError(ProviderError):
    """A subscription would exceed the per-connection registration limit (KIS: 41)."""


@dataclass(frozen=True, order=True)
class Subscription:
    symbol: str
    channel: str  # TRADES or BOOK

    def __post_init__(self):
        if self.channel not in CHANNELS:
            raise ValueError(f"channel must be one of {CHANNELS}, got {self.channel!r}")


class Decoded:
    """What a provider's frame decoder made of one frame. Never raised, always returned.

    kind: "data" | "control" (ack/error reply) | "pingpong" (heartbeat) | "encrypted" |
          "unsupported" (a valid frame of a TR we do not normalise) | "invalid"
    records: normalised records that passed the guard (possibly flagged)
    errors: reasons the frame or some of its records could not be decoded (frame kept in raw/)
    rejects: (record, reason, symbol) for records that parsed but cannot be real
    control: the parsed control message (kind control/pingpong)
    """

    __slots__ = ("kind", "tr_id", "records", "errors", "rejects", "control", "fields", "count")

    def __init__(self, kind: str, tr_id: str):
        self.kind = kind
        self.tr_id = tr_id
        self.records: list[dict] = []
        self.errors: list[str] = []
        self.rejects: list[tuple[dict, str, str]] = []
        self.control: dict | None = None
        self.fields: list[str] | None = None
        self.count = 0

    @property
    def ok(self) -> bool:
        return not self.errors and self.kind != "invalid"

    def __repr__(self) -> str:
        return (f"Decoded({self.kind}, {self.tr_id!r}, records={len(self.records)}, errors={self.errors!r}, "
                f"rejects={len(self.rejects)})")


class FrameDecoder(abc.ABC):
    """Turns one raw frame (text as received) into records. Stateless enough to replay raw/."""

    @abc.abstractmethod
    def decode(self, frame: str, recv_ns: int) -> Decoded: ...

    def set_trading_date(self, day) -> None:  # providers whose frames lack a date use it
        return None


@dataclass
class TickRecovery:
    """Result of recovering trades for an interval: records oldest first, plus what is provably missing."""

    records: list[dict] = field(default_factory=list)
    gaps: list[dict] = field(default_factory=list)  # {start_ns, end_ns, cause, missing_qty}
    calls: int = 0
    complete: bool = True  # False when the interval's start could not be reached


class MarketRest(abc.ABC):
    """Provider-neutral REST calls. Each returns normalised records (dicts satisfying the contracts).

    Times are UTC ns. Calls that a provider cannot serve raise NotImplementedError with a reason.
    """

    @abc.abstractmethod
    def current_price(self, symbol: str, *, sweep_ns: int | None = None) -> dict:
        """Track A: one `snapshot` record (exch_ns None when the provider has no timestamp)."""

    @abc.abstractmethod
    def trades_by_time(self, symbol: str, until_ns: int | None = None) -> list[dict]:
        """One page of today's trades at or before until_ns (None = now), newest first (`trade` records)."""

    @abc.abstractmethod
    def recover_trades(self, symbol: str, start_ns: int, end_ns: int, *, gap_id: str | None = None) -> TickRecovery:
        """Every trade of today in [start_ns, end_ns], paged back in time, continuity checked."""

    @abc.abstractmethod
    def minute_bars(self, symbol: str, start_ns: int | None = None, end_ns: int | None = None) -> list[dict]:
        """Today's 1-minute `bar` records in [start_ns, end_ns], oldest first."""

    @abc.abstractmethod
    def daily_prices(self, symbol: str, period: str = "D", adjusted: bool = True) -> list[dict]:
        """Recent daily (D), weekly (W) or monthly (M) `bar` records, oldest first."""

    @abc.abstractmethod
    def volume_rank(self, **filters: Any) -> list[dict]:
        """Trigger candidates: `snapshot` records ranked by volume (rank in extra["rank"])."""

    def best_quote(self, symbol: str) -> dict:
        """Best bid/ask now: {bid, ask, bid_size, ask_size} (None for an empty side)."""
        raise NotImplementedError("this provider has no best-quote call")

    def calls_per_s(self) -> float | None:
        """The request rate this client keeps to (None: unknown)."""
        return None

    def close(self) -> None:
        return None


class StreamClient(abc.ABC):
    """A streaming client: registrations in, frames and records out through the sink.

    Thread model: start() runs connection threads; subscribe()/unsubscribe() may be called from any
    thread at any time (before or after start) and survive reconnects (every active registration is
    re-sent). The sink is called from a connection thread for every frame received (control frames
    with records=[]), so it must be quick (hand off to a writer).
    """

    max_registrations: int = 0

    @abc.abstractmethod
    def subscribe(self, symbol: str, channel: str) -> None:
        """Register (symbol, channel); raises RegistrationLimitError when no connection has room."""

    @abc.abstractmethod
    def unsubscribe(self, symbol: str, channel: str) -> None: ...

    @abc.abstractmethod
    def registrations(self) -> set[Subscription]: ...

    def acked_ns(self, symbol: str, channel: str) -> int | None:
        """When the server acknowledged the registration (its data flows from then on); None while it is
        pending (or when the protocol has no acknowledgement: the collector then waits for the first data)."""
        return None

    @abc.abstractmethod
    def start(self) -> None: ...

    def fatal(self) -> ProviderError | None:
        """An error the stream cannot get past by reconnecting (the broker refused the credentials): the
        collector ends with it (exit code, CRITICAL alert) instead of retrying for the rest of the day."""
        return None

    @abc.abstractmethod
    def stop(self, timeout: float = 5.0) -> None: ...

    @abc.abstractmethod
    def stats(self) -> dict: ...


@dataclass(frozen=True)
class RegistrationLimits:
    """How many (symbol, channel) registrations the broker's stream accepts."""

    per_connection: int   # one WebSocket connection
    per_key: int          # one app key, over all its connections


@dataclass(frozen=True)
class RecoverySource:
    """A REST call that gives a record kind back after the fact (the gap-filler's source)."""

    call: str             # the broker's name for it (provenance.source_call)
    rows_per_call: int    # rows one call returns at most (config may narrow it)
    reach_days: int       # how far back it reaches: 0 = the current day only, N = N days back

    @property
    def today_only(self) -> bool:
        return self.reach_days == 0


@dataclass(frozen=True)
class RestPacing:
    """The REST budget of one app key, shared by every process using it."""

    calls_per_s: float
    burst: float = 1.0


class Provider(abc.ABC):
    """One broker. Built by get_provider(); owns its REST client and streaming clients.

    What the core needs to know of a broker it learns from these declarations, never from its name:
    markets (codes of observer.markets; `market` is the one its records carry), venues, registration
    limits, recovery sources by record kind ("trade", "bar"), and REST pacing (rest_pacing()).
    """

    name: str = ""
    markets: ClassVar[tuple[str, ...]] = ()
    venues: ClassVar[tuple[str, ...]] = ()
    registration_limits: ClassVar[RegistrationLimits | None] = None
    recovery_sources: ClassVar[Mapping[str, RecoverySource]] = MappingProxyType({})
    market: ClassVar[str] = ""  # the market its records carry: the first it serves (set by register_provider)

    def __init__(self, cfg: dict, secrets, store, clock):
        self.cfg = cfg
        self.secrets = secrets
        self.store = store
        self.clock = clock

    @property
    def pcfg(self) -> dict:
        from observer.core.config import section  # here: this module stays free of observer imports

        return section(self.cfg, "providers", self.name)

    @abc.abstractmethod
    def rest(self) -> MarketRest: ...

    @abc.abstractmethod
    def stream(self, sink: FrameSink, *, trading_date=None) -> StreamClient:
        """A stream over every account; `trading_date` (a date, None = the receive time's) stamps frames
        whose times carry no date."""

    @abc.abstractmethod
    def decoder(self, *, trading_date=None) -> FrameDecoder: ...

    # -- listings: every instrument of the provider's market, from files the provider publishes ---------
    def fetch_listings(self, keep_dir) -> list[dict]:
        """Download the provider's listing files now, keep the good ones in `keep_dir` (the day's
        universe source dir, for reproducibility) and return their records: {symbol, name, market,
        type (one of INSTRUMENT_TYPES), ...}. Raises ProviderError when they cannot be had."""
        raise NotImplementedError(f"{self.name} publishes no listing files")

    def kept_listings(self, keep_dir) -> list[dict]:
        """Records of the listing files kept in `keep_dir` by an earlier fetch_listings(). Raises
        ProviderError when none are there or they do not parse."""
        raise NotImplementedError(f"{self.name} publishes no listing files")

    # -- preflight: what this provider needs checked before the open -------------------------------------
    def preflight_checks(self, ctx: CheckContext) -> list[NamedCheck]:
        """The checks observer-preflight runs for this provider, in order: (name, callable returning a
        Check or a list of them). Names are `<what>:<provider>` (`token:kis`), so `--only token` picks
        them. A check bounds its own waits and returns a `fail` with a reason rather than raising (a
        raised exception still becomes that check's `fail`). Clock skew: build the row with
        observer.core.checks.skew_check from the server's Date headers. Default: no checks."""
        return []

    def rest_pacing(self) -> RestPacing | None:
        """The REST budget the configured environment allows (None: unknown)."""
        return None

    def slot_channels(self) -> tuple[str, ...]:
        """What one Track B slot subscribes (config)."""
        return tuple(self.pcfg["slot_channels"])


# filled by each provider package (observer.providers.<name>) as it is imported: no table of names here
_REGISTRY: dict[str, type[Provider]] = {}
_lock = threading.Lock()


def register_provider(name: str):
    def deco(cls):
        with _lock:
            _REGISTRY[name] = cls
        cls.name = name
        if cls.markets:  # the records' market is the first it serves
            cls.market = cls.markets[0]
        return cls

    return deco


def provider_names() -> list[str]:
    """The installed providers: packages observer.providers.<name> with a provider.py (which registers
    the Provider), found without importing them (a program lists them before its self-test)."""
    from observer.core import plugins  # here: this module stays free of observer imports at load time

    return sorted(set(_REGISTRY) | set(plugins.installed("providers", containing="provider")))


def provider_class(name: str) -> type[Provider]:
    """The provider registered as `name` (a name from config: checked, then observer.providers.<name>
    imported so it registers itself). ValueError naming the known ones when there is none."""
    if name not in _REGISTRY:
        from observer.core import plugins

        plugins.load("providers", name, "provider", containing="provider")
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown provider {name!r}; known: {', '.join(provider_names())}") from None


def market_of(name: str):
    """The observer.markets.Market whose records provider `name` carries (its calendar, universe name)."""
    from observer.markets import get_market

    return get_market(provider_class(name).market)


def get_provider(name: str, cfg: dict, secrets=None, store=None, clock=None) -> Provider:
    cls = provider_class(name)
    if clock is None:
        from observer.core.clock import Clock

        clock = Clock()
    return cls(cfg, secrets, store, clock)
