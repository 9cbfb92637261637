"""observer-sim: command line of the market simulator (docs/simulator.md)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys

from observer import cli
from observer.core.clock import yyyymmdd

PROGRAM = "observer-sim"

EPILOG = """\
When ready it prints one JSON line {"rest": URL, "ws": URL, "control": URL, "clock": SPEC} on stdout (control
is null without --control-port; run collectors with OBSERVER_CLOCK=SPEC to share the market clock). rest/ws
are KIS's; with --providers kis,kiwoom the line also has "kis": {"rest", "ws"} and "kiwoom": {"rest", "ws"}
(Kiwoom REST API 2025 over the same market: the same trades and books, its own latency, faults, limits and
ground truth in DIR/kiwoom/). Logs go to stderr as JSON lines. SIGTERM/SIGINT stop it cleanly with the ground
truth flushed.

Market (market time, KST): pre-open call 08:30-09:00 (books only, expected price), opening trade at a random
second of 09:00:00-09:00:29, continuous trading to 15:20, closing call 15:20-15:30, closing trade 15:30:00.
Market time = a clock starting at --start on --date and running --speed times real time.

Fault kinds (schedule file entries {"kind", "at": "HH:MM[:SS]", "duration": market s | "duration_real": real s,
"provider": the one protocol it hits, kis or kiwoom (default: every one served), ...}): ws_close_abrupt, ws_stall,
ws_refuse, ws_flap, rest_5xx, rate_limit_storm, token_expire, token_invalidate, approval_invalidate, rest_slow,
ws_malformed, ws_duplicate, ws_out_of_order, ws_drop_symbol, clock_skew, master_bad.

