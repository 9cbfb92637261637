"""Metrics: every long-running program writes its numbers every `metrics.interval_s` to

- `metrics/YYYYMMDD.jsonl` — one `metric` record per write (contract `schemas/records/metric.json`):
  `values` maps a series (`name` or `name{label="v",...}`) to its value; program/provider are fields;
- `metrics/observer.prom` — node_exporter textfile format, replaced atomically (temp file + rename).

Several programs share observer.prom: each writes its own part (`metrics/.observer.parts/<program>.json`,
atomically), then merges every part into observer.prom under an flock of the parts directory, so the
file always holds every program's latest values (each series labelled `program`, and `provider` when
set), with one HELP/TYPE pair per metric. A part older than its `stale_after_s` (a stopped or crashed
program) contributes only `observer_metrics_last_write_timestamp_seconds`, so a dead collector's last
rates never look alive. Point node_exporter's `--collector.textfile.directory` at `metrics/`: it reads
`*.prom` only, i.e. observer.prom (parts and temp files have other names).

    m = MetricsWriter(root, "track-b@kis", provider="kis", interval_s=15)
    m.set("observer_collection_ratio", 0.98, track="B")
    m.inc("observer_ws_reconnects_total")
    m.sample_system()          # disk of data_dir, CPU, memory, this process
    m.maybe_write()            # from the main loop; writes when interval_s has passed

Writing never raises into the caller (a full disk is logged once per outage).
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path

import orjson
import psutil

from observer.core.clock import NS, Clock
from observer.core.config import section
from observer.core.logging import get_logger
from observer.store import paths
from observer.store.fs import locked
from observer.store.state import read_json, write_bytes_atomic, write_json_atomic
from observer.store.writer import StoreError, ensure_dir

log = get_logger(__name__)

COUNTER, GAUGE = "counter", "gauge"

# Every metric the project writes: name -> (type, help, labels besides program/provider).
# docs/metrics.md lists the same; config/monitoring/ uses only these (tests check both).
METRICS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    # collection
    "observer_collection_ratio": (GAUGE, "Share of the expected records collected, 0..1 (track=A: symbols in the "
                                  "last sweep / universe; track=B: recorded / expected over the last 5 min)",
                                  ("track",)),
    "observer_messages_per_second": (GAUGE, "Market data messages received per second (recent average)", ()),
    "observer_messages_total": (COUNTER, "Market data messages received since the program started", ()),
    "observer_records_acked_total": (COUNTER, "Records acknowledged (written and fsync'd) since the program started",
                                     ()),
    "observer_records_rejected_total": (COUNTER, "Records refused by their contract (record_rejected events)", ()),
    "observer_frames_dropped_total": (COUNTER, "Frames dropped because the receive queue was full (marked as gaps)",
                                      ()),
    "observer_gaps_total": (COUNTER, "gap_marker events emitted since the program started", ()),
    # connection, slots, load mitigation
    "observer_ws_connected": (GAUGE, "1 while the WebSocket connection is up", ()),
    "observer_ws_reconnects_total": (COUNTER, "WebSocket reconnects since the program started", ()),
    "observer_ws_reconnects_today": (GAUGE, "WebSocket reconnects so far today (KST day, all restarts included)", ()),
    "observer_slots_used": (GAUGE, "Track B slots holding a symbol", ()),
    "observer_slots_capacity": (GAUGE, "Track B slots available (registrations allow)", ()),
    "observer_mitigation_level": (GAUGE, "Load mitigation level: 0 = 2 Hz, 1 = 1 Hz, 2 = 0.5 Hz order-book sampling", ()),
    "observer_event_lag_seconds": (GAUGE, "Receive-to-write lag of market data (mitigation input)", ()),
    "observer_store_fsync_seconds": (GAUGE, "Duration of the latest fsync of the data store (mitigation input)", ()),
    # host
    "observer_disk_used_ratio": (GAUGE, "Used share of the file system holding data_dir, 0..1", ()),
    "observer_disk_free_bytes": (GAUGE, "Free bytes on the file system holding data_dir", ()),
    "observer_cpu_usage_ratio": (GAUGE, "Host CPU busy share since the previous sample, 0..1", ()),
    "observer_load1": (GAUGE, "Host 1-minute load average", ()),
    "observer_memory_used_ratio": (GAUGE, "Host memory in use, 0..1", ()),
    "observer_memory_available_bytes": (GAUGE, "Host memory available", ()),
    "observer_process_rss_bytes": (GAUGE, "Resident memory of the writing program", ()),
    "observer_process_cpu_ratio": (GAUGE, "CPU used by the writing program since the previous sample (1 = one core)",
                                   ()),
    # self-healing and lifecycle
    "observer_alerts_undelivered": (GAUGE, "Alerts pending or failed in the outbox (Telegram unreachable?)", ()),
    "observer_watchdog_restarts_total": (COUNTER, "Units restarted by the watchdog since it started", ("unit",)),
    "observer_backup_last_status": (GAUGE, "Outcome of the latest backup run: 1 ok, 0 failed", ()),
    "observer_backup_last_success_timestamp_seconds": (GAUGE, "Unix time of the latest successful backup", ()),
    # written by every MetricsWriter
    "observer_metrics_last_write_timestamp_seconds": (GAUGE, "Unix time of the program's latest metrics write", ()),
}
LAST_WRITE = "observer_metrics_last_write_timestamp_seconds"
SYSTEM_METRICS = ("observer_disk_used_ratio", "observer_disk_free_bytes", "observer_cpu_usage_ratio", "observer_load1",
                  "observer_memory_used_ratio", "observer_memory_available_bytes", "observer_process_rss_bytes",
                  "observer_process_cpu_ratio")

DEFAULT_INTERVAL_S = 15.0
DEFAULT_STALE_AFTER_S = 900.0
_NAME = re.compile(r"^observer_[a-z0-9_]*[a-z0-9]$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_RESERVED = ("program", "provider")
_PROG = re.compile(r"[^A-Za-z0-9_.@-]+")
LOCK_WAIT_S = 1.0


def parts_dir(root) -> Path:
    return paths.prom_parts_dir(Path(root))


def part_file(root, program: str) -> Path:
    """One program's latest values, merged into observer.prom."""
    return parts_dir(root) / f"{_PROG.sub('_', program)}.json"


