"""Exporting arrays (NumPy or dask, possibly larger than memory) as precomputed datasets.

The whole pyramid is one dask graph: the source is cut into blocks aligned
with the chunks of the finest scale, each coarser scale is a ``map_blocks``
downsampling of the one before, and every chunk of every scale is stored by a
:class:`ScaleTarget` as soon as it is computed. Each source region is thus
read once, memory stays bounded by the blocks in flight, and the graph runs
unchanged on dask's threads (the default) or on a dask.distributed cluster:
targets are picklable, and a cancel reaches the workers.

:func:`iter_export` yields progress and can be stopped at any point; chunk
files are written atomically, so a stopped or killed export leaves only
complete chunks, and exporting again with ``overwrite=True`` repairs it.
"""

import concurrent.futures
import itertools
import math
import os
import queue
import threading
import time

import numpy as np

from .accessor import get_accessor_for_url
from .distributed_export import (
    STOP_POLL,
    ClusterStop,
    distributed_client,
    run_on_cluster,
    writing,
)
from .downsample import downsample
from .errors import InvalidInfoError
from .info import ENCODING_DATA_TYPES, scale_chunk_grid, validate_info, whole_number
from .pyramid import pyramid_scales, scale_key_for_resolution
from .volume import chunk_coords_in_box

__all__ = ["ExportCancelled", "make_info", "export_dtype", "iter_export", "export"]


class ExportCancelled(Exception):
    """Raised inside the dask graph when an export is stopped."""


def holds_dataset(path):
    """True if the local folder ``path`` holds a dataset (an ``info`` or ``info.gz``)."""
    return any(os.path.exists(os.path.join(path, name)) for name in ("info", "info.gz"))


# Files that file managers leave in folders they show (lower case: Windows
# and macOS file names are case-insensitive): not the user's data. macOS also
# writes "._name" companions of other files.
OS_FOLDER_FILES = frozenset({".ds_store", ".localized", "icon\r", "thumbs.db", "desktop.ini"})


def user_entries(path):
    """Names in the local folder ``path`` other than files that file managers
    leave there (:data:`OS_FOLDER_FILES`, ``._*``); empty if ``path`` is
    missing or not a folder."""
    try:
        names = os.listdir(path)
    except OSError:
        return []
    return [name for name in names
            if name.lower() not in OS_FOLDER_FILES and not name.startswith("._")]


def default_encoding(type_):
    """compressed_segmentation for segmentations, raw for images."""
    return "compressed_segmentation" if type_ == "segmentation" else "raw"


def export_dtype(dtype, type_, encoding):
    """The precomputed data type an array of ``dtype`` is stored as.

    Types the format has are kept, except where the encoding needs another
    (labels of 8/16 bits and any signed labels go to uint32/uint64 for
    compressed_segmentation; booleans to uint8). Wider types are narrowed:
    int64 only where every value fits, float64 rounded to float32 only where
    no value overflows, both verified chunk by chunk by :func:`checked_cast`.

    :raises ValueError: if no precomputed data type can hold ``dtype``
    """
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        dtype = np.dtype("uint8")
    allowed = [np.dtype(t) for t in ENCODING_DATA_TYPES[encoding][0]]
    if dtype in allowed:
        return dtype.name
    if dtype.kind not in "iuf":
        raise ValueError(f"{dtype} data cannot be stored in a precomputed volume")
    if dtype.kind == "f":
        kind = "f"
    else:
        # Labels are ids: unsigned. Signed image data stays signed.
        kind = "u" if type_ == "segmentation" or dtype.kind == "u" else "i"
    candidates = sorted((t for t in allowed if t.kind == kind), key=lambda t: t.itemsize) \
        or sorted(allowed, key=lambda t: t.itemsize)
    # Widen when possible (lossless); else the widest, checked chunk by chunk.
    wider = [t for t in candidates if t.itemsize >= dtype.itemsize]
    return (wider[0] if wider else candidates[-1]).name


