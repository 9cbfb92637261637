"""bench_decode_fuzz: mutated real frames through the KIS decoder and observer-decode's contract check.

    .venv/bin/python tests/bench/bench_decode_fuzz.py [--frames 120000] [--seed 12]

The seeds are the real frames in tests/fixtures/samples/ (H0STCNT0, H0STASP0, the WebSocket control
messages). Each fuzzed frame is one to three mutations of a seed: byte flips, truncation, field
insertion and deletion, separator damage, huge or broken record counts, non-ASCII text, out-of-range
values in the fields the guard reads (symbol, dates, times, 19+ digit numbers), or empty. Seeded and
deterministic: the same arguments give the same frames and the same counts.

Two layers, both the real code:
  1. KisFrameDecoder.decode on every frame (with and without a trading date, receive times from now
     back to 1 ns): an exception that escapes it, or one its safety net caught ("decoder error"), is a
     crash; a record it returns that fails contracts.check (the streamer's check) or cannot be
     serialised is a contract violation.
  2. observer-decode's decode_stream over all frames (as frames and as raw/ records): every line it
     prints must satisfy its contract (contracts.explain, the full validator); one that does not is a
     contract violation, an exception escaping it a crash.
Target: 0 crashes, 0 contract violations.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
import time
from collections import Counter
from datetime import date
from pathlib import Path

import orjson

from observer.core.contracts import ContractError, check, explain
from observer.providers.base import BOOK, TRADES
from observer.providers.decode import decode_stream
from observer.providers.kis.parse import KisFrameDecoder

SAMPLES = Path(__file__).resolve().parent.parent / "fixtures" / "samples"
NOW_NS = 1_795_000_000_000_000_000  # 2026-11-17 (UTC); fixed so runs repeat exactly
RECV = (NOW_NS, NOW_NS, NOW_NS, 1, 32_400 * 10**9, 10**18)

# (no lone surrogates: a frame is text decoded from UTF-8 bytes with errors="replace", in the client and in
# observer-decode, so one cannot reach the decoder)
NON_ASCII = ("가", "삼성전자", "１２３", "٣٤٥", "٣", "😀", "\u2028", "\u00a0", "e\u0301", "\ufeff", "\x00", "\x7f",
             "\ufffd", "ß", "İ", "Ⅻ", "²")
ODD_NUMBERS = ("9" * 19, "9" * 25, "-" + "9" * 19, "18446744073709551616", "9223372036854775808",
               "-9223372036854775809", "9223372036854775807", "0", "-1", "+5", " 5", "1_000", "0x10", "1e9",
               "NaN", "inf", "", "00000000000000000000001", "٣٤٥", "１２")
ODD_DATES = ("19000101", "19691231", "19700101", "00000000", "99991231", "20261301", "20260230", "2026121",
             "202612011", "２０２６１２０１", "", "abcdefgh")
ODD_TIMES = ("000000", "235959", "240000", "246060", "9000", "0900000", "", "ab0000", "-10000", "１２００００")


def load_seeds() -> list[str]:
    seeds = []
    for name in ("kis_h0stcnt0_frames.txt", "kis_h0stasp0_frames.txt"):
        seeds += [ln for ln in (SAMPLES / name).read_text(encoding="utf-8").splitlines()
                  if ln and not ln.startswith("#")]
    ctl = json.loads((SAMPLES / "kis_control_messages.json").read_text(encoding="utf-8"))
    seeds += [json.dumps(v, ensure_ascii=False) for k, v in ctl.items() if k.startswith("ws_")]
    return seeds


def _split(frame: str) -> tuple[list[str], list[str]] | None:
    parts = frame.split("|", 3)
    if len(parts) != 4:
        return None
    return parts[:3], parts[3].split("^")


def _join(head: list[str], fields: list[str], sep: str = "^") -> str:
    return "|".join(head) + "|" + sep.join(fields)


def _field_index(rnd: random.Random, head: list[str], fields: list[str], offsets: tuple[int, ...]) -> int:
    """Index of field `offset` of a random record of the frame (by its declared width)."""
    try:
        n = max(1, int(head[2]))
    except ValueError:
        n = 1
    width = max(1, len(fields) // n)
    rec = rnd.randrange(max(1, len(fields) // width))
    return min(len(fields) - 1, rec * width + rnd.choice(offsets))


def mutate(rnd: random.Random, frame: str) -> tuple[str, str]:
    """One mutation of `frame`: (mutation name, new frame)."""
    sp = _split(frame)
    kind = rnd.choice(("flip", "flip", "truncate", "insert", "delete", "separator", "count", "non_ascii",
                       "value", "symbol", "date", "time", "empty", "duplicate", "json"))
    if kind == "flip" or (sp is None and kind not in ("truncate", "empty", "json")):
        if not frame:
            return "flip", rnd.choice(NON_ASCII + ("0", "|", "^", "{"))
        chars = list(frame)
        for _ in range(rnd.randint(1, 4)):
            i = rnd.randrange(len(chars))
            chars[i] = rnd.choice(("|", "^", "0", "9", "-", " ", "{", "}", '"', "\\", "\n", "\r", "\t")
                                  + NON_ASCII + (chr(rnd.randrange(32, 127)),))
        return "flip", "".join(chars)
    if kind == "truncate":
        return kind, frame[:rnd.randrange(len(frame) + 1)]
    if kind == "empty":
        return kind, rnd.choice(("", " ", "0", "0|", "0||", "0|H0STCNT0||", "0|H0STASP0|001|", "0|H0STCNT0|001|",
                                 "1|H0STCNI0|001|", "{}", "[]", "null", "0|H0STCNT0|000|" + frame[-40:]))
    if kind == "json":
        try:
            obj = json.loads(frame)
        except ValueError:
            obj = None
        if not isinstance(obj, dict):  # a data frame, or one already broken: make it look like JSON
            return kind, "{" + frame[rnd.randrange(len(frame) + 1):]
        hdr = obj.get("header") if isinstance(obj.get("header"), dict) else {}
        choice = rnd.randrange(5)
        if choice == 0:
            obj["header"] = rnd.choice(([], "x", None, 1, {"tr_id": ["PINGPONG"]}))
        elif choice == 1:
            obj["body"] = rnd.choice(([1], "x", None, {"rt_cd": {"a": 1}, "msg_cd": 5, "output": [1]}))
        elif choice == 2:
            hdr["tr_id"] = rnd.choice(("H0STCNT0", "PINGPONG", "x" * 5000, None, 7, "가"))
        elif choice == 3:
            obj = rnd.choice(([obj], "x", 1, None, [1, 2]))
        else:
            return kind, json.dumps(obj)[: rnd.randrange(len(json.dumps(obj)) + 1)]
        return kind, json.dumps(obj, ensure_ascii=rnd.random() < 0.5)
    head, fields = sp  # type: ignore[misc]
    if kind == "insert":
        for _ in range(rnd.randint(1, 3)):
            fields.insert(rnd.randrange(len(fields) + 1), rnd.choice(ODD_NUMBERS + NON_ASCII + ("0", "x")))
        return kind, _join(head, fields)
    if kind == "delete":
        for _ in range(rnd.randint(1, 3)):
            if fields:
                del fields[rnd.randrange(len(fields))]
        return kind, _join(head, fields)
    if kind == "separator":
        s = _join(head, fields)
        c = rnd.randrange(4)
        if c == 0:
            return kind, s.replace("^", "|", rnd.randint(1, 3))
        if c == 1:
            return kind, s.replace("|", "^", rnd.randint(1, 3))
        if c == 2:
            i = rnd.randrange(len(s) + 1)
            return kind, s[:i] + rnd.choice(("^^", "||", "^|", "|^", "^" * 60)) + s[i:]
        return kind, _join(head, fields, rnd.choice(("", "^^", ",", "\t")))
    if kind == "count":
        head[2] = rnd.choice(("000", "-01", "999999999999", "9" * 30, "1e3", " 1", "１", "002", "003", "046",
                              "", "abc", str(rnd.randint(2, 100)), "0" * 50 + "1"))
        return kind, _join(head, fields)
    if kind == "non_ascii":
        i = rnd.randrange(len(fields))
        fields[i] = rnd.choice(NON_ASCII) * rnd.randint(1, 3)
        return kind, _join(head, fields)
    if kind == "value":
        i = rnd.randrange(len(fields))
        fields[i] = rnd.choice(ODD_NUMBERS)
        return kind, _join(head, fields)
    if kind == "symbol":
        i = _field_index(rnd, head, fields, (0,))
        fields[i] = rnd.choice(("", "A" * 41, "0" * 40, "가" * 41, "x" * 1000, " ", "005930\x00", "\u2028"))
        return kind, _join(head, fields)
    if kind == "date":
        i = _field_index(rnd, head, fields, (33,))
        fields[i] = rnd.choice(ODD_DATES)
        return kind, _join(head, fields)
    if kind == "time":
        i = _field_index(rnd, head, fields, (1,))
        fields[i] = rnd.choice(ODD_TIMES)
        return kind, _join(head, fields)
    # duplicate: records repeated with a matching (or not) count
    n = rnd.randint(2, 40)
    try:
        head[2] = f"{int(head[2]) * n:03d}" if rnd.random() < 0.8 else head[2]
    except ValueError:
        pass
    return kind, _join(head, fields * n)


def fuzz_frames(n: int, seed: int) -> list[tuple[str, str]]:
    rnd = random.Random(seed)
    seeds = load_seeds()
    out = []
    for _ in range(n):
        frame = rnd.choice(seeds)
        names = []
        for _ in range(rnd.choice((1, 1, 1, 2, 3))):
            name, frame = mutate(rnd, frame)
            names.append(name)
        out.append(("+".join(names), frame))
    return out


def layer_decoder(frames: list[tuple[str, str]], examples: dict) -> tuple[Counter, Counter, int]:
    crashes: Counter[str] = Counter()
    violations: Counter[str] = Counter()
    records = 0
    decoders = (KisFrameDecoder(), KisFrameDecoder(trading_date=date(1900, 1, 1)),
                KisFrameDecoder(subscribed={TRADES: {"005930"}, BOOK: {"005930"}}))
    for i, (name, frame) in enumerate(frames):
        dec = decoders[i % 7 % 3]  # mostly the plain decoder, as observer-decode and the streamer run it
        recv = RECV[i % len(RECV)]
        try:
            d = dec.decode(frame, recv)
        except Exception as e:  # noqa: BLE001 - an escaping exception is exactly what is counted
            crashes[name] += 1
            examples.setdefault(f"crash {type(e).__name__}", (name, frame))
            continue
        if any(e.startswith("decoder error") for e in d.errors):
            crashes[name] += 1
            examples.setdefault("crash " + next(e for e in d.errors if e.startswith("decoder error"))[:80],
                                (name, frame))
        for rec in d.records:
            records += 1
            try:
                check(rec)
                orjson.dumps(rec)
            except ContractError as e:
                violations[name] += 1
                examples.setdefault(f"violation {str(e)[:80]}", (name, frame))
            except Exception as e:  # noqa: BLE001 - a record the writer could not serialise
                crashes[name] += 1
                examples.setdefault(f"crash serialise {type(e).__name__}: {str(e)[:60]}", (name, frame))
    return crashes, violations, records


def layer_program(frames: list[tuple[str, str]], examples: dict) -> tuple[int, int, int]:
    """decode_stream (observer-decode) over every frame, half of them as raw/ records."""
    lines = []
    for i, (_, frame) in enumerate(frames):
        if i % 2:
            lines.append(json.dumps({"v": 1, "kind": "raw", "provider": "kis", "recv_ns": RECV[i % len(RECV)],
                                     "frame": frame}).encode())
        else:
            lines.append(frame.replace("\n", " ").replace("\r", " ").encode("utf-8", "surrogatepass"))
    out, err = io.BytesIO(), io.StringIO()
    crashes = violations = 0
    try:
        decode_stream("kis", lines, out, err, now_ns=NOW_NS)
    except Exception as e:  # noqa: BLE001
        crashes += 1
        examples.setdefault(f"crash decode_stream {type(e).__name__}: {str(e)[:60]}", ("program", ""))
    printed = out.getvalue().splitlines()
    for line in printed:
        rec = orjson.loads(line)
        try:
            check(rec)
            continue
        except ContractError:
            pass
        if explain(rec):
            violations += 1
            examples.setdefault(f"printed violation {explain(rec)[0][:80]}", ("program", line.decode()[:300]))
    return crashes, violations, len(printed)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=120_000)
    ap.add_argument("--seed", type=int, default=12)
    a = ap.parse_args()
    t0 = time.perf_counter()
    frames = fuzz_frames(a.frames, a.seed)
    kinds = Counter(name.split("+")[0] for name, _ in frames)
    print(f"{len(frames):,} fuzzed frames from {len(load_seeds())} real ones (seed {a.seed}); first mutation: "
          + ", ".join(f"{k} {v:,}" for k, v in sorted(kinds.items())))
    examples: dict = {}
    c1, v1, recs = layer_decoder(frames, examples)
    print(f"decoder: {recs:,} records returned; crashes {sum(c1.values())}, contract violations {sum(v1.values())}")
    for name, c in (c1 + v1).most_common(10):
        print(f"  {name}: {c}")
    c2, v2, printed = layer_program(frames, examples)
    print(f"observer-decode: {printed:,} records printed; crashes {c2}, contract violations {v2}")
    for what, (name, frame) in list(examples.items())[:20]:
        print(f"  e.g. {what} <- {name}: {frame[:160]!r}")
    bad = sum(c1.values()) + sum(v1.values()) + c2 + v2
    print(f"{time.perf_counter() - t0:.1f} s")
    print(f"BENCH decode_fuzz value={len(frames)} frames baseline=0 ratio={bad} target=0 crashes, "
          f"0 contract violations {'pass' if bad == 0 and len(frames) >= 100_000 else 'miss'}")
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