# -- host sample -----------------------------------------------------------------------------
_proc: psutil.Process | None = None
_primed = False


def _prime() -> None:
    global _proc, _primed
    if not _primed:
        _proc = psutil.Process()
        psutil.cpu_percent(None)
        _proc.cpu_percent(None)
        _primed = True


def system_sample(data_dir) -> dict[str, float | None]:
    """Disk of data_dir, host CPU and memory, this process's memory and CPU — metric name -> value.

    CPU values are the average since the previous call (None on the very first call of a process)."""
    first = not _primed
    _prime()
    out: dict[str, float | None] = {}
    try:
        du = psutil.disk_usage(str(data_dir))
        out["observer_disk_used_ratio"] = round(du.percent / 100, 4)
        out["observer_disk_free_bytes"] = du.free
    except OSError:
        pass
    out["observer_cpu_usage_ratio"] = None if first else round(psutil.cpu_percent(None) / 100, 4)
    vm = psutil.virtual_memory()
    out["observer_memory_used_ratio"] = round(vm.percent / 100, 4)
    out["observer_memory_available_bytes"] = vm.available
    try:
        out["observer_load1"] = round(os.getloadavg()[0], 3)
    except OSError:
        pass
    assert _proc is not None
    try:
        out["observer_process_rss_bytes"] = _proc.memory_info().rss
        out["observer_process_cpu_ratio"] = None if first else round(_proc.cpu_percent(None) / 100, 4)
    except psutil.Error:
        pass
    return out