def checked_cast(block, dtype):
    """``block`` as ``dtype``, raising ValueError if an integer value changes
    or a finite float becomes infinite."""
    dtype = np.dtype(dtype)
    if block.dtype == dtype:
        return block
    if block.dtype.kind in "iub" and dtype.kind in "iu":
        # A round trip would not notice wrapping (-1 -> 2**64 - 1 -> -1).
        limits = np.iinfo(dtype)
        low, high = (block.min(), block.max()) if block.size else (0, 0)
        if not limits.min <= low <= high <= limits.max:
            raise ValueError(
                f"the data holds values from {low} to {high}, which {dtype.name} cannot "
                f"hold (it stores {limits.min} to {limits.max}); convert the layer first "
                "(relabel labels, rescale an image) or choose another encoding")
        return block.astype(dtype)
    elif block.dtype.kind == "f" and dtype.kind == "f":
        # float64 -> float32 rounds (what users expect of a float32 export),
        # but a finite value must not become infinite.
        with np.errstate(over="ignore"):
            out = block.astype(dtype)
        same = bool(np.isfinite(out).all() or
                    np.array_equal(np.isfinite(out), np.isfinite(block)))
    else:
        out = block.astype(dtype)
        same = np.array_equal(out.astype(block.dtype), block)
    if not same:
        raise ValueError(
            f"the data has values that {dtype.name} cannot hold exactly "
            f"(converting from {block.dtype.name}); convert the layer first")
    return out


def make_info(shape, dtype, type_="image", resolution=(1, 1, 1), voxel_offset=(0, 0, 0),
              encoding=None, chunk_size=(64, 64, 64), block_size=(8, 8, 8),
              jpeg_quality=None, levels=None):
    """The info of a new dataset for a (C, Z, Y, X) array, with its pyramid.

    :param shape: (C, Z, Y, X)
    :param dtype: the array's dtype (see :func:`export_dtype`)
    :param str type_: ``"image"`` or ``"segmentation"``
    :param resolution: (x, y, z) voxel size in nm
    :param voxel_offset: (x, y, z) absolute position of the first voxel
    :param str encoding: default raw for images, compressed_segmentation
        for segmentations
    :param chunk_size: (x, y, z), clipped to the volume
    :param block_size: compressed_segmentation block size (x, y, z)
    :param int jpeg_quality: written as the scale's ``jpeg_quality`` hint
    :param levels: number of scales including the finest, or None to add
        scales until the coarsest fits in one chunk
    :raises InvalidInfoError: if the combination is not a valid dataset
    """
    encoding = encoding or default_encoding(type_)
    c, z, y, x = (int(v) for v in shape)
    size = [x, y, z]
    if levels is not None and (whole_number(levels) is None or levels < 1):
        raise InvalidInfoError(f"levels must be a whole number of at least 1 (or None), "
                               f"got {levels!r}")
    scale0 = {
        "key": scale_key_for_resolution(resolution),
        "size": size,
        "voxel_offset": _whole_numbers(voxel_offset, "voxel_offset"),
        "resolution": [float(r) if not float(r).is_integer() else int(r) for r in resolution],
        "chunk_sizes": [[min(cs, s) for cs, s in
                         zip(_whole_numbers(chunk_size, "chunk_size"), size)]],
        "encoding": encoding,
    }
    if encoding == "compressed_segmentation":
        scale0["compressed_segmentation_block_size"] = _whole_numbers(block_size, "block_size")
    if encoding == "jpeg" and jpeg_quality is not None:
        if whole_number(jpeg_quality) is None:
            raise InvalidInfoError(f"jpeg_quality must be a whole number, got {jpeg_quality!r}")
        scale0["jpeg_quality"] = whole_number(jpeg_quality)
    info = {
        "@type": "neuroglancer_multiscale_volume",
        "type": type_,
        "data_type": export_dtype(dtype, type_, encoding),
        "num_channels": c,
        "scales": pyramid_scales(scale0, levels),
    }
    validate_info(info)
    return info


def _whole_numbers(values, name):
    """(x, y, z) whole numbers; a fraction would silently move or cut the data."""
    numbers = [whole_number(v) for v in values]
    if len(numbers) != 3 or None in numbers:
        raise InvalidInfoError(f"{name} must be 3 whole numbers (x, y, z), got {values!r}")
    return numbers


