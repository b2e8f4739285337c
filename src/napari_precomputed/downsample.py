"""Downsampling of (C, Z, Y, X) blocks for building pyramids.

Windows are anchored at the block's first voxel, or ``front`` voxels before
it: pyramids anchor windows at absolute multiples of the factor (as
TensorStore's ``downsample`` driver does), so a block that starts inside a
window has ``front`` missing voxels there. The first and last windows along
an axis may thus be partial; only the voxels that exist count.
"""

import numpy as np

__all__ = ["downsample", "downsample_mean", "downsample_mode", "downsample_stride",
           "METHODS"]


def _windows(block, factors, front=(0, 0, 0)):
    """``block`` padded to whole windows, as (C, z, y, x, k) and a validity mask.

    ``front`` voxels are missing before the first voxel along each axis.
    """
    c, z, y, x = block.shape
    factors = [int(f) for f in factors]
    front = [int(p) for p in front]
    out = tuple(-(-(p + n) // f) for p, n, f in zip(front, (z, y, x), factors))
    pad = ((0, 0),) + tuple((p, o * f - p - n) for p, n, f, o in
                            zip(front, (z, y, x), factors, out))
    partial = any(a or b for a, b in pad[1:])
    padded = np.pad(block, pad) if partial else block
    fz, fy, fx = factors
    shaped = padded.reshape(c, out[0], fz, out[1], fy, out[2], fx)
    windows = shaped.transpose(0, 1, 3, 5, 2, 4, 6).reshape(c, *out, fz * fy * fx)
    valid = None
    if partial:
        mask = np.zeros(padded.shape[1:], dtype=bool)
        mask[front[0]:front[0] + z, front[1]:front[1] + y, front[2]:front[2] + x] = True
        valid = mask.reshape(out[0], fz, out[1], fy, out[2], fx).transpose(
            0, 2, 4, 1, 3, 5).reshape(*out, fz * fy * fx)
    return windows, valid


def downsample_mean(block, factors, front=(0, 0, 0)):
    """Mean of each window; integers rounded to nearest (ties to even).

    :param numpy.ndarray block: (C, Z, Y, X)
    :param factors: (fz, fy, fx) integer factors
    :param front: (z, y, x) voxels missing before the block's first window
    :returns: (C, ceil((front + Z)/fz), ...) array of block's dtype
    """
    windows, valid = _windows(block, factors, front)
    count = windows.shape[-1] if valid is None else valid.sum(axis=-1)
    if block.dtype.kind in "iu" and block.dtype.itemsize == 8:
        return _mean_64(windows, valid, count).astype(block.dtype, copy=False)
    acc = np.float64 if block.dtype.itemsize > 2 else np.float32
    mean = windows.sum(axis=-1, dtype=acc) / count
    if block.dtype.kind in "iu":
        limits = np.iinfo(block.dtype)
        mean = np.clip(np.rint(mean), limits.min, limits.max)
    return mean.astype(block.dtype)


def _mean_64(windows, valid, count):
    """Exact mean of 64-bit integer windows, rounded to nearest, ties to even.

    float64 holds integers only up to 2**53 (and 2**64 - 1 rounds to 2**64,
    which does not cast back), so the sums are taken in two 32-bit halves
    and divided as integers.
    """
    signed = windows.dtype.kind == "i"
    values = windows.view(np.uint64)
    if signed:
        # Order-preserving shift to unsigned; 2**63 is even, so ties round alike.
        values = values ^ np.uint64(1 << 63)
        if valid is not None:
            # Padding must add nothing, and no longer reads as zero.
            values *= valid
    count = np.asarray(count, dtype=np.uint64)
    high = (values >> np.uint64(32)).sum(axis=-1, dtype=np.uint64)
    low = (values & np.uint64(0xFFFFFFFF)).sum(axis=-1, dtype=np.uint64)
    quotient, rest = np.divmod(high, count)
    # rest < count, so rest * 2**32 + low stays far below 2**64 for windows
    # of fewer than 2**31 voxels.
    low_quotient, rest = np.divmod((rest << np.uint64(32)) + low, count)
    mean = (quotient << np.uint64(32)) + low_quotient
    twice = rest << np.uint64(1)
    mean += (twice > count) | ((twice == count) & (mean & np.uint64(1)).astype(bool))
    if signed:
        mean ^= np.uint64(1 << 63)
    return mean.view(windows.dtype)


def downsample_stride(block, factors, front=(0, 0, 0)):
    """The first existing voxel of each window (fast; aliases thin structures)."""
    out = block
    for axis, (f, p) in enumerate(zip(factors, front), start=1):
        f, p = int(f), int(p)
        if p:
            # Window k starts at k*f - p: its first existing voxel is there, or 0.
            starts = np.maximum(np.arange(-(-(p + out.shape[axis]) // f)) * f - p, 0)
            out = np.take(out, starts, axis=axis)
        else:
            out = out[(slice(None),) * axis + (slice(None, None, f),)]
    return np.ascontiguousarray(out)


def downsample_mode(block, factors, front=(0, 0, 0)):
    """The most frequent value of each window, exactly; ties go to the smallest.

    Meant for labels: no value that is absent from a window is ever made up.
    """
    windows, valid = _windows(block, factors, front)
    out_shape = windows.shape[:-1]
    k = windows.shape[-1]
    rows = windows.reshape(-1, k)
    if k <= 16:
        return _mode_pairwise(rows, valid, block.shape[0], k).reshape(out_shape)
    order = np.argsort(rows, axis=1, kind="stable")
    values = np.take_along_axis(rows, order, axis=1)
    weights = (np.ones(rows.shape, dtype=np.int32) if valid is None else
               np.take_along_axis(
                   np.broadcast_to(valid, (block.shape[0],) + valid.shape).reshape(-1, k),
                   order, axis=1).astype(np.int32))
    starts = np.ones(values.shape, dtype=bool)
    starts[:, 1:] = values[:, 1:] != values[:, :-1]
    run_ids = np.cumsum(starts.ravel()) - 1
    counts = np.bincount(run_ids, weights=weights.ravel())
    run_values = values.ravel()[starts.ravel()]
    runs_per_row = starts.sum(axis=1)
    first_run = np.concatenate(([0], np.cumsum(runs_per_row)[:-1]))
    best_count = np.maximum.reduceat(counts, first_run)
    row_of_run = np.repeat(np.arange(rows.shape[0]), runs_per_row)
    is_best = counts == best_count[row_of_run]
    # Runs are in ascending value order within a row: the first best run is
    # the smallest of the most frequent values.
    best_runs = np.flatnonzero(is_best)
    _, first = np.unique(row_of_run[best_runs], return_index=True)
    return run_values[best_runs[first]].reshape(out_shape)


def _mode_pairwise(rows, valid, channels, k):
    """Mode of small windows by counting equal pairs: k*k comparisons, no sort."""
    if valid is not None:
        valid = np.broadcast_to(valid, (channels,) + valid.shape).reshape(-1, k)
    counts = np.zeros(rows.shape, dtype=np.int8)
    for j in range(k):
        equal = rows == rows[:, j:j + 1]
        if valid is not None:
            equal &= valid[:, j:j + 1]
        counts += equal
    if valid is not None:
        counts[~valid] = -1
    best = counts == counts.max(axis=1, keepdims=True)
    # Among the most frequent values, the smallest.
    fill = np.array(np.iinfo(rows.dtype).max if rows.dtype.kind in "iu" else np.inf,
                    dtype=rows.dtype)
    return np.where(best, rows, fill).min(axis=1)


METHODS = {"mean": downsample_mean, "mode": downsample_mode, "stride": downsample_stride}


def downsample(block, factors, method, front=(0, 0, 0)):
    """Downsample with a method named ``"mean"``, ``"mode"`` or ``"stride"``."""
    try:
        function = METHODS[method]
    except KeyError:
        raise ValueError(f"unknown downsampling method {method!r} "
                         f"(one of {', '.join(METHODS)})") from None
    return function(block, factors, front)
