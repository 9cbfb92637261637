"""File-system primitives for the data tree: every directory, file, rename, lock and deletion below
data_dir is made here (or by writer.py and state.py, built on these), so modes, fsyncs and locking
follow one set of rules. tests/test_tree_ownership.py keeps the rest of lib/observer from
touching the tree directly.

Modes: files 0640, directories 0750; PRIVATE_MODE (0600) for files that hold a secret or a
credential's state (token cache, rate-limit bucket) and for lock files beside them.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from observer.core.clock import Stopped

FILE_MODE = 0o640
DIR_MODE = 0o750
PRIVATE_MODE = 0o600
_POLL_S = 0.005


def fsync_dir(path: Path) -> None:
    """fsync a directory: its entries (a new name, a rename, a removal) survive a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """fsync a file written through another handle (or by another process)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_dir(path: Path) -> None:
    """mkdir -p with 0750 dirs; fsync the parent of each new dir so the entry survives a crash."""
    path = Path(path)
    if path.is_dir():
        return
    ensure_dir(path.parent)
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        return
    fsync_dir(path.parent)


def create_dir(path: Path, mode: int = DIR_MODE) -> None:
    """A new directory (FileExistsError if the name is taken) with exactly `mode` (chmod after mkdir:
    the umask would strip bits, mkdir(2) may ignore setgid), its entry fsync'd."""
    path = Path(path)
    os.mkdir(path, mode)
    os.chmod(path, mode)
    fsync_dir(path.parent)


def open_new(path: Path, mode: int = FILE_MODE) -> BinaryIO:
    """A new file for writing (never an existing one, never through a symlink) with `mode`. The caller
    writes, flushes and fsyncs it (see close_durable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)
        return os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        raise


def close_durable(f: BinaryIO) -> None:
    """Flush, fsync and close a file opened by open_new."""
    try:
        f.flush()
        os.fsync(f.fileno())
    finally:
        f.close()


def write_new(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    """A new file holding `data`, fsync'd (its directory is not: see fsync_dir)."""
    f = open_new(path, mode)
    try:
        f.write(data)
    finally:
        close_durable(f)


def rename_dir(src: Path, dst: Path) -> None:
    """Move a directory to a name that is free (rename(2) of a directory replaces only an empty one),
    and make the move durable (fsync of the parent directories)."""
    src, dst = Path(src), Path(dst)
    os.rename(src, dst)
    fsync_dir(dst.parent)
    if src.parent != dst.parent:
        fsync_dir(src.parent)


def remove_file(path: Path) -> None:
    """Delete one file (FileNotFoundError if it is gone); the directory is not fsync'd: a deletion
    undone by a crash is repeated by the next run."""
    os.unlink(path)


def remove_empty_dir(path: Path) -> None:
    """rmdir: OSError unless the directory is empty."""
    os.rmdir(path)


def remove_tree(path: Path, *, ignore_errors: bool = False) -> None:
    """Delete a directory and everything below it (symlinks inside are removed, never followed)."""
    shutil.rmtree(path, ignore_errors=ignore_errors)


class Lock:
    """An exclusive flock on a lock file (created with `mode` if missing, never through a symlink) or
    on a directory. Released by release() or close(); a closed fd releases it as well, so a process
    that dies holds nothing."""

    def __init__(self, path: Path, *, mode: int = PRIVATE_MODE):
        self.path = Path(path)
        if self.path.is_dir():
            self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        else:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, mode)

    def acquire(self, *, wait_s: float | None = None, stop_event: threading.Event | None = None) -> bool:
        """Take the lock. wait_s None: wait as long as it takes (polling when stop_event is given, which
        ends the wait with Stopped once set); wait_s >= 0: give up after that long and return False."""
        if wait_s is None and stop_event is None:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            return True
        deadline = None if wait_s is None else time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                pass
            if deadline is not None and time.monotonic() >= deadline:
                return False
            if stop_event is not None:
                if stop_event.wait(_POLL_S * 10):
                    raise Stopped(f"stop requested while waiting for the lock on {self.path.name}")
            else:
                time.sleep(_POLL_S)

    def release(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@contextmanager
def locked(path: Path, *, wait_s: float | None = None, stop_event: threading.Event | None = None,
           mode: int = PRIVATE_MODE) -> Iterator[bool]:
    """Hold an exclusive flock of `path` (a lock file or a directory) for the block; yields whether it
    was taken (False only when wait_s ran out: the caller decides whether to go on without it)."""
    lock = Lock(path, mode=mode)
    try:
        got = lock.acquire(wait_s=wait_s, stop_event=stop_event)
        try:
            yield got
        finally:
            if got:
                lock.release()
    finally:
        lock.close()


class SharedRecord:
    """A small file several processes read and rewrite in place under flock (the rate-limit bucket).
    Never replaced by a rename: a new inode would split the lock between old and new holders."""

    def __init__(self, path: Path, *, mode: int = PRIVATE_MODE):
        self.path = Path(path)
        ensure_dir(self.path.parent)
        self._lock = Lock(self.path, mode=mode)

    @contextmanager
    def locked(self) -> Iterator[None]:
        self._lock.acquire()
        try:
            yield
        finally:
            self._lock.release()

    def read(self, size: int) -> bytes:
        """The first `size` bytes (fewer if the file is shorter: a new or damaged record)."""
        return os.pread(self._lock.fd, size, 0)

    def write(self, data: bytes) -> None:
        os.pwrite(self._lock.fd, data, 0)

    def close(self) -> None:
        self._lock.close()
