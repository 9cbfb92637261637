"""observer-audit: the day's quality report (reports/YYYYMMDD/quality.json + quality.html)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from observer import cli
from observer.core.settings import GapfillConfig
from observer.markets import calendar_from_config
from observer.recover.audit import build_quality, write_quality

PROGRAM = "observer-audit"


def main(argv=None) -> int:
    p = cli.make_parser(PROGRAM, "Audit one day: Track A coverage, Track B recording rate per slot, trade completeness per "
                        "symbol against the exchange's cumulative volume, gaps and their outcome, reconnects, the "
                        "anomaly-day and dataset-complete verdicts. Writes reports/YYYYMMDD/quality.json and "
                        "quality.html. Exit 1 when the dataset is not complete.")
    p.add_argument("--date", type=cli.date_arg, metavar="YYYYMMDD", help="the day (default: today, KST)")
    p.add_argument("--data-dir", metavar="DIR", help="the tree (default: data_dir from the config)")
    p.add_argument("--provider", help="default: gapfill.provider")
    p.add_argument("--ground-truth", metavar="DIR", help="the simulator's ground-truth log: also report recorded ÷ "
                   "generated exactly")
    p.add_argument("--json", action="store_true", help="print quality.json to stdout as well")
    args = p.parse_args(argv)
    ctx = cli.start(PROGRAM, args, tree=cli.TREE_WRITE)
    day = args.date or ctx.clock.today_kst()
    root = ctx.root
    if args.ground_truth and not Path(args.ground_truth, "trades.jsonl").is_file():
        print(f"{PROGRAM}: {args.ground_truth}: no trades.jsonl (want the simulator's --ground-truth dir)", file=sys.stderr)
        return cli.EXIT_USAGE
    provider = args.provider or GapfillConfig.from_config(ctx.cfg).provider
    q = build_quality(root, day, ctx.cfg, provider=provider, clock=ctx.clock, calendar=calendar_from_config(ctx.cfg),
                      ground_truth=Path(args.ground_truth) if args.ground_truth else None)
    jp, hp = write_quality(root, day, q)
    if args.json:
        print(json.dumps(q, indent=1))
    else:
        print(f"{jp}\n{hp}\ndataset complete: {q['dataset_complete']}; anomaly day: {q['anomaly_day']}; "
              f"completeness {q['completeness_pct']}%; gaps {q['gaps']['total']} {q['gaps']['by_status']}")
    return cli.EXIT_OK if q["dataset_complete"] else cli.EXIT_PROBLEMS
