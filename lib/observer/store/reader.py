"""Read the tree back: one day across partitions in time order; corrupt lines are reported, not hidden."""

from __future__ import annotations

import heapq
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import orjson

from observer.core.clock import yyyymmdd
from observer.core.contracts import explain
from observer.store import paths


@dataclass
class ReadIssue:
    file: str
    line: int
    problem: str


IssueSink = Callable[[ReadIssue], None]


def day_files(root: Path, day: date, kinds: Iterable[str] = ("swing", "scalp", "raw", "recovered", "events"),
              provider: str | None = None) -> list[tuple[str, Path]]:
    """(file kind, path) of every JSONL file of `day` for the given kinds, in name order."""
    root = Path(root)
    ymd = yyyymmdd(day)
    out = []
    for rel in iter_jsonl(root):
        c = paths.classify(rel)
        if c is None or c[0] not in kinds or c[1] != ymd:
            continue
        if provider is not None and rel.split("/")[1 if c[0] not in ("events", "overflow") else 2] != provider:
            continue
        out.append((c[0], root / rel))
    return sorted(out, key=lambda kp: str(kp[1]))


def iter_jsonl(root: Path) -> Iterator[str]:
    """Relative paths of all *.jsonl files below root (sorted per directory)."""
    root = Path(root)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for f in sorted(filenames):
            if f.endswith(".jsonl"):
                yield os.path.relpath(os.path.join(dirpath, f), root)


def read_file(path: Path, on_issue: IssueSink | None = None, partition: str | None = None,
              validate: bool = False) -> Iterator[dict]:
    """Records of one file. A line that does not parse (or validate, if asked) goes to on_issue."""
    with open(path, "rb") as f:
        data = f.read()
    n = 0
    start = 0
    size = len(data)
    while start < size:
        end = data.find(b"\n", start)
        n += 1
        if end < 0:
            if on_issue:
                on_issue(ReadIssue(str(path), n, f"torn last line ({size - start} bytes, no newline)"))
            return
        line = data[start:end]
        start = end + 1
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            if on_issue:
                on_issue(ReadIssue(str(path), n, f"not JSON: {e}"))
            continue
        if validate:
            problems = explain(rec, partition)
            if problems:
                if on_issue:
                    on_issue(ReadIssue(str(path), n, "; ".join(problems)))
                continue
        yield rec


def record_time(rec: dict) -> int:
    """Arrival order key: receive time for market data, ts for system records."""
    return rec.get("recv_ns") or rec.get("ts_ns") or 0


def iter_day(root: Path, day: date, kinds: Iterable[str] = ("swing", "scalp", "recovered", "events"),
             provider: str | None = None, on_issue: IssueSink | None = None,
             key: Callable[[dict], int] = record_time) -> Iterator[dict]:
    """Every record of `day` from the given partitions, merged in time order (each file is in
    arrival order already, so this is a streaming k-way merge, not a sort in memory)."""
    streams = []
    for kind, p in day_files(root, day, kinds, provider):
        part = "recovered" if kind == "recovered" else None
        streams.append(read_file(p, on_issue, part))
    yield from heapq.merge(*streams, key=key)
