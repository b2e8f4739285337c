"""Whole-volume write and read, and one XY plane, against TensorStore.

Run: ``python benchmarks/bench_volume.py [--size 512 512 256] [--repeat 3]``

For each encoding (raw uint8, jpeg quality 95 uint8, compressed_segmentation
uint64 with 8^3 blocks), a volume of the given (x, y, z) size in 64^3 chunks is
written to a fresh folder and read back whole, once by napari-precomputed's
core (``volume.write_region`` / ``volume.read_region``) and once by
TensorStore, in the same run; then one XY plane in the middle of the volume is
read by both. "lazy read" and "lazy plane" read the same through the
``PrecomputedArray`` that napari slices, against the same TensorStore
operations. Times are the median of ``--repeat`` runs, ours and TensorStore's
taken in turn; the ratio is the median of ours / TensorStore's over those
pairs of runs (below 1 means we are faster), printed with its quartiles. The
target is "met" when the upper quartile is at most 1, "level" when the
quartiles straddle 1.
"""

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

try:
    import napari_precomputed  # noqa: F401
except ImportError:  # running from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from _timing import alternating_runs, comparison, verdict  # noqa: E402
from napari_precomputed.accessor import get_accessor_for_url  # noqa: E402
from napari_precomputed.precomputed_io import (  # noqa: E402
    get_IO_for_existing_dataset,
    get_IO_for_new_dataset,
)
from napari_precomputed.volume import read_region, write_region  # noqa: E402

CHUNK = [64, 64, 64]


def image_volume(size, seed=0):
    """Smooth uint8 (Z, Y, X) data with some texture, like EM after contrast."""
    x, y, z = size
    rng = np.random.default_rng(seed)
    zz = np.sin(np.arange(z, dtype=np.float32) / 11.0)[:, None, None]
    yy = np.cos(np.arange(y, dtype=np.float32) / 17.0)[None, :, None]
    xx = np.sin(np.arange(x, dtype=np.float32) / 13.0)[None, None, :]
    base = 80 + 40 * (zz + yy + xx)
    noise = rng.integers(0, 16, size=(z, y, x), dtype=np.uint8)
    return (base + noise).clip(0, 255).astype(np.uint8)


