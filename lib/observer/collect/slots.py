"""Track B slot manager: which ranked candidates hold the WebSocket registrations (docs/track_b.md).

Pure bookkeeping, no I/O: `plan()` proposes allocations/releases for the current ranking, the streamer
subscribes/unsubscribes, writes the events and the overflow ledger, then calls `apply()`.

Rules:
  * never more than `capacity` symbols held;
  * a held symbol stays at least `min_hold_s` (measured from its allocation);
  * a released symbol cannot be allocated again before `cooldown_s` has passed;
  * free slots go to the best-ranked candidates first (lowest free slot number first);
  * with no free slot, a candidate displaces the weakest held symbol that is past its minimum hold and
    ranks strictly below it (a held symbol no longer among the candidates ranks below every candidate;
    ties: the one held longest goes first); fillers only take free slots, never displace;
  * every non-filler candidate that does not hold a slot after the plan (no room, cooldown, or just
    displaced) is in `overflow`, with its cause in `overflow_reason`.
Slots are numbered 0 .. capacity-1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from observer.collect.triggers import Candidate, rank
from observer.core.clock import NS
from observer.core.settings import TrackBConfig

_UNTRIGGERED = (2, 0, 0.0)   # rank key of a held symbol that no trigger currently supports


def capacity_for(registrations_per_connection: int, channels_per_slot: int = 2, connections: int = 1) -> int:
    """Symbols that fit: registrations // channels per connection (41 // 2 = 20 with ticks + book)."""
    if registrations_per_connection < 1 or channels_per_slot < 1 or connections < 1:
        raise ValueError("registrations, channels per slot and connections must be >= 1")
    return connections * (registrations_per_connection // channels_per_slot)


def slot_capacity(cfg: dict, total_registrations: int | None = None) -> int:
    """The [track_b] slot count: `slots`, or (0) the most the registrations allow.

    total_registrations: what the stream client really has (e.g. StreamClient.max_registrations summed
    over its connections); when given it replaces connections x registrations_per_connection.
    Raises ValueError when `slots` asks for more than the registrations allow."""
    tb = TrackBConfig.from_config(cfg)
    per_slot = len(tb.channels)
    if total_registrations is not None:
        cap = capacity_for(total_registrations, per_slot, 1)
    else:
        cap = capacity_for(int(tb.registrations_per_connection), per_slot, int(tb.connections))
    want = int(tb.slots)
    if want == 0:
        return cap
    if want > cap:
        raise ValueError(f"track_b.slots = {want} needs {want * per_slot} registrations; "
                         f"only {cap} symbols with {per_slot} channel(s) each fit")
    return want


@dataclass
class Holding:
    slot: int
    symbol: str
    since_ns: int
    trigger: str
    score: float


@dataclass
class Plan:
    allocate: list[tuple[int, Candidate]] = field(default_factory=list)
    release: list[tuple[int, str, str]] = field(default_factory=list)      # (slot, symbol, reason)
    overflow: list[Candidate] = field(default_factory=list)
    overflow_reason: dict[str, str] = field(default_factory=dict)          # symbol -> why no slot
    overflow_new: list[Candidate] = field(default_factory=list)            # not in the previous plan's overflow

    @property
    def empty(self) -> bool:
        return not self.allocate and not self.release


class SlotManager:
    def __init__(self, capacity: int, min_hold_s: float, cooldown_s: float):
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        self.capacity = int(capacity)
        self.min_hold_ns = int(min_hold_s * NS)
        self.cooldown_ns = int(cooldown_s * NS)
        self._held: dict[int, Holding] = {}
        self._released: dict[str, int] = {}                 # symbol -> release time
        self._last_overflow: set[tuple[str, str]] = set()

    capacity_for = staticmethod(capacity_for)

    # -- state ----------------------------------------------------------------------------------
    def held(self) -> dict[int, str]:
        return {s: h.symbol for s, h in sorted(self._held.items())}

    def holdings(self) -> list[Holding]:
        return [self._held[s] for s in sorted(self._held)]

    def slot_of(self, symbol: str) -> int | None:
        for s, h in self._held.items():
            if h.symbol == symbol:
                return s
        return None

    def in_cooldown(self, symbol: str, now_ns: int) -> bool:
        t = self._released.get(symbol)
        return t is not None and now_ns - t < self.cooldown_ns

    def cooldown_until(self, symbol: str) -> int | None:
        t = self._released.get(symbol)
        return None if t is None else t + self.cooldown_ns

    def utilization(self) -> float:
        return len(self._held) / self.capacity if self.capacity else 0.0

    # -- planning -------------------------------------------------------------------------------
    def plan(self, candidates: list[Candidate], now_ns: int) -> Plan:
        ranked: list[Candidate] = []
        seen: set[str] = set()
        for c in rank(candidates):
            if c.symbol not in seen:
                seen.add(c.symbol)
                ranked.append(c)
        current = {c.symbol: c for c in ranked}
        held_slot = {h.symbol: s for s, h in self._held.items()}

        def held_key(slot: int) -> tuple:
            c = current.get(self._held[slot].symbol)
            return c.rank_key[:3] if c is not None else _UNTRIGGERED

        def weakness(slot: int) -> tuple:
            return (held_key(slot), -self._held[slot].since_ns, slot)

        free = sorted(set(range(self.capacity)) - set(self._held))
        displaceable = {s for s, h in self._held.items() if now_ns - h.since_ns >= self.min_hold_ns}
        p = Plan()
        for c in ranked:
            if c.symbol in held_slot:
                continue
            if self.in_cooldown(c.symbol, now_ns):
                if not c.filler:
                    left = (self._released[c.symbol] + self.cooldown_ns - now_ns) / NS
                    p.overflow.append(c)
                    p.overflow_reason[c.symbol] = f"cooldown after release: {left:.0f} s left"
                continue
            if free:
                p.allocate.append((free.pop(0), c))
                continue
            if c.filler:
                continue
            weaker = [s for s in displaceable if held_key(s) > c.rank_key[:3]]
            if weaker:
                s = max(weaker, key=weakness)
                displaceable.discard(s)
                old = self._held[s]
                p.release.append((s, old.symbol,
                                  f"displaced by {c.symbol} ({c.trigger}, score {c.score:.2f}) after "
                                  f"{(now_ns - old.since_ns) / NS:.0f} s held"))
                p.allocate.append((s, c))
                oc = current.get(old.symbol)
                if oc is not None and not oc.filler:
                    p.overflow.append(oc)
                    p.overflow_reason[oc.symbol] = f"displaced by {c.symbol} ({c.trigger})"
                continue
            p.overflow.append(c)
            if self.capacity == 0:
                p.overflow_reason[c.symbol] = "no slots configured"
            else:
                p.overflow_reason[c.symbol] = (f"all {self.capacity} slots held by stronger candidates or "
                                               f"within their minimum hold")
        p.overflow_new = [c for c in p.overflow if (c.symbol, c.trigger) not in self._last_overflow]
        return p

    def apply(self, plan: Plan, now_ns: int) -> None:
        """Make the plan the state (call after the subscriptions succeeded). Raises ValueError, changing
        nothing, if the plan no longer fits the state (planned against an older state)."""
        held = dict(self._held)
        released = dict(self._released)
        for slot, symbol, _reason in plan.release:
            h = held.get(slot)
            if h is None or h.symbol != symbol:
                raise ValueError(f"plan releases {symbol} from slot {slot}, which holds "
                                 f"{h.symbol if h else 'nothing'}")
            del held[slot]
            released[symbol] = now_ns
        symbols = {h.symbol for h in held.values()}
        for slot, c in plan.allocate:
            if not 0 <= slot < self.capacity:
                raise ValueError(f"slot {slot} outside 0..{self.capacity - 1}")
            if slot in held:
                raise ValueError(f"slot {slot} already holds {held[slot].symbol}")
            if c.symbol in symbols:
                raise ValueError(f"{c.symbol} is already held")
            held[slot] = Holding(slot, c.symbol, now_ns, c.trigger, c.score)
            symbols.add(c.symbol)
        self._held = held
        self._released = {s: t for s, t in released.items() if now_ns - t < self.cooldown_ns}
        self._last_overflow = {(c.symbol, c.trigger) for c in plan.overflow}

    def release(self, symbol: str, now_ns: int, reason: str = "released") -> tuple[int, str, str] | None:
        """Release one symbol now, whatever its hold time (halted symbol, failed subscription, end of
        window). Returns (slot, symbol, reason) or None if it was not held. Cooldown applies."""
        s = self.slot_of(symbol)
        if s is None:
            return None
        del self._held[s]
        self._released[symbol] = now_ns
        return (s, symbol, reason)

    def release_all(self, now_ns: int, reason: str = "end of window") -> list[tuple[int, str, str]]:
        return [r for h in self.holdings() if (r := self.release(h.symbol, now_ns, reason))]

    def refresh(self, candidates: list[Candidate]) -> None:
        """Record the current trigger/score of held symbols (for STATUS and events)."""
        cur = {c.symbol: c for c in rank(candidates)[::-1]}
        for h in self._held.values():
            c = cur.get(h.symbol)
            if c is not None:
                h.trigger, h.score = c.trigger, c.score


__all__ = ["Plan", "SlotManager", "Holding", "capacity_for", "slot_capacity"]
