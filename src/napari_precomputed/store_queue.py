"""One thread that stores encoded chunks while other threads encode.

Chunk files written from several threads at once contend in the kernel
(file creation and renames in one folder, page-cache allocation): on the
development VM two threads storing 256 chunks used twice the system time of
one for no gain in wall time, and that contention slowed the encoders on the
other core. Encoders therefore hand their chunks to a single store thread.
When it falls behind (slow storage such as a network file system), a full
queue makes the encoder store its chunk itself, so stores become parallel
exactly when storage is the bottleneck.
"""

import queue
import threading

__all__ = ["StoreQueue"]

_STOP = object()


class StoreQueue:
    """Run ``store(item)`` on one background thread, in the caller's when it lags.

    :param store: callable taking one item; it must be safe to call from
        several threads
    :param int depth: items waiting at most before callers store themselves
    """

    def __init__(self, store, depth):
        self._store = store
        self._queue = queue.Queue(max(1, depth))
        self._error = None
        self._thread = threading.Thread(target=self._run, name="napari-precomputed-store",
                                        daemon=True)
        self._thread.start()

    def put(self, item):
        """Store ``item`` soon; re-raises the first error of the store thread."""
        self._raise_error()
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._store(item)

    def close(self, raise_error=True):
        """Wait until every queued item is stored, then stop the thread.

        :param bool raise_error: re-raise the store thread's first error
        """
        self._queue.put(_STOP)
        self._thread.join()
        if raise_error:
            self._raise_error()

    def _raise_error(self):
        if self._error is not None:
            raise self._error

    def _run(self):
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if self._error is not None:
                continue  # keep draining so that no caller blocks
            try:
                self._store(item)
            except BaseException as exc:  # handed to the callers
                self._error = exc