Control endpoint: GET /health, GET /stats, GET /faults, POST /fault (a fault, now unless it has "at"),
POST /faults/clear, POST /firehose {"rate": R, "frames": N} or {"off": true}, POST /stop.
"""


def build_parser() -> argparse.ArgumentParser:
    # the common parser (--config, --check-config, --self-test, --log-level), like every program
    p = cli.make_parser(PROGRAM, "Deterministic KRX market simulator serving the KIS (and optionally the Kiwoom) "
                        "REST and WebSocket protocols on 127.0.0.1.", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    m = p.add_argument_group("market")
    m.add_argument("--seed", type=int, default=1, help="random seed; the whole market is a function of it (default 1)")
    m.add_argument("--symbols", type=int, default=2500, help="number of KRX-like 6-digit symbols (default 2500)")
    m.add_argument("--active", type=int, default=60,
                   help="how many of them trade today; the rest keep their previous close (default 60)")
    m.add_argument("--activity", type=float, default=1.0, help="multiplies every trade rate (default 1.0)")
    m.add_argument("--date", type=cli.date_arg, metavar="YYYYMMDD", help="simulated trading date YYYYMMDD (default: today in KST)")
    m.add_argument("--start", type=cli.time_arg, default="08:55", help="market time at start, HH:MM[:SS] (default 08:55)")
    m.add_argument("--speed", type=float, default=1.0,
                   help="market seconds per real second; 60 plays the 6.5 h session in 6.5 min (default 1)")
    m.add_argument("--stop-at", type=cli.time_arg, help="market time HH:MM[:SS] at which to stop by itself (default: run until signalled)")
    s = p.add_argument_group("servers")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    s.add_argument("--rest-port", type=int, default=0, help="KIS REST port, 0 = a free port (default 0)")
    s.add_argument("--ws-port", type=int, default=0, help="KIS WebSocket port, 0 = a free port (default 0)")
    s.add_argument("--control-port", type=int, default=None,
                   help="control endpoint port, 0 = a free port (default: no control endpoint)")
    s.add_argument("--ground-truth", metavar="DIR", help="directory for the ground-truth log (default: none)")
    s.add_argument("--providers", type=_providers, default=["kis"], metavar="LIST",
                   help="broker protocols to serve over the one market, comma-separated: kis, or kis,kiwoom "
                        "(default kis)")
    s.add_argument("--latency-ms", type=float, default=0.0,
                   help="KIS: real ms every REST reply and WebSocket frame waits before it goes out (default 0)")
    k = p.add_argument_group("KIS protocol and limits")
    k.add_argument("--app-key", help="accept only this app key (default: any non-empty key)")
    k.add_argument("--app-secret", help="accept only this app secret (default: any non-empty secret)")
    k.add_argument("--paper", action="store_true", help="paper-account limits: --rate-limit defaults to 2/s")
    k.add_argument("--rate-limit", type=float, default=None,
                   help="REST calls per second per app key before EGW00201 (default 20; 2 with --paper; 0 = off)")
    k.add_argument("--token-issue-interval", type=float, default=60.0,
                   help="market seconds that must pass between two token issuances of one app key (default 60)")
    k.add_argument("--token-lifetime", type=float, default=86400.0, help="token lifetime, market seconds (default 86400)")
    k.add_argument("--token-reuse-hours", type=float, default=6.0,
                   help="a tokenP request within this many hours of the last issuance returns the same token (default 6)")
    k.add_argument("--pingpong-interval", type=float, default=100.0,
                   help="real seconds between PINGPONG messages on each WebSocket (default 100)")
    k.add_argument("--max-subscriptions", type=int, default=41,
                   help="(tr_id, tr_key) registrations per connection; the next gets OPSP0008 (default 41)")
    k.add_argument("--cnt-fields", type=int, choices=(46, 47), default=46,
                   help="H0STCNT0 fields per record: 46, or 47 with the trailing MARKET_CLS_CODE (default 46)")
    k.add_argument("--asp-fields", type=int, choices=(59, 62, 63), default=62,
                   help="H0STASP0 fields per record: 59 (official sample), 62 (observed 2026) or 63 (default 62)")
    w = p.add_argument_group("Kiwoom protocol and limits (with --providers kis,kiwoom; --app-key/--app-secret "
                             "apply to it too)")
    w.add_argument("--kiwoom-rest-port", type=int, default=0, help="Kiwoom REST port, 0 = a free port (default 0)")
    w.add_argument("--kiwoom-ws-port", type=int, default=0, help="Kiwoom WebSocket port, 0 = a free port (default 0)")
    w.add_argument("--kiwoom-latency-ms", type=float, default=0.0,
                   help="real ms every Kiwoom REST reply and WebSocket message waits before it goes out (default 0)")
    w.add_argument("--kiwoom-rate-limit", type=float, default=5.0,
                   help="Kiwoom REST calls per second per app key before return code 1700 / HTTP 429 (default 5; "
                        "0 = off)")
    w.add_argument("--kiwoom-ping-interval", type=float, default=60.0,
                   help="real seconds between PING messages on each Kiwoom WebSocket (default 60)")
    w.add_argument("--kiwoom-page-rows", type=int, default=900,
                   help="rows per page of the ka10079/ka10080 charts (default 900)")
    f = p.add_argument_group("faults and benchmarks")
    f.add_argument("--faults", metavar="FILE", help="fault schedule, JSON or TOML (see docs/simulator.md)")
    f.add_argument("--firehose", type=float, metavar="RATE", default=None,
                   help="benchmark mode: every connection gets synthetic H0STCNT0 frames for its subscribed symbols "
                        "at RATE frames/s (0 = as fast as possible) instead of the market's trades")
    f.add_argument("--firehose-frames", type=int, default=None, help="stop the firehose after N frames per connection")
    f.add_argument("--tick-ms", type=float, default=10.0, help="pump period in real milliseconds (default 10)")
    return p


def _providers(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if "kis" not in names or not set(names) <= {"kis", "kiwoom"}:
        raise argparse.ArgumentTypeError(f"{text!r}: want kis or kis,kiwoom")
    return names


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # the simulator needs no config; given one, its log level is used (and a bad one refused)
    cli.start(PROGRAM, args, need_config=False)
    log = logging.getLogger("observer.sim")
    from observer.core.redact import register_secret
    from observer.sim.faults import FaultError
    from observer.sim.server import SimConfig, Simulator

    register_secret(args.app_secret)
    register_secret(args.app_key)
    if args.symbols < 1 or args.active < 0 or args.speed <= 0 or args.kiwoom_page_rows < 1 \
            or min(args.latency_ms, args.kiwoom_latency_ms) < 0:
        print("observer-sim: --symbols ≥ 1, --active ≥ 0, --speed > 0, --kiwoom-page-rows ≥ 1 and latencies ≥ 0 "
              "please", file=sys.stderr)
        return cli.EXIT_USAGE
    firehose = None if args.firehose is None else {"rate": args.firehose, "frames": args.firehose_frames}
    cfg = SimConfig(
        seed=args.seed, symbols=args.symbols, active=min(args.active, args.symbols), activity=args.activity,
        speed=args.speed, date=yyyymmdd(args.date) if args.date else None, start=args.start, host=args.host, rest_port=args.rest_port,
        ws_port=args.ws_port, control_port=args.control_port, ground_truth=args.ground_truth,
        faults_file=args.faults, app_key=args.app_key, app_secret=args.app_secret,
        rate_limit=args.rate_limit if args.rate_limit is not None else (2.0 if args.paper else 20.0),
        token_issue_interval=args.token_issue_interval, token_lifetime=args.token_lifetime,
        token_reuse_hours=args.token_reuse_hours, pingpong_interval=args.pingpong_interval,
        max_subscriptions=args.max_subscriptions, cnt_fields=args.cnt_fields, asp_fields=args.asp_fields,
        firehose=firehose, stop_at=args.stop_at, tick_ms=args.tick_ms, latency_ms=args.latency_ms,
        providers=args.providers, kiwoom_rest_port=args.kiwoom_rest_port, kiwoom_ws_port=args.kiwoom_ws_port,
        kiwoom_latency_ms=args.kiwoom_latency_ms, kiwoom_rate_limit=args.kiwoom_rate_limit,
        kiwoom_ping_interval=args.kiwoom_ping_interval, kiwoom_page_rows=args.kiwoom_page_rows,
    )
    try:
        sim = Simulator(cfg)
    except (FaultError, ValueError, OSError) as e:
        print(f"observer-sim: {e}", file=sys.stderr)
        return cli.EXIT_USAGE

    def on_signal(signum, frame):
        sim.stop_requested.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        sim.start()
    except OSError as e:  # a port in use, an address not on this host: nothing the simulator can get past
        log.error("cannot start", extra={"error": str(e)})
        print(f"observer-sim: cannot start: {e}", file=sys.stderr)
        sim.stop()
        return cli.EXIT_FAILED
    ready = dict(sim.urls())
    # OBSERVER_CLOCK value that gives other processes (the collectors) the simulator's market clock
    spec = getattr(sim.clock, "spec", None)
    ready["clock"] = spec() if spec else None
    sys.stdout.write(json.dumps(ready) + "\n")
    sys.stdout.flush()
    # wake periodically so the signal handler runs promptly on the main thread
    while not sim.stop_requested.wait(0.5):
        pass
    sim.stop()
    return 0
