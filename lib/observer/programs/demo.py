"""observer-demo: record a simulated market session end to end, no broker account needed.

Starts the built-in simulator (observer-sim) on 127.0.0.1, then the real collectors
(observer-track-a, observer-track-b --provider kis) as separate processes sharing its clock, lets a
stretch of the session play faster than real time, stops them with SIGTERM as systemd would, and
checks the tree: observer-verify, and recorded trades against the simulator's ground truth.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import orjson

from observer import cli
from observer.core.clock import KST, parse_clock_spec, yyyymmdd
from observer.store.reader import iter_day, read_file
from observer.store.verify import format_report, verify_tree

PROGRAM = "observer-demo"

CONFIG = """\
data_dir = "{data}"
secrets_file = "{secrets}"

[windows]
track_a = {{ start = "{a_start}", end = "15:30" }}
track_b = {{ start = "{b_start}", end = "15:00" }}

[universe]
candidates_file = "{candidates}"

[providers.kis]
env = "sim"
rest_url = "{rest}"
ws_url = "{ws}"
# market time runs --speed times faster, so the REST budget is scaled with it (the simulator too)
rate_limit_per_s = {rate}
"""


def _bin(name: str) -> str:
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else name


def _wait_ready(proc: subprocess.Popen, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                raise RuntimeError(f"observer-sim exited with {proc.returncode} before it was ready")
            continue
        try:
            return json.loads(line)
        except ValueError:
            continue
    raise RuntimeError("observer-sim did not become ready")


def main(argv=None) -> int:
    p = cli.make_parser(PROGRAM, __doc__.strip().splitlines()[0])
    p.add_argument("--minutes", type=float, default=30, help="market minutes to record (default 30)")
    p.add_argument("--speed", type=float, default=30, help="market time runs this many times real time (default 30)")
    p.add_argument("--start", type=cli.time_arg, default="09:25", help="market time at which the simulated session starts (default 09:25)")
    p.add_argument("--date", type=cli.date_arg, default="20260316", metavar="YYYYMMDD", help="simulated trading day (default 20260316, a Monday)")
    p.add_argument("--symbols", type=int, default=300, help="listed symbols in the simulator (default 300)")
    p.add_argument("--active", type=int, default=40, help="symbols that trade (default 40)")
    p.add_argument("--keep", metavar="DIR", help="keep the data tree in DIR (default: a temporary directory, removed)")
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.speed <= 0 or args.symbols < 1 or args.active < 0:
        p.error("--minutes > 0, --speed > 0, --symbols >= 1 and --active >= 0 please")
    from observer.markets import calendar_from_config

    cal = calendar_from_config({})
    if not cal.is_trading_day(args.date):  # the collectors would only stand down
        p.error(f"argument --date: {yyyymmdd(args.date)} is not a {cal.market_name} trading day ({cal.closed_reason(args.date)})")
    cli.start(PROGRAM, args, need_config=False)
    try:
        work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="observer-demo-"))
        work.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"observer-demo: --keep {args.keep}: {e.strerror}", file=sys.stderr)
        return cli.EXIT_USAGE
    day = yyyymmdd(args.date)
    data, gt = work / "data", work / "ground-truth"
    secrets = work / "secrets.env"
    secrets.write_text("KIS_APP_KEY=PSdemoappkey0000001\nKIS_APP_SECRET=demo-secret-00000001\n")
    os.chmod(secrets, 0o600)
    procs: list[subprocess.Popen] = []
    try:
        print(f"observer-demo: simulator on 127.0.0.1, {args.minutes:g} market minutes from {args.start} "
              f"at {args.speed:g}x; tree in {data}", flush=True)
        sim = subprocess.Popen([_bin("observer-sim"), "--seed", "7", "--symbols", str(args.symbols), "--active",
                                str(args.active), "--speed", str(args.speed), "--start", args.start, "--date",
                                day, "--rest-port", "0", "--ws-port", "0", "--ground-truth", str(gt),
                                "--rate-limit", str(20 * args.speed / 6), "--pingpong-interval", str(max(0.5, 90 / args.speed)),
                                "--log-level", "WARNING"], stdout=subprocess.PIPE, text=True)
        procs.append(sim)
        try:
            ready = _wait_ready(sim, 60)
        except RuntimeError as e:  # the simulator said why on stderr already
            print(f"observer-demo: {e}", file=sys.stderr)
            return cli.EXIT_FAILED
        candidates = work / "symbols.txt"
        uni = orjson.loads((gt / "universe.json").read_bytes())
        candidates.write_text("".join(u["symbol"] + "\n" for u in uni))
        h, m = map(int, args.start.split(":")[:2])
        a_start = f"{h:02d}:{(m // 10 + 1) * 10 % 60:02d}" if m % 10 else args.start
        cfg = work / "observer.toml"
        cfg.write_text(CONFIG.format(data=data, secrets=secrets, candidates=candidates, rest=ready["rest"],
                                     ws=ready["ws"], a_start=a_start, b_start=args.start, rate=19 * args.speed / 6))
        env = dict(os.environ, OBSERVER_CLOCK=ready["clock"])
        clock = parse_clock_spec(ready["clock"])
        logs = {n: open(work / f"{n}.log", "w") for n in ("track-a", "track-b")}  # noqa: SIM115
        procs.append(subprocess.Popen([_bin("observer-track-a"), "--config", str(cfg)], env=env,
                                      stderr=logs["track-a"]))
        procs.append(subprocess.Popen([_bin("observer-track-b"), "--provider", "kis", "--config", str(cfg)], env=env,
                                      stderr=logs["track-b"]))
        end_ns = clock.now_ns() + int(args.minutes * 60e9)
        tty = sys.stdout.isatty()
        last_print = 0.0
        while clock.now_ns() < end_ns:
            for pr in procs[1:]:
                if pr.poll() is not None:
                    print(f"observer-demo: {pr.args[0]} exited early with {pr.returncode} (see {work})", file=sys.stderr)
                    return cli.EXIT_FAILED
            left = (end_ns - clock.now_ns()) / 1e9 / args.speed
            if tty:
                print(f"\r  market {clock.now().astimezone(KST):%H:%M:%S}  ({left:4.0f}s left)", end="", flush=True)
            elif time.monotonic() - last_print >= 10:
                last_print = time.monotonic()
                print(f"  market {clock.now().astimezone(KST):%H:%M:%S} ({left:.0f}s left)", flush=True)
            time.sleep(min(1.0, max(left, 0.01)))
        if tty:
            print()
        for pr in procs[1:]:
            pr.send_signal(signal.SIGTERM)
        for pr in procs[1:]:
            pr.wait(timeout=30)
        sim.send_signal(signal.SIGTERM)
        sim.wait(timeout=30)
        return report(data, gt, day)
    finally:
        for pr in procs:
            if pr.poll() is None:
                pr.kill()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def report(data: Path, gt: Path, date: str) -> int:
    from observer.core.clock import parse_yyyymmdd

    day = parse_yyyymmdd(date)
    rep = verify_tree(data)
    print(format_report(rep))
    trades = defaultdict(set)
    counts = defaultdict(int)
    for r in iter_day(data, day, kinds=("swing", "scalp", "events")):
        counts[r.get("event") or r["kind"]] += 1
        if r["kind"] == "trade":
            trades[r["symbol"]].add(r["cum_vol"])
    truth = defaultdict(set)
    for t in read_file(gt / "trades.jsonl"):
        if t.get("symbol") in trades:
            truth[t["symbol"]].add(t["acml_vol"])
    # compare over the interval each symbol was recorded: first to last recorded trade
    got = want = 0
    for sym, vols in trades.items():
        lo, hi = min(vols), max(vols)
        w = {v for v in truth[sym] if lo <= v <= hi}
        want += len(w)
        got += len(w & vols)
    print("records: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if want:
        print(f"Track B completeness: {got}/{want} trades of {len(trades)} subscribed symbols "
              f"({100.0 * got / want:.2f}% of ground truth)")
    ok = rep["clean"] and counts.get("snapshot", 0) > 0 and counts.get("trade", 0) > 0
    print("observer-demo: " + ("OK" if ok else "PROBLEMS (see above)"))
    return cli.EXIT_OK if ok else cli.EXIT_PROBLEMS
