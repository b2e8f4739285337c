"""NumPy-like lazy arrays over the scales of a precomputed dataset.

Creating a :class:`PrecomputedArray` reads nothing; indexing it fetches and
decodes only the chunks the request touches, concurrently, through a shared
bounded :class:`~napari_precomputed.chunk_cache.ChunkCache`. This is what
napari slices when it shows a plane of a terabyte volume.
"""

import numpy as np

from .chunk_cache import ChunkCache
from .volume import read_region, scale_bounds

__all__ = ["PrecomputedArray", "multiscale_arrays"]


class PrecomputedArray:
    """Lazy (C, Z, Y, X) array of one scale, or (Z, Y, X) of one channel.

    Supports ``shape``, ``dtype``, ``ndim``, ``size``, ``len()``, basic
    indexing (integers, slices with any step, ``...``) and ``__array__``.
    Indexing reads nothing as long as it can stay lazy: one integer on the
    channel axis and nothing else gives a lazy channel array (the way napari
    splits channels), and slices of step 1 on every spatial axis (all
    channels) give a lazy view of that box (the way napari cuts the tile it
    shows before it picks the plane). Every other index returns a NumPy
    array, and ``np.asarray`` reads the whole array or view.

    :param PrecomputedIO io: the dataset
    :param str scale_key: the key of the scale
    :param channel: None for all channels (4-D), or a channel index (3-D)
    :param ChunkCache cache: decoded-chunk cache, shared between arrays of
        one dataset (default: a new 256 MiB cache)
    :param str missing: ``"zeros"`` (chunks that are not stored read as 0,
        like Neuroglancer and TensorStore) or ``"error"``
    :param on_error: callable receiving the exception of an unreadable or
        corrupt chunk, which then reads as zeros; None raises instead
    """

    def __init__(self, io, scale_key, channel=None, cache=None, missing="zeros",
                 on_error=None, _box=None):
        self.io = io
        self.scale_key = scale_key
        self.scale_info = io.scale_info(scale_key)
        self.channel = channel
        self.cache = cache if cache is not None else ChunkCache(256 * 2**20)
        self.missing = missing
        self.on_error = on_error
        # A view (what slicing returns) covers a box of the scale; absolute
        # (x, y, z) corners like the chunk names.
        self._lo, self._hi = _box if _box is not None else scale_bounds(self.scale_info)
        num_channels = int(io.info["num_channels"])
        x, y, z = (h - l for l, h in zip(self._lo, self._hi))
        if channel is None:
            self.shape = (num_channels, z, y, x)
        else:
            if not 0 <= channel < num_channels:
                raise IndexError(f"channel {channel} out of range 0..{num_channels - 1}")
            self.shape = (z, y, x)
        self.dtype = io.encoder(scale_key).dtype.newbyteorder("=")
        # Raw chunks on local disk decode for free from the OS's page cache;
        # keeping them too would only cost page faults (3x slower planes).
        cheap = self.scale_info["encoding"] == "raw" and getattr(
            io.accessor, "cheap_reads", False)
        self._chunk_cache = None if cheap else self.cache

    def __repr__(self):
        where = "" if self.channel is None else f", channel={self.channel}"
        return (f"PrecomputedArray(scale={self.scale_key!r}{where}, shape={self.shape}, "
                f"dtype={self.dtype.name})")

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def size(self):
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self):
        return self.size * self.dtype.itemsize

    @property
    def chunk_size(self):
        """(X, Y, Z) size of the scale's first chunk shape."""
        return tuple(int(c) for c in self.scale_info["chunk_sizes"][0])

    def __len__(self):
        return self.shape[0]

    def __dask_tokenize__(self):
        # Without this dask would pickle (and hash) the whole chunk cache.
        describe = getattr(self.io.accessor, "describe", None)
        where = describe() if describe else id(self.io)
        return ("PrecomputedArray", where, self.scale_key, self.channel, self._lo, self._hi)

    def channel_array(self, channel):
        """A lazy 3-D array of one channel, sharing this array's cache."""
        return self._copy(channel=channel)

    def _copy(self, channel, box=None):
        return PrecomputedArray(self.io, self.scale_key, channel=channel, cache=self.cache,
                                missing=self.missing, on_error=self.on_error,
                                _box=box or (self._lo, self._hi))

    def __getitem__(self, index):
        index = _expand_index(index, self.shape)
        spatial = index if self.channel is not None else index[1:]
        if self.channel is None:
            if isinstance(index[0], int) and all(
                    _is_full(s, n) for s, n in zip(spatial, self.shape[1:])):
                return self.channel_array(index[0])
            whole_channels = _is_full(index[0], self.shape[0])
        else:
            whole_channels = True
        if whole_channels and all(not isinstance(s, int) and s[2] == 1 for s in spatial):
            # napari cuts the tile it shows out of a level with slices and
            # picks the plane afterwards: stay lazy until an integer index or
            # np.asarray says what to read.
            return self._copy(self.channel, self._sub_box(spatial))
        lo, hi, post = [], [], []
        # index is (z, y, x); boxes are (x, y, z)
        for item, offset in zip(spatial, self._lo[::-1]):
            if isinstance(item, int):
                lo.append(offset + item)
                hi.append(offset + item + 1)
                post.append(0)
            else:
                start, stop, step = item
                # Read from the lowest to the highest element taken, not to
                # the stop, which lies a step further.
                taken = range(start, stop, step)
                if not taken:
                    lo.append(offset)
                    hi.append(offset)
                    post.append(slice(0, 0))
                    continue
                first, last = min(taken[0], taken[-1]), max(taken[0], taken[-1])
                lo.append(offset + first)
                hi.append(offset + last + 1)
                post.append(slice(start - first, None, step))
        region = self._read(lo[::-1], hi[::-1])
        if self.channel is None:
            channel_index = index[0] if isinstance(index[0], int) else _as_slice(*index[0])
        else:
            channel_index = 0  # read_region read this channel only
        return region[(channel_index,) + tuple(post)]

    def _sub_box(self, spatial):
        lo, hi = list(self._lo), list(self._hi)
        for axis, (start, stop, _) in zip((2, 1, 0), spatial):
            lo[axis], hi[axis] = self._lo[axis] + start, self._lo[axis] + max(start, stop)
        return tuple(lo), tuple(hi)

    def _read(self, lo, hi):
        """(C, Z, Y, X) of the box, C = 1 for a channel array."""
        # Chunk errors arrive on worker threads; report them from this one,
        # which is the thread that asked (napari's, when it slices).
        errors = []
        region = read_region(self.io, self.scale_key, lo, hi,
                             missing=self.missing, cache=self._chunk_cache,
                             on_error=None if self.on_error is None else errors.append,
                             channel=self.channel)
        for exc in errors:
            self.on_error(exc)
        return region

    def __array__(self, dtype=None, copy=None):
        data = self._read(self._lo, self._hi)
        if self.channel is not None:
            data = data[0]
        return data if dtype is None else data.astype(dtype, copy=False)


