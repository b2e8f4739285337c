"""Large output arrays: 4 KiB pages, faulted in ahead of the writer.

NumPy asks Linux for transparent huge pages (``MADV_HUGEPAGE``) on every
array of 4 MiB or more. Faulting a huge page in needs a free, physically
contiguous 2 MiB block. On a virtual machine that hands free memory back to
its host (free page reporting, as Firecracker and other micro-VMs do), such
blocks are the ones that were reported: touching them again makes the host
provide every page anew. Measured on a 2-core Firecracker VM, reading a
512 MiB volume 2.5 s after the previous read took 1.2-1.9 s with huge pages
and 0.45-0.7 s with 4 KiB pages (TensorStore, which never asks for huge
pages, 0.6 s); back-to-back reads, whose memory is still warm, took 0.17 s
and 0.43 s. A volume read for napari is read once, after the user has been
doing something else, so the cold case is the one that counts.

:func:`zeros` withdraws NumPy's hint before the array is first touched. It
changes nothing but the page size, and is a no-op off Linux.

Faulting 512 MiB in, 4 KiB at a time, still costs this VM about 300 ms of
system time. :class:`Prefault` has a spare core do it (``MADV_POPULATE_WRITE``,
Linux 5.14+) while a single decoding thread fills the array: 300 instead of
420 ms for the read above when warm, 400 instead of 470 ms when cold.
"""

import ctypes
import functools
import threading

import numpy as np

from .allocator import linux_libc

__all__ = ["zeros", "Prefault"]

# NumPy's own threshold for the huge page hint.
HINTED_BYTES = 4 << 20

_MADV_NOHUGEPAGE = 15
_MADV_POPULATE_WRITE = 23
_PAGE = 4096
# Small enough that a stop request is seen within a few milliseconds.
_PREFAULT_PIECE = 8 << 20


@functools.lru_cache(maxsize=None)
def _madvise():
    libc = linux_libc()
    madvise = getattr(libc, "madvise", None)
    if madvise is not None:
        madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        madvise.restype = ctypes.c_int
    return madvise


def zeros(shape, dtype):
    """Like :func:`numpy.zeros`, but large arrays use 4 KiB pages.

    :param shape: the array's shape
    :param dtype: its data type
    :returns: a new zero-filled array that owns its memory
    """
    out = np.zeros(shape, dtype=dtype)
    if out.nbytes >= HINTED_BYTES and _madvise() is not None:
        start, stop = _whole_pages(out)
        # The hint is advisory: a failure leaves NumPy's choice in place.
        if stop > start:
            _madvise()(start, stop - start, _MADV_NOHUGEPAGE)
    return out


def _whole_pages(array):
    """(start, stop) addresses of the whole pages inside ``array``'s memory."""
    address = array.ctypes.data
    return -(-address // _PAGE) * _PAGE, (address + array.nbytes) // _PAGE * _PAGE


class Prefault:
    """Fault a fresh array's pages in on another thread, last pages first.

    Use as a context manager around the code that fills the array; the
    thread walks down from the end while the filler works up from the
    start, and is stopped and joined on exit. A no-op where the kernel
    cannot populate memory on request.

    :param array: a C-contiguous array whose memory is not touched yet
    """

    def __init__(self, array):
        self._array = array
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self):
        if _madvise() is not None and self._array.flags.c_contiguous:
            self._thread = threading.Thread(target=self._run, name="precomputed-prefault",
                                            daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info):
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        return False

    def _run(self):
        start, position = _whole_pages(self._array)
        while position > start and not self._stop.is_set():
            low = max(start, position - _PREFAULT_PIECE)
            # ctypes drops the GIL for the call. Kernels before 5.14 answer
            # EINVAL: then the filler faults the pages in itself, as usual.
            if _madvise()(low, position - low, _MADV_POPULATE_WRITE) != 0:
                return
            position = low
