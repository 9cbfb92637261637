"""Track B trigger engine: which symbols deserve a WebSocket slot right now (docs/track_b.md).

Inputs, all plain records or numbers, no I/O except the operator's override file:
  * Track A `snapshot` records (every 10 min sweep): per-symbol history -> volume surge (interval
    volume vs the symbol's own recent intervals), volatility spike (interval return vs its own recent
    returns, or a jump of the day's range);
  * the broker's volume-rank rows (`snapshot` records with extra.rank, extra.avrg_vol / prdy_vol):
    volume surge by *pace* (volume so far today vs a normal day's volume at this time of the session),
    and the idle-slot fillers;
  * Track B's own trade counts for held symbols: trade velocity (trades/min now vs its own baseline);
  * the manual override file (one code per line, '#' comments), re-read when it changes.

`candidates(now_ns)` returns one Candidate per symbol (its best trigger), ranked by trigger priority
(volume_surge > trade_velocity > volatility_spike > manual), then score, then symbol. Scores are "times
over the threshold" (>= 1.0 means the trigger fired), so two measures of one trigger compare fairly.
Fillers (symbols from the volume rank that fired nothing, `fill_idle_slots`) come last, with
`filler=True` and a score < 1: they may take an idle slot, never displace anything.
"""

from __future__ import annotations

import os
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from observer.core.clock import KST, NS, Clock, kst_ns
from observer.core.config import data_dir, section
from observer.core.settings import TrackBConfig
from observer.store import paths
from observer.store.reader import read_file

TRIGGERS = ("volume_surge", "trade_velocity", "volatility_spike", "manual")  # priority order, highest first
PRIORITY = {t: i for i, t in enumerate(TRIGGERS)}

SESSION_MINUTES = 390.0          # KRX regular session 09:00-15:30: the "normal day" pace divides by this
PACE_MIN_ELAPSED_S = 600.0       # no pace judgement in the first 10 min (opening auction volume dominates)
SYMBOL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")


@dataclass(frozen=True)
class Candidate:
    symbol: str
    trigger: str
    score: float
    reason: str
    filler: bool = False   # no trigger fired: offered only for an idle slot (never displaces, never overflow)

    def __post_init__(self):
        if self.trigger not in PRIORITY:
            raise ValueError(f"trigger must be one of {TRIGGERS}, got {self.trigger!r}")

    @property
    def rank_key(self) -> tuple:
        """Smaller is better: real triggers by priority then score; fillers after every real one."""
        return (1 if self.filler else 0, PRIORITY[self.trigger], -self.score, self.symbol)


def rank(cands: Iterable[Candidate]) -> list[Candidate]:
    return sorted(cands, key=lambda c: c.rank_key)


@dataclass
class _Point:
    """One Track A observation of a symbol."""
    sweep_ns: int
    t_ns: int            # when it was measured (recv_ns; sweep_ns if missing)
    price: float
    cum_vol: float | None
    cum_value: float | None
    high: float | None
    low: float | None
    prev_close: float | None


@dataclass
class _Interval:
    end_ns: int
    minutes: float
    volume: float | None
    value: float | None
    ret_pct: float
    range_jump_pct: float | None


@dataclass
class _RankInfo:
    recv_ns: int
    rank: int | None
    price: float
    cum_vol: float | None
    in_latest: bool


def _num(v) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if f == f else None  # NaN -> None


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.2f}"


