"""The day's universe: candidate symbols whose previous close is at least `universe.min_prev_close`,
decided once per day from the broker's daily prices and frozen in universe/YYYYMMDD_kr_stocks.json,
so the day can be reproduced. Re-running the same day returns the same file.

Candidates: the provider's listing files (every listed instrument; `universe.include_types` chooses
which kinds, common stocks by default), downloaded once a day and kept in universe/YYYYMMDD/; when
the download fails, the newest good copy of the previous days is used (WARNING event + alert
`universe_fallback`). `universe.candidates_file`, when set, overrides them. If creation fails, the
previous trading day's universe is used and a WARNING event (and the same alert) says so.

Refused credentials (AuthError) and a stop request (Stopped) are not look-up failures: they end the
creation at once and propagate to the program.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

from observer.core.calendar import Calendar
from observer.core.clock import Clock, Stopped, to_ns, yyyymmdd
from observer.core.config import section
from observer.core.logging import get_logger
from observer.providers.base import AuthError, MarketRest, Provider, ProviderError, market_of
from observer.store import paths
from observer.store.state import create_json_once, read_json, write_bytes_atomic
from observer.telemetry.alerts.table import KEY_UNIVERSE_FALLBACK

log = get_logger(__name__)


def universe_name(provider: str) -> str:
    """The universe file's name part (and its `market` field): that of the market `provider` serves."""
    return market_of(provider).universe
LOOKBACK_DAYS = 10  # how far back a fallback universe (or a kept listing file) may come from
# WARNING alert (the name of observer.telemetry.alerts.table's constant): listing download/parse failed, or a
# previous day's universe used
MAX_KEPT_FILE = 16 << 20  # a kept listing file copied forward is at most this big


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
                    max_failed_ratio: float, workers: int, clock: Clock, provider: str,
                    info: dict[str, dict] | None = None, source: dict | None = None) -> dict:
    abort: list[BaseException] = []  # the first AuthError/Stopped: no further look-up is made
    gate = threading.Lock()

    def look(sym):
        if abort:
            return sym, None, "aborted"
        try:
            return sym, previous_close(rest, sym, day), None
        except (AuthError, Stopped) as e:
            with gate:
                abort.append(e)
            return sym, None, "aborted"
        except (ProviderError, OSError, ValueError, KeyError) as e:
            return sym, None, f"{type(e).__name__}: {e}"

    with ThreadPoolExecutor(max_workers=workers) as ex:
        results = list(ex.map(look, candidates))
    if abort:
        raise abort[0]
    info = info or {}
    failed = [{"symbol": s, "error": err} for s, _, err in results if err]
    if len(failed) > max_failed_ratio * len(candidates):
        raise UniverseError(f"{len(failed)} of {len(candidates)} look-ups failed (limit "
                            f"{max_failed_ratio:.0%}); first: {failed[0]['symbol']}: {failed[0]['error']}")
    kept = [{"symbol": s, "prev_close": pc, **info.get(s, {})}
            for s, pc, err in results if not err and pc is not None and pc >= min_prev_close]
    return {
        "date": yyyymmdd(day), "market": universe_name(provider), "provider": provider, "created_ns": clock.now_ns(),
        "source": source or {}, "min_prev_close": min_prev_close, "candidates": len(candidates),
        "excluded_below_threshold": sum(1 for s, pc, err in results if not err and pc is not None and pc < min_prev_close),
        "no_history": [s for s, pc, err in results if not err and pc is None],
        "failed": failed, "symbols": kept,
    }


def _copy_kept(src: Path, dst: Path) -> None:
    """Copy a previous day's kept listing files into today's source dir (what today's universe used)."""
    for f in sorted(src.iterdir()):
        st = f.lstat()
        if f.is_file() and not f.is_symlink() and st.st_size <= MAX_KEPT_FILE and not f.name.startswith("."):
            write_bytes_atomic(dst / f.name, f.read_bytes())