# -- Prometheus text format ------------------------------------------------------------------
def _escape_label(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(v: float) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return repr(v)


def series_id(name: str, labels: Mapping[str, str]) -> str:
    if not labels:
        return name
    return name + "{" + ",".join(f'{k}="{_escape_label(str(v))}"' for k, v in sorted(labels.items())) + "}"


def render_prom(samples: list[tuple[str, dict, float]]) -> str:
    """Samples (name, labels, value) -> text format, grouped by metric with HELP and TYPE first."""
    fams: dict[str, list[tuple[str, float]]] = {}
    for name, labels, value in samples:
        if value is None:
            continue
        fams.setdefault(name, []).append((series_id(name, labels), value))
    out = []
    for name in sorted(fams):
        mtype, help_text, _ = METRICS.get(name, (GAUGE, "unregistered observer metric", ()))
        out.append(f"# HELP {name} {_escape_help(help_text)}")
        out.append(f"# TYPE {name} {mtype}")
        seen = set()
        for sid, value in sorted(fams[name]):
            if sid in seen:  # two parts claiming one series: keep the first (never a duplicate)
                continue
            seen.add(sid)
            out.append(f"{sid} {format_value(value)}")
    return "\n".join(out) + "\n" if out else ""


def merge_prom(root, now_ns: int | None = None) -> str:
    """Merge every program's part into metrics/observer.prom (atomically); returns the text written."""
    root = Path(root)
    now_ns = time.time_ns() if now_ns is None else now_ns
    pdir = parts_dir(root)
    ensure_dir(pdir)
    # a lock not had within LOCK_WAIT_S is gone without: the merge is atomic either way, the lock only
    # keeps two merges from racing, and a metrics write never stalls a collector
    with locked(pdir, wait_s=LOCK_WAIT_S):
        samples: list[tuple[str, dict, float]] = []
        for p in sorted(pdir.glob("*.json")):
            try:
                part = read_json(p)
            except (OSError, orjson.JSONDecodeError):
                continue
            if not isinstance(part, dict):
                continue
            stale_s = part.get("stale_after_s")
            stale = stale_s is not None and now_ns - int(part.get("ts_ns", 0)) > float(stale_s) * NS
            for name, labels, value in part.get("samples", []):
                if stale and name != LAST_WRITE:
                    continue
                samples.append((name, labels, value))
        text = render_prom(samples)
        write_bytes_atomic(paths.prom_file(root), text.encode())
        return text


# -- the writer ------------------------------------------------------------------------------
class MetricsWriter:
    """One per program (thread-safe enough for one main loop plus occasional setters)."""

    def __init__(self, root, program: str, *, provider: str | None = None, clock: Clock | None = None,
                 interval_s: float = DEFAULT_INTERVAL_S, stale_after_s: float | None = DEFAULT_STALE_AFTER_S,
                 store=None):
        """stale_after_s=None: this program's values never go stale in observer.prom (one-shot programs
        such as backup, whose last result must stay visible until the next run)."""
        self.root = Path(root)
        self.program = program
        self.provider = provider
        self.clock = clock or Clock()
        self.interval_s = float(interval_s)
        self.stale_after_s = stale_after_s
        self._own_store = store is None
        if store is None:
            from observer.store.store import Store

            store = Store(self.root, program=program, clock=self.clock, provider=provider or "system")
        self.store = store
        self._values: dict[tuple[str, tuple[tuple[str, str], ...]], float | None] = {}
        self._last_write = -math.inf
        self._writer = None
        self._failing = False
        self._warned: set[str] = set()
        self.writes = 0
        _prime()

    @classmethod
    def from_config(cls, root, program: str, cfg: Mapping, **kw) -> MetricsWriter:
        m = section(dict(cfg or {}), "metrics")
        kw.setdefault("interval_s", m["interval_s"])
        kw.setdefault("stale_after_s", m["stale_after_s"])
        return cls(root, program, **kw)

    # -- values ----------------------------------------------------------------------------
    def _key(self, name: str, labels: Mapping) -> tuple | None:
        if not _NAME.match(name):
            self._warn_once(f"name:{name}", "metric name rejected: want observer_[a-z0-9_]+", metric=name)
            return None
        if name not in METRICS:
            self._warn_once(f"unreg:{name}", "unregistered metric (add it to observer.telemetry.metrics.METRICS)", metric=name)
        clean = []
        for k, v in labels.items():
            if k in _RESERVED or not _LABEL.match(k):
                self._warn_once(f"label:{name}:{k}", "metric label rejected", metric=name, label=k)
                continue
            clean.append((k, str(v)))
        return name, tuple(sorted(clean))

    def set(self, name: str, value: float | None, **labels) -> None:
        k = self._key(name, labels)
        if k is not None:
            self._values[k] = None if value is None else (int(value) if isinstance(value, bool) else value)

    def inc(self, name: str, n: float = 1, **labels) -> None:
        k = self._key(name, labels)
        if k is not None:
            self._values[k] = (self._values.get(k) or 0) + n

    def get(self, name: str, **labels) -> float | None:
        return self._values.get((name, tuple(sorted((k, str(v)) for k, v in labels.items()))))

    def sample_system(self, data_dir=None) -> dict:
        """Set the host metrics (disk of data_dir — the tree's root by default —, CPU, memory)."""
        s = system_sample(data_dir or self.root)
        for name, v in s.items():
            self.set(name, v)
        return s

    # -- writing ---------------------------------------------------------------------------
    def maybe_write(self) -> bool:
        """Write if interval_s has passed since the last write (call it from the main loop)."""
        if self.clock.monotonic() - self._last_write < self.interval_s:
            return False
        return self.write_now() is not None

    def write_now(self) -> dict | None:
        """Write the JSONL record and this program's part, merge observer.prom. Returns the record
        (None if nothing could be written). Never raises."""
        self._last_write = self.clock.monotonic()
        now = self.clock.now_ns()
        self.set(LAST_WRITE, round(now / NS, 3))
        base = {"program": self.program, **({"provider": self.provider} if self.provider else {})}
        values = {}
        samples = []
        for (name, labels), v in sorted(self._values.items()):
            if isinstance(v, float) and not math.isfinite(v):
                v = None  # JSON (the contract, the part files) has no NaN/Inf: unknown
            values[series_id(name, dict(labels))] = v
            if v is not None:
                samples.append([name, {**base, **dict(labels)}, v])
        rec = {"v": 1, "kind": "metric", "ts_ns": now, "program": self.program, "values": values}
        if self.provider:
            rec["provider"] = self.provider
        ok = True
        try:
            path = paths.metrics_file(self.root, paths.day_of(now))
            if self._writer is None or self._writer.path != path or self._writer.closed:
                if self._writer is not None and not self._writer.closed:
                    self.store.release(self._writer)
                self._writer = self.store.writer(path, "metrics", shared=True)
            self._writer.append(rec)
        except (StoreError, OSError) as e:
            ok = False
            self._fail("metrics jsonl not written", e)
        try:
            write_json_atomic(part_file(self.root, self.program),
                              {"v": 1, "program": self.program, "ts_ns": now, "stale_after_s": self.stale_after_s,
                               "samples": samples}, durable=False)
            merge_prom(self.root, now)
        except OSError as e:
            ok = False
            self._fail("observer.prom not written", e)
        if ok and self._failing:
            log.info("metrics written again", extra={"program": self.program})
            self._failing = False
        self.writes += 1
        return rec

    def _fail(self, what: str, e: Exception) -> None:
        if not self._failing:
            log.error(what, extra={"program": self.program, "error": str(e)})
        self._failing = True

    def _warn_once(self, key: str, msg: str, **fields) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(msg, extra=fields)

    def close(self) -> None:
        if self._writer is not None:
            try:
                self.store.release(self._writer)
            except Exception:
                log.exception("metrics writer close failed")
            self._writer = None
        if self._own_store:
            self.store.close()
