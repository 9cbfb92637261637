"""Read the tree back: one day across partitions in time order; corrupt lines are reported, not hidden.

Every JSONL reader in the project goes through here, so one set of rules holds for all of them: only
regular files are read (never a symlink, FIFO or device: lstat/O_NOFOLLOW, and a FIFO is opened
non-blocking so it cannot hang a reader); a file is read in bounded chunks and a line longer than
MAX_LINE is skipped up to its newline without being held in memory; a line that is not JSON, or is
JSON but not an object, is reported to the caller's issue sink (the one observer-verify prints) and
the reader goes on with the next line.
"""

from __future__ import annotations

import errno
import heapq
import logging
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import orjson

from observer.core.clock import yyyymmdd
from observer.core.contracts import ContractError, check, explain
from observer.store import paths

log = logging.getLogger("observer.store.reader")

# The longest line the tree's writers produce is a raw/ record of one WebSocket frame (a few kB; a
# multi-record frame some tens of kB). Anything far beyond that is damage, not data.
MAX_LINE = 4 << 20
CHUNK = 1 << 20
_LOG_ISSUES = 20  # issues logged per file when the caller gave no sink; the rest are counted


@dataclass
class ReadIssue:
    file: str
    line: int
    problem: str


IssueSink = Callable[[ReadIssue], None]


class _LogSink:
    """Fallback sink for callers that pass none: a warning per issue (capped per file), never silence."""

    def __init__(self):
        self.n = 0

    def __call__(self, i: ReadIssue) -> None:
        self.n += 1
        if self.n <= _LOG_ISSUES:
            log.warning("unreadable line skipped", extra={"file": i.file, "line": i.line, "problem": i.problem})

    def close(self, path) -> None:
        if self.n > _LOG_ISSUES:
            log.warning("more unreadable lines skipped", extra={"file": str(path), "count": self.n - _LOG_ISSUES})


def day_files(root: Path, day: date, kinds: Iterable[str] = ("swing", "scalp", "raw", "recovered", "events"),
              provider: str | None = None, on_issue: IssueSink | None = None) -> list[tuple[str, Path]]:
    """(file kind, path) of every JSONL file of `day` for the given kinds, in name order."""
    root = Path(root)
    ymd = yyyymmdd(day)
    out = []
    for rel in iter_jsonl(root, on_issue):
        c = paths.classify(rel)
        if c is None or c[0] not in kinds or c[1] != ymd:
            continue
        if provider is not None and rel.split("/")[1 if c[0] not in ("events", "overflow") else 2] != provider:
            continue
        out.append((c[0], root / rel))
    return sorted(out, key=lambda kp: str(kp[1]))


# odd(rel, mode, error): something the walk does not take. mode: the lstat mode of an entry that is not
# a directory nor a regular file (a symlink, FIFO, socket, device), error None; or mode None and error
# the strerror of a directory that cannot be listed
OddSink = Callable[[str, int | None, str | None], None]


def walk(root: Path, top: str = "", *, odd: OddSink | None = None, enter: Callable[[str], bool] | None = None,
         lstat: bool = False) -> Iterator[tuple[str, os.stat_result | None]]:
    """(path relative to root, its lstat if asked else None) of every regular file below root/top (top
    itself if it is a regular file), depth first in name order: the files of a directory, then its
    subdirectories. The one tree walker of the project (readers, verify, backup's and retention's
    inventories).

    Never follows a symlink below root (root itself may be one: the tree may live elsewhere) and yields
    regular files only; everything else goes to `odd` and is skipped. enter(name): whether to walk into a
    subdirectory of that name (default: every one). A file that vanishes during the walk (retention,
    rotation) is skipped silently."""
    root = Path(root)
    if top:
        try:
            st = os.lstat(root / top)
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(st.st_mode):
            if stat.S_ISREG(st.st_mode):
                yield top, st if lstat else None
            elif odd:
                odd(top, st.st_mode, None)
            return
    stack = [top]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(root / d) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            if odd:
                odd(d, None, e.strerror)
            continue
        subdirs = []
        for e in entries:
            rel = f"{d}/{e.name}" if d else e.name
            try:
                if lstat:
                    est = e.stat(follow_symlinks=False)
                    mode = est.st_mode
                else:  # the entry's d_type: no stat(2) per file
                    est = None
                    mode = (stat.S_IFLNK if e.is_symlink() else stat.S_IFDIR if e.is_dir(follow_symlinks=False)
                            else stat.S_IFREG if e.is_file(follow_symlinks=False)
                            else e.stat(follow_symlinks=False).st_mode)
            except OSError:  # vanished during the walk
                continue
            if stat.S_ISDIR(mode):
                if enter is None or enter(e.name):
                    subdirs.append(rel)
            elif stat.S_ISREG(mode):
                yield rel, est
            elif odd:
                odd(rel, mode, None)
        stack.extend(reversed(subdirs))