class TriggerEngine:
    def __init__(self, cfg: dict, clock: Clock | None = None):
        self.t = section(cfg, "track_b", "triggers")
        self.clock = clock or Clock()
        self.fill_idle = bool(TrackBConfig.from_config(cfg).fill_idle_slots)
        self.manual_path = manual_override_path(cfg)
        self._hist: dict[str, deque[_Point]] = {}
        self._intervals: dict[str, deque[_Interval]] = {}
        self._ref_vol: dict[str, tuple[float, str]] = {}     # symbol -> (normal-day volume, source field)
        self._rank: dict[str, _RankInfo] = {}
        self._trades: dict[str, deque[tuple[int, int]]] = {}
        self._trades_first: dict[str, int] = {}
        self._session_open_ns: int | None = None
        self._session_minutes = SESSION_MINUTES
        self._manual_key: tuple | None = None
        self._manual: list[str] = []
        self.manual_errors: list[str] = []   # bad lines of the override file, for an event (re-set on re-read)
        self.manual_reloads = 0

    # -- session ------------------------------------------------------------------------------
    def set_session(self, open_ns: int, close_ns: int | None = None) -> None:
        """The day's session (late-open days shift it); default: 09:00-15:30 KST of the data's day."""
        self._session_open_ns = open_ns
        if close_ns is not None and close_ns > open_ns:
            self._session_minutes = (close_ns - open_ns) / NS / 60.0

    def _open_ns(self, ns: int) -> int:
        if self._session_open_ns is not None:
            return self._session_open_ns
        d = datetime.fromtimestamp(ns / NS, tz=KST).date()
        return kst_ns(d, "090000")

    # -- Track A snapshots --------------------------------------------------------------------
    def observe_snapshots(self, snapshots: list[dict]) -> None:
        """Track A `snapshot` records. A sweep seen twice (same sweep_ns) is ignored, so the caller may
        pass latest_snapshots() every cycle. A new KST day or a falling cum_vol restarts the history."""
        keep = int(self.t["history_intervals"])
        for rec in snapshots:
            sym = rec.get("symbol")
            price = _num(rec.get("price"))
            sweep = rec.get("sweep_ns")
            if not sym or price is None or price <= 0 or not isinstance(sweep, int):
                continue
            if rec.get("quality") == "gap":
                continue
            t_ns = rec.get("recv_ns") if isinstance(rec.get("recv_ns"), int) else sweep
            p = _Point(sweep, t_ns, price, _num(rec.get("cum_vol")), _num(rec.get("cum_value")),
                       _num(rec.get("high")), _num(rec.get("low")), _num(rec.get("prev_close")))
            h = self._hist.get(sym)
            if h:
                last = h[-1]
                if p.sweep_ns <= last.sweep_ns:
                    continue
                if (paths.day_of(p.sweep_ns) != paths.day_of(last.sweep_ns)
                        or (p.cum_vol is not None and last.cum_vol is not None and p.cum_vol < last.cum_vol)):
                    h = None
            if not h:
                self._hist[sym] = deque([p], maxlen=2)
                self._intervals[sym] = deque(maxlen=keep + 1)
                continue
            last = h[-1]
            minutes = max((p.t_ns - last.t_ns) / NS / 60.0, 1e-6)
            vol = (p.cum_vol - last.cum_vol) if p.cum_vol is not None and last.cum_vol is not None else None
            if p.cum_value is not None and last.cum_value is not None:
                value = p.cum_value - last.cum_value
            else:
                value = vol * p.price if vol is not None else None
            ret = abs(p.price / last.price - 1.0) * 100.0
            jump = None
            base = p.prev_close or last.price
            if None not in (p.high, p.low, last.high, last.low) and base:
                jump = ((p.high - p.low) - (last.high - last.low)) / base * 100.0
            self._intervals[sym].append(_Interval(p.t_ns, minutes, vol, value, ret, jump))
            h.append(p)

    # -- volume rank --------------------------------------------------------------------------
    def observe_volume_rank(self, rows: list[dict]) -> None:
        """The broker's volume-rank rows (snapshot records, rank in extra["rank"]); the newest call
        replaces the previous list. avrg_vol (else prdy_vol) becomes the symbol's normal-day volume."""
        for info in self._rank.values():
            info.in_latest = False
        top = int(self.t["volume_rank_top"])
        for i, rec in enumerate(rows):
            sym = rec.get("symbol")
            price = _num(rec.get("price"))
            if not sym or price is None or price <= 0:
                continue
            extra = rec.get("extra") or {}
            rk = _num(extra.get("rank"))
            rk = int(rk) if rk is not None else i + 1
            for field in ("avrg_vol", "prdy_vol"):
                ref = _num(extra.get(field))
                if ref and ref > 0:
                    self._ref_vol[sym] = (ref, field)
                    break
            recv = rec.get("recv_ns") if isinstance(rec.get("recv_ns"), int) else self.clock.now_ns()
            self._rank[sym] = _RankInfo(recv, rk, price, _num(rec.get("cum_vol")), rk <= top)

    # -- Track B trade counts -----------------------------------------------------------------
    def observe_trades(self, symbol: str, count: int, now_ns: int) -> None:
        """Trades received for a held symbol since the previous call (call it regularly, even with 0,
        so the baseline knows the symbol was watched)."""
        q = self._trades.get(symbol)
        if q is None:
            q = self._trades[symbol] = deque()
            self._trades_first[symbol] = now_ns
        q.append((now_ns, int(count)))
        horizon = now_ns - int((self.t["trade_velocity_window_s"] + self.t["trade_velocity_baseline_s"]) * NS)
        while q and q[0][0] < horizon:
            q.popleft()

    def forget_trades(self, symbol: str) -> None:
        """The symbol left its slot: its velocity history no longer describes a watched stream."""
        self._trades.pop(symbol, None)
        self._trades_first.pop(symbol, None)

    # -- individual triggers ------------------------------------------------------------------
    def _fresh(self, t_ns: int, now_ns: int) -> bool:
        return now_ns - t_ns <= self.t["candidate_ttl_s"] * NS

    def _pace(self, sym: str, cum_vol: float | None, t_ns: int) -> tuple[float, str] | None:
        ref = self._ref_vol.get(sym)
        if ref is None or cum_vol is None:
            return None
        elapsed_s = (t_ns - self._open_ns(t_ns)) / NS
        if elapsed_s < PACE_MIN_ELAPSED_S:
            return None
        frac = min(elapsed_s / 60.0 / self._session_minutes, 1.0)
        expected = ref[0] * frac
        if expected <= 0:
            return None
        ratio = cum_vol / expected
        return ratio, (f"volume {_fmt(cum_vol)} = {ratio:.1f}x a normal day's pace "
                       f"({ref[1]} {_fmt(ref[0])}, {elapsed_s / 60:.0f} min into the session)")

    def _volume_surge(self, sym: str, now_ns: int) -> Candidate | None:
        best: tuple[float, str] | None = None
        iv = self._intervals.get(sym)
        if iv and self._fresh(iv[-1].end_ns, now_ns):
            last = iv[-1]
            prev = [x for x in list(iv)[:-1] if x.volume is not None]
            need = int(self.t["min_baseline_intervals"])
            if last.volume is not None and len(prev) >= need and \
                    (last.value or 0) >= self.t["min_interval_value_krw"]:
                base_rate = sum(x.volume for x in prev) / sum(x.minutes for x in prev)
                rate = last.volume / last.minutes
                ratio = rate / base_rate if base_rate > 0 else float("inf")
                score = min(ratio, 1e6) / self.t["volume_surge_ratio"]
                if score >= 1.0:
                    best = (score, f"interval volume {_fmt(last.volume)} in {last.minutes:.0f} min = "
                                   f"{ratio:.1f}x its own average of the previous {len(prev)} intervals")
        pace_src = None
        h = self._hist.get(sym)
        ri = self._rank.get(sym)
        if ri and self._fresh(ri.recv_ns, now_ns) and ri.cum_vol is not None:
            pace_src = (ri.cum_vol, ri.recv_ns)
        if h and self._fresh(h[-1].t_ns, now_ns) and h[-1].cum_vol is not None:
            if pace_src is None or h[-1].t_ns > pace_src[1]:
                pace_src = (h[-1].cum_vol, h[-1].t_ns)
        if pace_src is not None:
            pr = self._pace(sym, *pace_src)
            if pr is not None:
                score = pr[0] / self.t["volume_pace_ratio"]
                if score >= 1.0 and (best is None or score > best[0]):
                    best = (score, pr[1])
        return Candidate(sym, "volume_surge", best[0], best[1]) if best else None

    def _trade_velocity(self, sym: str, now_ns: int) -> Candidate | None:
        q = self._trades.get(sym)
        if not q:
            return None
        win = self.t["trade_velocity_window_s"]
        cut = now_ns - int(win * NS)
        base_from = max(self._trades_first[sym], cut - int(self.t["trade_velocity_baseline_s"] * NS))
        base_span_min = (cut - base_from) / NS / 60.0
        if base_span_min < win / 60.0:          # need at least one window of baseline
            return None
        recent = sum(c for t, c in q if cut < t <= now_ns)
        base = sum(c for t, c in q if base_from < t <= cut)
        recent_pm = recent / (win / 60.0)
        base_pm = max(base / base_span_min, 1.0)
        ratio = recent_pm / base_pm
        if recent_pm < self.t["trade_velocity_min_per_min"]:
            return None
        score = ratio / self.t["trade_velocity_ratio"]
        if score < 1.0:
            return None
        return Candidate(sym, "trade_velocity", score,
                         f"{recent_pm:.0f} trades/min in the last {win:.0f} s = {ratio:.1f}x its "
                         f"{base_span_min:.0f}-min baseline of {base_pm:.1f}/min")

    def _volatility(self, sym: str, now_ns: int) -> Candidate | None:
        iv = self._intervals.get(sym)
        if not iv or not self._fresh(iv[-1].end_ns, now_ns):
            return None
        last = iv[-1]
        best: tuple[float, str] | None = None
        floor = self.t["volatility_return_pct"]
        need = floor                      # the binding threshold: the floor, or ratio x own baseline
        why = f"interval return {last.ret_pct:.2f}% (>= {floor}%)"
        prev = list(iv)[:-1]
        if len(prev) >= int(self.t["min_baseline_intervals"]):
            base = sum(x.ret_pct for x in prev) / len(prev)
            if self.t["volatility_ratio"] * base > need:
                need = self.t["volatility_ratio"] * base
            if base > 0:
                why += f", {last.ret_pct / base:.1f}x its recent average {base:.2f}%"
        if last.ret_pct >= need:
            best = (last.ret_pct / need, why)
        jump_thr = self.t["volatility_range_jump_pct"]
        if last.range_jump_pct is not None and last.range_jump_pct >= jump_thr:
            score = last.range_jump_pct / jump_thr
            if best is None or score > best[0]:
                best = (score, f"day range widened by {last.range_jump_pct:.2f}% of the previous close "
                               f"in one interval (>= {jump_thr}%)")
        return Candidate(sym, "volatility_spike", best[0], best[1]) if best else None

    # -- ranking ------------------------------------------------------------------------------
    def candidates(self, now_ns: int | None = None) -> list[Candidate]:
        now_ns = self.clock.now_ns() if now_ns is None else now_ns
        best: dict[str, Candidate] = {}

        def offer(c: Candidate | None):
            if c is not None and (c.symbol not in best or c.rank_key < best[c.symbol].rank_key):
                best[c.symbol] = c

        for sym in set(self._intervals) | set(self._rank):
            offer(self._volume_surge(sym, now_ns))
        for sym in list(self._trades):
            offer(self._trade_velocity(sym, now_ns))
        for sym in list(self._intervals):
            offer(self._volatility(sym, now_ns))
        manual = self.manual_symbols()
        n = len(manual)
        for i, sym in enumerate(manual):
            offer(Candidate(sym, "manual", float(n - i), f"manual override file, line order {i + 1} of {n}"))
        out = rank(best.values())
        if self.fill_idle:
            fillers = []
            for sym, ri in self._rank.items():
                if sym in best or not ri.in_latest or not self._fresh(ri.recv_ns, now_ns):
                    continue
                score = 1.0 / (1 + (ri.rank or 999))
                why = f"volume rank #{ri.rank}; no trigger fired (fills an idle slot)"
                pr = self._pace(sym, ri.cum_vol, ri.recv_ns)
                if pr is not None:
                    score = min(pr[0] / self.t["volume_pace_ratio"], 0.999)
                    why = f"volume rank #{ri.rank}, {pr[0]:.1f}x normal pace; no trigger fired (fills an idle slot)"
                fillers.append(Candidate(sym, "volume_surge", score, why, filler=True))
            out += rank(fillers)
        return out

    # -- manual override ------------------------------------------------------------------------
    def manual_symbols(self) -> list[str]:
        """Codes from the operator's override file; re-read whenever its mtime/size/inode changes.
        A missing file means no manual symbols."""
        p = self.manual_path
        if p is None:
            return []
        try:
            st = os.stat(p)
        except OSError:
            if self._manual_key is not None:
                self._manual_key, self._manual, self.manual_errors = None, [], []
                self.manual_reloads += 1
            return []
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        if key != self._manual_key:
            try:
                text = Path(p).read_text(encoding="utf-8", errors="replace")
            except OSError:
                return list(self._manual)
            self._manual, self.manual_errors = parse_manual(text)
            self._manual_key = key
            self.manual_reloads += 1
        return list(self._manual)


