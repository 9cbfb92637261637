"""Retention: delete a day's data only when the PC's receipt proves it is safe.

Rules (config [retention]):
- a day is kept `keep_days` (3) days, `anomaly_keep_days` (7) if it is an anomaly day, never more
  than `max_keep_days` (10): a day D with age = today - D is *expired* when age > its keep;
- a day is *deletable* only with a verified receipt: backup/D/pulled.json names the SHA-256 of the
  package's current manifest.json and confirms every archive's SHA-256 - whatever the age;
- expired deletable days go, oldest first, partition by partition (raw, scalp, swing, recovered,
  reports, system: the evidence last);
- disk pressure (usage >= `disk_high_pct`, 80): deletable days still inside their keep go too,
  normal days before anomaly days, oldest first, never today, until the projected usage is below;
- a file is deleted only if it is still exactly what the manifest lists (same size and mtime);
  a file appended to or created after packaging is kept and reported (the next backup re-packages);
- disk at or above `disk_critical_pct` (95) with nothing (or not enough) deletable: nothing more is
  deleted, a CRITICAL event names every day that blocks and why.

Per-day files that are not market data and are never packaged (layout.UNGATED) need no receipt:
- metrics/YYYYMMDD.jsonl goes when its age > `metrics_keep_days` (14); under disk pressure, once no
  receipted day is left to delete early, younger ones go too (oldest first, never today's) - after the
  market data, because a receipted day has a copy on the PC and metrics have none;
- state/gapfill/<provider>_YYYYMMDD.json (the gap-filler's checkpoint, read with the day's data by the
  audit) goes once the day has no market data left on the server (never today's).

Writers' temporary files (layout.TEMP_FILE_RE) a crash left behind go once older than
`tmp_max_age_hours` (24).

Nothing in a package is trusted: a manifest or receipt that is not what backup / the puller write
(layout.parse_manifest / parse_receipt: schema, plain names, the day's own date) makes its day
`invalid` - kept, never deleted, reported by the program (event and alert `backup_manifest_invalid`);
the other days go on. Only regular files are ever deleted (lstat), and only names of the tree's form.

plan() is a pure function of the day states and the disk (the property tests drive it); execute()
does the deleting and emits one event per deletion (what, why, bytes).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field, fields
from datetime import date
from pathlib import Path
from typing import NamedTuple

from observer.core import notify
from observer.core.clock import yyyymmdd
from observer.core.config import section
from observer.core.logging import get_logger
from observer.lifecycle import backup as bk
from observer.lifecycle import layout
from observer.store import fs, paths

log = get_logger(__name__)

# deletion order inside a day: bulk first, evidence last
_PREFERRED = ("raw", "scalp", "swing", "recovered", "reports", layout.UNIVERSE, "system")
PARTITION_ORDER = tuple(p for p in _PREFERRED if p in layout.PACKAGED_PARTITIONS) + tuple(
    p for p in layout.PACKAGED_PARTITIONS if p not in _PREFERRED)
TEMP = "stale-tmp"  # pseudo-partition of the writers' temp files a crash left behind
ARCHIVES = "backup-archives"  # pseudo-partition: the package's *.tar.gz (manifest + receipt stay)


@dataclass(frozen=True)
class Policy:
    keep_days: int = 3
    anomaly_keep_days: int = 7
    max_keep_days: int = 10
    disk_high_pct: float = 80.0
    disk_critical_pct: float = 95.0
    metrics_keep_days: int = 14
    tmp_max_age_hours: float = 24.0

    @classmethod
    def from_config(cls, cfg: dict) -> Policy:
        r = section(cfg, "retention")
        return cls(**{f.name: r[f.name] for f in fields(cls)})

    def keep(self, anomaly: bool) -> int:
        return min(self.anomaly_keep_days if anomaly else self.keep_days, self.max_keep_days)


@dataclass(frozen=True)
class Disk:
    total: int
    used: int

    @property
    def pct(self) -> float:
        return 100.0 * self.used / self.total if self.total else 0.0

    @classmethod
    def of(cls, path: Path) -> Disk:
        s = os.statvfs(path)
        used = (s.f_blocks - s.f_bfree) * s.f_frsize
        avail = s.f_bavail * s.f_frsize
        return cls(used + avail, used)  # like df: reserved blocks are not ours to fill


@dataclass
class DayState:
    day: date
    part_bytes: dict[str, int]          # partition -> bytes on disk now
    anomaly: bool = False
    receipted: bool = False
    receipt_reason: str = ""            # why it is (not) receipted
    archive_bytes: int = 0              # the package's archives (deleted with the last partition)
    extra: dict[str, int] = field(default_factory=dict)  # layout.UNGATED kind -> bytes (no receipt needed)
    invalid: str = ""                   # the manifest or receipt is not what we write: kept, reported

    @property
    def bytes(self) -> int:
        return sum(self.part_bytes.values())


@dataclass(frozen=True)
class Deletion:
    day: date
    partition: str
    bytes: int
    why: str
    early: bool = False                 # inside its keep period (disk pressure)


@dataclass
class Plan:
    today: date
    disk: Disk
    deletions: list[Deletion] = field(default_factory=list)
    blocked: list[tuple[date, str, int]] = field(default_factory=list)  # unreceipted days with data
    overdue: list[date] = field(default_factory=list)                   # older than max_keep_days, unreceipted
    projected_pct: float = 0.0
    pressure: bool = False
    critical: bool = False              # still >= critical after every possible deletion
    invalid: list[tuple[date, str]] = field(default_factory=list)     # bad manifest/receipt: kept, reported
    temp: list[layout.TempFile] = field(default_factory=list)         # stale temp files to remove

    def lines(self) -> list[str]:
        out = [f"retention plan for {self.today.isoformat()}: disk {self.disk.pct:.1f}% used"
               f" -> {self.projected_pct:.1f}% after the plan"]
        for d in self.deletions:
            out.append(f"  delete {yyyymmdd(d.day)} {d.partition:<16} {_human(d.bytes):>10}  ({d.why})")
        if self.temp:
            out.append(f"  delete {len(self.temp)} stale temp file(s), {_human(sum(t.bytes for t in self.temp))}: "
                       + ", ".join(t.rel for t in self.temp[:10]) + (" ..." if len(self.temp) > 10 else ""))
        if not self.deletions and not self.temp:
            out.append("  nothing to delete")
        for day, why in self.invalid:
            out.append(f"  INVALID {yyyymmdd(day)}: {why} (day kept)")
        for day, why, n in self.blocked:
            out.append(f"  keep   {yyyymmdd(day)} {'(all)':<16} {_human(n):>10}  (no verified receipt: {why})")
        if self.overdue:
            out.append("  OVERDUE (past max_keep_days, no receipt): " + ", ".join(map(yyyymmdd, self.overdue)))
        if self.critical:
            out.append("  CRITICAL: disk stays critically full; blocked by " +
                       ", ".join(f"{yyyymmdd(d)} ({why})" for d, why, _ in self.blocked) if self.blocked
                       else "  CRITICAL: disk stays critically full and no day's data is left to delete")
        return out


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def plan(today: date, days: list[DayState], disk: Disk, policy: Policy,
         temp: list[layout.TempFile] = ()) -> Plan:
    p = Plan(today, disk)
    p.temp = list(temp)
    used = disk.used - sum(t.bytes for t in p.temp)
    deletable = sorted((d for d in days if d.receipted and (d.bytes > 0 or d.archive_bytes > 0)),
                       key=lambda d: d.day)
    deletable_days = {d.day for d in deletable}

    def delete_day(d: DayState, why: str, early: bool, stop_below: float | None) -> None:
        nonlocal used
        for part in [x for x in PARTITION_ORDER if d.part_bytes.get(x, 0) > 0]:
            if stop_below is not None and disk.total and 100.0 * used / disk.total < stop_below:
                return
            p.deletions.append(Deletion(d.day, part, d.part_bytes[part], why, early))
            used -= d.part_bytes[part]
        if d.archive_bytes:
            p.deletions.append(Deletion(d.day, ARCHIVES, d.archive_bytes, "the day's data is gone; "
                                        "the receipt and manifest stay as the record", early))
            used -= d.archive_bytes

    def delete_metrics(d: DayState, why: str, early: bool) -> None:
        nonlocal used
        p.deletions.append(Deletion(d.day, layout.METRICS, d.extra[layout.METRICS], why, early))
        used -= d.extra[layout.METRICS]

    # expired, day by day, oldest first: a receipted day's data past its keep, then that day's metrics
    # past metrics_keep_days (not market data, never packaged: no receipt to wait for)
    for d in sorted(days, key=lambda d: d.day):
        age, keep = (today - d.day).days, policy.keep(d.anomaly)
        if d.day in deletable_days and age > keep:
            delete_day(d, f"expired: age {age} d > keep {keep} d" + (" (anomaly day)" if d.anomaly else ""),
                       False, None)
        if d.extra.get(layout.METRICS, 0) > 0 and age > policy.metrics_keep_days and age > 0:
            delete_metrics(d, f"expired: age {age} d > metrics_keep_days {policy.metrics_keep_days} d"
                           " (metrics: not packaged, no receipt needed)", False)
    if disk.total and 100.0 * used / disk.total >= policy.disk_high_pct:
        p.pressure = True
        early = [d for d in deletable if 0 < (today - d.day).days <= policy.keep(d.anomaly)]
        for d in sorted(early, key=lambda d: (d.anomaly, d.day)):
            if 100.0 * used / disk.total < policy.disk_high_pct:
                break
            delete_day(d, f"disk pressure: {100.0 * used / disk.total:.1f}% used >= {policy.disk_high_pct:g}%"
                       f" (age {(today - d.day).days} d, keep {policy.keep(d.anomaly)} d)", True,
                       policy.disk_high_pct)
        # then metrics inside their keep: after the receipted days, which have a copy on the PC (metrics
        # have none); never today's, which is being written
        for d in sorted(days, key=lambda d: d.day):
            if 100.0 * used / disk.total < policy.disk_high_pct:
                break
            age = (today - d.day).days
            if d.extra.get(layout.METRICS, 0) > 0 and 0 < age <= policy.metrics_keep_days:
                delete_metrics(d, f"disk pressure: {100.0 * used / disk.total:.1f}% used >= "
                               f"{policy.disk_high_pct:g}% (metrics age {age} d, keep {policy.metrics_keep_days} d)",
                               True)
    # a gap-filler checkpoint is only read together with its day's data (audit): it goes when the day
    # has no market data left on the server after this plan. Never today's (the gap-filler's current day).
    gone = {(x.day, x.partition): x.early for x in p.deletions}
    for d in sorted(days, key=lambda d: d.day):
        n = d.extra.get(layout.GAPFILL_STATE, 0)
        left = [q for q, b in d.part_bytes.items() if b > 0 and (d.day, q) not in gone]
        if n > 0 and (today - d.day).days > 0 and not left:
            early = any(gone.get((d.day, q), False) for q in d.part_bytes)
            p.deletions.append(Deletion(d.day, layout.GAPFILL_STATE, n, "the day's market data is gone from the "
                                        "server; its gap-filler checkpoint has nothing left to describe", early))
            used -= n
    p.blocked = [(d.day, d.receipt_reason or "no receipt", d.bytes)
                 for d in sorted(days, key=lambda d: d.day) if not d.receipted and d.bytes > 0]
    p.overdue = [d for d, _, _ in p.blocked if (today - d).days > policy.max_keep_days]
    p.invalid = [(d.day, d.invalid) for d in sorted(days, key=lambda d: d.day) if d.invalid]
    p.projected_pct = 100.0 * used / disk.total if disk.total else 0.0
    p.critical = p.projected_pct >= policy.disk_critical_pct
    return p


# -- reading the tree ------------------------------------------------------------------------------
class ReceiptStatus(NamedTuple):
    ok: bool                            # a verified receipt for the package as it is now
    why: str
    manifest: dict | None               # the package's manifest, if it passed its checks
    invalid: str = ""                   # the manifest or the receipt is not what we write (report it)


def receipt_status(root: Path, day: date) -> ReceiptStatus:
    """The server-side check of backup/D/pulled.json. Never raises for anything a file holds."""
    pkg = paths.backup_dir(root, day)
    if not layout.is_real_dir(pkg):
        if os.path.lexists(pkg):
            why = "backup/" + pkg.name + " is not a directory (a symlink or a file); not a package"
            return ReceiptStatus(False, why, None, why)
        return ReceiptStatus(False, "not packaged", None)
    try:
        manifest, msha = bk.load_manifest(pkg)
    except FileNotFoundError as e:
        why = f"package has no {Path(e.filename or layout.MANIFEST).name}"
        return ReceiptStatus(False, why, None, why)
    except (OSError, ValueError) as e:
        why = f"package manifest invalid: {e}"
        return ReceiptStatus(False, why, None, why)
    try:
        r = layout.parse_receipt(layout.read_small(pkg / layout.RECEIPT, layout.RECEIPT_MAX_BYTES),
                                 yyyymmdd(day))
    except FileNotFoundError:
        return ReceiptStatus(False, "packaged, not pulled yet", manifest)
    except (OSError, ValueError) as e:
        why = f"receipt invalid: {e}"
        return ReceiptStatus(False, why, manifest, why)
    if r["manifest_sha256"] != msha:
        return ReceiptStatus(False, "receipt is for another version of the package (re-packaged since; pull again)",
                             manifest)
    want = {n: a["sha256"] for n, a in manifest["archives"].items()}
    if r["archives"] != want:
        why = "receipt names this manifest but other archive hashes (forged or damaged)"
        return ReceiptStatus(False, why, manifest, why)
    return ReceiptStatus(True, f"receipt from {r.get('pc_id', '?')} at {r['pulled_at']}", manifest)


class Survey(NamedTuple):
    states: list[DayState]
    inv: dict[date, layout.DayFiles]
    manifests: dict[date, dict | None]
    problems: list[str]                 # entries of the tree no day may own (symlinks, FIFOs, odd names)


def _archive_bytes(pkg: Path, manifest: dict) -> int:
    n = 0
    for name in manifest["archives"]:
        try:
            st = os.lstat(pkg / name)
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode):
            n += st.st_size
    return n


def day_states(root: Path) -> Survey:
    problems: list[str] = []
    inv = layout.inventory(root, problems=problems)
    ungated = layout.ungated_inventory(root)
    manifests: dict[date, dict | None] = {}
    states = []
    for day in sorted(set(inv) | set(layout.package_days(root)) | set(ungated)):
        notify.progress()  # one day examined
        files = inv.get(day, layout.DayFiles(day))
        extra = ungated.get(day, layout.DayFiles(day))
        part_bytes = {p: files.bytes(p) for p in files.parts}
        extra_bytes = {k: extra.bytes(k) for k in extra.parts}
        try:
            ok, why, manifest, invalid = receipt_status(root, day)
            facts = bk.day_facts(root, day, files)
            anomaly = facts["anomaly_day"] or bool(manifest and manifest.get("anomaly_day"))
            arch = _archive_bytes(paths.backup_dir(root, day), manifest) if manifest else 0
        except Exception as e:  # one day that cannot be judged is kept and reported; the others go on
            ok, manifest, anomaly, arch = False, None, True, 0
            why = invalid = f"cannot evaluate the day: {type(e).__name__}: {e}"[:500]
        manifests[day] = manifest
        states.append(DayState(day, part_bytes, anomaly, ok, why, arch, extra_bytes, invalid))
    # execute() finds every file to delete in inv, so the ungated files go in too (after the states:
    # they are not part of the day's packaged data)
    for day, extra in ungated.items():
        inv.setdefault(day, layout.DayFiles(day)).parts.update(extra.parts)
    return Survey(states, inv, manifests, problems)


# -- doing it --------------------------------------------------------------------------------------
@dataclass
class Outcome:
    deleted_bytes: int = 0
    deleted: list[dict] = field(default_factory=list)
    kept_changed: list[str] = field(default_factory=list)


def _remove_empty_day_dirs(root: Path, rels: list[str], ymd: str) -> None:
    dirs = set()
    for rel in rels:
        parent = (root / rel).parent
        while parent != root and ymd in parent.relative_to(root).parts:
            dirs.add(parent)
            parent = parent.parent
    for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        try:
            fs.remove_empty_dir(d)
        except OSError:
            pass  # not empty (a kept file) or already gone


def _regular(path: Path) -> os.stat_result | None:
    """lstat of path if it is a regular file now (a symlink or FIFO swapped in is never deleted)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def remove_temp(root: Path, temp: list[layout.TempFile], today: date, emit) -> int:
    """Remove the plan's stale temp files that are still exactly as listed (one event)."""
    freed, removed, kept = 0, [], []
    for t in temp:
        if not layout.TEMP_FILE_RE.match(t.rel.rsplit("/", 1)[-1]):
            continue
        now = _regular(root / t.rel)
        if now is None:
            continue
        if (now.st_size, now.st_mtime_ns) != (t.bytes, t.mtime_ns):
            kept.append(t.rel)  # a writer is at it again
            continue
        fs.remove_file(root / t.rel)
        freed += now.st_size
        removed.append(t.rel)
    if removed or kept:
        fields = dict(date=yyyymmdd(today), action="delete", partition=TEMP, files=len(removed), bytes=freed,
                      why="writers' temp files left by a crash (older than tmp_max_age_hours)",
                      removed=removed[:50])
        if kept:
            fields.update(kept_changed=kept[:50], kept_changed_count=len(kept))
        emit("INFO", **fields)
    return freed


