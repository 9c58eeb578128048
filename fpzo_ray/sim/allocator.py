"""Keep freed memory inside a worker process instead of handing it back to the OS (glibc).

A ZO step allocates and frees the same large activations (megabytes each in the stacked
mode) every time it runs. glibc's malloc serves blocks above its mmap threshold with fresh
``mmap`` calls, and returns the top of the heap to the OS once more than its trim threshold
is free, so each step faults every page of those activations in again; on a virtual machine
a page fault costs microseconds. Measured here, one thread: the stacked LeNet-5 step
(K = 20, batch 32) went from 55-60 ms to 39-43 ms, its first convolution from 14-18 ms to
6.6-7.4 ms; the loop mode and the digits CNN, whose activations are small, did not change.

A worker repeats the same step for the whole run, so memory it freed is memory it will need
again: the process keeps its peak resident, which is what it holds anyway at each step's
peak. The memory meter counts live tensor bytes, so its figures do not change.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

_applied = False


def keep_freed_memory() -> bool:
    """Serve every allocation from the heap and never trim it; True where glibc did so.

    Idempotent; a no-op (False) on platforms without glibc's ``mallopt``.
    """
    global _applied
    if _applied:
        return True
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        log.debug("no mallopt here (%s): freed memory goes back to the OS", name)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    # The trim threshold is an int: 2 GiB - 1 is "never" for a worker's heap.
    _applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return _applied
