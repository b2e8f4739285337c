"""Exporting volumes: against TensorStore, and a larger-than-memory dask volume.

Run: ``python benchmarks/bench_export.py [--big-gib 8] [--skip-big]``

1. A 512x512x256 volume (raw uint8, jpeg q95 uint8, compressed_segmentation
   uint64) exported with ``napari_precomputed.export`` as one scale, against
   TensorStore writing the same in the same run (ratio = median of ours /
   TensorStore over pairs of runs taken back to back, with its quartiles),
   and the same export with its whole pyramid, for reference.
2. A lazily generated dask volume of ``--big-gib`` GiB (uint8, raw, 64^3
   chunks) exported with its pyramid in a fresh process: wall time, CPU use
   ((user + system) / wall; 200% = both cores busy) and peak RSS. Targets:
   peak RSS under 1.5 GiB, CPU above 150%.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
try:
    import napari_precomputed  # noqa: F401
except ImportError:
    sys.path.insert(0, str(ROOT / "src"))

from _peak_rss import PEAK_RSS_SOURCE  # noqa: E402
from _timing import alternating_runs, comparison, verdict  # noqa: E402
from bench_volume import CASES  # noqa: E402

from napari_precomputed.export import export, make_info  # noqa: E402


def bench_against_tensorstore(size=(512, 512, 256), repeat=3):
    import tensorstore as ts

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        tmp = Path(tmp)
        for name, case in CASES.items():
            data = case["make"](size)[None]
            type_ = "segmentation" if case["encoding"] == "compressed_segmentation" else "image"
            options = dict(type_=type_, encoding=case["encoding"], chunk_size=(64, 64, 64),
                           jpeg_quality=case["extra"].get("jpeg_quality"))
            one = make_info(data.shape, data.dtype, levels=1, **options)
            full = make_info(data.shape, data.dtype, **options)
            scale = one["scales"][0]
            spec = {"driver": "neuroglancer_precomputed",
                    "kvstore": {"driver": "file", "path": str(tmp / "ts")},
                    "multiscale_metadata": {"type": type_, "data_type": one["data_type"],
                                            "num_channels": 1},
                    "scale_metadata": {"size": scale["size"], "resolution": scale["resolution"],
                                       "chunk_size": [64, 64, 64], "encoding": case["encoding"],
                                       **case["extra"]},
                    "create": True}
            xyzc = data[0].transpose(2, 1, 0)[..., None]

            def clean():
                for sub in ("ours", "ts", "pyramid"):
                    shutil.rmtree(tmp / sub, ignore_errors=True)

            ours, theirs, pyramid = alternating_runs(
                [lambda: export(data, str(tmp / "ours"), one),
                 lambda: ts.open(spec).result().write(xyzc).result(),
                 lambda: export(data, str(tmp / "pyramid"), full)],
                repeat, [clean] * 3)
            rows.append({"case": name, "size": list(size), **comparison(ours, theirs),
                         "ours_with_pyramid_s": statistics.median(pyramid),
                         "levels": len(full["scales"])})
    return rows


BIG = PEAK_RSS_SOURCE + r"""
import json, resource, sys, time, os
import numpy as np
import dask.array as da
from napari_precomputed.export import export, make_info

side = int(sys.argv[2])
shape = (1, side, side, side)

def block(block_info=None):
    (c0, c1), (z0, z1), (y0, y1), (x0, x1) = block_info[None]["array-location"]
    z = np.arange(z0, z1, dtype=np.float32)[:, None, None]
    y = np.arange(y0, y1, dtype=np.float32)[None, :, None]
    x = np.arange(x0, x1, dtype=np.float32)[None, None, :]
    v = 128 + 60 * np.sin(x / 37) * np.cos(y / 53) + 50 * np.sin(z / 29)
    return v.astype(np.uint8)[None]

data = da.map_blocks(block, dtype=np.uint8, chunks=((1,),) + ((128,) * (side // 128),) * 3)
info = make_info(shape, np.uint8, chunk_size=(64, 64, 64))
t0 = time.perf_counter(); c0 = os.times()
export(data, sys.argv[1], info)
wall = time.perf_counter() - t0; c1 = os.times()
cpu = (c1.user - c0.user) + (c1.system - c0.system)
print(json.dumps({"gib": side ** 3 / 2 ** 30, "levels": len(info["scales"]), "wall_s": wall,
                  "cpu_percent": 100 * cpu / wall,
                  "peak_rss_mb": peak_rss_mb()}))
"""


def bench_big(gib=8.0):
    side = int(round((gib * 2 ** 30) ** (1 / 3) / 128)) * 128
    with tempfile.TemporaryDirectory(prefix="bench-export-big-") as tmp:
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        result = subprocess.run([sys.executable, "-c", BIG, str(Path(tmp) / "big"), str(side)],
                                capture_output=True, text=True, env=env)
    if result.returncode:
        raise RuntimeError(result.stderr[-2000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def print_rows(rows, big):
    size = "x".join(str(n) for n in rows[0]["size"]) if rows else "512x512x256"
    print(f"Export of {size} (one scale) vs TensorStore writing the same; "
          "target ratio <= 1.0 (median of paired runs, with quartiles)")
    print(f"{'case':<16} {'ours ms':>9} {'TS ms':>9} {'ratio':>6} {'quartiles':>11}  target  "
          f"{'with pyramid ms':>15}")
    for r in rows:
        ok = verdict(r["ratio_q1"], r["ratio_q3"])
        print(f"{r['case']:<16} {r['ours_s'] * 1e3:9.1f} {r['tensorstore_s'] * 1e3:9.1f} "
              f"{r['ratio']:6.2f} {r['ratio_q1']:5.2f}-{r['ratio_q3']:<5.2f}  {ok:<6}  "
              f"{r['ours_with_pyramid_s'] * 1e3:12.1f} ({r['levels']} scales)")
    if big:
        ok = big["peak_rss_mb"] < 1536 and big["cpu_percent"] > 150
        print(f"{big['gib']:.1f} GiB dask volume with {big['levels']} scales: "
              f"{big['wall_s']:.1f} s, CPU {big['cpu_percent']:.0f}%, peak RSS "
              f"{big['peak_rss_mb']:.0f} MB (targets < 1536 MB, > 150%): "
              f"{'met' if ok else 'MISSED'}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--big-gib", type=float, default=8.0)
    parser.add_argument("--skip-big", action="store_true")
    args = parser.parse_args(argv)
    rows = bench_against_tensorstore(repeat=args.repeat)
    big = None if args.skip_big else bench_big(args.big_gib)
    print_rows(rows, big)


if __name__ == "__main__":
    main()
