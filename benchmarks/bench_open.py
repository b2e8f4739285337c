"""Opening a dataset of 10^9 chunks (mostly missing) and showing its first plane.

Run: ``python benchmarks/bench_open.py``

The dataset is 64000^3 uint8 voxels in 64^3 chunks (1000^3 = 10^9 chunks at
the finest scale) with a pyramid of 11 scales down to one chunk; only the
chunk at the centre of each scale is stored. Each measurement runs in a fresh
Python process so that its peak RSS is its own:

- ``core``: open with the reader's layer-data function (reads ``info``),
  then read the first plane napari shows (the middle z-plane of the coarsest
  scale) and a 1024 x 1024 viewport at the finest scale;
- ``napari``: a real viewer (under ``xvfb-run`` when there is no display):
  ``viewer.open`` and the first
  draw; the RSS reported is the process's, napari and Qt included, with the
  RSS of napari with an empty viewer alongside.

Target: open + first plane under 1 s and under 300 MB RSS.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peak_rss import PEAK_RSS_SOURCE  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64000
LEVELS = 11


def make_dataset(path):
    sys.path.insert(0, str(ROOT / "src"))
    from napari_precomputed.accessor import get_accessor_for_url
    from napari_precomputed.precomputed_io import get_IO_for_new_dataset
    from napari_precomputed.info import chunk_coords_for_grid_index

    scales = []
    for level in range(LEVELS):
        f = 2 ** level
        size = -(-SIZE // f)
        scales.append({"key": f"{8 * f}nm", "size": [size] * 3, "voxel_offset": [0, 0, 0],
                       "resolution": [8 * f] * 3,
                       "chunk_sizes": [[min(64, size)] * 3], "encoding": "raw"})
    info = {"type": "image", "data_type": "uint8", "num_channels": 1, "scales": scales}
    io = get_IO_for_new_dataset(info, get_accessor_for_url(str(path)))
    for scale in scales:
        chunk = scale["chunk_sizes"][0]
        grid = [-(-s // c) for s, c in zip(scale["size"], chunk)]
        coords = chunk_coords_for_grid_index(scale, chunk, [g // 2 for g in grid])
        shape = (1, coords[5] - coords[4], coords[3] - coords[2], coords[1] - coords[0])
        io.write_chunk(np.full(shape, 200, np.uint8), scale["key"], coords)
    return int(np.prod([-(-SIZE // 64)] * 3))


CORE = PEAK_RSS_SOURCE + r"""
import json, resource, sys, time
t0 = time.perf_counter()
from napari_precomputed._layer_data import layer_data_for_url
(data, kwargs, kind), = layer_data_for_url(sys.argv[1])
t_open = time.perf_counter() - t0
coarse = data[-1]
plane = coarse[coarse.shape[0] // 2]
t_first = time.perf_counter() - t0
fine = data[0]
z, y, x = (s // 2 for s in fine.shape)
t1 = time.perf_counter()
view = fine[z, y - 512:y + 512, x - 512:x + 512]
t_view = time.perf_counter() - t1
print(json.dumps({"open_s": t_open, "open_first_plane_s": t_first,
                  "viewport_1024_finest_s": t_view, "nonzero": int(view.sum() > 0),
                  "peak_rss_mb": peak_rss_mb()}))
"""

NAPARI = PEAK_RSS_SOURCE + r"""
import json, os, resource, sys, time
import napari
viewer = napari.Viewer(show=False)
napari.qt.get_qapp().processEvents()
rss_empty = peak_rss_mb()
t0 = time.perf_counter()
layers = viewer.open(sys.argv[1], plugin="napari-precomputed")
napari.qt.get_qapp().processEvents()
viewer.window._qt_viewer.canvas.native.update()
napari.qt.get_qapp().processEvents()
t_first = time.perf_counter() - t0
print(json.dumps({"viewer_open_first_draw_s": t_first, "level_shown": layers[0].data_level,
                  "peak_rss_mb": peak_rss_mb(),
                  "empty_viewer_rss_mb": rss_empty}))
viewer.close()
"""


def _run(code, path, display=False):
    prefix = []
    if display and not os.environ.get("DISPLAY") and shutil.which("xvfb-run"):
        prefix = ["xvfb-run", "-a", "-s", "-screen 0 1280x1024x24"]
    result = subprocess.run(prefix + [sys.executable, "-c", code, str(path)],
                            capture_output=True,
                            text=True, env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
    if result.returncode:
        raise RuntimeError(result.stderr)
    return json.loads(result.stdout.strip().splitlines()[-1])


def run(with_napari=True):
    with tempfile.TemporaryDirectory(prefix="bench-open-") as tmp:
        chunks = make_dataset(Path(tmp) / "huge")
        rows = {"chunks_at_finest_scale": chunks, "core": _run(CORE, Path(tmp) / "huge")}
        if with_napari:
            try:
                rows["napari"] = _run(NAPARI, Path(tmp) / "huge", display=True)
            except Exception as exc:  # noqa: BLE001 - report, do not hide the core figures
                rows["napari"] = {"error": str(exc)[-500:]}
    return rows


def print_rows(rows):
    core = rows["core"]
    print(f"Dataset of {rows['chunks_at_finest_scale']:.2e} chunks, {LEVELS} scales; "
          "target: open + first plane < 1 s and < 300 MB RSS")
    ok = core["open_first_plane_s"] < 1 and core["peak_rss_mb"] < 300
    print(f"core:   open {core['open_s'] * 1e3:.1f} ms, open + first plane "
          f"{core['open_first_plane_s'] * 1e3:.1f} ms, 1024x1024 viewport at the finest scale "
          f"{core['viewport_1024_finest_s'] * 1e3:.1f} ms, peak RSS "
          f"{core['peak_rss_mb']:.0f} MB  {'met' if ok else 'MISSED'}")
    nap = rows.get("napari")
    if nap and "error" not in nap:
        ok = nap["viewer_open_first_draw_s"] < 1 and nap["peak_rss_mb"] < 300
        print(f"napari: open + first draw {nap['viewer_open_first_draw_s'] * 1e3:.1f} ms "
              f"(level {nap['level_shown']}), peak RSS {nap['peak_rss_mb']:.0f} MB "
              f"(empty viewer: {nap['empty_viewer_rss_mb']:.0f} MB)  {'met' if ok else 'MISSED'}")
    elif nap:
        print(f"napari: failed: {nap['error']}")


if __name__ == "__main__":
    print_rows(run())
