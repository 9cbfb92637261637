"""The simulated KRX market: a deterministic function of (seed, date, symbol, market time).

Every symbol owns a random.Random seeded from (seed, code, date) and generates its events strictly
in time order, one step at a time, keeping the next pending event. Asking for "everything up to T"
in one call or in a thousand calls therefore draws the same random numbers in the same order, so the
WebSocket feed, the REST replies and the ground-truth log all see one market, whatever asked first.

Times inside the market are integer milliseconds since midnight KST of the simulated date.
"""

from __future__ import annotations

import bisect
import math
import random
import threading
from array import array
from collections import namedtuple
from dataclasses import dataclass

HOUR = 3_600_000
MIN = 60_000
T_PREOPEN = 8 * HOUR + 30 * MIN  # 08:30 pre-open call auction starts (book only)
T_OPEN = 9 * HOUR  # 09:00 opening auction ends at a random second in [09:00:00, 09:00:30)
T_CLOSE_AUCTION = 15 * HOUR + 20 * MIN  # 15:20 closing call auction (book only)
T_CLOSE = 15 * HOUR + 30 * MIN  # 15:30 the closing trade
OPEN_RANDOM_END_MS = 30_000  # KRX "random end" of the opening call; the samples open at 0900xx
CONT_SECONDS = (T_CLOSE_AUCTION - T_OPEN) / 1000

# KRX tick sizes (unified KOSPI/KOSDAQ table in force since 2023-01-25): (upper bound exclusive, tick)
_TICK_BANDS = ((2_000, 1), (5_000, 5), (20_000, 10), (50_000, 50), (200_000, 100), (500_000, 500))

FIXED_CODES = (("005930", "삼성전자"), ("000660", "SK하이닉스"))


def tick_size(price: int) -> int:
    for bound, tick in _TICK_BANDS:
        if price < bound:
            return tick
    return 1_000


def tick_up(price: int) -> int:
    return price + tick_size(price)


def tick_down(price: int) -> int:
    return price - tick_size(price - 1)


def floor_tick(price: int) -> int:
    return price - price % tick_size(price)


def ceil_tick(price: int) -> int:
    r = price % tick_size(price)
    return price if r == 0 else price - r + tick_size(price)


