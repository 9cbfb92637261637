"""Whole-file state in the tree (universe snapshots, heartbeats, checkpoints): written to a temp
file, fsync'd and renamed into place, so a reader sees the old or the new file, never half of one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import orjson

from observer.store.fs import FILE_MODE, ensure_dir, fsync_dir


def write_bytes_atomic(path: Path, data: bytes, *, durable: bool = True, mode: int = FILE_MODE) -> None:
    """Replace `path` with `data` all at once: temp file in the same dir, (fsync,) rename (, fsync dir).
    mode: fs.PRIVATE_MODE for a file that holds a secret (set before a byte is written)."""
    path = Path(path)
    ensure_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if durable:
            os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
        if durable:
            fsync_dir(path.parent)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_json_atomic(path: Path, obj, *, durable: bool = True, indent: bool = False) -> None:
    opts = orjson.OPT_INDENT_2 if indent else 0
    write_bytes_atomic(path, orjson.dumps(obj, option=opts | orjson.OPT_APPEND_NEWLINE), durable=durable)


def read_json(path: Path, default=None):
    try:
        return orjson.loads(Path(path).read_bytes())
    except FileNotFoundError:
        return default


def create_json_once(path: Path, obj, *, indent: bool = False) -> bool:
    """Write `path` only if it does not exist yet (atomically: link(2) of a complete temp file).
    Returns False when another writer got there first — its file stands (frozen-for-the-day data)."""
    path = Path(path)
    ensure_dir(path.parent)
    data = orjson.dumps(obj, option=(orjson.OPT_INDENT_2 if indent else 0) | orjson.OPT_APPEND_NEWLINE)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        fsync_dir(path.parent)
        return True
    finally:
        os.unlink(tmp)
