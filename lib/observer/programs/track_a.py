"""observer-track-a: the REST poller (Track A)."""

from __future__ import annotations

import sys

from observer import cli
from observer.collect.runtime import open_runtime
from observer.collect.track_a import TrackA
from observer.collect.universe import UniverseError, ensure_universe
from observer.core.logging import get_logger
from observer.core.secrets import SecretsError
from observer.providers.base import AuthError

log = get_logger("observer-track-a")


def main(argv=None) -> int:
    p = cli.make_parser("observer-track-a", "Track A: sweep the day's universe with the broker's current-price call "
                        "every track_a.interval_minutes during the Track A window; snapshots go to swing/, "
                        "failures become gap markers, each sweep ends with a `sweep` event.")
    args = p.parse_args(argv)
    ctx = cli.start("observer-track-a", args)
    provider_name = ctx.cfg.get("track_a", {}).get("provider", "kis")
    try:
        rt = open_runtime(ctx, provider_name, "observer-track-a")
    except (SecretsError, ValueError) as e:
        print(f"observer-track-a: {e}", file=sys.stderr)
        return cli.EXIT_USAGE
    day = ctx.clock.today_kst()
    ev = rt.store.events(provider_name)
    try:
        if not rt.calendar.is_trading_day(day):
            reason = rt.calendar.closed_reason(day)
            ev.emit("collector", "INFO", state="standing_down", reason=f"{day}: not a KRX trading day ({reason})")
            rt.notifier.ready(f"standing down: {day} is not a trading day ({reason})")
            return cli.EXIT_OK
        rest = rt.provider.rest()
        try:
            uni = ensure_universe(rt.store.root, day, rest, ctx.cfg, rt.calendar, ev, ctx.clock, provider_name)
        except UniverseError as e:
            log.error("no universe", extra={"error": str(e)})
            return cli.EXIT_FAILED
        symbols = [s["symbol"] for s in uni["symbols"]]
        limit = ctx.cfg.get("track_a", {}).get("max_symbols", 0)
        if limit:
            symbols = symbols[:limit]
        ta = TrackA(store=rt.store, rest=rest, clock=ctx.clock, calendar=rt.calendar, cfg=ctx.cfg,
                    provider=provider_name, symbols=symbols, notifier=rt.notifier, stop=rt.stop)
        n = ta.run_day(day)
        ev.emit("collector", "INFO", state="stopped", reason=f"{n} sweeps; {'signal' if rt.stop.is_set() else 'window over'}")
        return cli.EXIT_OK
    except AuthError as e:
        log.error("broker refused the credentials", extra={"error": str(e)})
        return cli.EXIT_FAILED
    finally:
        rt.notifier.stopping()
        rt.store.close()
