"""Keep the writers' large buffers out of the malloc heap (glibc), so a long-running process's RSS
follows what it holds, not the largest buffer it ever held.

A data writer's buffer (a bytearray, grown by realloc) reaches 1 MiB between chunk writes, and
during a slow fsync as much as arrives meanwhile (12.7 MB seen under the Track B firehose). glibc
serves such a block with mmap and gives it back on free, but its *dynamic* mmap threshold then
rises to that block's size (up to 32 MiB): from then on buffers of that size are carved from the
heap, where their freed space stays resident as holes between small live objects. Measured in the
Track B firehose benchmark: heap free space 5.6 -> 11-13 MB over 1,000,000 messages, RSS up to
+5 MB over the run. Setting the threshold explicitly turns the dynamic adjustment off: buffers of
128 KiB and more are always mapped (realloc is an mremap) and unmapped when freed; heap 17-20 MB
with 4-7 MB free, RSS ~3 MB lower (docs/benchmarks.md, Track B memory).
"""

from __future__ import annotations

import os

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)
MMAP_THRESHOLD = 128 * 1024  # glibc's own starting value: objects below it stay in the heap
_ENV = "MALLOC_MMAP_THRESHOLD_"  # glibc's environment tunables: an operator's setting wins
_TUNABLE = "malloc.mmap_threshold"  # the same in GLIBC_TUNABLES

_pinned: bool | None = None


def pin_mmap_threshold(nbytes: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at `nbytes` for this process (once; later calls return the first
    result). False, changing nothing, without glibc or when the operator set it (MALLOC_MMAP_THRESHOLD_
    or malloc.mmap_threshold in GLIBC_TUNABLES)."""
    global _pinned
    if _pinned is None:
        operator = os.environ.get(_ENV) or _TUNABLE in os.environ.get("GLIBC_TUNABLES", "")
        _pinned = False if operator else _mallopt(M_MMAP_THRESHOLD, nbytes)
    return _pinned


def _mallopt(param: int, value: int) -> bool:
    import ctypes  # here, not at import: only processes that buffer behind a flusher pay for it

    try:
        fn = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (or no dynamic symbols): nothing to tune
        return False
    fn.argtypes = (ctypes.c_int, ctypes.c_int)
    fn.restype = ctypes.c_int
    return fn(param, value) == 1
