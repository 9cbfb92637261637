"""The day's universe: candidate symbols whose previous close is at least `universe.min_prev_close`,
decided once per day from the broker's daily prices and frozen in universe/YYYYMMDD_kr_stocks.json,
so the day can be reproduced. Re-running the same day returns the same file. If creation fails,
the previous trading day's universe is used and a WARNING event says so.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

from observer.core.calendar import KrxCalendar
from observer.core.clock import Clock, to_ns, yyyymmdd
from observer.core.logging import get_logger
from observer.providers.base import MarketRest, ProviderError
from observer.store import paths
from observer.store.state import create_json_once, read_json

log = get_logger(__name__)
MARKET = "kr_stocks"
LOOKBACK_DAYS = 10  # how far back a fallback universe may come from


class UniverseError(Exception):
    pass


def read_candidates(path: str | Path) -> list[str]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UniverseError(f"universe.candidates_file {p} does not exist: list the symbols to consider, one per line") from None
    out, seen = [], set()
    for n, line in enumerate(text.splitlines(), 1):
        code = line.split("#", 1)[0].strip()
        if not code:
            continue
        if not (len(code) == 6 and code.isalnum()):
            raise UniverseError(f"{p}:{n}: {code!r} is not a 6-character stock code")
        if code not in seen:
            seen.add(code)
            out.append(code)
    if not out:
        raise UniverseError(f"{p}: no symbols")
    return out


def previous_close(rest: MarketRest, symbol: str, day: date) -> float | None:
    """Close of the last daily bar before `day` (bars of `day` itself are ignored)."""
    day_ns = to_ns_kst_midnight(day)
    bars = [b for b in rest.daily_prices(symbol, "D") if b["exch_ns"] is not None and b["exch_ns"] < day_ns]
    return bars[-1]["close"] if bars else None


def to_ns_kst_midnight(day: date) -> int:
    from datetime import datetime

    from observer.core.clock import KST

    return to_ns(datetime(day.year, day.month, day.day, tzinfo=KST))


def create_universe(rest: MarketRest, candidates: list[str], day: date, *, min_prev_close: float,
                    max_failed_ratio: float, workers: int, clock: Clock, provider: str) -> dict:
    def look(sym):
        try:
            return sym, previous_close(rest, sym, day), None
        except (ProviderError, OSError, ValueError, KeyError) as e:
            return sym, None, f"{type(e).__name__}: {e}"

    with ThreadPoolExecutor(max_workers=workers) as ex:
        results = list(ex.map(look, candidates))
    failed = [{"symbol": s, "error": err} for s, _, err in results if err]
    if len(failed) > max_failed_ratio * len(candidates):
        raise UniverseError(f"{len(failed)} of {len(candidates)} look-ups failed (limit "
                            f"{max_failed_ratio:.0%}); first: {failed[0]['symbol']}: {failed[0]['error']}")
    kept = [{"symbol": s, "prev_close": pc} for s, pc, err in results if not err and pc is not None and pc >= min_prev_close]
    return {
        "date": yyyymmdd(day), "market": MARKET, "provider": provider, "created_ns": clock.now_ns(),
        "min_prev_close": min_prev_close, "candidates": len(candidates),
        "excluded_below_threshold": sum(1 for s, pc, err in results if not err and pc is not None and pc < min_prev_close),
        "no_history": [s for s, pc, err in results if not err and pc is None],
        "failed": failed, "symbols": kept,
    }


def ensure_universe(root: Path, day: date, rest: MarketRest, cfg: dict, calendar: KrxCalendar, events,
                    clock: Clock, provider: str = "kis") -> dict:
    """The universe of `day`: the frozen file if it exists, else created now, else the previous
    trading day's (WARNING event). Raises UniverseError only when none can be had."""
    path = paths.universe_file(root, day, MARKET)
    existing = read_json(path)
    if existing is not None:
        return existing
    ucfg = cfg.get("universe", {})
    try:
        uni = create_universe(rest, read_candidates(ucfg.get("candidates_file", "/etc/observer/symbols.txt")), day,
                              min_prev_close=ucfg.get("min_prev_close", 4000),
                              max_failed_ratio=ucfg.get("max_failed_ratio", 0.05),
                              workers=ucfg.get("workers", 1), clock=clock, provider=provider)
    except (UniverseError, ProviderError, OSError) as e:
        prev = day
        for _ in range(LOOKBACK_DAYS):
            prev = calendar.previous_trading_day(prev)
            old = read_json(paths.universe_file(root, prev, MARKET))
            if old is not None:
                events.emit("universe", "WARNING", date=yyyymmdd(day), action="fallback", source_date=yyyymmdd(prev),
                            symbols=len(old["symbols"]), reason=str(e)[:500])
                return old
        events.emit("universe", "ERROR", date=yyyymmdd(day), action="failed", reason=str(e)[:500])
        raise UniverseError(f"no universe for {yyyymmdd(day)}: {e}; and none from the previous "
                            f"{LOOKBACK_DAYS} trading days to fall back to") from e
    # another process may have created it meanwhile: the first one wins, the day stays frozen
    if create_json_once(path, uni, indent=True):
        events.emit("universe", "INFO", date=yyyymmdd(day), action="created", symbols=len(uni["symbols"]))
    return read_json(path)
