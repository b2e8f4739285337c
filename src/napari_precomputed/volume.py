"""Reading and writing boxes of voxels that span many chunks.

These functions sit on top of :class:`~napari_precomputed.precomputed_io.PrecomputedIO`
and fetch, decode and encode chunks concurrently in a thread pool: file I/O,
zlib, Pillow's codecs and NumPy's large operations release the GIL, so threads
give real parallelism here without copying chunks between processes.

Boxes are given in absolute voxel coordinates of the scale, as (x, y, z)
triples ``lo`` (inclusive) and ``hi`` (exclusive), like the chunk names.
Arrays are (C, Z, Y, X).
"""

import concurrent.futures
import contextlib
import itertools
import os
import threading

import numpy as np

from .chunk_cache import MISSING
from .errors import ChunkNotFoundError, DataAccessError, InvalidFormatError
from .info import chunk_coords_for_grid_index, chunk_shape
from .small_pages import Prefault, zeros
from .store_queue import StoreQueue

__all__ = [
    "scale_bounds",
    "chunk_coords_in_box",
    "read_region",
    "write_region",
    "default_workers",
]


def default_workers():
    """Threads used for concurrent chunk work on local storage.

    Decoding is CPU-bound and releases the GIL, so one thread per core keeps
    the cores busy; accessors for remote storage ask for more through their
    ``concurrency`` attribute.
    """
    return os.cpu_count() or 1


def scale_bounds(scale_info):
    """Absolute (lo, hi) voxel bounds of a scale, each an (x, y, z) tuple."""
    offset = tuple(int(o) for o in scale_info.get("voxel_offset", (0, 0, 0)))
    return offset, tuple(o + int(s) for o, s in zip(offset, scale_info["size"]))


