"""Keep freed heap memory in the process (glibc) instead of returning it to the OS.

The CPU path allocates a few [T, B, H] buffers per call (outputs, gate
gradients). With glibc's defaults, blocks over the mmap threshold are given back
to the kernel when freed and page-faulted in again on the next call: measured on
the 2-core bench machine at (T=100, B=32, H=128) that was ~30% of a
forward+backward. Raising the mmap and trim thresholds makes freed blocks
reusable. Called when the Numba backend loads; set FASTRNN_KEEP_MALLOC=1 to leave
the allocator alone. The benchmark applies the same setting to torch's
stand-alone process, so comparisons stay fair.
"""
import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_THRESHOLD = 1 << 30       # blocks under 1 GiB come from (and go back to) the heap


def keep_freed_memory():
    """Returns True when the glibc thresholds were raised."""
    if os.environ.get("FASTRNN_KEEP_MALLOC") == "1" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _THRESHOLD))