class ScaleTarget:
    """A dask ``store`` target writing the chunks of each block it receives.

    Blocks must be aligned to the scale's chunk grid; a block may hold
    several chunks.

    :param io: the dataset's PrecomputedIO
    :param str scale_key: the scale written
    :param counter: optional callable, called with no argument per chunk
    :param cancel: optional :class:`threading.Event`; once set, the next
        chunk raises :class:`ExportCancelled` instead of being written
    """

    def __init__(self, io, scale_key, counter=None, cancel=None):
        self.io = io
        self.scale_key = scale_key
        scale = io.scale_info(scale_key)
        self.offset = [int(o) for o in scale.get("voxel_offset", (0, 0, 0))]
        self.dtype = np.dtype(io.info["data_type"])
        x, y, z = scale["size"]
        self.shape = (int(io.info["num_channels"]), int(z), int(y), int(x))
        self.counter = counter
        self.cancel = cancel

    def __getstate__(self):
        # Callbacks and threading events stay in the process that started the
        # export; a cluster's stop flag travels (it is read from the scheduler).
        state = dict(self.__dict__)
        state["counter"] = None
        if not isinstance(self.cancel, ClusterStop):
            state["cancel"] = None
        return state

    def __setitem__(self, index, block):
        self.write_block(index, block)

    def write_block(self, index, block):
        """Write the chunks of ``block`` at ``index`` (slices of the scale's
        (C, Z, Y, X) array); returns how many were written (all of them
        unless a cluster export was stopped meanwhile)."""
        on_cluster = isinstance(self.cancel, ClusterStop)
        with writing(self.cancel.name if on_cluster else None):
            # Counted as writing before the first look at the flag: see
            # wait_for_writes.
            if self.cancel is not None and self.cancel.is_set():
                return self._stopped(on_cluster, 0)
            _, zs, ys, xs = index
            lo = (self.offset[0] + xs.start, self.offset[1] + ys.start,
                  self.offset[2] + zs.start)
            hi = (self.offset[0] + xs.stop, self.offset[1] + ys.stop, self.offset[2] + zs.stop)
            block = checked_cast(np.asarray(block), self.dtype)
            scale = self.io.scale_info(self.scale_key)
            coords_list = chunk_coords_in_box(scale, lo, hi)
            # On a cluster a look at the flag is a round trip to its scheduler.
            poll = STOP_POLL if on_cluster else 0.0
            checked = time.monotonic()
            for n, (x0, x1, y0, y1, z0, z1) in enumerate(coords_list):
                if n and self.cancel is not None and time.monotonic() - checked >= poll:
                    if self.cancel.is_set():
                        return self._stopped(on_cluster, n)
                    checked = time.monotonic()
                self.io.write_chunk(block[:, z0 - lo[2]:z1 - lo[2], y0 - lo[1]:y1 - lo[1],
                                          x0 - lo[0]:x1 - lo[0]],
                                    self.scale_key, (x0, x1, y0, y1, z0, z1))
                if self.counter is not None:
                    self.counter()
            return len(coords_list)

    @staticmethod
    def _stopped(on_cluster, written):
        # dask's own schedulers stop at the first task that raises. On a
        # cluster the tasks are cancelled from the client instead, and a
        # raise would only log an error on the worker for each block.
        if on_cluster:
            return written
        raise ExportCancelled("export cancelled")


def _store_block(block, target, block_info=None):
    """Store a block; returns how many chunks it held, for progress counted
    where the export was started (see :func:`run_on_cluster`)."""
    location = block_info[0]["array-location"]
    chunks = target.write_block(tuple(slice(start, stop) for start, stop in location), block)
    return np.full((1, 1, 1, 1), chunks, dtype=np.int32)


def _uses_processes(scheduler):
    """True for schedulers that run tasks in other processes without being a
    dask.distributed cluster: dask's multiprocessing scheduler, by name or as
    its ``get``, and a process pool executor."""
    if isinstance(scheduler, str):
        return scheduler in ("processes", "multiprocessing")
    if isinstance(scheduler, concurrent.futures.ProcessPoolExecutor):
        return True
    return getattr(scheduler, "__module__", "") == "dask.multiprocessing"


class _AnyEvent:
    """Set when any of the given events (None ignored) is set."""

    def __init__(self, *events):
        self._events = [e for e in events if e is not None]

    def is_set(self):
        return any(e.is_set() for e in self._events)


