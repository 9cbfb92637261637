"""The outbox and its state machine: Telegram for CRITICAL and listed WARNINGs, delivery that survives restarts.

    a = Alerter(root, cfg, secrets, program="watchdog")
    a.alert("disk", "WARNING", "data_dir 83 % full", used=0.83)   # returns at once, the outbox line is durable
    a.drain()                                                      # retry what is pending/failed (periodically)
    a.close()

The outbox (`system/alerts/YYYYMMDD.jsonl`, contract `schemas/records/alert.json`) is the only state.
Every state change of an alert is one appended line and the newest line of an id is its state:

    pending ──> sent
       │  └──> failed ──> pending (a retry claimed by some program's drain) ──> sent / failed ...
       └─────> suppressed     (error says why: "not routed: ...", "throttled: ...", "expired: ...")

Lines go to the file of the day they are written (an old file is never appended to after its day),
so a retry of yesterday's alert is a line in today's file; readers look back `max_age_h`.

Several programs share the outbox. Every decision (route, throttle, claim a retry) is taken under an
flock of the outbox directory after reading the lines others appended since, so throttling holds
across programs and two drains never send the same alert. A pending line younger than
`claim_timeout_s` belongs to the program that wrote it; older ones (their sender died) are taken
over by the next drain anywhere. Delivery is at least once: a crash between the Bot API's answer and
the `sent` line re-sends one message.

Sending happens on one bounded background thread per Alerter (through its TelegramTransport,
transport.py), with timeouts; `alert()` never waits for the network and never raises.
python-telegram-bot (~40 MiB) is imported by that thread on first use only, never by importing this
module. Secrets never leave the process: text, context and errors pass through redact(), context
values whose names look secret are masked, and the bot token is registered for redaction.
"""

from __future__ import annotations

import math
import re
import socket
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import orjson

from observer.core.clock import KST, NS, Clock, kst, parse_yyyymmdd
from observer.core.config import section
from observer.core.logging import get_logger
from observer.core.redact import MASK, redact, register_secret
from observer.store import paths
from observer.store.fs import Lock, ensure_dir
from observer.store.writer import StoreError
from observer.telemetry.alerts.table import KEY_DAILY_SUMMARY, TABLE, known
from observer.telemetry.alerts.transport import TelegramTransport

log = get_logger("observer.telemetry.alerts")  # one logger name for the package

SEVERITIES = ("INFO", "WARNING", "ERROR", "CRITICAL")
RANK = {s: i for i, s in enumerate(SEVERITIES)}

# Alert keys are "<name>" or "<name>:<qualifier>" (e.g. "track_b_rate:kis", "crash_loop:observer-track-b@kis").
# Throttling is per full key; routing of WARNINGs looks at the name (alerts.warning_keys). The names,
# their severity, condition and raiser are the table in observer.telemetry.alerts.table (the single source).

ALERT_TABLE = TABLE

# reasons of a `suppressed` line (the `error` field starts with one of these)
NOT_ROUTED = "not routed"
THROTTLED = "throttled"
EXPIRED = "expired"

TELEGRAM_MAX_CHARS = 4096
TEXT_MAX_CHARS = 3500          # an alert's text in the outbox (the message adds a header and footer)
CONTEXT_VALUE_MAX = 500
LOCK_WAIT_S = 2.0              # longest alert() waits for another program's outbox lock
TICK_S = 5.0                   # the sender's housekeeping period (summaries, retries, expiry)
_SECRET_NAME = re.compile(r"(token|secret|passw|appkey|app_key|approval|credential|private)", re.I)
_KEY_OK = re.compile(r"[^A-Za-z0-9_.:@/-]+")
_ICON = {"CRITICAL": "\U0001F534", "ERROR": "\U0001F7E0", "WARNING": "\U0001F7E1", "INFO": "\u2139\ufe0f"}


def alerts_config(cfg: Mapping | None) -> dict:
    """The [alerts] section with the schema's defaults filled (cfg: the whole config, or {})."""
    return section(dict(cfg or {}), "alerts")


def key_name(key: str) -> str:
    return key.split(":", 1)[0]


def _hhmm(ns: int) -> str:
    return f"{kst(ns):%H:%M}"


def as_date(day) -> date:
    if isinstance(day, datetime):
        return day.astimezone(KST).date()
    if isinstance(day, date):
        return day
    return parse_yyyymmdd(str(day).replace("-", ""))


def host_of(cfg: Mapping | None) -> str:
    return (cfg or {}).get("host_id") or socket.gethostname()


