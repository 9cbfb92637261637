"""observer-track-a: the REST poller (Track A)."""

from __future__ import annotations

from observer import cli
from observer.collect.runtime import run_collector
from observer.collect.track_a import TrackA
from observer.collect.universe import UniverseError, ensure_universe
from observer.core.logging import get_logger
from observer.core.settings import TrackAConfig
from observer.telemetry.alerts.notifier import SEND_NOW_S, ProgramAlerts

PROGRAM = "observer-track-a"
log = get_logger(PROGRAM)


def main(argv=None) -> int:
    p = cli.make_parser(PROGRAM, "Track A: sweep the day's universe with the broker's current-price call "
                        "every track_a.interval_minutes during the Track A window; snapshots go to swing/, "
                        "failures become gap markers, each sweep ends with a `sweep` event.")
    args = p.parse_args(argv)
    ctx = cli.start(PROGRAM, args, tree=cli.TREE_OWN)
    tcfg = TrackAConfig.from_config(ctx.cfg)
    provider_name = tcfg.provider

    def day_of_sweeps(rt, day, ev) -> int:
        rest = rt.provider.rest()
        try:
            uni = ensure_universe(rt.store.root, day, rest, ctx.cfg, rt.calendar, ev, ctx.clock, provider_name,
                                  source=rt.provider,
                                  alerts=ProgramAlerts(rt.store, ctx.cfg, PROGRAM, send_s=SEND_NOW_S))
        except UniverseError as e:
            log.error("no universe", extra={"error": str(e)})
            return cli.EXIT_FAILED
        symbols = [s["symbol"] for s in uni["symbols"]]
        limit = tcfg.max_symbols
        if limit:
            symbols = symbols[:limit]
        ta = TrackA(store=rt.store, rest=rest, clock=ctx.clock, calendar=rt.calendar, cfg=ctx.cfg,
                    provider=provider_name, symbols=symbols, notifier=rt.notifier, stop=rt.stop)
        n = ta.run_day(day)
        ev.emit("collector", "INFO", state="stopped",
                reason=f"{n} sweeps; {'signal' if rt.stop.is_set() else 'window over'}")
        return cli.EXIT_OK

    return run_collector(ctx.cfg, ctx.clock, provider_name, PROGRAM, day_of_sweeps)