def chunk_coords_in_box(scale_info, lo, hi, chunk_size=None):
    """Coordinates of the chunks of a scale that intersect a box, x fastest.

    :param dict scale_info: an element of ``info["scales"]``
    :param lo: inclusive (x, y, z) corner, absolute voxel coordinates
    :param hi: exclusive (x, y, z) corner
    :param chunk_size: which of the scale's chunk sizes (default: the first)
    :returns: list of (xmin, xmax, ymin, ymax, zmin, zmax)
    """
    if chunk_size is None:
        chunk_size = scale_info["chunk_sizes"][0]
    offset, end = scale_bounds(scale_info)
    ranges = []
    for axis in range(3):
        c = int(chunk_size[axis])
        # Clamped to the scale, not to the chunk grid: the last chunk is
        # clipped, so a box past its clipped end touches no chunk.
        a, b = max(int(lo[axis]), offset[axis]), min(int(hi[axis]), end[axis])
        if b <= a:
            return []
        ranges.append(range((a - offset[axis]) // c, -(-(b - offset[axis]) // c)))
    return [chunk_coords_for_grid_index(scale_info, chunk_size, (gx, gy, gz))
            for gz, gy, gx in itertools.product(ranges[2], ranges[1], ranges[0])]


def _fetch_decode(io, scale_key, coords, missing, cache=None, on_error=None, z_slab=None,
                  remember=True):
    """Decoded chunk, or None where it reads as zeros, and its first z-slice.

    With ``z_slab`` (first, stop), only that z-slab of the chunk is decoded
    (for encodings that can; see ``ChunkEncoder.z_slab``). With ``remember``
    false the cache is only looked in, not added to.
    """
    whole_key = (scale_key, coords)
    key = whole_key if z_slab is None else (scale_key, coords, z_slab)
    first = 0 if z_slab is None else z_slab[0]
    if cache is not None:
        hit = cache.get(key)
        if hit is None and z_slab is not None:
            # A chunk decoded whole (a JPEG without restart markers, or read
            # for a box) serves every slab of it.
            hit = cache.get(whole_key)
            if hit is not None:
                first = 0
        # A chunk remembered as missing by a read that takes it as zeros
        # must still raise for one that does not.
        if hit is not None and not (hit is MISSING and missing == "error"):
            return (None if hit is MISSING else hit), first
    try:
        if z_slab is None:
            buf = io.fetch_encoded_chunk(scale_key, coords)
            chunk = io.decode_chunk(buf, scale_key, coords)
        else:
            chunk, first = io._read_chunk_z_range(scale_key, coords, *z_slab)
    except ChunkNotFoundError:
        if missing == "error":
            raise
        chunk = MISSING
    except (DataAccessError, InvalidFormatError) as exc:
        if on_error is None:
            raise
        # The caller reports it; the chunk shows as zeros, and is not cached
        # so that a repaired file is picked up.
        on_error(exc)
        return None, first
    if chunk is MISSING or (first == 0 and chunk.shape[1] == coords[5] - coords[4]):
        key = whole_key  # all of the chunk: kept once, not once per slab
    if cache is not None and remember:
        cache.put(key, chunk)
    return (None if chunk is MISSING else chunk), first


def read_region(io, scale_key, lo, hi, missing="zeros", executor=None, out=None,
                cache=None, on_error=None, channel=None):
    """Read a box of voxels, fetching and decoding its chunks concurrently.

    :param PrecomputedIO io: the dataset
    :param str scale_key: the key of the scale
    :param lo: inclusive (x, y, z) corner in absolute voxel coordinates
    :param hi: exclusive (x, y, z) corner; the box may extend past the
        scale, where it reads as zeros
    :param str missing: ``"zeros"`` to read chunks that are not stored as
        zeros (as Neuroglancer and TensorStore do), ``"error"`` to raise
        :class:`~napari_precomputed.errors.ChunkNotFoundError`
    :param executor: a :class:`concurrent.futures.Executor` to run chunk
        reads in (default: a private thread pool)
    :param out: optional (C, Z, Y, X) array to fill
    :param ChunkCache cache: decoded chunks to reuse and to add to
    :param on_error: if given, a callable that receives the exception of a
        chunk that cannot be read or decoded, which then reads as zeros;
        if None such errors are raised
    :param int channel: read only this channel (the result has C = 1)
    :returns: (C, Z, Y, X) array of the dataset's data type
    :raises DataAccessError: if a chunk cannot be read
    :raises InvalidFormatError: if a chunk cannot be decoded, naming it
    """
    if missing not in ("zeros", "error"):
        raise ValueError(f"missing must be 'zeros' or 'error', not {missing!r}")
    scale_info = io.scale_info(scale_key)
    lo = tuple(int(v) for v in lo)
    hi = tuple(int(v) for v in hi)
    channels = io.info["num_channels"] if channel is None else 1
    shape = (channels,) + tuple(max(0, h - l) for l, h in zip(lo, hi))[::-1]
    dtype = io.encoder(scale_key).dtype.newbyteorder("=")
    fresh = out is None
    if fresh:
        out = zeros(shape, dtype)
    elif out.shape != shape:
        raise ValueError(f"out has shape {out.shape}, the box needs {shape}")
    else:
        bounds_lo, bounds_hi = scale_bounds(scale_info)
        if any(l < b for l, b in zip(lo, bounds_lo)) or any(h > b for h, b in zip(hi, bounds_hi)):
            # No chunk covers the voxels past the scale, which read as zeros.
            out[...] = 0
    coords_list = chunk_coords_in_box(scale_info, lo, hi)
    # A box larger than the cache would only push out the chunks worth
    # keeping (those of the planes napari shows), and every chunk it kept
    # would be fresh memory to fault in.
    remember = cache is not None and out.nbytes <= cache.max_bytes

    def paste(coords, chunk, first):
        if chunk is None:
            if not fresh:
                _region_view(out, coords, lo, hi)[1][...] = 0
            return
        if channel is not None:
            chunk = chunk[channel:channel + 1]
        if first or chunk.shape[1] != coords[5] - coords[4]:
            z0 = coords[4] + first
            coords = coords[:4] + (z0, z0 + chunk.shape[1])
        src, dst = _region_view(out, coords, lo, hi, chunk)
        dst[...] = src

    encoder = io.encoder(scale_key)
    cheap_reads = getattr(io.accessor, "cheap_reads", False)
    # Decoding part of a chunk saves work only if fetching it again for
    # another part is cheap.
    partial = encoder.partial_z_decode and cheap_reads

    def slab_for(coords):
        # The z-slab of a chunk that the box needs, or None for all of it.
        z0, z1 = coords[4], coords[5]
        z_start, z_stop = max(lo[2], z0) - z0, min(hi[2], z1) - z0
        if not partial or (z_start == 0 and z_stop == z1 - z0):
            return None
        slab = encoder.z_slab(z1 - z0, z_start, z_stop)
        return None if slab == (0, z1 - z0) else slab

    def work(queue):
        # Each worker drains a shared queue: a handful of long-lived tasks
        # instead of one future per chunk, whose hand-offs between threads
        # cost more than decoding a small raw chunk.
        for coords in queue:
            paste(coords, *_fetch_decode(io, scale_key, coords, missing, cache, on_error,
                                         slab_for(coords), remember))

    # Reads only fetch and decode, never wait on other reads, so they can
    # share one long-lived pool (napari slices often; threads are not free).
    # Threads also lose where each chunk costs only a few microseconds of
    # work: a plane of one-channel raw chunks, read by byte range.
    thin = (partial and coords_list and hi[2] - lo[2] == 1
            and encoder.z_byte_range(chunk_shape(coords_list[0]), 0, 1) is not None)
    serial = cheap_reads and (not encoder.parallel_decode or thin)
    # With one decoding thread the other core is free to take the page
    # faults of a large fresh output (see small_pages).
    prefault = fresh and serial and out.nbytes >= PREFAULT_BYTES
    with Prefault(out) if prefault else contextlib.nullcontext():
        _run_workers(work, coords_list, executor or shared_read_executor(), io.accessor,
                     max_workers=1 if serial else None)
    return out


#: Fresh outputs of this size or more are faulted in by a helper thread.
PREFAULT_BYTES = 64 << 20

_shared_read_executor = None
_shared_lock = threading.Lock()


def shared_read_executor():
    """The thread pool :func:`read_region` uses when given none."""
    global _shared_read_executor
    with _shared_lock:
        if _shared_read_executor is None:
            _shared_read_executor = concurrent.futures.ThreadPoolExecutor(
                max(4, default_workers()), thread_name_prefix="precomputed-read")
        return _shared_read_executor


def _worker_count(items, accessor, max_workers=None):
    return min(len(items), max_workers or getattr(accessor, "concurrency", None)
               or default_workers())


def _run_workers(work, items, executor, accessor, max_workers=None):
    """Run ``work(shared_iterator)`` in as many threads as are useful."""
    workers = _worker_count(items, accessor, max_workers)
    queue = _SharedIterator(items)
    if workers <= 1:
        work(queue)
        return
    own = executor is None
    if own:
        executor = concurrent.futures.ThreadPoolExecutor(workers)
    try:
        futures = [executor.submit(work, queue) for _ in range(workers)]
        try:
            for future in concurrent.futures.as_completed(futures):
                future.result()
        except BaseException:
            queue.stop()
            raise
    finally:
        if own:
            executor.shutdown(wait=True, cancel_futures=True)


class _SharedIterator:
    """A thread-safe iterator over a list that can be stopped early."""

    def __init__(self, items):
        self._items = items
        self._next = 0
        self._lock = threading.Lock()

    def __iter__(self):
        return self

    def __next__(self):
        with self._lock:
            if self._next >= len(self._items):
                raise StopIteration
            item = self._items[self._next]
            self._next += 1
            return item

    def stop(self):
        with self._lock:
            self._next = len(self._items)


def _region_view(out, coords, lo, hi, chunk=None):
    """The overlap of a chunk and a box, as (chunk view, out view)."""
    src_index, dst_index = [slice(None)], [slice(None)]
    for axis in (2, 1, 0):
        c0, c1 = coords[2 * axis], coords[2 * axis + 1]
        a, b = max(c0, lo[axis]), min(c1, hi[axis])
        src_index.append(slice(a - c0, b - c0))
        dst_index.append(slice(a - lo[axis], b - lo[axis]))
    src = chunk[tuple(src_index)] if chunk is not None else None
    return src, out[tuple(dst_index)]


def write_region(io, scale_key, data, lo=None, executor=None, progress=None, cancel=None):
    """Write an array whose box is aligned to the chunk grids of a scale.

    The chunks of every one of the scale's ``chunk_sizes`` are written. Every
    chunk the box touches must lie entirely inside it (its clipped extent at
    the scale's border counts), so that no chunk is written from partial
    data.

    :param PrecomputedIO io: the dataset
    :param str scale_key: the key of the scale
    :param data: (C, Z, Y, X) array-like; each chunk's slice of it is
        converted with :func:`numpy.asarray`, so lazy arrays are read one
        chunk at a time
    :param lo: (x, y, z) absolute corner of ``data`` (default: the scale's
        ``voxel_offset``)
    :param executor: a :class:`concurrent.futures.Executor` (default: a
        private thread pool)
    :param progress: optional callable ``(done, total)`` called after each
        chunk
    :param cancel: optional :class:`threading.Event`; once it is set no
        further chunk is started, and the function returns early
    :raises ValueError: if the box is not aligned to a chunk grid
    """
    scale_info = io.scale_info(scale_key)
    if lo is None:
        lo = scale_bounds(scale_info)[0]
    lo = tuple(int(v) for v in lo)
    shape = tuple(data.shape)
    if len(shape) != 4:
        raise ValueError(f"data must be (C, Z, Y, X), got shape {shape}")
    hi = tuple(l + s for l, s in zip(lo, shape[:0:-1]))
    # Readers may pick any of the listed chunkings (Neuroglancer picks one per
    # view), so every one is written; chunks two chunkings share are one file.
    coords_list = list(dict.fromkeys(
        coords for chunk_size in scale_info["chunk_sizes"]
        for coords in chunk_coords_in_box(scale_info, lo, hi, chunk_size)))
    for coords in coords_list:
        for axis in range(3):
            if coords[2 * axis] < lo[axis] or coords[2 * axis + 1] > hi[axis]:
                raise ValueError(
                    f"the box {lo}-{hi} cuts through chunk {coords} of scale "
                    f"{scale_key!r}; align it to the chunk grid")

    total = len(coords_list)
    done = [0]
    lock = threading.Lock()

    def store(item):
        buf, coords = item
        io.store_encoded_chunk(buf, scale_key, coords)
        if progress is not None:
            with lock:
                done[0] += 1
                count = done[0]
            progress(count, total)

    workers = _worker_count(coords_list, io.accessor)
    stores = None
    if getattr(io.accessor, "serial_stores", False) and workers > 1:
        stores = StoreQueue(store, depth=2 * workers)

    def work(queue):
        for coords in queue:
            if cancel is not None and cancel.is_set():
                queue.stop()
                return
            x0, x1, y0, y1, z0, z1 = coords
            chunk = np.asarray(data[:, z0 - lo[2]:z1 - lo[2], y0 - lo[1]:y1 - lo[1],
                                    x0 - lo[0]:x1 - lo[0]])
            item = (io.encode_chunk(chunk, scale_key, coords), coords)
            if stores is None:
                store(item)
            else:
                stores.put(item)

    try:
        _run_workers(work, coords_list, executor, io.accessor)
    except BaseException:
        if stores is not None:
            stores.close(raise_error=False)
        raise
    if stores is not None:
        stores.close()