def segmentation_volume(size, cell=24, seed=0):
    """uint64 (Z, Y, X) labels: jittered cubic cells, ~500 labels per 64^3 chunk at cell=8."""
    x, y, z = size
    rng = np.random.default_rng(seed)
    grid = tuple(-(-n // cell) + 1 for n in (z, y, x))
    ids = rng.integers(1, 2**48, size=grid, dtype=np.uint64)
    zi = (np.arange(z) + rng.integers(0, cell // 2, size=z)) // cell
    yi = (np.arange(y) + rng.integers(0, cell // 2, size=y)) // cell
    xi = (np.arange(x) + rng.integers(0, cell // 2, size=x)) // cell
    return ids[zi[:, None, None], yi[None, :, None], xi[None, None, :]]


CASES = {
    "raw uint8": dict(data_type="uint8", encoding="raw", make=image_volume, extra={}),
    "jpeg q95 uint8": dict(data_type="uint8", encoding="jpeg", make=image_volume,
                           extra={"jpeg_quality": 95}),
    "cseg uint64": dict(data_type="uint64", encoding="compressed_segmentation",
                        make=segmentation_volume,
                        extra={"compressed_segmentation_block_size": [8, 8, 8]}),
}


def _info(case, size):
    scale = {"key": "s0", "size": list(size), "voxel_offset": [0, 0, 0],
             "resolution": [8, 8, 8], "chunk_sizes": [CHUNK], "encoding": case["encoding"],
             **case["extra"]}
    type_ = "segmentation" if case["encoding"] == "compressed_segmentation" else "image"
    return {"type": type_, "data_type": case["data_type"], "num_channels": 1,
            "scales": [scale]}


def bench_case(name, case, size, repeat, workdir):
    import tensorstore as ts

    data = case["make"](size)
    info = _info(case, size)
    ours_dir, ts_dir = workdir / f"ours-{case['encoding']}", workdir / f"ts-{case['encoding']}"

    def fresh(path):
        shutil.rmtree(path, ignore_errors=True)

    def ours_write():
        io = get_IO_for_new_dataset(info, get_accessor_for_url(str(ours_dir)))
        write_region(io, "s0", data[None])

    scale = info["scales"][0]
    ts_spec = {
        "driver": "neuroglancer_precomputed",
        "kvstore": {"driver": "file", "path": str(ts_dir)},
        "multiscale_metadata": {"type": info["type"], "data_type": info["data_type"],
                                "num_channels": 1},
        "scale_metadata": {"size": scale["size"], "resolution": scale["resolution"],
                           "chunk_size": CHUNK, "encoding": scale["encoding"],
                           "voxel_offset": [0, 0, 0], **case["extra"]},
        "create": True,
    }
    data_xyzc = data.transpose(2, 1, 0)[..., None]

    def ts_write():
        store = ts.open(ts_spec).result()
        store.write(data_xyzc).result()

    results = {}
    results["write"] = alternating_runs(
        [ours_write, ts_write], repeat, [lambda: fresh(ours_dir), lambda: fresh(ts_dir)])

    lo, hi = (0, 0, 0), tuple(size)
    ours_io = get_IO_for_existing_dataset(get_accessor_for_url(str(ours_dir)))
    ts_store = ts.open({"driver": "neuroglancer_precomputed",
                        "kvstore": {"driver": "file", "path": str(ts_dir)}}).result()
    got = read_region(ours_io, "s0", lo, hi)[0]
    if case["encoding"] != "jpeg":
        assert np.array_equal(got, data), f"{name}: our read differs from what we wrote"
        ts_got = ts_store.read().result()[..., 0].transpose(2, 1, 0)
        assert np.array_equal(ts_got, data), f"{name}: TensorStore's read differs"

    def ours_read():
        # A fresh PrecomputedIO each time, so nothing is cached between runs.
        io = get_IO_for_existing_dataset(get_accessor_for_url(str(ours_dir)))
        read_region(io, "s0", lo, hi)

    def ts_read():
        store = ts.open({"driver": "neuroglancer_precomputed",
                         "kvstore": {"driver": "file", "path": str(ts_dir)},
                         "context": {"cache_pool": {"total_bytes_limit": 0}}}).result()
        store.read().result()

    results["read"] = alternating_runs([ours_read, ts_read], repeat)

    z_mid = size[2] // 2

    def ours_plane():
        io = get_IO_for_existing_dataset(get_accessor_for_url(str(ours_dir)))
        read_region(io, "s0", (0, 0, z_mid), (size[0], size[1], z_mid + 1))

    def ts_plane():
        store = ts.open({"driver": "neuroglancer_precomputed",
                         "kvstore": {"driver": "file", "path": str(ts_dir)},
                         "context": {"cache_pool": {"total_bytes_limit": 0}}}).result()
        store[:, :, z_mid].read().result()

    results["xy plane"] = alternating_runs([ours_plane, ts_plane], repeat * 3)

    # The same through the lazy array napari slices (issue: reader), with an
    # empty chunk cache each time.
    def lazy_array():
        from napari_precomputed.lazy_array import PrecomputedArray

        io = get_IO_for_existing_dataset(get_accessor_for_url(str(ours_dir)))
        return PrecomputedArray(io, "s0", channel=0)

    results["lazy read"] = alternating_runs(
        [lambda: np.asarray(lazy_array()), ts_read], repeat)
    results["lazy plane"] = alternating_runs([lambda: lazy_array()[z_mid], ts_plane],
                                                repeat * 3)
    fresh(ours_dir)
    fresh(ts_dir)
    return [{"case": name, "operation": op, **comparison(ours, theirs)}
            for op, (ours, theirs) in results.items()]


def run(size=(512, 512, 256), repeat=3, cases=None):
    """Run the benchmark; returns a list of row dicts."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-volume-") as tmp:
        for name, case in CASES.items():
            if cases and name not in cases:
                continue
            rows += bench_case(name, case, tuple(size), repeat, Path(tmp))
    return rows


def print_rows(rows, size):
    print(f"Whole volume {size[0]}x{size[1]}x{size[2]} (x, y, z), 64^3 chunks; "
          "target: ratio <= 1.0 (ours no slower than TensorStore)")
    print(f"{'case':<16} {'operation':<10} {'ours ms':>10} {'TS ms':>10} {'ratio':>7} "
          f"{'quartiles':>11}  target")
    for r in rows:
        print(f"{r['case']:<16} {r['operation']:<10} {r['ours_s'] * 1e3:10.1f} "
              f"{r['tensorstore_s'] * 1e3:10.1f} {r['ratio']:7.2f} "
              f"{r['ratio_q1']:5.2f}-{r['ratio_q3']:<5.2f}  {verdict(r['ratio_q1'], r['ratio_q3'])}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=3, default=[512, 512, 256])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--case", action="append", choices=list(CASES))
    args = parser.parse_args(argv)
    rows = run(args.size, args.repeat, args.case)
    print_rows(rows, args.size)


if __name__ == "__main__":
    main()