def _secret_value(secrets, name: str) -> str:
    if secrets is None:
        return ""
    try:
        return str(secrets.get(name) or "").strip()
    except Exception:
        return ""


def format_text(text: str, context: Mapping) -> str:
    """The alert's text with its context as `name: value` lines; secrets masked; bounded length."""
    lines = [str(text)]
    for k, v in context.items():
        if _SECRET_NAME.search(str(k)):
            v = MASK
        elif not isinstance(v, str):
            try:
                v = orjson.dumps(v, default=str).decode()
            except Exception:
                v = repr(v)
        v = v if len(v) <= CONTEXT_VALUE_MAX else v[:CONTEXT_VALUE_MAX] + "…"
        lines.append(f"{k}: {v}")
    out = redact("\n".join(lines))
    return out if len(out) <= TEXT_MAX_CHARS else out[:TEXT_MAX_CHARS - 1] + "…"


# -- the outbox as read back ----------------------------------------------------------------
@dataclass
class _Entry:
    id: str
    key: str
    severity: str
    text: str
    program: str
    count: int
    first_ts: int
    day: date                 # day of the file holding its first line
    state: str
    ts: int                   # newest line's time
    attempts: int = 0
    error: str = ""

    def line(self, ts: int, state: str, attempts: int | None = None, error: str | None = None) -> dict:
        rec = {"v": 1, "kind": "alert", "ts_ns": ts, "id": self.id, "key": self.key, "severity": self.severity,
               "text": self.text, "state": state, "attempts": self.attempts if attempts is None else attempts,
               "program": self.program, "count": self.count}
        err = self.error if error is None else error
        if err:
            rec["error"] = redact(err)[:500]
        return rec


@dataclass
class _Window:
    """Throttle window of one key: opened by a line that will be sent; counts what it suppressed since."""
    start: int
    severity: str
    suppressed: int = 0
    first_suppressed: int = 0
    latest_text: str = ""
    max_severity: str = "INFO"


class _Outbox:
    """Incremental reader of the outbox files of the last max_age_h (offsets per file)."""

    def __init__(self, root: Path, max_age_h: float):
        self.root = root
        self.span_days = max(1, math.ceil(max_age_h / 24))
        self.offsets: dict[Path, int] = {}
        self.entries: dict[str, _Entry] = {}
        self.windows: dict[str, _Window] = {}
        self.bad_lines = 0

    def days(self, now_ns: int) -> list[date]:
        today = paths.day_of(now_ns)
        return [today - timedelta(days=i) for i in range(self.span_days, -1, -1)]

    def refresh(self, now_ns: int) -> None:
        days = self.days(now_ns)
        keep = set()
        for d in days:
            p = paths.alerts_file(self.root, d)
            keep.add(p)
            for rec in self._read_new(p):
                self._apply(rec, d)
        for p in list(self.offsets):
            if p not in keep:
                del self.offsets[p]
        oldest = days[0]
        for i, e in list(self.entries.items()):
            if e.day < oldest:
                del self.entries[i]

    def _read_new(self, path: Path) -> list[dict]:
        from observer.store.reader import read_new

        # absent (no alert that day) or unreadable (reported when writing): nothing; replaced
        # (retention): read from the start; bad lines (not JSON or not an object, overlong) counted
        recs, self.offsets[path] = read_new(path, self.offsets.get(path, 0), self._bad_line)
        return [r for r in recs if r.get("kind") == "alert" and "id" in r]

    def _bad_line(self, _issue) -> None:
        self.bad_lines += 1

    def _apply(self, rec: dict, day: date) -> None:
        e = self.entries.get(rec["id"])
        ts = int(rec.get("ts_ns", 0))
        state = rec.get("state", "")
        if e is None:
            e = _Entry(rec["id"], rec.get("key", ""), rec.get("severity", "WARNING"), rec.get("text", ""),
                       rec.get("program", ""), int(rec.get("count", 1)), ts, day, state, ts,
                       int(rec.get("attempts", 0)), rec.get("error", ""))
            self.entries[e.id] = e
            if state == "pending":
                self.windows[e.key] = _Window(ts, e.severity)
            elif state == "suppressed" and e.error.startswith(THROTTLED):
                w = self.windows.get(e.key)
                if w is not None:
                    if not w.suppressed:
                        w.first_suppressed = ts
                    w.suppressed += 1
                    w.latest_text = e.text
                    if RANK.get(e.severity, 1) > RANK.get(w.max_severity, 0):
                        w.max_severity = e.severity
            return
        e.state, e.ts = state, ts
        e.attempts = int(rec.get("attempts", e.attempts))
        e.error = rec.get("error", "")


