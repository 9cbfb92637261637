"""observer-gap-filler: detect gaps, backfill recoverable trades into recovered/, write the quality report."""

from __future__ import annotations

import json
import sys

from observer import cli
from observer.collect.runtime import open_runtime, stand_down
from observer.core import notify
from observer.core.logging import get_logger
from observer.core.secrets import SecretsError
from observer.core.settings import GapfillConfig
from observer.recover.day import fill_day
from observer.store.writer import StoreError

PROGRAM = "observer-gap-filler"
log = get_logger(PROGRAM)


def main(argv=None) -> int:
    p = cli.make_parser(PROGRAM, "Find the day's gaps (live markers, the exchange's cumulative volume, silences, missed "
                        "sweeps), mark each one once, backfill the trades the broker can still give into recovered/ "
                        "with provenance (resumable: a checkpoint in state/gapfill/), then write the quality report. "
                        "Order-book gaps are never filled. Exit 1 when something stayed unrecoverable.")
    p.add_argument("--date", type=cli.date_arg, metavar="YYYYMMDD", help="the day (default: today, KST); a provider whose trade source reaches today only gives nothing for a past day")
    p.add_argument("--provider", help="broker whose REST calls fill the gaps (default: gapfill.provider)")
    p.add_argument("--no-audit", action="store_true", help="do not write reports/YYYYMMDD/quality.*")
    p.add_argument("--progress", choices=["auto", "on", "off"], default="auto",
                   help="progress bar on stderr (auto: only on a terminal)")
    args = p.parse_args(argv)
    ctx = cli.start(PROGRAM, args, tree=cli.TREE_WRITE)
    provider = args.provider or GapfillConfig.from_config(ctx.cfg).provider
    day = args.date or ctx.clock.today_kst()
    try:
        rt = open_runtime(ctx.cfg, ctx.clock, provider, PROGRAM)
    except (SecretsError, ValueError) as e:
        print(f"{PROGRAM}: {e}", file=sys.stderr)
        return cli.EXIT_USAGE
    ev = rt.store.events(provider)
    notify.ready(f"gap-filler {day:%Y%m%d}: finding gaps")  # the watchdog runs from here (systemd unit)
    try:
        if stand_down(rt, day, ev) is not None:
            return cli.EXIT_OK
        audit = GapfillConfig.from_config(ctx.cfg).run_audit and not args.no_audit
        summary, q = fill_day(rt.store, rt.provider, ev, cfg=ctx.cfg, clock=ctx.clock, calendar=rt.calendar, day=day,
                              provider_name=provider, audit=audit,
                              progress=None if args.progress == "auto" else args.progress == "on")
        print(json.dumps({"summary": summary, "dataset_complete": q["dataset_complete"] if q else None}))
        bad = summary["failed_jobs"] or summary["unrecoverable_holes"]
        return cli.EXIT_PROBLEMS if bad else cli.EXIT_OK
    except (StoreError, OSError) as e:
        log.error("gap-filler failed", extra={"error": str(e)})
        return cli.EXIT_FAILED
    finally:
        rt.notifier.stopping()
        rt.store.close()