def parse_manual(text: str) -> tuple[list[str], list[str]]:
    """(codes in file order without duplicates, problems 'line N: ...')."""
    out: list[str] = []
    problems: list[str] = []
    seen = set()
    for n, line in enumerate(text.splitlines(), 1):
        s = line.split("#", 1)[0].strip()
        if not s:
            continue
        if not SYMBOL_RE.match(s):
            problems.append(f"line {n}: {s[:60]!r} is not a symbol code")
            continue
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out, problems


def manual_override_path(cfg: dict) -> Path | None:
    """[track_b] manual_override_file: absolute, or relative to data_dir; empty = no override file."""
    name = TrackBConfig.from_config(cfg).manual_override_file
    if not name:
        return None
    p = Path(name)
    if not p.is_absolute():
        p = data_dir(cfg) / p
    return p


def _is_track_a(rec: dict) -> bool:
    return (rec.get("kind") == "snapshot" and rec.get("track", "A") == "A"
            and "rank" not in (rec.get("extra") or {}) and rec.get("quality") != "gap"
            and isinstance(rec.get("sweep_ns"), int))


def latest_snapshots(root, provider: str, market: str, day: date) -> list[dict]:
    """The newest Track A sweep's snapshot records of `day` (one per symbol, the last one written).

    Reads the newest two hourly swing files (a sweep can straddle an hour) and keeps the records of the
    largest sweep_ns; a sweep still being written gives the symbols swept so far; a torn last line is
    skipped (the writer is still appending it)."""
    found: list[Path] = []
    for h in range(23, -1, -1):
        p = paths.swing_file(Path(root), provider, market, kst_ns(day, f"{h:02d}0000"))
        if p.exists():
            found.append(p)
            if len(found) == 2:
                break
    recs: list[dict] = []
    for p in reversed(found):
        try:
            recs.extend(r for r in read_file(p) if _is_track_a(r))
        except FileNotFoundError:
            continue
    if not recs:
        return []
    top = max(r["sweep_ns"] for r in recs)
    by_sym: dict[str, dict] = {}
    for r in recs:
        if r["sweep_ns"] == top:
            by_sym[r["symbol"]] = r
    return list(by_sym.values())


__all__ = ["TRIGGERS", "PRIORITY", "Candidate", "TriggerEngine", "latest_snapshots", "parse_manual",
           "manual_override_path", "rank"]
