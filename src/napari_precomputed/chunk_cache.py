"""A thread-safe cache of decoded chunks, bounded by the bytes it holds."""

import collections
import threading

__all__ = ["ChunkCache"]

# Stands for a chunk that is not stored (it reads as zeros); remembering it
# saves asking the storage again.
MISSING = object()


class ChunkCache:
    """Least-recently-used cache of decoded chunks.

    :param int max_bytes: the most bytes of chunk data kept; the least
        recently used chunks are dropped past it. 0 disables caching.
    """

    def __init__(self, max_bytes=512 * 2**20):
        self.max_bytes = int(max_bytes)
        self._entries = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

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
        """Remember ``value`` (a NumPy array, or :data:`MISSING`) under ``key``."""
        size = _footprint(value)
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= _footprint(old)
            self._entries[key] = value
            self._bytes += size
            while self._bytes > self.max_bytes and self._entries:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= _footprint(dropped)

    def clear(self):
        """Forget every chunk."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0


def _footprint(value):
    # Counting bookkeeping too keeps a flood of MISSING entries bounded.
    return getattr(value, "nbytes", 0) + 100
