"""Ground-truth log: everything the market generated and everything the servers sent (format: docs/simulator.md)."""

from __future__ import annotations

import os
import threading
import time

import orjson

from observer.sim.market import BookEv, TradeEv, hhmmss

FILES = ("trades", "books", "connections", "subscriptions", "sent", "faults", "firehose", "auth")
_SIDE = {"1": "buy", "5": "sell", "3": "auction"}


class GroundTruth:
    """Append-only JSONL files in one directory; buffered, flushed by the pump and on stop."""

    def __init__(self, directory: str | None, date: str):
        self.dir = directory
        self.date = date
        self._lock = threading.Lock()
        self._bufs: dict[str, list[bytes]] = {k: [] for k in FILES}
        self._files = {}
        if directory:
            os.makedirs(directory, exist_ok=True)
            for k in FILES:
                self._files[k] = open(os.path.join(directory, f"{k}.jsonl"), "ab")  # noqa: SIM115

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
        b = orjson.dumps(obj)
        with self._lock:
            self._bufs[kind].append(b)

    def events(self, evs: list) -> None:
        """Trades and books of one pump tick."""
        if not self.dir:
            return
        date = self.date
        trades, books = [], []
        for ev in evs:
            if type(ev) is TradeEv:
                trades.append(orjson.dumps({
                    "symbol": ev.sym, "date": date, "time": hhmmss(ev.t), "t_ms": ev.t, "seq": ev.seq,
                    "group": ev.group, "price": ev.price, "qty": ev.qty, "acml_vol": ev.acml_vol,
                    "side": _SIDE[ev.ccld], "ccld_dvsn": ev.ccld, "phase": ev.phase,
                    "askp1": ev.ask1, "bidp1": ev.bid1,
                }))
            elif type(ev) is BookEv:
                books.append(orjson.dumps({
                    "symbol": ev.sym, "date": date, "time": hhmmss(ev.t), "t_ms": ev.t, "seq": ev.seq,
                    "hour_cls": ev.hour_cls, "phase": ev.phase, "askp": ev.askp, "askq": ev.askq,
                    "bidp": ev.bidp, "bidq": ev.bidq, "total_ask": ev.tot_ask, "total_bid": ev.tot_bid,
                    "antc_price": ev.antc_p, "antc_qty": ev.antc_q, "acml_vol": ev.acml_vol,
                }))
        with self._lock:
            self._bufs["trades"].extend(trades)
            self._bufs["books"].extend(books)

    def flush(self, fsync: bool = False) -> None:
        if not self.dir:
            return
        with self._lock:
            pending = {k: v for k, v in self._bufs.items() if v}
            for k in pending:
                self._bufs[k] = []
            # written under the lock so lines of one file never interleave out of order
            for k, lines in pending.items():
                f = self._files[k]
                f.write(b"\n".join(lines) + b"\n")
                f.flush()
                if fsync:
                    os.fsync(f.fileno())

    def close(self) -> None:
        self.flush(fsync=True)
        with self._lock:
            for f in self._files.values():
                f.close()
            self._files = {}
            self.dir = None


def now_ns() -> int:
    return time.time_ns()