def execute(root: Path, p: Plan, inv: dict[date, layout.DayFiles], manifests: dict[date, dict | None],
            emit) -> Outcome:
    """Carry out the plan. `emit(severity, **fields)` records one `retention` event per deletion."""
    out = Outcome()
    kept_days: set[date] = set()        # days with a file kept because it changed after packaging
    out.deleted_bytes += remove_temp(root, p.temp, p.today, emit)
    for d in p.deletions:
        notify.progress()  # one deletion at a time: real progress for the unit's watchdog
        ymd = yyyymmdd(d.day)
        manifest = manifests.get(d.day) or {}
        if d.partition == ARCHIVES:
            pkg = paths.backup_dir(root, d.day)
            freed, names = 0, []
            for name in manifest.get("archives", {}):
                # the manifest passed its checks (plain archive names), so this is a file in pkg; and
                # only a regular file is removed
                if not layout.is_archive_name(name):
                    continue
                rst = _regular(pkg / name)
                if rst is not None:
                    fs.remove_file(pkg / name)
                    freed += rst.st_size
                    names.append(name)
            out.deleted_bytes += freed
            out.deleted.append({"date": ymd, "partition": d.partition, "bytes": freed})
            emit("INFO", date=ymd, action="delete", partition=d.partition, files=len(names), bytes=freed,
                 why=d.why, early=d.early)
            continue
        files = inv.get(d.day, layout.DayFiles(d.day)).parts.get(d.partition, {})
        freed, removed, kept = 0, [], []
        if d.partition in layout.UNGATED:
            for rel in sorted(files):
                if d.partition == layout.GAPFILL_STATE and d.day in kept_days:
                    kept.append(rel)  # the day still has (late) data the audit may read with it
                    continue
                then = files[rel]
                now = _regular(root / rel)
                if now is None:
                    continue
                # no manifest to compare with: unchanged since the inventory means no writer is at it
                if (now.st_size, now.st_mtime_ns) != (then.st_size, then.st_mtime_ns):
                    kept.append(rel)
                    continue
                fs.remove_file(root / rel)
                freed += now.st_size
                removed.append(rel)
        else:
            known = {e["path"]: e for e in manifest.get("files", [])}
            for rel in sorted(files):
                e = known.get(rel)
                now = _regular(root / rel)
                if now is None:
                    continue
                if e is None or e["bytes"] != now.st_size or e["mtime_ns"] != now.st_mtime_ns:
                    kept.append(rel)
                    continue
                fs.remove_file(root / rel)
                freed += now.st_size
                removed.append(rel)
            if kept:
                kept_days.add(d.day)
            if d.partition == "reports":
                rep = paths.reports_dir(root, d.day)
                if layout.is_real_dir(rep):  # empty subdirectories only (rmdir), never through a symlink
                    for dirpath, _, _ in os.walk(rep, topdown=False):
                        try:
                            fs.remove_empty_dir(dirpath)
                        except OSError:
                            pass  # not empty: a kept file
            _remove_empty_day_dirs(root, removed, ymd)
        out.deleted_bytes += freed
        out.deleted.append({"date": ymd, "partition": d.partition, "bytes": freed, "files": len(removed)})
        out.kept_changed += kept
        fields = dict(date=ymd, action="delete", partition=d.partition, files=len(removed), bytes=freed,
                      why=d.why, early=d.early)
        if kept:
            fields["kept_changed"] = kept[:50]
            fields["kept_changed_count"] = len(kept)
        emit("WARNING" if (kept or d.early) else "INFO", **fields)
    return out