def daily_limits(base: int) -> tuple[int, int]:
    """(lower, upper): base ±30 %, rounded inward onto the tick grid (inquire-price sample: 128500 → 90000..167000)."""
    upper = floor_tick(base * 13 // 10)
    lower = ceil_tick(-(-base * 7 // 10))
    return lower, upper


def hhmmss(t_ms: int) -> str:
    s = t_ms // 1000
    return f"{s // 3600:02d}{s // 60 % 60:02d}{s % 60:02d}"


def parse_hhmmss(s: str) -> int:
    """'HHMMSS', 'HHMM', 'HH:MM' or 'HH:MM:SS' → ms since midnight."""
    s = s.strip().replace(":", "")
    if len(s) == 4:
        s += "00"
    if len(s) != 6 or not s.isdigit():
        raise ValueError(f"bad time {s!r}: want HHMMSS or HH:MM[:SS]")
    return (int(s[:2]) * 3600 + int(s[2:4]) * 60 + int(s[4:])) * 1000


def activity_profile(t_ms: int) -> float:
    """Relative trade intensity in continuous trading: a burst at the open, a lunch lull, a pickup into the close."""
    m = (t_ms - T_OPEN) / MIN
    f = 1.0 + 3.0 * math.exp(-m / 4.0)
    if 11 * HOUR + 30 * MIN <= t_ms < 13 * HOUR:
        f *= 0.7
    if t_ms >= 14 * HOUR + 50 * MIN:
        f *= 1.0 + (t_ms - (14 * HOUR + 50 * MIN)) / (30 * MIN)
    return f


def _build_cum_profile() -> tuple[array, float]:
    # cumulative share of a normal day's volume by minute (for PRDY_SMNS_HOUR_ACML_VOL)
    w = [activity_profile(T_OPEN + i * MIN + 30_000) for i in range(int(CONT_SECONDS // 60))]
    close_share = 0.04 * sum(w) / 0.96
    total = sum(w) + close_share
    cum = array("d", [0.0])
    acc = 0.0
    for x in w:
        acc += x
        cum.append(acc / total)
    return cum, close_share / total


_CUM, _CLOSE_SHARE = _build_cum_profile()


def day_share_by(t_ms: int) -> float:
    """Share of a day's volume traded by t_ms in an average session."""
    if t_ms < T_OPEN:
        return 0.0
    if t_ms >= T_CLOSE:
        return 1.0
    m = min((t_ms - T_OPEN) / MIN, len(_CUM) - 1)
    i = int(m)
    if i >= len(_CUM) - 1:
        return _CUM[-1]
    return _CUM[i] + (_CUM[i + 1] - _CUM[i]) * (m - i)


@dataclass(frozen=True)
class SymbolInfo:
    index: int
    code: str
    name: str
    market: str  # KOSPI / KOSDAQ (rprs_mrkt_kor_name)
    prev_close: int
    lower: int
    upper: int
    active: bool
    rank: int  # activity rank over the universe, 0 = busiest
    rate: float  # base trades/s in continuous trading (0 when not active)
    vol_daily: float  # daily volatility of the latent fair price
    base_qty: int
    prdy_vol: int
    listed: int
    face: int  # par value (stck_fcam)


class Universe:
    """N symbols; the first n codes are the same for any N ≥ n (prefix-stable)."""

    def __init__(self, seed: int, n: int, active: int, activity: float = 1.0):
        rng = random.Random(f"{seed}|universe")
        codes: list[tuple[str, str]] = list(FIXED_CODES[: max(0, n)])
        seen = {c for c, _ in codes}
        while len(codes) < n:
            code = f"{rng.randrange(1, 100_000):05d}{'5' if rng.random() < 0.06 else '0'}"
            if code not in seen:
                seen.add(code)
                codes.append((code, f"모의종목{len(codes):04d}"))
        raw = []
        for i, (code, name) in enumerate(codes):
            r = random.Random(f"{seed}|{code}|info")
            price = int(math.exp(r.gauss(math.log(15_000), 1.3)))
            price = floor_tick(min(max(price, 500), 1_500_000))
            popularity = 2.0 + (1 - i) if i < len(FIXED_CODES) else r.random()
            raw.append(
                dict(
                    index=i,
                    code=code,
                    name=name,
                    market="KOSPI" if r.random() < 0.4 else "KOSDAQ",
                    prev_close=price,
                    popularity=popularity,
                    vol_daily=min(max(math.exp(r.gauss(math.log(0.025), 0.4)), 0.005), 0.08),
                    listed=int(math.exp(r.gauss(math.log(3e7), 1.2))) + 100_000,
                    face=r.choice((100, 500, 1000, 5000)),
                    jitter=math.exp(r.gauss(0, 0.25)),
                    volf=r.uniform(0.6, 1.4),
                    inactive_vol=int(math.exp(r.gauss(math.log(50_000), 1.5))),
                )
            )
        order = sorted(range(n), key=lambda j: -raw[j]["popularity"])
        rank_of = {j: rk for rk, j in enumerate(order)}
        self.symbols: list[SymbolInfo] = []
        for d in raw:
            rank = rank_of[d["index"]]
            is_active = rank < active
            base_qty = max(1, 1_500_000 // d["prev_close"])
            rate = activity * 3.0 * (rank + 1) ** -0.9 * d["jitter"] if is_active else 0.0
            if is_active:
                mean_qty = base_qty * math.exp(1.2**2 / 2)
                prdy_vol = int(rate * CONT_SECONDS * 1.3 * mean_qty * d["volf"]) + 1
            else:
                prdy_vol = d["inactive_vol"]
            lower, upper = daily_limits(d["prev_close"])
            self.symbols.append(
                SymbolInfo(
                    index=d["index"],
                    code=d["code"],
                    name=d["name"],
                    market=d["market"],
                    prev_close=d["prev_close"],
                    lower=lower,
                    upper=upper,
                    active=is_active,
                    rank=rank,
                    rate=rate,
                    vol_daily=d["vol_daily"],
                    base_qty=base_qty,
                    prdy_vol=prdy_vol,
                    listed=d["listed"],
                    face=d["face"],
                )
            )
        self.by_code = {s.code: s for s in self.symbols}

    @property
    def active(self) -> list[SymbolInfo]:
        return [s for s in self.symbols if s.active]


# One trade. The cumulative fields are the state right after this trade (what the H0STCNT0 record carries).
TradeEv = namedtuple(
    "TradeEv",
    "sym t seq group price qty acml_vol acml_pbmn ccld phase o h l o_t h_t l_t "
    "seln_n shnu_n seln_q shnu_q ask1 bid1 ask1q bid1q tot_ask tot_bid open_qty",
)
# One full 10-level book state. Prices of empty levels are 0.
BookEv = namedtuple(
    "BookEv",
    "sym t seq hour_cls askp bidp askq bidq tot_ask tot_bid antc_p antc_q antc_vol acml_vol icdc_ask icdc_bid phase",
)

PRE, OPENING, CONT, CAUCTION, CLOSING, DONE = range(6)
PHASE_NAMES = {PRE: "preopen", OPENING: "open_auction", CONT: "continuous", CAUCTION: "close_auction",
               CLOSING: "close_auction", DONE: "closed"}


class SymbolSim:
    """One symbol's day, generated lazily and exactly once. All access under self.lock."""

    def __init__(self, info: SymbolInfo, seed: int, date: str, bursts=()):
        self.info = info
        self.bursts = tuple(bursts)  # (from_ms, to_ms, factor): the trade rate multiplied inside
        self.lock = threading.Lock()
        self.rng = random.Random(f"{seed}|{info.code}|{date}|market")
        self.outbox: list = []  # events not yet taken by the pump
        # compact per-trade history for REST (time-sliced conclusions, minute bars)
        self.h_t = array("i")
        self.h_px = array("i")
        self.h_qty = array("i")
        self.h_acml = array("q")
        self.h_pbmn = array("q")
        self.h_ask = array("i")
        self.h_bid = array("i")
        self.h_cttr = array("i")  # CTTR × 100
        self.horizon = -1
        self.last = info.prev_close
        self.open = self.high = self.low = 0
        self.open_t = self.high_t = self.low_t = 0
        self.open_qty = 0
        self.acml_vol = self.acml_pbmn = 0
        self.seln_n = self.shnu_n = self.seln_q = self.shnu_q = 0
        self.trade_seq = self.book_seq = self.group = 0
        self.tot_ask_prev = self.tot_bid_prev = 0
        self.askp = self.bidp = (0,) * 10
        self.book_sizes: tuple = ((0,) * 10, (0,) * 10)
        self.askq = [0] * 10
        self.bidq = [0] * 10
        self.ask1 = self.bid1 = 0
        self._lv_cache: dict = {}
        self._lv_filled: dict = {}
        rng = self.rng
        gap = rng.gauss(0, info.vol_daily * 0.5)
        self.fair = min(max(info.prev_close * math.exp(gap), info.lower * 1.01), info.upper * 0.99)
        self.E = self._clamp(floor_tick(int(self.fair)))  # expected auction price
        self.Q = 0  # expected auction quantity
        self.open_trade_t = T_OPEN + rng.randrange(OPEN_RANDOM_END_MS)
        evts = max(info.rate * 1.8 * CONT_SECONDS, 1.0)
        self.sigma_evt = info.vol_daily / math.sqrt(evts)
        if info.active:
            self.phase = PRE
            self.next_t: int | None = T_PREOPEN
        else:
            self.phase = DONE  # a symbol with no trades today: REST shows the previous close all day
            self.next_t = None

    # ---- helpers -------------------------------------------------------------------------------
    def _clamp(self, p: int) -> int:
        return min(max(p, self.info.lower), self.info.upper)

    def _size(self) -> int:
        return max(1, int(self.info.base_qty * 15 * math.exp(self.rng.gauss(0, 0.9))))

    def _qty(self) -> int:
        return max(1, int(self.info.base_qty * math.exp(self.rng.gauss(0, 1.2))))

    def _levels(self, best: int, up: bool, n: int = 10) -> tuple:
        """Ten price levels from the best one outward (0 beyond the daily limits), memoised: the book
        revisits the same few prices all day and this is the generator's hottest spot."""
        key = (best, up, n)
        hit = self._lv_cache.get(key)
        if hit is not None:
            return hit
        out = []
        p = best
        lo, hi = self.info.lower, self.info.upper
        for i in range(10):
            if i >= n or p < lo or p > hi or p <= 0:
                out.append(0)
            else:
                out.append(p)
            p = tick_up(p) if up else tick_down(p)
        res = tuple(out)
        self._lv_cache[key] = res
        self._lv_filled[res] = 10 - res.count(0)
        return res

    def _sizes(self, prices: tuple, sizes: list) -> tuple:
        n = self._lv_filled[prices]
        return tuple(sizes) if n == 10 else tuple(sizes[:n]) + (0,) * (10 - n)

    def _rate(self, t: int) -> float:
        r = self.info.rate * activity_profile(t)
        for a, b, f in self.bursts:
            if a <= t < b:
                r *= f
        return r

    def _pre_rate(self) -> float:
        return min(0.02 + self.info.rate * 0.1, 0.5)  # book updates/s in the pre-open call

    def _ca_rate(self) -> float:
        return min(0.05 + self.info.rate * 0.2, 1.0)  # book updates/s in the closing call

    def _walk_fair(self) -> None:
        f = self.fair * math.exp(self.rng.gauss(0, self.sigma_evt))
        self.fair = min(max(f, self.info.lower * 1.01), self.info.upper * 0.99)

    # ---- generation ----------------------------------------------------------------------------
    def advance(self, until: int) -> None:
        """Generate every event with t <= until (call with self.lock held)."""
        while self.next_t is not None and self.next_t <= until:
            self._step(self.next_t)
        if until > self.horizon:
            self.horizon = until

    def _step(self, t: int) -> None:
        rng = self.rng
        ph = self.phase
        if ph == CONT:
            if rng.random() < 0.6:
                self._trade_cluster(t)
            else:
                self._quote(t)
            self._walk_fair()
            nxt = t + 1 + int(rng.expovariate(self._rate(t) * 1.7) * 1000)
            if nxt >= T_CLOSE_AUCTION:
                nxt = T_CLOSE_AUCTION
                self.phase = CAUCTION
                self.E = self.last
                self.Q = 0
            self.next_t = nxt
        elif ph == PRE:
            self._auction_book(t, "B")
            nxt = t + 1 + int(rng.expovariate(self._pre_rate()) * 1000)
            if nxt >= self.open_trade_t:
                nxt = self.open_trade_t
                self.phase = OPENING
            self.next_t = nxt
        elif ph == OPENING:
            self._opening(t)
            self.phase = CONT
            self.next_t = t + 1 + int(rng.expovariate(self._rate(t) * 1.7) * 1000)
        elif ph == CAUCTION:
            self._auction_book(t, "A")
            nxt = t + 1 + int(rng.expovariate(self._ca_rate()) * 1000)
            if nxt >= T_CLOSE:
                nxt = T_CLOSE
                self.phase = CLOSING
            self.next_t = nxt
        elif ph == CLOSING:
            self._closing(t)
            self.phase = DONE
            self.next_t = None

    def _auction_book(self, t: int, hour_cls: str) -> None:
        rng = self.rng
        self._walk_fair()
        if rng.random() < 0.35:
            step = tick_up(self.E) if self.fair > self.E else tick_down(self.E)
            self.E = self._clamp(step)
        # the auctions match about 2 % (open) and 4 % (close) of a day's volume
        if hour_cls == "A":
            share, events = 0.04, self._ca_rate() * 600
        else:
            share, events = 0.02, self._pre_rate() * 1800
        self.Q += max(1, int(self.info.prdy_vol * share / events / 1.65 * math.exp(rng.gauss(0, 1.0))))
        n = rng.randint(2, 5) if hour_cls == "A" else rng.randint(3, 10)
        # the published auction book is the residue around the expected price; a locked one is real too
        if rng.random() < 0.1:
            ask1 = bid1 = self.E
        elif rng.random() < 0.5:
            ask1, bid1 = self.E, tick_down(self.E)
        else:
            ask1, bid1 = tick_up(self.E), self.E
        askp = self._levels(ask1, True, n)
        bidp = self._levels(bid1, False, n)
        askq = [self._size() if p else 0 for p in askp]
        bidq = [self._size() if p else 0 for p in bidp]
        self._emit_book(t, hour_cls, askp, bidp, askq, bidq, self.E, self.Q, self.Q)

    def _opening(self, t: int) -> None:
        rng = self.rng
        price = self.E
        qty = max(self.Q, 1)
        bid1 = price if rng.random() < 0.5 else tick_down(price)
        bid1 = max(bid1, self.info.lower)
        ask1 = tick_up(bid1)
        if ask1 > self.info.upper:
            ask1, bid1 = self.info.upper, tick_down(self.info.upper)
        self.ask1, self.bid1 = ask1, bid1
        self.askq = [self._size() for _ in range(10)]
        self.bidq = [self._size() for _ in range(10)]
        self.group += 1
        self.open_qty = qty
        self._trade(t, price, qty, "3", "open_auction")
        self._book(t)

    def _closing(self, t: int) -> None:
        self.group += 1
        price = self.E
        self._trade(t, price, max(self.Q, 1), "3", "close_auction")
        # the book after the close: an ordinary one-tick spread at the closing price
        self.phase = DONE
        self.bid1 = max(min(price, tick_down(self.info.upper)), self.info.lower)
        self.ask1 = tick_up(self.bid1)
        self._book(t)

    def _trade_cluster(self, t: int) -> None:
        rng = self.rng
        mid = (self.ask1 + self.bid1) / 2
        p_buy = 0.5 + max(-0.3, min(0.3, (self.fair - mid) / mid * 40))
        buy = rng.random() < p_buy
        orders = 1 if rng.random() < 0.85 else 2 + min(int(rng.expovariate(0.8)), 4)
        self.group += 1
        made = 0
        lo, hi = self.info.lower, self.info.upper
        for _ in range(orders):
            remaining = self._qty()
            while remaining > 0 and made < 10:
                if buy:
                    fill = min(remaining, self.askq[0])
                    self.askq[0] -= fill
                    price = self.ask1
                    if self.askq[0] <= 0:
                        nxt = tick_up(self.ask1)
                        if nxt <= hi:
                            self.ask1 = nxt
                            self.askq = self.askq[1:] + [self._size()]
                        else:
                            self.askq[0] = self._size()
                else:
                    fill = min(remaining, self.bidq[0])
                    self.bidq[0] -= fill
                    price = self.bid1
                    if self.bidq[0] <= 0:
                        nxt = tick_down(self.bid1)
                        if nxt >= lo:
                            self.bid1 = nxt
                            self.bidq = self.bidq[1:] + [self._size()]
                        else:
                            self.bidq[0] = self._size()
                remaining -= fill
                made += 1
                self._trade(t, price, fill, "1" if buy else "5", "continuous")
        self._book(t)

    def _quote(self, t: int) -> None:
        rng = self.rng
        r = rng.random()
        mid = (self.ask1 + self.bid1) / 2
        gap = tick_up(self.bid1) < self.ask1
        if gap and r < 0.7:
            if self.fair >= mid:
                self.bid1 = tick_up(self.bid1)
                self.bidq = [self._size()] + self.bidq[:9]
            else:
                self.ask1 = tick_down(self.ask1)
                self.askq = [self._size()] + self.askq[:9]
        elif r < 0.3:
            # the best level on the side the fair price is moving away from is pulled
            if self.fair > mid and tick_up(self.ask1) <= self.info.upper:
                self.ask1 = tick_up(self.ask1)
                self.askq = self.askq[1:] + [self._size()]
            elif self.fair < mid and tick_down(self.bid1) >= self.info.lower:
                self.bid1 = tick_down(self.bid1)
                self.bidq = self.bidq[1:] + [self._size()]
            else:
                self.askq[rng.randrange(10)] = self._size()
        else:
            side = self.askq if rng.random() < 0.5 else self.bidq
            i = min(int(rng.expovariate(0.5)), 9)
            side[i] = max(1, int(side[i] * math.exp(rng.gauss(0, 0.5))))
        self._book(t)

    def _trade(self, t: int, price: int, qty: int, ccld: str, phase: str) -> None:
        self.acml_vol += qty
        self.acml_pbmn += price * qty
        if ccld == "1":
            self.shnu_n += 1
            self.shnu_q += qty
        elif ccld == "5":
            self.seln_n += 1
            self.seln_q += qty
        if self.open == 0:
            self.open = self.high = self.low = price
            self.open_t = self.high_t = self.low_t = t
        elif price > self.high:
            self.high, self.high_t = price, t
        elif price < self.low:
            self.low, self.low_t = price, t
        self.last = price
        self.trade_seq += 1
        askp = self._levels(self.ask1, True)
        bidp = self._levels(self.bid1, False)
        na, nb = self._lv_filled[askp], self._lv_filled[bidp]
        tot_ask = sum(self.askq) if na == 10 else sum(self.askq[:na])
        tot_bid = sum(self.bidq) if nb == 10 else sum(self.bidq[:nb])
        cttr = (self.shnu_q * 10000 // self.seln_q) if self.seln_q else 0
        self.h_t.append(t)
        self.h_px.append(price)
        self.h_qty.append(qty)
        self.h_acml.append(self.acml_vol)
        self.h_pbmn.append(self.acml_pbmn)
        self.h_ask.append(askp[0])
        self.h_bid.append(bidp[0])
        self.h_cttr.append(cttr)
        self.outbox.append(
            TradeEv(
                self.info.code, t, self.trade_seq, self.group, price, qty, self.acml_vol, self.acml_pbmn,
                ccld, phase, self.open, self.high, self.low, self.open_t, self.high_t, self.low_t,
                self.seln_n, self.shnu_n, self.seln_q, self.shnu_q, askp[0], bidp[0],
                self.askq[0] if askp[0] else 0, self.bidq[0] if bidp[0] else 0, tot_ask, tot_bid, self.open_qty,
            )
        )

    def _book(self, t: int) -> None:
        askp = self._levels(self.ask1, True)
        bidp = self._levels(self.bid1, False)
        self._emit_book(t, "0", askp, bidp, self.askq, self.bidq, 0, 0, self.open_qty)

    def _emit_book(self, t, hour_cls, askp, bidp, askq, bidq, antc_p, antc_q, antc_vol) -> None:
        aq = self._sizes(askp, askq)
        bq = self._sizes(bidp, bidq)
        ta, tb = sum(aq), sum(bq)
        self.book_seq += 1
        self.askp, self.bidp = askp, bidp
        self.book_sizes = (aq, bq)  # the asking-price REST call answers the last published book
        self.outbox.append(
            BookEv(
                self.info.code, t, self.book_seq, hour_cls, askp, bidp, aq, bq, ta, tb, antc_p, antc_q, antc_vol,
                self.acml_vol, ta - self.tot_ask_prev, tb - self.tot_bid_prev, PHASE_NAMES[self.phase],
            )
        )
        self.tot_ask_prev, self.tot_bid_prev = ta, tb

    # ---- queries (lock held, after advance(now)) -------------------------------------------------
    def take(self, upto: int | None = None) -> list:
        """Events not yet taken, up to and including time `upto` (a REST call may have generated a few
        milliseconds past the pump's clock reading; those wait for the next tick so every tick is one
        contiguous slice of market time)."""
        ob = self.outbox
        if upto is None or not ob or ob[-1].t <= upto:
            self.outbox = []
            return ob
        i = len(ob)
        while i > 0 and ob[i - 1].t > upto:
            i -= 1
        self.outbox = ob[i:]
        return ob[:i]

    def trades_upto(self, t_ms: int) -> int:
        """Number of trades with time < t_ms."""
        return bisect.bisect_left(self.h_t, t_ms)


def sign_code(price: int, ref: int, lower: int = 0, upper: int = 0) -> str:
    """PRDY_VRSS_SIGN: 1 upper limit, 2 up, 3 unchanged, 4 lower limit, 5 down."""
    if upper and price >= upper:
        return "1"
    if lower and price and price <= lower:
        return "4"
    if price > ref:
        return "2"
    if price < ref:
        return "5"
    return "3"


def dec2(num: int, den: int) -> str:
    """num/den with two decimals, rounded half away from zero, never '-0.00' (integer maths: no float drift)."""
    if den == 0:
        return "0.00"
    neg = (num < 0) != (den < 0)
    q = (abs(num) * 200 + abs(den)) // (2 * abs(den))
    return f"{'-' if neg and q else ''}{q // 100}.{q % 100:02d}"
