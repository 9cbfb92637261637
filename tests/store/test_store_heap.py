"""A store with a flusher keeps large buffers out of the malloc heap: after a 4 MiB buffer was freed,
a 1 MiB one is still mapped on its own (glibc's dynamic threshold would put it in the heap, where its
space stays resident after it is freed). Each case runs in a fresh process: the setting is per process."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")

ROOT = Path(__file__).resolve().parents[2]
PROBE = r"""
import ctypes, sys
from observer.store.store import Store


class Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]


libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Mallinfo2
store = Store(sys.argv[1])
if sys.argv[2] == "flusher":
    store.start_flusher()
big = bytearray(4 << 20)
del big  # mapped, then unmapped: glibc's dynamic threshold would now rise to 4 MiB
mapped = libc.mallinfo2().hblkhd
buf = bytearray(1 << 20)
print(libc.mallinfo2().hblkhd - mapped)
store.close()
"""


def mapped_growth(tmp_path, mode: str, **env) -> int:
    e = {k: v for k, v in os.environ.items() if k not in ("MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")}
    e.update(PYTHONPATH=str(ROOT / "lib"), **env)
    out = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path), mode], env=e, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split()[-1])


def test_a_store_with_a_flusher_maps_large_buffers(tmp_path):
    assert mapped_growth(tmp_path, "flusher") >= 1 << 20


def test_without_a_flusher_glibc_keeps_its_dynamic_threshold(tmp_path):
    # the premise of the fix: glibc's default puts the 1 MiB buffer in the heap
    assert mapped_growth(tmp_path, "plain") == 0


def test_an_operators_setting_wins(tmp_path):
    # the threshold set by the operator (here 8 MiB): pin_mmap_threshold leaves it alone, so the
    # buffer is in the heap
    assert mapped_growth(tmp_path, "flusher", MALLOC_MMAP_THRESHOLD_=str(8 << 20)) == 0
    assert mapped_growth(tmp_path, "flusher", GLIBC_TUNABLES=f"glibc.malloc.mmap_threshold={8 << 20}") == 0
