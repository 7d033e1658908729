"""Keep freed memory in the process: glibc's malloc settings for training on the CPU.

torch's CPU tensors come from malloc. glibc serves every block over 32 MB with a fresh mmap and
unmaps it on free, so each training step faults in its activations and gradients page by page
again, the kernel zeroing each page: in `verydeep bench --only training` on a 2-core EPYC a
quarter of the CPU time was the kernel's, and torchvision's own VGG-16 step ran about 1.25x
faster once the memory was kept (experiments/bench_notes.md). The Winograd path allocates more (its
transformed tiles) and gains more.
``retain_freed_memory()`` turns mmap off for large blocks and raises the trim threshold, so
freed blocks are reused by the next step; it is what jemalloc or tcmalloc would give, without a
preload. The CLI calls it once at start; ``VERYDEEP_MALLOC=default`` leaves glibc as it is.

Example:
    >>> import os
    >>> retain_freed_memory() in (True, False)  # False off glibc, or with VERYDEEP_MALLOC=default
    True
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys

__all__ = ["retain_freed_memory"]

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)


@functools.lru_cache(maxsize=1)
def retain_freed_memory() -> bool:
    """Set glibc's malloc to keep freed memory (once per process); True if it was set."""
    if os.environ.get("VERYDEEP_MALLOC", "").lower() == "default" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # musl, or no libc.so.6: its own allocator, left alone
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # no mmap for large blocks (they come from the heap and go back to it), and the heap's top
    # is returned to the system only beyond 2 GB free (mallopt takes an int)
    return mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
