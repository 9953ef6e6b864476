"""Keep freed memory in the process for CPU inference (glibc's malloc).

A CPU forward allocates and frees the same multi-MiB activations layer after layer. With glibc's default
settings, blocks above the (dynamic, at most 32 MiB) mmap threshold are mapped anew for every tensor, and
free memory at the top of the heap is handed back to the OS past the trim threshold, so the next tensor
pays a page fault per 4 KiB on first touch. On the 2-core AMD EPYC VM of docs/benchmarks.md this was
8,440 faults and 14 ms of kernel time per Vim-Ti forward at 512² and 450,000 faults and 0.94 s at 1248²
(of a 1.94 s forward). :func:`retain_freed_memory` makes malloc serve every block from its heap and keep
what is freed, the same as starting the process with
``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<bytes>`` (glibc's tunable environment variables), which is
the way for command-line tools. The cost: the process keeps its peak heap (up to the trim threshold
above it) until it exits, so use it in inference and benchmark processes, not where memory must be
handed back.
"""
import ctypes
import logging
from typing import Optional

from mmengine.logging import print_log

# mallopt parameter numbers (glibc malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_INT_MAX = 2**31 - 1


def _glibc() -> Optional[ctypes.CDLL]:
    """The process's C library when it is glibc (it has gnu_get_libc_version), else None."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()
        return libc
    except (OSError, AttributeError):
        return None


def retain_freed_memory(trim_threshold_mib: int = 1024) -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of returning it to the OS.

    Sets ``M_MMAP_MAX = 0`` (every block comes from the heap, none is mapped per allocation) and
    ``M_TRIM_THRESHOLD`` (free memory at the top of the heap is returned to the OS only above this).
    Process-wide and not undone; call it once, early, in a process that runs inference or benchmarks.

    Args:
        trim_threshold_mib: free heap memory kept for reuse, in MiB (1 to 2047).

    Returns:
        True when both settings were applied; False, with a logged warning, where the C library is not
        glibc (musl, macOS, Windows), which this does not tune.
    """
    if isinstance(trim_threshold_mib, bool) or not isinstance(trim_threshold_mib, int) \
            or not 1 <= trim_threshold_mib <= _INT_MAX >> 20:
        raise ValueError(f'retain_freed_memory: trim_threshold_mib must be an integer from 1 to '
                         f'{_INT_MAX >> 20} (mallopt takes a C int of bytes), got {trim_threshold_mib!r}')
    libc = _glibc()
    if libc is None:
        print_log('retain_freed_memory: the C library is not glibc; malloc left at its defaults',
                  logger='current', level=logging.WARNING)
        return False
    trim_bytes = trim_threshold_mib << 20
    applied = (libc.mallopt(_M_MMAP_MAX, 0) == 1, libc.mallopt(_M_TRIM_THRESHOLD, trim_bytes) == 1)
    if not all(applied):
        print_log(f'retain_freed_memory: glibc refused mallopt (M_MMAP_MAX accepted: {applied[0]}, '
                  f'M_TRIM_THRESHOLD accepted: {applied[1]})', logger='current', level=logging.WARNING)
        return False
    print_log(f'retain_freed_memory: malloc keeps freed memory (no per-block mmap, trim above '
              f'{trim_threshold_mib} MiB)', logger='current')
    return True