def iter_jsonl(root: Path, on_issue: IssueSink | None = None) -> Iterator[str]:
    """Relative paths of all regular *.jsonl files below root (walk's order).

    A symlink anywhere in the tree, or a *.jsonl that is not a regular file (FIFO, socket, device),
    goes to on_issue (line 0) and is skipped; so does a directory below root that cannot be listed."""

    def odd(rel: str, mode: int | None, error: str | None) -> None:
        if on_issue is None:
            return
        if mode is None:
            if rel:
                on_issue(ReadIssue(rel, 0, f"directory not readable: {error}"))
        elif stat.S_ISLNK(mode):
            on_issue(ReadIssue(rel, 0, "symlink in the tree (not followed)"))
        elif rel.endswith(".jsonl"):
            on_issue(ReadIssue(rel, 0, f"not a regular file ({file_kind(mode)}); not read"))

    for rel, _ in walk(root, odd=odd):
        if rel.endswith(".jsonl"):
            yield rel


def file_kind(mode: int) -> str:
    """What an lstat mode is, in words (for problem reports)."""
    for test, name in ((stat.S_ISLNK, "symlink"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISDIR, "directory"), (stat.S_ISREG, "regular file")):
        if test(mode):
            return name
    return "special file"


def open_regular(path: Path, on_issue: IssueSink | None = None) -> int | None:
    """A read-only fd of `path` if it is a regular file; else the problem goes to on_issue and None.

    O_NOFOLLOW refuses a symlink, O_NONBLOCK keeps a FIFO from blocking the open (it has no effect on
    a regular file). A missing or unreadable file raises OSError as open() would."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        (on_issue or _LogSink())(ReadIssue(str(path), 0, "is a symlink (not followed); not read"))
        return None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        (on_issue or _LogSink())(ReadIssue(str(path), 0, f"not a regular file ({file_kind(mode)}); not read"))
        return None
    return fd


def scan_lines(fd: int, path: str, on_issue: IssueSink, *, start: int = 0, max_line: int | None = None,
               first_line: int = 1) -> Iterator[tuple[int, bytes | None, int]]:
    """(line number, line without its newline, offset just past the newline) of each complete line
    of the open file from `start`, read in CHUNK blocks. A line longer than max_line is reported and
    skipped to its newline (its bytes are never held whole; it comes back as None, so the offsets
    still advance). An unterminated last line is not
    yielded (a writer may be mid-append, or the file was torn): read_file reports it."""
    max_line = max_line or MAX_LINE
    n = first_line - 1
    pos = start  # file offset of buf[0]
    buf = b""
    skipping = False  # inside an overlong line, discarding up to its newline
    skip_from = 0
    while True:
        chunk = os.pread(fd, CHUNK, pos + len(buf))
        if not chunk:
            return
        if skipping:
            i = chunk.find(b"\n")
            if i < 0:
                pos += len(chunk)
                continue
            n += 1
            on_issue(ReadIssue(path, n, f"line too long ({pos + i - skip_from} bytes > {max_line}); skipped"))
            yield n, None, pos + i + 1
            pos += i + 1
            chunk = chunk[i + 1:]
            skipping = False
        data = buf + chunk if buf else chunk
        s = 0
        while True:
            e = data.find(b"\n", s)
            if e < 0:
                break
            n += 1
            if e - s > max_line:
                on_issue(ReadIssue(path, n, f"line too long ({e - s} bytes > {max_line}); skipped"))
                yield n, None, pos + e + 1
            else:
                yield n, data[s:e], pos + e + 1
            s = e + 1
        pos += s
        buf = data[s:]
        if len(buf) > max_line:
            skipping, skip_from = True, pos
            pos += len(buf)
            buf = b""


def _parse(line: bytes, path: str, n: int, on_issue: IssueSink) -> dict | None:
    try:
        rec = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        on_issue(ReadIssue(path, n, f"not JSON: {e}"))
        return None
    if type(rec) is not dict:
        on_issue(ReadIssue(path, n, f"not a JSON object but {type(rec).__name__}"))
        return None
    return rec


def read_file(path: Path, on_issue: IssueSink | None = None, partition: str | None = None,
              validate: bool = False, checked: bool = False) -> Iterator[dict]:
    """Records (JSON objects) of one file, streamed. A line that does not parse, is not an object,
    is longer than MAX_LINE (or does not validate, if asked) goes to on_issue; the rest is read.
    validate: the full contract check with every problem named (observer-verify); checked: the
    writer's fast check (contracts.check), for readers that compute with the fields (replay, audit,
    gap-filler): only the tree's writer puts records there, so one that fails is damage."""
    sink = on_issue or _LogSink()
    fd = open_regular(path, sink)
    if fd is None:
        return
    spath = str(path)
    try:
        done = 0  # offset past the last complete line
        n = 0
        for n, line, end in scan_lines(fd, spath, sink):
            done = end
            if line is None:
                continue
            rec = _parse(line, spath, n, sink)
            if rec is None:
                continue
            if validate:
                problems = explain(rec, partition)
                if problems:
                    sink(ReadIssue(spath, n, "; ".join(problems)))
                    continue
            elif checked:
                try:
                    check(rec, partition)
                except ContractError as e:
                    sink(ReadIssue(spath, n, f"breaks its contract: {e}"))
                    continue
            yield rec
        size = os.fstat(fd).st_size
        if size > done:
            sink(ReadIssue(spath, n + 1, f"torn last line ({size - done} bytes, no newline)"))
    finally:
        os.close(fd)
        if on_issue is None:
            sink.close(path)


