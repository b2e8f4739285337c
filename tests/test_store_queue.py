"""The store thread behind write_region: everything stored, errors surfaced, no lag."""

import threading

import numpy as np
import pytest

from napari_precomputed.accessor import get_accessor_for_url
from napari_precomputed.errors import DataAccessError
from napari_precomputed.precomputed_io import get_IO_for_existing_dataset, get_IO_for_new_dataset
from napari_precomputed.store_queue import StoreQueue
from napari_precomputed.volume import read_region, write_region


def test_every_item_is_stored_by_close():
    stored = []
    lock = threading.Lock()

    def store(item):
        with lock:
            stored.append(item)

    stores = StoreQueue(store, depth=3)
    for i in range(100):
        stores.put(i)
    stores.close()
    assert sorted(stored) == list(range(100))


def test_a_full_queue_makes_the_caller_store():
    release, started = threading.Event(), threading.Event()
    threads = []

    def store(item):
        threads.append(threading.current_thread())
        if item == 0:
            started.set()
            release.wait(10)

    stores = StoreQueue(store, depth=1)
    stores.put(0)  # the store thread blocks on this one
    assert started.wait(10)
    stores.put(1)  # waits in the queue
    stores.put(2)  # queue full: stored here
    assert threads[-1] is threading.current_thread()
    release.set()
    stores.close()
    assert len(threads) == 3


def test_store_errors_reach_the_callers():
    def store(item):
        if item == 1:
            raise DataAccessError("disk full")

    stores = StoreQueue(store, depth=4)
    stores.put(0)
    stores.put(1)
    with pytest.raises(DataAccessError, match="disk full"):
        for i in range(2, 10_000):
            stores.put(i)
        stores.close()
    stores.close(raise_error=False)
    stores = StoreQueue(store, depth=4)
    stores.put(1)
    stores.close(raise_error=False)  # does not raise, and the thread is gone


def test_write_region_stores_from_one_thread_and_reports_progress(tmp_path):
    info = {"type": "image", "data_type": "uint16", "num_channels": 1,
            "scales": [{"key": "s0", "size": [40, 30, 20], "voxel_offset": [0, 0, 0],
                        "resolution": [1, 1, 1], "chunk_sizes": [[8, 8, 8]],
                        "encoding": "raw"}]}
    io = get_IO_for_new_dataset(info, get_accessor_for_url(str(tmp_path)))
    assert io.accessor.serial_stores
    data = np.random.default_rng(0).integers(0, 60000, size=(1, 20, 30, 40), dtype=np.uint16)
    seen = []
    write_region(io, "s0", data, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (5 * 4 * 3, 60) and len(seen) == 60
    io = get_IO_for_existing_dataset(get_accessor_for_url(str(tmp_path)))
    assert np.array_equal(read_region(io, "s0", (0, 0, 0), (40, 30, 20)), data)


def test_write_region_raises_the_store_error(tmp_path, monkeypatch):
    info = {"type": "image", "data_type": "uint8", "num_channels": 1,
            "scales": [{"key": "s0", "size": [64, 64, 64], "voxel_offset": [0, 0, 0],
                        "resolution": [1, 1, 1], "chunk_sizes": [[8, 8, 8]],
                        "encoding": "raw"}]}
    io = get_IO_for_new_dataset(info, get_accessor_for_url(str(tmp_path)))
    calls = []

    def failing_store(buf, key, coords, mime_type=None):
        calls.append(coords)
        if len(calls) == 5:
            raise DataAccessError(f"cannot write chunk {coords}: disk full")

    monkeypatch.setattr(io.accessor, "store_chunk", failing_store)
    with pytest.raises(DataAccessError, match="disk full"):
        write_region(io, "s0", np.zeros((1, 64, 64, 64), np.uint8))
    assert not any(t.name == "napari-precomputed-store" for t in threading.enumerate())
