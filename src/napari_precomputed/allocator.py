"""Keep freed chunk-sized buffers in the process instead of giving them back.

Decoding and encoding a chunk allocates a handful of buffers of about the
chunk's size (a 64^3 uint64 chunk is 2 MiB). glibc serves such requests with
a fresh ``mmap`` and returns the memory on ``free``, so every chunk pays one
page fault per 4 KiB touched, several times over. On virtual machines a page
fault is slow: measured on a 2-core Firecracker VM, encoding 128
compressed_segmentation chunks took 1270 ms with glibc's defaults and 350 ms
once freed buffers were reused.

:func:`tune_allocator` raises glibc's mmap threshold, so that such buffers come
from the heap and are reused, and its trim threshold, so that the heap is not
shrunk after every chunk. Memory that is freed stays in the process up to
the trim threshold; it is reused by the next chunks, not leaked. It is a
no-op on other C libraries, and the environment variable
``NAPARI_PRECOMPUTED_TUNE_MALLOC=0`` turns it off.
"""

import ctypes
import ctypes.util
import functools
import os
import sys
import threading

__all__ = ["tune_allocator", "release_free_memory"]

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

# Above a 64^3 uint64 chunk with its temporaries; glibc caps the mmap
# threshold at 32 MiB on 64-bit systems.
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 128 << 20

_lock = threading.Lock()
_done = None


def tune_allocator():
    """Make glibc reuse freed chunk-sized buffers; idempotent.

    :returns: True if the allocator was tuned (now or before), False if this
        is not glibc or tuning is turned off
    """
    global _done
    if _done is not None:
        return _done
    with _lock:
        if _done is None:
            _done = _apply()
    return _done


@functools.lru_cache(maxsize=None)
def linux_libc():
    """The C library as a :class:`ctypes.CDLL` on Linux, else None; loaded on
    first use (finding it may run ``ldconfig``)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


def _apply():
    if os.environ.get("NAPARI_PRECOMPUTED_TUNE_MALLOC", "1") == "0":
        return False
    libc = linux_libc()
    if libc is None:
        return False
    try:
        mallopt = libc.mallopt
        # musl and other C libraries do not have it.
        libc.gnu_get_libc_version  # noqa: B018
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def release_free_memory():
    """Give the system back the free memory glibc keeps in its heaps.

    Small, long-lived cache entries (4 KiB JPEG planes) interleaved with the
    decoder's short-lived buffers fragment the heaps: freed memory between
    them is kept by glibc, not reused or returned (a full cache of JPEG planes
    held 2.3 times its bytes). ``malloc_trim(0)`` returns the free pages,
    wherever they are; it takes a few milliseconds for a heap of 1 GiB.

    :returns: True if glibc was asked to
    """
    if os.environ.get("NAPARI_PRECOMPUTED_TUNE_MALLOC", "1") == "0":
        return False
    libc = linux_libc()
    trim = getattr(libc, "malloc_trim", None) if libc is not None else None
    if trim is None:
        return False
    trim(0)
    return True
