"""A thread-safe cache of decoded chunks, bounded by the bytes it holds."""

import collections
import threading
import weakref

from .allocator import release_free_memory

__all__ = ["ChunkCache"]

# Stands for a chunk that is not stored (it reads as zeros); remembering it
# saves asking the storage again.
MISSING = object()

# Entries added between two returns of free heap memory to the system (see
# release_free_memory): 32 full-resolution planes of a JPEG volume of 64^3
# chunks, 8192 chunks or slabs otherwise; a few milliseconds every few
# seconds of decoding at most.
_PUTS_PER_TRIM = 8192
# Entries held above which a cleared or dropped cache gives free heap memory
# back (a trim of a large heap takes milliseconds: not for a cache made for
# one read).
_ENTRIES_BEFORE_RELEASE = 1024


class ChunkCache:
    """Least-recently-used cache of decoded chunks.

    :param int max_bytes: the most bytes of chunk data kept; the least
        recently used chunks are dropped past it. 0 disables caching.
    """

    def __init__(self, max_bytes=512 * 2**20):
        self.max_bytes = int(max_bytes)
        self._entries = collections.OrderedDict()
        self._bytes = 0
        self._untrimmed = 0  # entries added since free heap memory was given back
        self._lock = threading.Lock()
        # A cache dropped with its layer leaves its memory free in glibc's
        # heaps: give it back to the system. (The entries are freed first: a
        # finalizer runs before the cache's own attributes are.) Not at exit.
        weakref.finalize(self, _release, self._entries).atexit = False

    def __len__(self):
        return len(self._entries)

    @property
    def nbytes(self):
        """Bytes of chunk data held now."""
        return self._bytes

    def get(self, key):
        """The cached value for ``key``, or None."""
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key, value):
        """Remember ``value`` (a NumPy array, or :data:`MISSING`) under ``key``.

        A slice of a larger array is stored as a copy: kept as a view, it
        would hold the whole array while the bound counts only the slice.
        """
        size = _footprint(value)
        if size > self.max_bytes:
            return
        value = _compact(value)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= _footprint(old)
            self._entries[key] = value
            self._bytes += size
            while self._bytes > self.max_bytes and self._entries:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= _footprint(dropped)
            self._untrimmed += 1
            trim = self._untrimmed >= _PUTS_PER_TRIM
            if trim:
                self._untrimmed = 0
        if trim:
            release_free_memory()

    def clear(self):
        """Forget every chunk."""
        with self._lock:
            many = len(self._entries) >= _ENTRIES_BEFORE_RELEASE
            self._entries.clear()
            self._bytes = 0
        if many:
            release_free_memory()


def _footprint(value):
    # Counting bookkeeping too keeps a flood of MISSING entries bounded.
    return getattr(value, "nbytes", 0) + 100


def _compact(value):
    base = getattr(value, "base", None)
    if base is None:
        return value
    while getattr(base, "base", None) is not None:
        base = base.base
    try:
        held = base.nbytes if hasattr(base, "nbytes") else memoryview(base).nbytes
    except TypeError:  # an owner that does not say its size
        return value
    return value.copy() if held > 2 * value.nbytes + 4096 else value


def _release(entries):
    many = len(entries) >= _ENTRIES_BEFORE_RELEASE
    entries.clear()
    if many:
        release_free_memory()
