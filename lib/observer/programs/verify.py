"""observer-verify: the archive's fsck."""

from __future__ import annotations

import json

from observer import cli
from observer.core.clock import yyyymmdd
from observer.store.verify import format_report, verify_tree

PROGRAM = "observer-verify"


def main(argv=None) -> int:
    p = cli.make_parser(PROGRAM, "Check a data tree: every line parses and validates against its "
                        "record contract, no torn lines, files only where the layout allows; counts per partition.")
    p.add_argument("data_dir", nargs="?", help="the tree to check (default: data_dir from the config)")
    p.add_argument("--date", type=cli.date_arg, metavar="YYYYMMDD", help="only this day's files")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    args = p.parse_args(argv)
    ctx = cli.start(PROGRAM, args, need_config=args.data_dir is None, tree=cli.TREE_READ)
    rep = verify_tree(ctx.root, yyyymmdd(args.date) if args.date else None)
    print(json.dumps(rep, indent=1) if args.json else format_report(rep))
    return cli.EXIT_OK if rep["clean"] else cli.EXIT_PROBLEMS