class _DrainRequest:
    def __init__(self, deadline: float):
        self.deadline = deadline
        self.done = threading.Event()
        self.result: dict = {}


class Alerter:
    """One per program. Thread-safe. See the module docstring."""

    def __init__(self, root, cfg: dict, secrets, *, program: str, clock: Clock | None = None, store=None):
        self.root = Path(root)
        self.cfg = cfg or {}
        self.acfg = alerts_config(self.cfg)
        self.program = program
        self.clock = clock or Clock()
        self.host = host_of(self.cfg)
        self._token = _secret_value(secrets, "TELEGRAM_BOT_TOKEN")
        self._chat_id = _secret_value(secrets, "TELEGRAM_CHAT_ID")
        register_secret(self._token)
        self.configured = bool(self._token and self._chat_id)
        self._transport = TelegramTransport(self._token, self._chat_id, self.acfg["telegram_api_base"],
                                            float(self.acfg["send_timeout_s"]))
        self._own_store = store is None
        if store is None:
            from observer.store.store import Store

            store = Store(self.root, program=program, clock=self.clock)
        self.store = store
        a = self.acfg
        self.throttle_ns = int(float(a["throttle_min"]) * 60 * NS)
        self.send_timeout_s = float(a["send_timeout_s"])
        self.max_send_s = self._transport.max_send_s
        self.lease_ns = int(max(float(a["claim_timeout_s"]), 3 * self.max_send_s) * NS)
        self.max_age_ns = int(float(a["max_age_h"]) * 3600 * NS)
        self._outbox = _Outbox(self.root, float(a["max_age_h"]))
        self._mine: dict[str, int] = {}       # id -> ts of the newest line this instance wrote
        self._mu = threading.RLock()
        self._lock: Lock | None = None        # flock of the outbox directory (store.fs.Lock)
        self._lock_warned = False
        # sender thread
        self._cv = threading.Condition()
        self._queue: deque[str] = deque()
        self._queue_max = int(a["queue_max"])
        self._requests: list[_DrainRequest] = []
        self._closing = False
        self._thread: threading.Thread | None = None
        self._circuit_until = 0.0              # monotonic: no attempts before (after a failure)
        self._delivery_ok: bool | None = None
        self._outage_t0 = 0.0
        self._warned_unconfigured = False
        self.tick_s = TICK_S                   # housekeeping period of the sender (tests raise it)
        self.counters: Counter[str] = Counter()

    # -- public ----------------------------------------------------------------------------
    def alert(self, key: str, severity: str, text: str, **context) -> dict:
        """Record an alert (durable outbox line) and hand it to the background sender.

        Returns the outbox line. Never raises and never waits for the network."""
        try:
            return self._alert(key, severity, text, context)
        except Exception as e:  # an alert must never take its caller down
            log.exception("alert failed", extra={"key": key})
            return {"v": 1, "kind": "alert", "ts_ns": self.clock.now_ns(), "id": "", "key": str(key),
                    "severity": "WARNING", "text": redact(str(text)), "state": "failed",
                    "error": redact(f"{type(e).__name__}: {e}")}

    def drain(self, timeout_s: float = 10) -> dict:
        """Retry pending/failed alerts of every program (backoff respected), send due throttle summaries,
        give up expired ones. Returns counts; never raises, returns within about timeout_s."""
        t0 = time.monotonic()
        req = _DrainRequest(t0 + max(0.1, timeout_s * 0.9))
        if self._closing:
            return {"closed": True, "timed_out": False}
        try:
            self._ensure_thread()
            with self._cv:
                self._requests.append(req)
                self._cv.notify_all()
            if not req.done.wait(max(0.0, timeout_s - (time.monotonic() - t0))):
                with self._cv:
                    if req in self._requests:
                        self._requests.remove(req)
                return {**req.result, "timed_out": True, **self._undelivered()}
        except Exception as e:
            log.exception("drain failed")
            return {"error": redact(str(e)), "timed_out": False}
        return {**req.result, "timed_out": False}

    def close(self, timeout_s: float = 5) -> None:
        """Send what is queued for up to timeout_s, then stop the sender. Whatever is left stays pending
        in the outbox for the next drain (any program)."""
        deadline = time.monotonic() + timeout_s
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        t = self._thread
        if t is not None:
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                log.warning("alert sender still busy at close; undelivered alerts stay in the outbox",
                            extra={"program": self.program})
        with self._mu:
            if self._lock is not None:
                self._lock.close()
                self._lock = None
        if self._own_store and (t is None or not t.is_alive()):
            try:
                self.store.close()
            except Exception:
                log.exception("closing the alert store failed")

    def stats(self) -> dict:
        """Counts for metrics: this instance's sent/failed and the outbox's undelivered total."""
        return {**self.counters, **self._undelivered()}

    def entry(self, alert_id: str) -> dict | None:
        """Newest known state of one alert (re-read from the outbox)."""
        with self._locked():
            self._outbox.refresh(self.clock.now_ns())
            e = self._outbox.entries.get(alert_id)
            return None if e is None else e.line(e.ts, e.state)

    def with_key(self, key: str) -> list[dict]:
        """Newest known state of every alert of exactly this key (re-read from the outbox)."""
        with self._locked():
            self._outbox.refresh(self.clock.now_ns())
            return [e.line(e.ts, e.state) for e in self._outbox.entries.values() if e.key == key]

    # -- deciding -----------------------------------------------------------------------------
    def route(self, key: str, severity: str) -> tuple[bool, str]:
        if not self.acfg["enabled"]:
            return False, f"{NOT_ROUTED}: alerts.enabled is false"
        if key_name(key) == KEY_DAILY_SUMMARY:
            return True, ""
        if severity in self.acfg["always_send"]:
            return True, ""
        if severity == "WARNING" and key_name(key) in self.acfg["warning_keys"]:
            return True, ""
        if severity == "WARNING":
            return False, f"{NOT_ROUTED}: WARNING '{key_name(key)}' is not in alerts.warning_keys"
        return False, f"{NOT_ROUTED}: {severity} is kept for the daily summary"

    def _alert(self, key: str, severity: str, text: str, context: Mapping) -> dict:
        key = _KEY_OK.sub("_", str(key).strip()) or "unnamed"
        if not known(key):  # still sent: an unknown key is a bug to fix, not a reason to lose the alert
            log.warning("alert key not in the alert table (observer.telemetry.alerts.table)", extra={"alert_key": key})
        sev = str(severity).upper()
        sev = sev if sev in RANK else ("INFO" if sev == "DEBUG" else "WARNING")
        body = format_text(text, context)
        routed, why = self.route(key, sev)
        with self._locked():
            now = self.clock.now_ns()
            self._outbox.refresh(now)
            e = _Entry(self._new_id(now), key, sev, body, self.program, 1, now, paths.day_of(now), "pending", now)
            if not routed:
                rec = e.line(now, "suppressed", error=why)
            else:
                w = self._outbox.windows.get(key)
                if w is not None and now < w.start + self.throttle_ns and RANK[sev] <= RANK.get(w.severity, 3):
                    e.count = w.suppressed + 1
                    rec = e.line(now, "suppressed", error=(
                        f"{THROTTLED}: '{key}' was sent at {_hhmm(w.start)} KST; the next one goes out after "
                        f"{_hhmm(w.start + self.throttle_ns)} KST with the count"))
                else:
                    if w is not None and w.suppressed:
                        e.text = self._fold(e.text, w)
                        e.count = w.suppressed + 1
                    rec = e.line(now, "pending")
            self._append(rec)
        if rec["state"] == "pending":
            self._enqueue(rec["id"])
        self.counters["alerts"] += 1
        return rec

    def _fold(self, text: str, w: _Window) -> str:
        extra = (f"\n(+{w.suppressed} earlier alert(s) with this key suppressed since "
                 f"{_hhmm(w.first_suppressed)} KST)")
        return text[:TEXT_MAX_CHARS - len(extra)] + extra

    def _new_id(self, now: int) -> str:
        return f"{kst(now):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:10]}"

    def _append(self, rec: dict) -> None:
        """Append one outbox line (durable when this returns) — a full disk is logged, not raised."""
        try:
            w = self.store.writer(paths.alerts_file(self.root, paths.day_of(rec["ts_ns"])), "alerts", shared=True)
            w.append(rec)
        except (StoreError, OSError) as e:
            log.error("alert outbox line not written", extra={"id": rec["id"], "state": rec["state"],
                                                                "error": redact(str(e))})
        self._mine[rec["id"]] = rec["ts_ns"]
        # our own line is the newest state at once (even if the disk refused it); re-reading it from the
        # file later changes nothing
        self._outbox._apply(rec, paths.day_of(rec["ts_ns"]))

    class _LockCtx:
        def __init__(self, owner: Alerter):
            self.o = owner
            self.flocked = False

        def __enter__(self):
            self.o._mu.acquire()
            try:
                lock = self.o._dir_lock()
                if lock is not None:
                    self.flocked = lock.acquire(wait_s=LOCK_WAIT_S)
                    if not self.flocked and not self.o._lock_warned:
                        log.warning("outbox lock held by another program for too long; deciding without it",
                                    extra={"program": self.o.program})
                        self.o._lock_warned = True
            except BaseException:
                self.o._mu.release()
                raise
            return self

        def __exit__(self, *exc):
            try:
                if self.flocked and self.o._lock is not None:
                    self.o._lock.release()
            finally:
                self.o._mu.release()

    def _locked(self) -> Alerter._LockCtx:
        return Alerter._LockCtx(self)

    def _dir_lock(self) -> Lock | None:
        if self._lock is None:
            d = paths.alerts_file(self.root, self.clock.today_kst()).parent
            try:
                ensure_dir(d)
                self._lock = Lock(d)
            except OSError as e:
                log.error("alert outbox directory unusable", extra={"dir": str(d), "error": str(e)})
                return None
        return self._lock

    def _undelivered(self) -> dict:
        with self._mu:
            n = sum(1 for e in self._outbox.entries.values() if e.state in ("pending", "failed"))
        return {"undelivered": n}

    # -- the sender thread ----------------------------------------------------------------------
    def _enqueue(self, alert_id: str) -> None:
        self._ensure_thread()
        with self._cv:
            if len(self._queue) >= self._queue_max:
                self.counters["queue_full"] += 1  # it waits in the outbox for the next drain
                return
            self._queue.append(alert_id)
            self._cv.notify_all()

    def _ensure_thread(self) -> None:
        with self._cv:
            if self._thread is None or not self._thread.is_alive():
                if self._closing:
                    return
                self._thread = threading.Thread(target=self._run, name=f"alerts-{self.program}", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        self._transport.open()
        next_tick = time.monotonic() + self.tick_s
        try:
            while True:
                with self._cv:
                    while not (self._queue or self._requests or self._closing):
                        left = next_tick - time.monotonic()
                        if left <= 0:
                            break
                        self._cv.wait(left)
                    ids = list(self._queue)
                    self._queue.clear()
                    reqs = list(self._requests)
                    self._requests.clear()
                    closing = self._closing
                try:
                    for i in ids:
                        if time.monotonic() < self._circuit_until:
                            break  # Telegram failing: they wait in the outbox for the next retry round
                        self._attempt(i)
                    for r in reqs:
                        r.result = self._drain_step(r.deadline)
                        r.done.set()
                    if time.monotonic() >= next_tick and not closing:
                        next_tick = time.monotonic() + self.tick_s
                        self._drain_step(time.monotonic() + self.max_send_s, quiet=True)
                except Exception:
                    log.exception("alert sender round failed")
                    for r in reqs:
                        r.done.set()
                if closing:
                    with self._cv:
                        if not self._queue and not self._requests:
                            return
        finally:
            self._transport.close()

    def _drain_step(self, deadline: float, quiet: bool = False) -> dict:
        c: Counter[str] = Counter()
        with self._locked():
            now = self.clock.now_ns()
            ob = self._outbox
            ob.refresh(now)
            for key, w in list(ob.windows.items()):
                if w.suppressed and self.throttle_ns and now >= w.start + self.throttle_ns:
                    self._append_summary(key, w, now)
                    c["summaries"] += 1
            for e in list(ob.entries.values()):
                if e.state in ("pending", "failed") and now - e.first_ts > self.max_age_ns:
                    why = (f"{EXPIRED}: not delivered within {self.acfg['max_age_h']} h "
                           f"({e.attempts} attempt(s)){'; last error: ' + e.error if e.error else ''}")
                    self._append(e.line(now, "suppressed", error=why))
                    c["expired"] += 1
            todo = sorted((e for e in ob.entries.values() if self._eligible(e, now)), key=lambda e: e.first_ts)
            todo_ids = [e.id for e in todo]
        for i in todo_ids:
            if time.monotonic() + self.max_send_s > deadline and c["sent"] + c["failed"] > 0:
                c["deferred"] += 1
                continue
            if time.monotonic() < self._circuit_until:
                c["deferred"] += 1
                continue
            r = self._attempt(i)
            if r is None:
                c["skipped"] += 1
            else:
                c[r] += 1
        out = dict(c)
        out.update(self._undelivered())
        if not quiet:
            log.debug("alerts drained", extra=out)
        return out

    def _append_summary(self, key: str, w: _Window, now: int) -> None:
        mins = self.acfg["throttle_min"]
        text = (f"{w.suppressed} more alert(s) '{key}' in the last {mins:g} min (since {_hhmm(w.first_suppressed)} KST). "
                f"Latest: {w.latest_text}")
        text = text if len(text) <= TEXT_MAX_CHARS else text[:TEXT_MAX_CHARS - 1] + "…"
        e = _Entry(self._new_id(now) + "-sum", key, w.max_severity if w.max_severity != "INFO" else w.severity,
                   text, self.program, w.suppressed, now, paths.day_of(now), "pending", now)
        self._append(e.line(now, "pending"))

    def _backoff_ns(self, attempts: int) -> int:
        b = float(self.acfg["retry_backoff_s"]) * (2 ** max(0, attempts - 1))
        return int(min(b, float(self.acfg["retry_backoff_max_s"])) * NS)

    def _eligible(self, e: _Entry, now: int) -> bool:
        if e.state == "failed":
            return now - e.ts >= self._backoff_ns(e.attempts)
        if e.state == "pending":
            return self._mine.get(e.id) == e.ts or now - e.ts >= self.lease_ns
        return False

    def _attempt(self, alert_id: str) -> str | None:
        """Claim one alert under the lock, send it, record the result. None = not ours / nothing to do."""
        if not self.configured or not self.acfg["enabled"]:
            if not self._warned_unconfigured:
                log.warning("Telegram not configured (TELEGRAM_BOT_TOKEN / TELEGRAM_CHAT_ID missing or alerts "
                            "disabled): alerts stay pending in the outbox", extra={"program": self.program})
                self._warned_unconfigured = True
            return None
        with self._locked():
            now = self.clock.now_ns()
            self._outbox.refresh(now)
            e = self._outbox.entries.get(alert_id)
            if e is None or not self._eligible(e, now):
                return None
            if not (self._mine.get(e.id) == e.ts and e.state == "pending" and now - e.ts < self.lease_ns // 2):
                claim = e.line(now, "pending")
                self._append(claim)
            attempts = e.attempts + 1
        ok, err, retry_after = self._transport.send(self._message(e))
        with self._locked():
            now = self.clock.now_ns()
            if ok:
                self._append(e.line(now, "sent", attempts=attempts, error=""))
                self.counters["sent"] += 1
            else:
                self._append(e.line(now, "failed", attempts=attempts, error=err))
                self.counters["failed"] += 1
                self._circuit_until = time.monotonic() + max(retry_after, min(
                    float(self.acfg["retry_backoff_s"]), float(self.acfg["retry_backoff_max_s"])))
        self._delivery_changed(ok, err)
        return "sent" if ok else "failed"

    def _delivery_changed(self, ok: bool, err: str) -> None:
        if ok and self._delivery_ok is False:
            self._emit("recovered", outage_s=round(time.monotonic() - self._outage_t0, 3))
        elif not ok and self._delivery_ok is not False:
            self._outage_t0 = time.monotonic()
            log.warning("Telegram unreachable; alerts wait in the outbox", extra={"error": redact(err)})
            self._emit("failing", error=redact(err)[:300])
        self._delivery_ok = ok

    def _emit(self, status: str, **fields) -> None:
        try:
            self.store.events().emit("alert_delivery", "WARNING" if status == "failing" else "INFO",
                                     status=status, undelivered=self._undelivered()["undelivered"], **fields)
        except Exception:
            log.exception("alert_delivery event failed")

    def _message(self, e: _Entry) -> str:
        if key_name(e.key) == KEY_DAILY_SUMMARY:
            msg = e.text
        else:
            head = f"{_ICON.get(e.severity, '')} {e.severity} · {e.key}"
            if e.count > 1:
                head += f" (×{e.count})"
            foot = f"— {e.program} @ {self.host}, {kst(e.first_ts):%Y-%m-%d %H:%M:%S} KST"
            msg = f"{head}\n{e.text}\n{foot}"
        msg = redact(msg)
        return msg if len(msg) <= TELEGRAM_MAX_CHARS else msg[:TELEGRAM_MAX_CHARS - 1] + "…"
