"""observer-decode: raw provider frames (or raw/ JSONL records) on stdin -> normalised JSONL on stdout."""

from __future__ import annotations

import sys

import orjson

from observer import cli
from observer.providers.base import provider_names
from observer.providers.decode import decode_stream

PROGRAM = "observer-decode"

DESCRIPTION = ("Decode raw frames, one per line (as the WebSocket delivers them, or raw/ JSONL records "
               "{\"kind\":\"raw\",\"frame\":...,\"recv_ns\":...}), into normalised JSONL records on stdout. "
               "Invalid frames are reported on stderr with their line number (exit 1); control messages, "
               "blank lines and '#' comments are skipped. Every record printed satisfies its contract (the "
               "check the streamer runs); one that does not is reported as rejected. It never stops on bad input.")


def main(argv=None) -> int:
    p = cli.make_parser(PROGRAM, DESCRIPTION)
    p.add_argument("--provider", required=True, choices=provider_names(), help="whose frames these are")
    p.add_argument("--date", type=cli.date_arg, metavar="YYYYMMDD",
                   help="trading date for frames without one (books of providers that send none); default: the trades' BSOP_DATE, a raw "
                        "record's receive date, else today (KST)")
    p.add_argument("--include-rejected", action="store_true",
                   help="also show the records the guard rejected (price <= 0 ...) after their reason on stderr "
                        "(never on stdout: stdout holds only records that satisfy their contract)")
    p.add_argument("--summary", action="store_true", help="print counts as one JSON line on stderr at the end")
    args = p.parse_args(argv)
    cli.start(PROGRAM, args, need_config=False)
    counts = decode_stream(args.provider, sys.stdin.buffer, sys.stdout.buffer, sys.stderr, trading_date=args.date,
                           include_rejected=args.include_rejected)
    if args.summary:
        print(orjson.dumps(counts).decode(), file=sys.stderr)
    return cli.EXIT_PROBLEMS if counts["invalid"] or counts["rejected"] else cli.EXIT_OK