def _as_slice(start, stop, step):
    # slice.indices() gives stop -1 for "before the first element", which a
    # new slice would read as "the last element".
    return slice(start, None if stop < 0 else stop, step)


def _is_full(item, length):
    return not isinstance(item, int) and item == (0, length, 1)


def _expand_index(index, shape):
    """Normalise a basic index into a tuple of ints and (start, stop, step)."""
    if not isinstance(index, tuple):
        index = (index,)
    if sum(i is Ellipsis for i in index) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if any(i is Ellipsis for i in index):
        at = next(n for n, i in enumerate(index) if i is Ellipsis)
        fill = (slice(None),) * (len(shape) - len(index) + 1)
        index = index[:at] + fill + index[at + 1:]
    if len(index) > len(shape):
        raise IndexError(f"too many indices for an array of {len(shape)} dimensions")
    index = index + (slice(None),) * (len(shape) - len(index))
    out = []
    for item, length in zip(index, shape):
        if isinstance(item, slice):
            steps = range(*item.indices(length))
            # Canonical form: empty is (0, 0, 1), else the first element and
            # a stop that is never negative.
            if not steps:
                out.append((0, 0, 1))
            else:
                stop = steps[-1] + steps.step
                out.append((steps[0], stop if stop >= 0 else -1, steps.step))
        elif isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            item = int(item)
            if not -length <= item < length:
                raise IndexError(f"index {item} is out of bounds for size {length}")
            out.append(item % length)
        else:
            raise TypeError(f"PrecomputedArray supports integers and slices, not {item!r}")
    return tuple(out)


def multiscale_arrays(io, channel=None, cache=None, missing="zeros", on_error=None):
    """One lazy array per scale, finest first, sharing one cache.

    :returns: list of :class:`PrecomputedArray`
    """
    cache = cache if cache is not None else ChunkCache()
    return [PrecomputedArray(io, scale["key"], channel=channel, cache=cache,
                             missing=missing, on_error=on_error)
            for scale in io.info["scales"]]