def pyramid_arrays(data, info, method):
    """One dask array per scale, each chunked exactly like the scale's chunks.

    Windows sit at absolute multiples of the factor (see
    :func:`~napari_precomputed.pyramid.pyramid_scales`): when a scale's
    offset is not a multiple, its first block starts inside a window and is
    downsampled with that many voxels missing in ``front``.
    """
    import dask.array as da

    scales = info["scales"]
    c = int(info["num_channels"])
    if isinstance(data, da.Array):
        level = data
    else:
        # name=False: hashing a large in-memory array only to name it is slow.
        level = da.from_array(data, chunks=data.shape, name=False)
    if level.ndim != 4:
        raise ValueError(f"data must be (C, Z, Y, X), got {level.ndim} dimensions")
    dtype = np.dtype(info["data_type"])
    cx, cy, cz = scales[0]["chunk_sizes"][0]
    # Convert first, so coarser scales are computed from exactly what the
    # finest scale stores (ties in the mode of int64 vs uint64 differ, say).
    level = level.rechunk(_level0_chunks(level, (c, cz, cy, cx))).map_blocks(
        checked_cast, dtype, dtype=dtype)
    out = [level]
    for previous, scale in zip(scales, scales[1:]):
        factors = [int(round(r / p)) for r, p in zip(scale["resolution"],
                                                     previous["resolution"])]
        fronts = [int(o) % f for o, f in zip(previous.get("voxel_offset", [0, 0, 0]), factors)]
        source_chunks, out_chunks = [(c,)], [(c,)]
        # (x, y, z) in the info; dask axes are (C, Z, Y, X)
        for axis in (2, 1, 0):
            n, f, r = int(previous["size"][axis]), factors[axis], fronts[axis]
            step = int(scale["chunk_sizes"][0][axis]) * f
            sizes = [min(n, step - r)]
            while sum(sizes) < n:
                sizes.append(min(step, n - sum(sizes)))
            source_chunks.append(tuple(sizes))
            out_chunks.append(tuple(-(-((r if i == 0 else 0) + size) // f)
                                    for i, size in enumerate(sizes)))
        source = out[-1].rechunk(tuple(source_chunks))
        out.append(source.map_blocks(_downsample_block, factors[::-1], fronts[::-1], method,
                                     dtype=source.dtype, chunks=tuple(out_chunks)))
    return out


#: Source blocks up to this size that hold whole chunks are written as they
#: are, several chunks per dask task, instead of being split into chunks.
MAX_BLOCK_BYTES = 64 * 2**20


def _level0_chunks(level, chunk):
    """Keep the source's blocks if they are made of whole chunks, else chunk-size."""
    if level.chunks[0] == (chunk[0],) and all(
            all(size % c == 0 for size in sizes[:-1])
            for sizes, c in zip(level.chunks[1:], chunk[1:])):
        biggest = math.prod(max(sizes) for sizes in level.chunks) * level.dtype.itemsize
        if biggest <= MAX_BLOCK_BYTES:
            return level.chunks
    return chunk


def _downsample_block(block, factors, fronts, method, block_info=None):
    # Only the first block along an axis starts inside a window.
    location = block_info[0]["chunk-location"][1:]
    front = [r if index == 0 else 0 for r, index in zip(fronts, location)]
    return downsample(block, factors, method, front)


def _write_in_memory(data, io, info, method, pool, on_chunk, cancel):
    """Write a NumPy (C, Z, Y, X) array and its pyramid, scale by scale."""
    from .volume import write_region

    level = data  # already of the info's data type
    previous = None
    for scale in info["scales"]:
        if previous is not None:
            level = _downsample_in_memory(level, previous, scale, method, pool)
        write_region(io, scale["key"], level, executor=pool, progress=on_chunk,
                     cancel=cancel)
        if cancel.is_set():
            raise ExportCancelled("export cancelled")
        previous = scale


def _downsample_in_memory(level, previous, scale, method, pool):
    """The next scale of ``level``, computed chunk by chunk on ``pool``'s threads.

    One output chunk at a time keeps the temporaries of the downsampling as
    small as the dask path's, and lets both cores work.
    """
    factors = [int(round(r / p)) for r, p in zip(scale["resolution"], previous["resolution"])]
    fronts = [int(o) % f for o, f in zip(previous.get("voxel_offset", [0, 0, 0]), factors)]
    size = [int(v) for v in scale["size"]]
    chunk = [int(v) for v in scale["chunk_sizes"][0]]
    out = np.empty((level.shape[0], size[2], size[1], size[0]), dtype=level.dtype)

    def block(corner):
        source, target, front = [slice(None)], [slice(None)], []
        # (x, y, z) in the info; arrays are (C, Z, Y, X)
        for axis in (2, 1, 0):
            o0 = corner[axis]
            o1 = min(o0 + chunk[axis], size[axis])
            f, r = factors[axis], fronts[axis]
            source.append(slice(max(0, o0 * f - r), min(level.shape[3 - axis], o1 * f - r)))
            target.append(slice(o0, o1))
            front.append(r if o0 == 0 else 0)
        out[tuple(target)] = downsample(level[tuple(source)], factors[::-1], method, front)

    corners = itertools.product(*(range(0, n, c) for n, c in zip(size, chunk)))
    list(pool.map(block, corners))
    return out


class _Progress:
    """Chunks written, counted from any thread, and a wake-up for the thread
    that reports them.

    Waking the reporting thread for every chunk costs the writers the GIL
    (about a sixth of a JPEG export's time); it is woken for the first chunk,
    then at most every ``interval`` seconds, and at the end.
    """

    def __init__(self, interval=0.02):
        self.done = 0
        self._interval = interval
        self._last = -math.inf
        self._lock = threading.Lock()
        self._wake = queue.SimpleQueue()

    def add(self, n=1):
        with self._lock:
            self.done += n
            now = time.monotonic()
            if now - self._last < self._interval:
                return
            self._last = now
        self._wake.put(True)

    def finish(self):
        self._wake.put(False)

    def wait(self):
        """Block until there is news; False once writing has ended."""
        return self._wake.get()


def _prepare(url, info, overwrite, gzip, encoder_options):
    from .precomputed_io import get_IO_for_new_dataset

    accessor = get_accessor_for_url(url, {"gzip": gzip})
    return get_IO_for_new_dataset(info, accessor, overwrite_info=overwrite,
                                  encoder_options=encoder_options or {})


def iter_export(data, url, info, method=None, overwrite=False, gzip=False,
                encoder_options=None, scheduler="threads", num_workers=None, cancel=None):
    """Write ``data`` and its pyramid; a generator of progress.

    :param data: (C, Z, Y, X) NumPy or dask array
    :param str url: destination folder (or ``file://`` URL)
    :param dict info: from :func:`make_info`
    :param str method: downsampling, ``"mean"``, ``"mode"`` or ``"stride"``
        (default: mean for images, mode for segmentations)
    :param bool overwrite: replace an existing ``info`` (and chunks); without
        it an existing dataset raises :class:`DataAccessError` before anything
        is written
    :param bool gzip: write ``.gz`` chunk files (see FileAccessor)
    :param dict encoder_options: e.g. ``jpeg_quality``, ``jpeg_plane``
    :param scheduler: ``"threads"``, ``"synchronous"``, or a dask.distributed
        ``Client`` (or its ``get``): progress and cancelling then work across
        its workers; None means threads. dask's ``"processes"`` scheduler and
        process pools are refused (no progress or cancel can cross to their
        processes): use a distributed LocalCluster.
    :param num_workers: threads for the threaded scheduler
    :param cancel: optional :class:`threading.Event`; setting it (from any
        thread) stops the export after the chunks being written, and the
        generator then ends normally
    :yields: ``(chunks_done, chunks_total)``, after the first chunk and then
        at most every 20 ms, and at the end; closing the generator stops the
        export too
    :raises DataAccessError: if the destination cannot be written
    :raises ValueError: if a value cannot be stored in the data type; for a
        NumPy array, before anything is written
    """

    scheduler = "threads" if scheduler is None else scheduler
    if _uses_processes(scheduler):
        # The targets would be pickled into the processes without the
        # progress counter and the cancel flag: no progress, no cancel.
        raise ValueError(
            f"a process-based scheduler ({scheduler!r}) cannot report progress or be "
            "cancelled; use 'threads', or a dask.distributed Client (e.g. on a "
            "LocalCluster) for worker processes")
    method = method or ("mode" if info["type"] == "segmentation" else "mean")
    if any(len(scale["chunk_sizes"]) != 1 for scale in info["scales"]):
        # The pyramid is cut into the chunks of one grid per scale.
        raise ValueError("export writes one chunk size per scale; the info lists several")
    # A NumPy array is in memory already: its pyramid is computed with NumPy
    # and its chunks written by threads, without dask's cost per task (the
    # export of 256 raw chunks took 5x as long as writing them).
    in_memory = isinstance(data, np.ndarray) and scheduler == "threads"
    if isinstance(data, np.ndarray):
        if data.ndim != 4:
            raise ValueError(f"data must be (C, Z, Y, X), got {data.ndim} dimensions")
        # Before anything is written, whatever the scheduler: a refused
        # export must not leave an info behind. (A dask array is checked
        # block by block as it is written; reading it twice to check first
        # would double the export.)
        data = checked_cast(data, np.dtype(info["data_type"]))
    io = _prepare(url, info, overwrite, gzip, encoder_options)
    arrays = None
    if not in_memory:
        arrays = pyramid_arrays(data, info, method)
    total = sum(math.prod(scale_chunk_grid(scale, scale["chunk_sizes"][0]))
                for scale in info["scales"])
    progress = _Progress()
    closed = threading.Event()
    stop = _AnyEvent(closed, cancel)
    client = None if in_memory else distributed_client(scheduler)
    cluster_stop = ClusterStop(client) if client is not None else None
    # On a cluster, progress is counted as blocks come back (a counter in the
    # targets could fire as well with workers in this process).
    counter = None if client is not None else progress.add
    targets = [ScaleTarget(io, scale["key"], counter=counter,
                           cancel=stop if client is None else cluster_stop)
               for scale in info["scales"]]
    outcome = {}

    def run():
        pool = None
        kwargs = {"scheduler": scheduler}
        if scheduler == "threads":
            # Our own pool, so that we can wait for chunks still being written
            # when another task fails: dask raises without waiting for them.
            pool = concurrent.futures.ThreadPoolExecutor(num_workers or os.cpu_count() or 1)
            kwargs["pool"] = pool
        elif num_workers:
            kwargs["num_workers"] = num_workers
        try:
            if in_memory:
                _write_in_memory(data, io, info, method, pool, lambda *_: progress.add(),
                                 stop)
                return
            # map_blocks + compute rather than da.store: store wraps every
            # chunk in a sub-graph that dask orders again (0.4 ms a chunk).
            import dask

            writes = [array.map_blocks(_store_block, target, dtype=np.int32,
                                       chunks=tuple((1,) * len(c) for c in array.chunks))
                      for array, target in zip(arrays, targets)]
            if client is not None:
                run_on_cluster(client, writes, progress.add, stop, cluster_stop)
            else:
                dask.compute(*writes, **kwargs)
        except BaseException as exc:  # handed to the generator's thread
            outcome["error"] = exc
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            progress.finish()

    worker = threading.Thread(target=run, name="napari-precomputed-export", daemon=True)
    worker.start()
    done = 0
    try:
        yield done, total
        while progress.wait():
            if progress.done != done:
                done = progress.done
                yield done, total
        if progress.done != done:
            done = progress.done
            yield done, total
    finally:
        closed.set()
        worker.join()
    error = outcome.get("error")
    if error is not None and not isinstance(error, ExportCancelled):
        raise error


def export(data, url, info, method=None, overwrite=False, gzip=False, encoder_options=None,
           scheduler="threads", num_workers=None, progress_bar=False):
    """Write ``data`` and its pyramid (see :func:`iter_export`); returns the info.

    :param bool progress_bar: show a tqdm progress bar on the terminal
    """
    steps = iter_export(data, url, info, method=method, overwrite=overwrite, gzip=gzip,
                        encoder_options=encoder_options, scheduler=scheduler,
                        num_workers=num_workers)
    if progress_bar:
        from tqdm import tqdm

        bar = None
        for done, total in steps:
            if bar is None:
                bar = tqdm(total=total, unit="chunk", desc="exporting")
            bar.n = done
            bar.refresh()
        if bar is not None:
            bar.close()
    else:
        for _ in steps:
            pass
    return info