def read_new(path: Path, offset: int, on_issue: IssueSink | None = None, *,
             contains: bytes | None = None) -> tuple[list[dict], int]:
    """Tail a file that is being appended to: the records of the complete lines after `offset`, and
    the offset to continue from. A file shorter than `offset` was replaced, and is read from the
    start. `contains`: parse only lines holding these bytes (a cheap pre-filter). A missing or
    unreadable file gives ([], offset)."""
    sink = on_issue or _LogSink()
    try:
        fd = open_regular(path, sink)
    except OSError:
        return [], offset
    if fd is None:
        return [], offset
    out: list[dict] = []
    spath = str(path)
    try:
        if os.fstat(fd).st_size < offset:
            offset = 0
        for n, line, end in scan_lines(fd, spath, sink, start=offset):
            offset = end
            if line is None or not line.strip() or (contains is not None and contains not in line):
                continue
            rec = _parse(line, spath, n, sink)
            if rec is not None:
                out.append(rec)
    finally:
        os.close(fd)
    return out, offset


def read_chunks(path: Path, on_issue: IssueSink | None = None) -> Iterator[bytes]:
    """The file's complete lines in blocks of about CHUNK bytes (each block ends with a newline) for
    scanners that do not parse every line; overlong lines are reported and left out."""
    sink = on_issue or _LogSink()
    fd = open_regular(path, sink)
    if fd is None:
        return
    spath = str(path)
    try:
        block: list[bytes] = []
        size = 0
        for _n, line, _end in scan_lines(fd, spath, sink):
            if line is None:
                continue
            block.append(line)
            size += len(line) + 1
            if size >= CHUNK:
                yield b"\n".join(block) + b"\n"
                block, size = [], 0
        if block:
            yield b"\n".join(block) + b"\n"
    finally:
        os.close(fd)
        if on_issue is None:
            sink.close(path)


def record_time(rec: dict) -> int:
    """Arrival order key: receive time for market data, ts for system records."""
    return rec.get("recv_ns") or rec.get("ts_ns") or 0


def iter_day(root: Path, day: date, kinds: Iterable[str] = ("swing", "scalp", "recovered", "events"),
             provider: str | None = None, on_issue: IssueSink | None = None,
             key: Callable[[dict], int] = record_time) -> Iterator[dict]:
    """Every record of `day` from the given partitions that satisfies its contract (the rest goes to
    on_issue), merged in time order (each file is in arrival order already, so this is a streaming
    k-way merge, not a sort in memory)."""
    streams = []
    for kind, p in day_files(root, day, kinds, provider, on_issue):
        part = "recovered" if kind == "recovered" else None
        streams.append(read_file(p, on_issue, part, checked=True))
    yield from heapq.merge(*streams, key=key)
