"""observer-replay: stream a recorded day as JSONL in exchange-time order."""

from __future__ import annotations

import sys

import orjson

from observer import cli
from observer.store.reader import ReadIssue
from observer.store.replay import Replay, paced

PROGRAM = "observer-replay"


def main(argv=None) -> int:
    p = cli.make_parser(PROGRAM, "Stream a recorded day's records (Track A snapshots and Track B trades and "
                        "books; --raw: the raw frames as received) to stdout as JSONL, in exchange-time order.")
    p.add_argument("data_dir", help="the data tree")
    p.add_argument("--date", type=cli.date_arg, required=True, metavar="YYYYMMDD")
    p.add_argument("--provider", help="only this provider")
    p.add_argument("--symbols", help="comma-separated symbols (default: all)")
    p.add_argument("--raw", action="store_true", help="raw frames in arrival order (decode them with observer-decode)")
    p.add_argument("--merged", action="store_true", help="also recovered/ (backfilled records)")
    p.add_argument("--speed", type=float, default=0.0, help="pace by exchange time at X times real time (0 = no pacing)")
    p.add_argument("--reorder-window", type=float, default=60.0, metavar="S",
                   help="seconds of arrival time held back to restore exchange order (default 60)")
    args = p.parse_args(argv)
    ctx = cli.start(PROGRAM, args, need_config=False, tree=cli.TREE_READ)
    day, root = args.date, ctx.root
    issues: list[ReadIssue] = []
    kinds = ("swing", "scalp", "recovered") if args.merged else ("swing", "scalp")
    symbols = {s.strip() for s in args.symbols.split(",")} if args.symbols else None
    rp = Replay(root, day, kinds=kinds, provider=args.provider, symbols=symbols, window_s=args.reorder_window,
                on_issue=issues.append, raw=args.raw)
    out = sys.stdout.buffer
    records = rp if args.speed <= 0 or args.raw else paced(rp, args.speed, before_wait=out.flush)
    try:
        for rec in records:
            out.write(orjson.dumps(rec, option=orjson.OPT_APPEND_NEWLINE))
        out.flush()
    except BrokenPipeError:
        return cli.EXIT_OK
    for i in issues:
        print(f"observer-replay: {i.file}:{i.line}: {i.problem}", file=sys.stderr)
    if rp.late:
        print(f"observer-replay: {rp.late} record(s) arrived more than {args.reorder_window}s late and are out of "
              f"exchange order (raise --reorder-window)", file=sys.stderr)
    return cli.EXIT_PROBLEMS if issues else cli.EXIT_OK