def listed_candidates(root: Path, day: date, source: Provider, ucfg: dict, calendar: Calendar, events,
                      alerts=None) -> tuple[list[str], dict[str, dict], dict]:
    """Candidates from the provider's listing files: (symbols, {symbol: {name, market, type}}, source).

    Today's kept files if a previous run of today downloaded them, else a download now (kept in
    universe/YYYYMMDD/), else the newest good copy of the previous LOOKBACK_DAYS trading days (copied
    into today's dir; WARNING event and alert). Raises UniverseError when none can be had."""
    here = paths.universe_sources_dir(root, day)
    fallback_from = None
    try:
        recs = source.kept_listings(here)
    except (ProviderError, OSError):
        try:
            recs = source.fetch_listings(here)
        except (ProviderError, OSError) as e:
            why = str(e)[:500]
            prev, recs = day, None
            for _ in range(LOOKBACK_DAYS):
                prev = calendar.previous_trading_day(prev)
                d = paths.universe_sources_dir(root, prev)
                try:
                    recs = source.kept_listings(d)
                except (ProviderError, OSError):
                    continue
                _copy_kept(d, here)
                fallback_from = yyyymmdd(prev)
                break
            if recs is None:
                raise UniverseError(f"stock listing download failed ({why}) and no good copy kept in the "
                                    f"previous {LOOKBACK_DAYS} trading days") from e
            events.emit("universe", "WARNING", date=yyyymmdd(day), action="listing_fallback",
                        source_date=fallback_from, reason=why)
            if alerts is not None:
                alerts.alert(KEY_UNIVERSE_FALLBACK, "WARNING",
                             f"stock listing download failed: {why}; using the copy of {fallback_from} "
                             f"(universe/{fallback_from}/)", date=yyyymmdd(day), source_date=fallback_from)
    include = set(ucfg["include_types"])
    seen: set[str] = set()
    symbols, info = [], {}
    for r in recs:
        sym = r["symbol"]
        if r["type"] in include and len(sym) == 6 and sym.isalnum() and sym not in seen:
            seen.add(sym)
            symbols.append(sym)
            info[sym] = {"name": r["name"], "market": r["market"], "type": r["type"]}
    if not symbols:
        raise UniverseError(f"the listing files hold no instrument of the types {sorted(include)}")
    src = {"kind": "listing_files", "dir": str(here.relative_to(root)), "listed": len(recs),
           "by_type": dict(sorted(Counter(r["type"] for r in recs).items())), "include_types": sorted(include)}
    if fallback_from:
        src["fallback_from"] = fallback_from
    return symbols, info, src


def ensure_universe(root: Path, day: date, rest: MarketRest, cfg: dict, calendar: Calendar, events,
                    clock: Clock, provider: str | None = None, *, source: Provider | None = None, alerts=None) -> dict:
    """The universe of `day`: the frozen file if it exists, else created now, else the previous
    trading day's (WARNING event + alert). Candidates come from `universe.candidates_file` when set,
    else from `source`'s listing files. `alerts`: anything with .alert(key, severity, text, **context)
    (an Alerter or observer.telemetry.alerts' ProgramAlerts). Raises UniverseError only when none can be had;
    AuthError and Stopped propagate."""
    provider = provider or section(cfg, "track_a")["provider"]  # the universe is Track A's
    name = universe_name(provider)
    path = paths.universe_file(root, day, name)
    existing = read_json(path)
    if existing is not None:
        return existing
    ucfg = section(cfg, "universe")
    try:
        if ucfg["candidates_file"]:
            candidates, info = read_candidates(ucfg["candidates_file"]), {}
            src = {"kind": "candidates_file", "path": str(ucfg["candidates_file"])}
        elif source is not None:
            candidates, info, src = listed_candidates(root, day, source, ucfg, calendar, events, alerts)
        else:
            raise UniverseError("no candidates: universe.candidates_file is unset and no provider listing was given")
        uni = create_universe(rest, candidates, day,
                              min_prev_close=ucfg["min_prev_close"], max_failed_ratio=ucfg["max_failed_ratio"],
                              workers=ucfg["workers"], clock=clock, provider=provider, info=info, source=src)
    except AuthError:
        raise
    except (UniverseError, ProviderError, OSError) as e:
        prev = day
        for _ in range(LOOKBACK_DAYS):
            prev = calendar.previous_trading_day(prev)
            old = read_json(paths.universe_file(root, prev, name))
            if old is not None:
                events.emit("universe", "WARNING", date=yyyymmdd(day), action="fallback", source_date=yyyymmdd(prev),
                            symbols=len(old["symbols"]), reason=str(e)[:500])
                if alerts is not None:
                    alerts.alert(KEY_UNIVERSE_FALLBACK, "WARNING",
                                 f"no universe could be made for {yyyymmdd(day)} ({str(e)[:300]}); using "
                                 f"{yyyymmdd(prev)}'s ({len(old['symbols'])} symbols)", date=yyyymmdd(day),
                                 source_date=yyyymmdd(prev))
                return old
        events.emit("universe", "ERROR", date=yyyymmdd(day), action="failed", reason=str(e)[:500])
        raise UniverseError(f"no universe for {yyyymmdd(day)}: {e}; and none from the previous "
                            f"{LOOKBACK_DAYS} trading days to fall back to") from e
    # another process may have created it meanwhile: the first one wins, the day stays frozen
    if create_json_once(path, uni, indent=True):
        events.emit("universe", "INFO", date=yyyymmdd(day), action="created", symbols=len(uni["symbols"]))
    return read_json(path)
