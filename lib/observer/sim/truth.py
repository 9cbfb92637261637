"""Ground-truth log: everything the market generated and everything the servers sent (format: docs/simulator.md)."""

from __future__ import annotations

import os
import threading
import time

import orjson

from observer.sim.market import BookEv, TradeEv, hhmmss

FILES = ("trades", "books", "connections", "subscriptions", "sent", "faults", "firehose", "auth")
# what one provider sent (a provider other than the first keeps these in its own subdirectory: child())
PROVIDER_FILES = ("connections", "subscriptions", "sent", "faults", "auth")
_SIDE = {"1": "buy", "5": "sell", "3": "auction"}
_NL = orjson.OPT_APPEND_NEWLINE
# A file's pending lines are written out once they reach this size (and every 0.25 s by the pump, and on
# stop), so the log never holds more than ~1 MiB per file in memory however much the market generates.
BUF_BYTES = 1 << 20


class GroundTruth:
    """Append-only JSONL files in one directory, streamed through one bounded byte buffer per file.

    Lines are serialised straight into a bytearray rather than kept as one bytes object each: orjson
    allocates every output with a 4 KiB-class buffer and RSS pays that per *live* line (~10× the text),
    which is what made a buffered catch-up of a market morning cost gigabytes.
    """

    def __init__(self, directory: str | None, date: str, files: tuple[str, ...] = FILES):
        self.dir = directory
        self.date = date
        self._lock = threading.Lock()
        self._bufs: dict[str, bytearray] = {k: bytearray() for k in files}
        self._files = {}
        self._children: list[GroundTruth] = []
        if directory:
            os.makedirs(directory, exist_ok=True)
            for k in files:
                self._files[k] = open(os.path.join(directory, f"{k}.jsonl"), "ab")  # noqa: SIM115

    def child(self, name: str) -> GroundTruth:
        """A provider's own log in subdirectory `name` (PROVIDER_FILES), flushed and closed with this one."""
        c = GroundTruth(os.path.join(self.dir, name) if self.dir else None, self.date, PROVIDER_FILES)
        self._children.append(c)
        return c

    @property
    def enabled(self) -> bool:
        return bool(self.dir)

    def write_json(self, name: str, obj) -> None:
        """Whole-file JSON (meta.json, universe, summary.json), written atomically."""
        if not self.dir:
            return
        path = os.path.join(self.dir, name)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def line(self, kind: str, obj: dict) -> None:
        if not self.dir:
            return
        b = orjson.dumps(obj, option=_NL)
        with self._lock:
            self._append(kind, b)

    def events(self, evs: list) -> None:
        """Trades and books of one pump tick (one slice of market time, so `evs` is bounded)."""
        if not self.dir:
            return
        date = self.date
        dumps = orjson.dumps
        trades, books = bytearray(), bytearray()
        for ev in evs:
            if type(ev) is TradeEv:
                trades += dumps({
                    "symbol": ev.sym, "date": date, "time": hhmmss(ev.t), "t_ms": ev.t, "seq": ev.seq,
                    "group": ev.group, "price": ev.price, "qty": ev.qty, "acml_vol": ev.acml_vol,
                    "side": _SIDE[ev.ccld], "ccld_dvsn": ev.ccld, "phase": ev.phase,
                    "askp1": ev.ask1, "bidp1": ev.bid1,
                }, option=_NL)
            elif type(ev) is BookEv:
                books += dumps({
                    "symbol": ev.sym, "date": date, "time": hhmmss(ev.t), "t_ms": ev.t, "seq": ev.seq,
                    "hour_cls": ev.hour_cls, "phase": ev.phase, "askp": ev.askp, "askq": ev.askq,
                    "bidp": ev.bidp, "bidq": ev.bidq, "total_ask": ev.tot_ask, "total_bid": ev.tot_bid,
                    "antc_price": ev.antc_p, "antc_qty": ev.antc_q, "acml_vol": ev.acml_vol,
                }, option=_NL)
        with self._lock:
            if trades:
                self._append("trades", trades)
            if books:
                self._append("books", books)

    def _append(self, kind: str, data: bytes) -> None:
        # lock held; written out under the lock so the lines of one file never interleave out of order
        if kind not in self._files:
            return  # closed
        buf = self._bufs[kind]
        buf += data
        if len(buf) >= BUF_BYTES:
            self._files[kind].write(buf)
            buf.clear()

    def flush(self, fsync: bool = False) -> None:
        for c in self._children:
            c.flush(fsync)
        if not self.dir:
            return
        with self._lock:
            for k, f in self._files.items():
                buf = self._bufs[k]
                if buf:
                    f.write(buf)
                    buf.clear()
                f.flush()
                if fsync:
                    os.fsync(f.fileno())

    def close(self) -> None:
        for c in self._children:
            c.close()
        self.flush(fsync=True)
        with self._lock:
            for f in self._files.values():
                f.close()
            self._files = {}
            self.dir = None


def now_ns() -> int:
    return time.time_ns()
