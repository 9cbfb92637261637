"""observer-track-b: the WebSocket streamer (Track B) of one provider."""

from __future__ import annotations

from observer import cli
from observer.collect.runtime import run_collector
from observer.collect.track_b import TrackB
from observer.core.settings import TrackBConfig
from observer.providers.base import provider_names

PROGRAM = "observer-track-b"


def main(argv=None) -> int:
    p = cli.make_parser(PROGRAM, "Track B: stream trades and order books of the slots chosen by the "
                        "triggers during the Track B window; raw frames to raw/, trades and sampled books to scalp/. "
                        "One systemd instance per provider (observer-track-b@<provider>).")
    p.add_argument("--provider", help=f"which broker ({', '.join(provider_names())}; default: track_b.provider)")
    p.add_argument("--symbols", help="comma-separated symbols to hold instead of trigger-chosen slots (tests, demos)")
    args = p.parse_args(argv)
    ctx = cli.start(f"{PROGRAM}@{args.provider}" if args.provider else PROGRAM, args, tree=cli.TREE_OWN)
    args.provider = args.provider or TrackBConfig.from_config(ctx.cfg).provider
    program = f"{PROGRAM}@{args.provider}"
    fixed = [s.strip() for s in args.symbols.split(",") if s.strip()] if args.symbols else None

    def day_of_streaming(rt, day, ev) -> int:
        tb = TrackB(store=rt.store, provider=rt.provider, clock=ctx.clock, calendar=rt.calendar, cfg=ctx.cfg,
                    notifier=rt.notifier, stop=rt.stop, fixed_symbols=fixed)
        tb.run_day(day)
        ev.emit("collector", "INFO", state="stopped",
                reason=f"{tb.trades} trades, {tb.books_written} books; "
                       f"{'signal' if rt.stop.is_set() else 'window over'}")
        return cli.EXIT_OK

    return run_collector(ctx.cfg, ctx.clock, args.provider, program, day_of_streaming)
