"""Benchmark our NumPy ``compressed_segmentation`` codec against the C++ one.

Run as ``python benchmarks/bench_compressed_segmentation.py``; or import and
call :func:`run`, which returns one dict per (data set, dtype) row.

Targets: decoding within 2x and encoding within 1.5x of the C++ codec
(``compressed-segmentation`` on PyPI) on 64^3 chunks with 8^3 blocks.
"""

from __future__ import annotations

import os
import statistics
import sys
import timeit

import numpy as np

_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "src")
try:
    import napari_precomputed  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.normpath(_SRC))

from napari_precomputed import compressed_segmentation as ours  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import alternating_runs, paired_ratio, verdict  # noqa: E402

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


def _calls_per_batch(func, batch_s):
    """Calls of ``func`` that take about ``batch_s`` seconds."""
    number, elapsed = timeit.Timer(func).autorange()
    return max(1, int(round(batch_s / (elapsed / number))))


def _batches(fns, pairs, batch_s):
    """Per-call seconds of each function, measured in alternating batches.

    :returns: one list per function, one time per batch
    """
    numbers = [_calls_per_batch(fn, batch_s) for fn in fns]
    times = alternating_runs(
        [lambda fn=fn, n=n: timeit.Timer(fn).timeit(n) for fn, n in zip(fns, numbers)], pairs)
    return [[t / n for t in ts] for ts, n in zip(times, numbers)]


def run(pairs=15, batch_s=0.03, verbose=False):
    """Time encode/decode of ours and the C++ codec; return one dict per case.

    Ours and the C++ codec run in alternating batches of about ``batch_s``
    seconds, so that each ratio compares the two at the same machine speed.

    :param pairs: batches of each per measurement.
    :param batch_s: seconds per batch.
    :param verbose: print each row as it is measured.
    :returns: list of dicts with keys ``case``, ``dtype``, ``labels``,
        ``bytes``, and for ``encode`` and ``decode``: ``ours_<op>_ms``,
        ``cpp_<op>_ms`` (medians), ``<op>_ratio`` (median of the paired
        ratios), ``<op>_q1``, ``<op>_q3`` (their quartiles) and ``<op>_ok``
        (the verdict: met, level or MISSED); the C++ fields are None without
        the C++ codec.
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
            row = {"case": case, "dtype": name, "labels": int(np.unique(volume).size),
                   "bytes": len(encoded)}
            ours_fns = {"encode": lambda: ours.encode(chunk, BLOCK),
                        "decode": lambda: ours.decode(encoded, chunk_size, 1, name, BLOCK)}
            cpp_fns = None
            if cseg is not None:
                # The C++ codec wants (X, Y, Z) in Fortran order: that is our
                # (Z, Y, X) C-order array transposed, without a copy.
                fortran = volume.T
                reference = cseg.compress(fortran, block_size=BLOCK, order="F")
                assert reference == encoded, f"{case}/{name}: output differs from C++ codec"
                cpp_fns = {"encode": lambda: cseg.compress(fortran, block_size=BLOCK, order="F"),
                           "decode": lambda: cseg.decompress(reference, chunk_size, dtype, BLOCK,
                                                             order="F")}
            for op, target in (("encode", ENCODE_TARGET), ("decode", DECODE_TARGET)):
                if cpp_fns is None:
                    (ours_t,) = _batches([ours_fns[op]], pairs, batch_s)
                    row.update({f"ours_{op}_ms": 1e3 * statistics.median(ours_t),
                                f"cpp_{op}_ms": None, f"{op}_ratio": None, f"{op}_q1": None,
                                f"{op}_q3": None, f"{op}_ok": None})
                    continue
                ours_t, cpp_t = _batches([ours_fns[op], cpp_fns[op]], pairs, batch_s)
                q1, ratio, q3 = paired_ratio(ours_t, cpp_t)
                row.update({f"ours_{op}_ms": 1e3 * statistics.median(ours_t),
                            f"cpp_{op}_ms": 1e3 * statistics.median(cpp_t),
                            f"{op}_ratio": ratio, f"{op}_q1": q1, f"{op}_q3": q3,
                            f"{op}_ok": verdict(q1, q3, target)})
            rows.append(row)
            if verbose:
                print(format_row(row), flush=True)
    return rows


HEADER = (
    f"{'case':7s}{'dtype':7s}{'labels':>7s}{'bytes':>8s} | "
    f"{'enc ours':>9s}{'enc C++':>9s}{'ratio':>7s}{'quartiles':>11s} {'ok':6s} | "
    f"{'dec ours':>9s}{'dec C++':>9s}{'ratio':>7s}{'quartiles':>11s} {'ok':6s}"
)


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def _side(row, op):
    if row[f"{op}_ratio"] is None:
        spread = "-"
    else:
        spread = f"{row[f'{op}_q1']:.2f}-{row[f'{op}_q3']:.2f}"
    return (f"{_fmt(row[f'ours_{op}_ms'], '9.3f')}{_fmt(row[f'cpp_{op}_ms'], '9.3f'):>9s}"
            f"{_fmt(row[f'{op}_ratio'], '7.2f'):>7s}{spread:>11s} {row[f'{op}_ok'] or '-':6s}")


def format_row(row):
    """One line of the result table (times in ms)."""
    return (f"{row['case']:7s}{row['dtype']:7s}{row['labels']:7d}{row['bytes']:8d} | "
            f"{_side(row, 'encode')} | {_side(row, 'decode')}")


def main():
    print(f"compressed_segmentation, chunk {SHAPE[::-1]} (x,y,z), block {BLOCK}; times in ms "
          "(medians); ratio: median of ours / C++ over alternating batches, with quartiles")
    print(f"targets: encode <= {ENCODE_TARGET}x C++, decode <= {DECODE_TARGET}x C++")
    print(HEADER)
    print("-" * len(HEADER))
    run(verbose=True)


if __name__ == "__main__":
    main()
