"""Benchmark our NumPy ``compressed_segmentation`` codec against the C++ one.

Run as ``python benchmarks/bench_compressed_segmentation.py``; or import and
call :func:`run`, which returns one dict per (data set, dtype) row.

Targets: decoding within 2x and encoding within 1.5x of the C++ codec
(``compressed-segmentation`` on PyPI) on 64^3 chunks with 8^3 blocks.
"""

from __future__ import annotations

import os
import sys
import timeit

import numpy as np

_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "src")
try:
    import napari_precomputed  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.normpath(_SRC))

from napari_precomputed import compressed_segmentation as ours  # noqa: E402

try:
    import compressed_segmentation as cseg
except ImportError:  # pragma: no cover - the reference is optional
    cseg = None

SHAPE = (64, 64, 64)  # (Z, Y, X)
BLOCK = (8, 8, 8)  # (Bx, By, Bz)
DECODE_TARGET = 2.0
ENCODE_TARGET = 1.5


def dense_labels(dtype, seed=0, num_labels=500, shape=SHAPE):
    """Voronoi label field: ``num_labels`` random seeds, random large ids."""
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, min(shape), size=(num_labels, 3))
    high = np.iinfo(dtype).max
    ids = rng.integers(1, high, size=num_labels, dtype=np.uint64, endpoint=True).astype(dtype)
    coords = np.indices(shape).reshape(3, -1).T
    nearest = np.empty(len(coords), dtype=np.intp)
    step = 8192
    for s in range(0, len(coords), step):
        d = ((coords[s : s + step, None, :] - seeds[None, :, :]) ** 2).sum(-1)
        nearest[s : s + step] = d.argmin(1)
    return ids[nearest].reshape(shape)


def sparse_labels(dtype, seed=0, num_objects=6, shape=SHAPE):
    """Mostly background (0) with a few ellipsoidal objects."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    out = np.zeros(shape, dtype=dtype)
    high = np.iinfo(dtype).max
    for _ in range(num_objects):
        centre = rng.uniform(0, min(shape), size=3)
        radii = rng.uniform(3, 10, size=3)
        inside = (
            ((z - centre[0]) / radii[0]) ** 2
            + ((y - centre[1]) / radii[1]) ** 2
            + ((x - centre[2]) / radii[2]) ** 2
        ) <= 1
        out[inside] = rng.integers(1, high, dtype=np.uint64, endpoint=True).astype(dtype)
    return out


def _median_time(func, min_total=0.5, repeats=7):
    """Median per-call time over ``repeats`` runs of at least ``min_total / repeats`` s."""
    timer = timeit.Timer(func)
    number, elapsed = timer.autorange()
    # autorange stops at >= 0.2 s; scale so that all repeats together take
    # at least min_total seconds.
    per_call = elapsed / number
    number = max(number, int(np.ceil(min_total / repeats / per_call)))
    times = timer.repeat(repeat=repeats, number=number)
    return float(np.median(times)) / number


def run(min_total=0.5, verbose=False):
    """Time encode/decode of ours and the C++ codec; return one dict per case.

    :param min_total: minimum seconds spent per measurement.
    :param verbose: print each row as it is measured.
    :returns: list of dicts with keys ``case``, ``dtype``, ``labels``,
        ``bytes``, ``ours_encode_ms``, ``cpp_encode_ms``, ``encode_ratio``,
        ``encode_ok``, ``ours_decode_ms``, ``cpp_decode_ms``, ``decode_ratio``,
        ``decode_ok`` (ratio and ok are None without the C++ codec).
    """
    rows = []
    chunk_size = SHAPE[::-1]
    for case, make in (("dense", dense_labels), ("sparse", sparse_labels)):
        for dtype in (np.uint32, np.uint64):
            volume = make(dtype)
            chunk = volume[None]
            name = np.dtype(dtype).name
            encoded = ours.encode(chunk, BLOCK)
            decoded = ours.decode(encoded, chunk_size, 1, name, BLOCK)
            assert np.array_equal(decoded, chunk)
            row = {
                "case": case,
                "dtype": name,
                "labels": int(np.unique(volume).size),
                "bytes": len(encoded),
                "ours_encode_ms": 1e3 * _median_time(lambda: ours.encode(chunk, BLOCK), min_total),
                "ours_decode_ms": 1e3
                * _median_time(lambda: ours.decode(encoded, chunk_size, 1, name, BLOCK), min_total),
                "cpp_encode_ms": None,
                "cpp_decode_ms": None,
                "encode_ratio": None,
                "decode_ratio": None,
                "encode_ok": None,
                "decode_ok": None,
            }
            if cseg is not None:
                # The C++ codec wants (X, Y, Z) in Fortran order: that is our
                # (Z, Y, X) C-order array transposed, without a copy.
                fortran = volume.T
                reference = cseg.compress(fortran, block_size=BLOCK, order="F")
                assert reference == encoded, f"{case}/{name}: output differs from C++ codec"
                row["cpp_encode_ms"] = 1e3 * _median_time(
                    lambda: cseg.compress(fortran, block_size=BLOCK, order="F"), min_total
                )
                row["cpp_decode_ms"] = 1e3 * _median_time(
                    lambda: cseg.decompress(reference, chunk_size, dtype, BLOCK, order="F"),
                    min_total,
                )
                row["encode_ratio"] = row["ours_encode_ms"] / row["cpp_encode_ms"]
                row["decode_ratio"] = row["ours_decode_ms"] / row["cpp_decode_ms"]
                row["encode_ok"] = row["encode_ratio"] <= ENCODE_TARGET
                row["decode_ok"] = row["decode_ratio"] <= DECODE_TARGET
            rows.append(row)
            if verbose:
                print(format_row(row), flush=True)
    return rows


HEADER = (
    f"{'case':7s}{'dtype':7s}{'labels':>7s}{'bytes':>8s} | "
    f"{'enc ours':>9s}{'enc C++':>9s}{'ratio':>7s}{'ok':>4s} | "
    f"{'dec ours':>9s}{'dec C++':>9s}{'ratio':>7s}{'ok':>4s}"
)


def _fmt(value, spec):
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    return format(value, spec)


def format_row(row):
    """One line of the result table (times in ms)."""
    return (
        f"{row['case']:7s}{row['dtype']:7s}{row['labels']:7d}{row['bytes']:8d} | "
        f"{_fmt(row['ours_encode_ms'], '9.3f')}{_fmt(row['cpp_encode_ms'], '9.3f'):>9s}"
        f"{_fmt(row['encode_ratio'], '7.2f'):>7s}{_fmt(row['encode_ok'], ''):>4s} | "
        f"{_fmt(row['ours_decode_ms'], '9.3f')}{_fmt(row['cpp_decode_ms'], '9.3f'):>9s}"
        f"{_fmt(row['decode_ratio'], '7.2f'):>7s}{_fmt(row['decode_ok'], ''):>4s}"
    )


def main():
    print(f"compressed_segmentation, chunk {SHAPE[::-1]} (x,y,z), block {BLOCK}; times in ms (median)")
    print(f"targets: encode <= {ENCODE_TARGET}x C++, decode <= {DECODE_TARGET}x C++")
    print(HEADER)
    print("-" * len(HEADER))
    run(verbose=True)


if __name__ == "__main__":
    main()
