"""glibc malloc settings for a long-lived process that handles large, short-lived buffers.

A search by image holds a few buffers of megabytes each for a moment (the request body, its base64,
the decoded picture, the resized array, the model's input). glibc serves them from one arena per thread
(up to 8 per core) and, after the first large block is freed, raises its mmap threshold to that size
(up to 32 MiB), so later ones come from the arenas too; freed, they stay resident there as fragmented
free space. A gunicorn worker (4 threads) grew that way under the soak while its model state was flat
(benchmarks.md, "Soak"). Two settings bound it: blocks of 1 MiB and more are always mapped and given back
to the system when freed, and at most 2 arenas. The same as MALLOC_MMAP_THRESHOLD_=1048576 and
MALLOC_ARENA_MAX=2 in the environment, but applied by the process itself (a gunicorn worker is forked
from a master whose allocator is already set up). A no-op off glibc.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("lookalike.allocator")

M_MMAP_THRESHOLD = -3   # glibc's malloc.h
M_ARENA_MAX = -8
MMAP_THRESHOLD = 1024 * 1024
ARENA_MAX = 2


def tune_allocator() -> bool:
    """Apply the settings above; True when glibc took them."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_ARENA_MAX, ARENA_MAX) == 1
    if not ok:
        log.warning("glibc did not take the malloc settings (mmap threshold, arena count)")
    return ok
