"""observer-track-b: the WebSocket streamer (Track B) of one provider."""

from __future__ import annotations

import sys

from observer import cli
from observer.collect.runtime import open_runtime
from observer.collect.track_b import TrackB
from observer.core.logging import get_logger
from observer.core.secrets import SecretsError
from observer.providers.base import AuthError, provider_names

log = get_logger("observer-track-b")


def main(argv=None) -> int:
    p = cli.make_parser("observer-track-b", "Track B: stream trades and order books of the slots chosen by the "
                        "triggers during the Track B window; raw frames to raw/, trades and sampled books to scalp/. "
                        "One systemd instance per provider (observer-track-b@kis).")
    p.add_argument("--provider", default="kis", help=f"which broker ({', '.join(provider_names())}; default kis)")
    p.add_argument("--symbols", help="comma-separated symbols to hold instead of trigger-chosen slots (tests, demos)")
    args = p.parse_args(argv)
    ctx = cli.start(f"observer-track-b@{args.provider}", args)
    try:
        rt = open_runtime(ctx, args.provider, f"observer-track-b@{args.provider}")
    except (SecretsError, ValueError) as e:
        print(f"observer-track-b: {e}", file=sys.stderr)
        return cli.EXIT_USAGE
    day = ctx.clock.today_kst()
    ev = rt.store.events(args.provider)
    try:
        if not rt.calendar.is_trading_day(day):
            reason = rt.calendar.closed_reason(day)
            ev.emit("collector", "INFO", state="standing_down", reason=f"{day}: not a KRX trading day ({reason})")
            rt.notifier.ready(f"standing down: {day} is not a trading day ({reason})")
            return cli.EXIT_OK
        fixed = [s.strip() for s in args.symbols.split(",") if s.strip()] if args.symbols else None
        tb = TrackB(store=rt.store, provider=rt.provider, clock=ctx.clock, calendar=rt.calendar, cfg=ctx.cfg,
                    notifier=rt.notifier, stop=rt.stop, fixed_symbols=fixed)
        tb.run_day(day)
        ev.emit("collector", "INFO", state="stopped",
                reason=f"{tb.trades} trades, {tb.books_written} books; {'signal' if rt.stop.is_set() else 'window over'}")
        return cli.EXIT_OK
    except AuthError as e:
        log.error("broker refused the credentials", extra={"error": str(e)})
        return cli.EXIT_FAILED
    finally:
        rt.notifier.stopping()
        rt.store.close()
