"""Keep freed array memory in the process instead of handing it back to the OS after every op.

Why: a training step allocates and frees the same large arrays (activations, gradients,
im2col columns) every step. glibc serves blocks over its mmap threshold (128 KiB at start)
with a fresh ``mmap`` and returns them with ``munmap`` when freed, so every step pays page
faults to zero those pages again, and every ``munmap`` stops all the process's threads for a
TLB shootdown, including the BLAS threads. Measured on the 2-core machine (CNN workload of
``bench/``): 61 ms/step with glibc's defaults, 43 ms/step with the settings below; with
another process busy on one core, 1111 ms/step against 73 ms/step, because the BLAS threads
spin while the shootdowns wait for them.

The settings: blocks up to 32 MiB come from the heap (glibc's own maximum for this
threshold), and up to 512 MiB of freed heap is kept for reuse rather than trimmed. Memory
use does not grow past the peak a step needs; it just is not returned between steps.
Set ``LAYERWISE_SYSTEM_MALLOC=1`` before importing layerwise to keep glibc's defaults.
"""

import ctypes
import ctypes.util
import os
import sys

# mallopt parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3

MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 512 * 2**20
TOP_PAD = 64 * 2**20

applied = False  # whether the settings took effect in this process


def keep_freed_memory():
    """Apply the settings above if this is glibc on Linux; return whether they took effect."""
    global applied
    if applied or sys.platform != "linux" or os.environ.get("LAYERWISE_SYSTEM_MALLOC") == "1":
        return applied
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # mallopt returns 1 on success; setting the mmap threshold also turns off glibc's
    # dynamic adjustment of it, which is what would otherwise undo this after a few frees.
    applied = all(mallopt(param, value) == 1 for param, value in (
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        (_M_TOP_PAD, TOP_PAD),
    ))
    return applied
