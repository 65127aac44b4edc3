"""The C allocator under torch's CPU tensors: freed pages stay mapped between training steps.

torch allocates every CPU tensor with malloc. glibc hands out blocks over its mmap threshold
(128 KiB, raised up to the size of the largest block freed so far) as fresh mappings, and
returns free memory at the top of the heap to the system once it exceeds twice that. A
full-batch step of a wide net allocates and frees the same few large activations every epoch
(S0 wide: four of 13 MB), so each epoch page-faults them in again: about 1,200 faults and 5-10 %
of the epoch. With fixed thresholds the blocks come from the heap and stay mapped, and the next
step reuses them. Same arithmetic, same results; the process keeps up to TRIM_THRESHOLD of freed
memory for reuse instead of handing it back.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 << 20  # blocks up to 32 MiB from the heap (glibc's own upper bound on 64 bits)
TRIM_THRESHOLD = 256 << 20  # free memory kept at the top of the heap before it is returned

_kept = False


def keep_freed_pages() -> bool:
    """Fix glibc's thresholds for this process (once); False where there is no glibc (macOS,
    Windows, musl's mallopt does nothing) or it refused."""
    global _kept
    if _kept:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _kept = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    return _kept
