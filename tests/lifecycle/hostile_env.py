"""Shared set-up of the lifecycle hostile tests: a receipted, expired day on a real tree, a forger that
rewrites a package's manifest (hash file recomputed, receipt forged to match), and the real
bin/observer-retention run against the local fake Telegram server."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import date, datetime, timedelta
from pathlib import Path

import orjson

from observer.core.clock import yyyymmdd
from observer.lifecycle import layout
from observer.lifecycle.backup import package_day
from observer.lifecycle.pull import build_receipt
from observer.store import paths
from observer.store.reader import read_file
from tests.lifecycle.test_retention import day_paths, receipt, small_day
from tests.support.fake_telegram import CHAT, TOKEN
from tests.support.procs import run_prog

TODAY = date(2026, 3, 20)
NOW = {"OBSERVER_CLOCK": "2026-03-20T22:00:00+09:00"}
EXPIRED = TODAY - timedelta(days=5)      # keep 3: deletable with a receipt
OTHER = TODAY - timedelta(days=6)


def receipted_day(root: Path, day: date) -> set[str]:
    small_day(root, day, False)
    package_day(root, day)
    receipt(root, day)
    return day_paths(root, day)


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def write_manifest(root: Path, day: date, data: bytes, receipt_archives: dict | None = None,
                   receipt_bytes: bytes | None = None) -> None:
    """Replace the package's manifest by `data`, its hash file to match, and a receipt naming both."""
    pkg = paths.backup_dir(root, day)
    (pkg / layout.MANIFEST).write_bytes(data)
    (pkg / layout.MANIFEST_SHA).write_text(f"{sha(data)}  {layout.MANIFEST}\n")
    if receipt_bytes is None:
        receipt_bytes = build_receipt(yyyymmdd(day), "pc", datetime(2026, 3, 16), sha(data), receipt_archives or {})
    (pkg / layout.RECEIPT).write_bytes(receipt_bytes)


def manifest_of(root: Path, day: date) -> dict:
    return orjson.loads((paths.backup_dir(root, day) / layout.MANIFEST).read_bytes())


def config(tmp: Path, root: Path, tg=None) -> Path:
    secrets = tmp / "secrets.env"
    secrets.write_text(f"TELEGRAM_BOT_TOKEN={TOKEN}\nTELEGRAM_CHAT_ID={CHAT}\n")
    os.chmod(secrets, 0o600)
    text = f'data_dir = "{root}"\nsecrets_file = "{secrets}"\nhost_id = "testhost"\n'
    if tg is not None:
        keys = ["backup", "disk", "backup_manifest_invalid"]
        text += (f'[alerts]\ntelegram_api_base = "{tg.base}"\nsend_timeout_s = 2\nretry_backoff_s = 0\n'
                 f"warning_keys = {json.dumps(keys)}\n")
    c = tmp / "observer.toml"
    c.write_text(text)
    return c


def retention(tmp: Path, root: Path, tg=None, *extra, timeout: float = 120):
    return run_prog("observer-retention", "--config", config(tmp, root, tg), "--disk-pct", "10", *extra,
                    env=NOW, timeout=timeout)


def events(root: Path, kind: str | None = None) -> list[dict]:
    f = paths.events_file(root, "system", TODAY)
    out = [e for e in read_file(f) if isinstance(e, dict)] if f.exists() else []
    return [e for e in out if kind is None or e.get("event") == kind]


def snapshot(top: Path, skip: Path | None = None) -> dict[str, tuple]:
    """Every entry below top (not following symlinks): kind, size, mtime and content hash of files."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        if skip is not None and Path(dirpath) == skip.parent:
            dirnames[:] = [d for d in dirnames if Path(dirpath, d) != skip]
        for n in dirnames + filenames:
            p = Path(dirpath, n)
            st = os.lstat(p)
            rel = str(p.relative_to(top))
            if os.path.islink(p):
                out[rel] = ("link", os.readlink(p))
            elif p.is_file():
                out[rel] = ("file", st.st_size, st.st_mtime_ns, sha(p.read_bytes()))
            elif p.is_dir():
                out[rel] = ("dir",)
            else:
                out[rel] = ("other", st.st_mode)
    return out
