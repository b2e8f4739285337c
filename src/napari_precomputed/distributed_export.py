"""Exports on a dask.distributed cluster: a stop flag its workers can read, and a
stop that waits for the blocks being written.

``distributed`` itself is imported only when a cluster is in use.
"""

import collections
import contextlib
import threading
import time
import uuid
import warnings

# Seconds to wait, once an export on a cluster stops, for its blocks being written.
_CLUSTER_STOP_WAIT = 300
#: Seconds between two looks for a stop: at the cluster's flag while a block's
#: chunks are written (each look is a round trip to the scheduler), and for a
#: cancel while no block has come back.
STOP_POLL = 0.05


class ClusterStop:
    """A stop flag that export tasks on a dask.distributed cluster can read.

    It is a ``distributed.Event`` on the cluster's scheduler, known by name,
    so that it survives pickling to the workers (a :class:`threading.Event`
    cannot reach other processes).
    """

    def __init__(self, client=None, name=None):
        self.name = name or f"napari-precomputed-stop-{uuid.uuid4().hex}"
        self._client = client  # None on the workers: their own client is used
        self._event = None

    def __getstate__(self):
        return {"name": self.name}

    def __setstate__(self, state):
        self.__init__(name=state["name"])

    def _cluster_event(self):
        if self._event is None:
            from distributed import Event

            self._event = Event(self.name, client=self._client)
        return self._event

    def set(self):
        self._cluster_event().set()

    def is_set(self):
        return self._cluster_event().is_set()


# Export name -> write_block calls in progress in this process (cluster exports).
_cluster_writes = collections.Counter()
_cluster_writes_lock = threading.Lock()


@contextlib.contextmanager
def writing(name):
    """Count a ``write_block`` of cluster export ``name`` as in progress
    here (nothing for None)."""
    if name is None:
        yield
        return
    with _cluster_writes_lock:
        _cluster_writes[name] += 1
    try:
        yield
    finally:
        with _cluster_writes_lock:
            _cluster_writes[name] -= 1
            if not _cluster_writes[name]:
                del _cluster_writes[name]


def writes_in_progress(name):
    """Run on each worker by :func:`wait_for_writes`."""
    with _cluster_writes_lock:
        return _cluster_writes.get(name, 0)


def wait_for_writes(client, name):
    """Wait until no worker is inside a ``write_block`` of export ``name``.

    Its stop flag is set before this is called and stays set: a block is
    counted before it first looks at the flag, so a block counted here stops
    at its next look, and one that reaches ``write_block`` later (a task
    still computing its data) writes nothing.

    :returns: True, or False if workers still wrote after
        ``_CLUSTER_STOP_WAIT`` seconds or could not be asked
    """
    deadline = time.monotonic() + _CLUSTER_STOP_WAIT
    while time.monotonic() < deadline:
        try:
            if not any(client.run(writes_in_progress, name).values()):
                return True
        except Exception:  # noqa: BLE001 - e.g. a worker that just died: ask again
            pass
        time.sleep(0.02)
    return False


def distributed_client(scheduler):
    """The dask.distributed Client behind ``scheduler`` (a Client or its
    ``get``), else None; distributed is not imported unless it is in use."""
    client = getattr(scheduler, "__self__", scheduler)
    if type(client).__module__.split(".")[0] == "distributed" and hasattr(client, "compute"):
        return client
    return None


def run_on_cluster(client, writes, on_chunks, stop, cluster_stop):
    """Compute the write tasks on a dask.distributed cluster, block by block.

    The targets' progress counters cannot reach other processes, so progress
    is counted here as blocks finish. When the export stops (cancelled, an
    error, the generator closed), ``cluster_stop`` is set, the blocks are
    cancelled, and this waits for those being written: they stop at their
    next look at the flag, and nothing is written once this returns. The flag
    is left set (a few bytes on the scheduler): a cancel does not stop a task
    that is still computing its block, and that block must find it set.
    """
    from distributed import as_completed

    blocks = [task for write in writes for task in write.to_delayed().ravel()]
    futures = client.compute(blocks)
    try:
        finished = as_completed(futures)
        while not finished.is_empty():
            # Polled rather than blocking on the next block, which may take
            # minutes: a cancel must reach the workers at once.
            batch = finished.next_batch(block=False)
            if stop.is_set():
                return
            if not batch:
                time.sleep(STOP_POLL)
            for future in batch:
                on_chunks(int(future.result().ravel()[0]))
    finally:
        if any(not f.done() for f in futures):
            cluster_stop.set()
            # Cancelling does not interrupt a task that is running: the blocks
            # being written see the flag, and this waits for them.
            client.cancel(futures)
            if not wait_for_writes(client, cluster_stop.name):
                warnings.warn(
                    f"the export was stopped, but workers may still be writing chunks "
                    f"after {_CLUSTER_STOP_WAIT} s", RuntimeWarning, stacklevel=2)
