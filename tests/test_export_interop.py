"""Exports made in a real napari viewer, read back by the plugin and by TensorStore.

Every test saves a layer through what a user would use (the npe2 writers behind
File > Save Layers…, or the export panel), then checks EVERY scale of the
written pyramid, read back both with the plugin's reader (``viewer.open``) and
with TensorStore's ``neuroglancer_precomputed`` driver, against a reference
computed here, independently of ``napari_precomputed.downsample``.

The reference (:func:`reference_level`) follows the documented pyramid rules:

* each scale is computed from the scale before it, with the (x, y, z) factors
  given by the ratio of the two resolutions in the written ``info``;
* windows sit at absolute multiples of the factor: coarse voxel ``v`` covers
  fine voxels ``v*f .. v*f + f - 1`` (absolute indices, i.e. including
  ``voxel_offset``), and only the fine voxels that exist count, so the first
  and last windows along an axis may be partial;
* images: the mean of the existing voxels; for integer data it is rounded to
  the nearest integer with ties (exact halves) to even, as ``np.rint`` does in
  ``downsample_mean``; checked here with exact integer arithmetic;
* labels, "mode": the most frequent value, ties to the smallest value;
* labels, "stride": the first existing voxel of the window.

The reference is vectorised over windows (a NumPy loop over the positions
inside a window, never over the package's code) and is itself cross-checked on
the corner windows and a random sample of windows by a plain Python loop
(:func:`python_window`).

Arrays here are (C, Z, Y, X); TensorStore's domain is [x, y, z, channel] with
its origin at ``voxel_offset``; the info's vectors are (x, y, z).
"""

import collections
import fractions
import itertools

import numpy as np
import pytest
from conftest import label_volume, smooth_volume

ts = pytest.importorskip("tensorstore")

PLUGIN = "napari-precomputed"

#: JPEG (quality 95, the panel's default) on the smooth uint8 data below:
#: bounds on |TensorStore's decoded value - reference value|, per level. Seen:
#: mean 0.38 / 0.29 / 0.35 and max 3 / 2 / 2 at levels 0 / 1 / 2; the bounds
#: leave room for other libjpeg builds.
JPEG_MEAN_ERR = 1.0
JPEG_MAX_ERR = 8


# --------------------------------------------------------------------------
# Reference pyramid


def _axis_windows(offset, size, factor):
    """For one axis: coarse offset, coarse size and, per position ``d`` inside a
    window, the local fine index of voxel ``v*f + d`` for every coarse ``v``
    and whether that fine voxel exists."""
    lo = offset // factor                       # floor
    hi = -(-(offset + size) // factor)          # ceil
    v = np.arange(lo, hi)
    positions = []
    for d in range(factor):
        absolute = v * factor + d
        exists = (absolute >= offset) & (absolute < offset + size)
        positions.append((np.clip(absolute - offset, 0, size - 1), exists))
    # Stride: the first fine voxel of the window that exists.
    first = np.maximum(v * factor, offset) - offset
    return lo, hi - lo, positions, first


def reference_level(fine, offset_xyz, factors_xyz, method):
    """One coarser level of ``fine`` ((C, Z, Y, X) at absolute ``offset_xyz``).

    :returns: (coarse array, coarse offset (x, y, z), stats) where stats counts
        the windows that exercise the tie rules (exact halves with an even
        quotient for "mean", several most frequent values for "mode")
    """
    _, z, y, x = fine.shape
    axes = [_axis_windows(o, n, f) for o, n, f in zip(offset_xyz, (x, y, z), factors_xyz)]
    (ox, nx, px, fx), (oy, ny, py, fy), (oz, nz, pz, fz) = axes
    if method == "stride":
        out = fine[:, fz[:, None, None], fy[None, :, None], fx[None, None, :]]
        return out, (ox, oy, oz), {}
    samples, exists = [], []
    for (lz, ez), (ly, ey), (lx, ex) in itertools.product(pz, py, px):
        samples.append(fine[:, lz[:, None, None], ly[None, :, None], lx[None, None, :]])
        exists.append(np.broadcast_to(ez[:, None, None] & ey[None, :, None]
                                      & ex[None, None, :], (1, nz, ny, nx)))
    if method == "mean":
        assert fine.dtype.kind in "iu"
        total = sum(np.where(e, s.astype(np.int64), 0) for s, e in zip(samples, exists))
        count = sum(e.astype(np.int64) for e in exists)
        q, r = np.divmod(total, count)          # mean = q + r / count, 0 <= r < count
        half = 2 * r == count
        up = (2 * r > count) | (half & (q % 2 == 1))
        out = (q + up).astype(fine.dtype)
        return out, (ox, oy, oz), {"halves_rounded_down": int((half & (q % 2 == 0)).sum())}
    assert method == "mode"
    counts = []
    for s, e in zip(samples, exists):
        c = sum(((t == s) & f).astype(np.int16) for t, f in zip(samples, exists))
        counts.append(np.where(e, c, -1))
    best = np.max(counts, axis=0)
    big = np.iinfo(fine.dtype).max
    winners = [np.where(c == best, s, big) for s, c in zip(samples, counts)]
    out = np.min(winners, axis=0)
    largest_winner = np.max([np.where(c == best, s, 0) for s, c in zip(samples, counts)],
                            axis=0)
    return out, (ox, oy, oz), {"ties": int((largest_winner != out).sum())}


def python_window(fine, offset_xyz, factors_xyz, method, channel, coarse_xyz):
    """One coarse voxel, with plain Python loops (cross-check of the reference)."""
    _, z, y, x = fine.shape
    (ox, oy, oz), (fx, fy, fz), (vx, vy, vz) = offset_xyz, factors_xyz, coarse_xyz
    values = [int(fine[channel, k - oz, j - oy, i - ox])
              for k in range(vz * fz, vz * fz + fz) if oz <= k < oz + z
              for j in range(vy * fy, vy * fy + fy) if oy <= j < oy + y
              for i in range(vx * fx, vx * fx + fx) if ox <= i < ox + x]
    if method == "stride":
        return values[0]                        # smallest z, then y, then x
    if method == "mean":
        return round(fractions.Fraction(sum(values), len(values)))  # half to even
    counts = collections.Counter(values)
    best = max(counts.values())
    return min(v for v, n in counts.items() if n == best)


def reference_pyramid(level0, info, method, samples=150, seed=0):
    """Every level of the pyramid ``info`` describes, from ``level0``; checks the
    info's offsets and sizes and cross-checks each level on sampled windows.

    :returns: (levels, stats per coarser level)
    """
    rng = np.random.default_rng(seed)
    scales = info["scales"]
    levels, stats = [level0], []
    for previous, scale in zip(scales, scales[1:]):
        factors = [int(round(r / p)) for r, p in zip(scale["resolution"],
                                                     previous["resolution"])]
        assert all(f in (1, 2) for f in factors) and max(factors) == 2, factors
        fine, offset = levels[-1], previous["voxel_offset"]
        coarse, coarse_offset, level_stats = reference_level(fine, offset, factors, method)
        assert list(coarse_offset) == scale["voxel_offset"]
        assert list(coarse.shape[:0:-1]) == scale["size"]
        c, nz, ny, nx = coarse.shape
        corners = list(itertools.product((0, nz - 1), (0, ny - 1), (0, nx - 1)))
        picks = corners + [tuple(rng.integers(0, n) for n in (nz, ny, nx))
                           for _ in range(samples)]
        for k, j, i in picks:
            for ch in range(c):
                absolute = (coarse_offset[0] + i, coarse_offset[1] + j, coarse_offset[2] + k)
                assert coarse[ch, k, j, i] == python_window(fine, offset, factors, method,
                                                            ch, absolute), (k, j, i)
        levels.append(coarse)
        stats.append(level_stats)
    return levels, stats


# --------------------------------------------------------------------------
# Reading back


def tensorstore_levels(path, info):
    """Every scale read with TensorStore, as (C, Z, Y, X); checks each domain."""
    out = []
    for index, scale in enumerate(info["scales"]):
        store = ts.open({"driver": "neuroglancer_precomputed",
                         "kvstore": {"driver": "file", "path": str(path)},
                         "scale_index": index}).result()
        assert list(store.domain.inclusive_min[:3]) == scale["voxel_offset"]
        assert list(store.domain.shape[:3]) == scale["size"]
        assert store.dtype.numpy_dtype == np.dtype(info["data_type"])
        out.append(np.asarray(store.read().result()).transpose(3, 2, 1, 0))
    return out


def reader_levels(viewer, path):
    """The dataset opened in the viewer with the plugin: (layer, levels as (C, Z, Y, X))."""
    (layer,) = viewer.open(str(path), plugin=PLUGIN)
    data = list(layer.data) if layer.multiscale else [layer.data]
    return layer, [np.asarray(level)[np.newaxis] for level in data]


def written_info(path):
    import json

    return json.loads((path / "info").read_text())


def check_every_level(viewer, path, expected, world_scale, world_translate):
    """Reader and TensorStore both give ``expected`` at every scale."""
    info = written_info(path)
    assert len(info["scales"]) == len(expected)
    for index, (got, want) in enumerate(zip(tensorstore_levels(path, info), expected)):
        assert got.dtype == np.dtype(info["data_type"])
        np.testing.assert_array_equal(got, want, err_msg=f"TensorStore, scale {index}")
    layer, levels = reader_levels(viewer, path)
    assert len(levels) == len(expected)
    for index, (got, want) in enumerate(zip(levels, expected)):
        np.testing.assert_array_equal(got, want, err_msg=f"plugin reader, scale {index}")
    # Same place in the world as the layer that was saved.
    np.testing.assert_allclose(layer.scale, world_scale)
    np.testing.assert_allclose(layer.translate, world_translate)
    return info, layer


# --------------------------------------------------------------------------
# Panel helpers


def run_panel_export(qtbot, widget):
    """Start the panel's export and wait until its worker is done."""
    assert widget.problems() == [], widget.problems()
    worker = widget.start_export()
    assert worker is not None, widget.status.value
    # The cancel button is enabled before the worker starts and disabled when
    # it has finished (whatever the outcome): no signal can be missed.
    qtbot.waitUntil(lambda: not widget.cancel_button.enabled, timeout=30_000)
    assert widget.status.value.startswith("Exported to"), widget.status.value
    assert widget.progress.value == widget.progress.max


def make_panel(viewer, layer, output):
    from napari_precomputed._widget import ExportWidget

    widget = ExportWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.layer.value = layer
    widget.output.value = str(output)
    return widget


# --------------------------------------------------------------------------
# 1. npe2 writers: several levels, automatic pyramid, default 64^3 chunks


def test_writer_image_with_offset_every_level_is_the_rounded_mean(make_napari_viewer,
                                                                   tmp_path):
    viewer = make_napari_viewer()
    # (z, y, x) 129 x 141 x 151 voxels of 8 x 4 x 4 nm, placed at voxel (x, y, z)
    # = (-7, 5, 3): odd sizes and offsets, so windows are partial at both ends.
    data = smooth_volume((1, 129, 141, 151), "uint16", seed=3)[0]
    layer = viewer.add_image(data, name="em", scale=(8, 4, 4), translate=(24, 20, -28))
    viewer.layers.selection = {layer}
    written = viewer.layers.save(str(tmp_path / "em"), selected=True, plugin=PLUGIN)
    assert written == [str(tmp_path / "em")]

    info = written_info(tmp_path / "em")
    assert info["type"] == "image" and info["data_type"] == "uint16"
    # Automatic levels: x and y are halved until they reach z's 8 nm, then all
    # three, until the coarsest scale fits one 64^3 chunk.
    assert [s["resolution"] for s in info["scales"]] == [
        [4, 4, 8], [8, 8, 8], [16, 16, 16], [32, 32, 32]]
    assert [s["size"] for s in info["scales"]] == [
        [151, 141, 129], [76, 71, 129], [38, 36, 65], [19, 19, 33]]
    assert info["scales"][0]["voxel_offset"] == [-7, 5, 3]
    assert all(s["encoding"] == "raw" for s in info["scales"])
    assert info["scales"][0]["chunk_sizes"] == [[64, 64, 64]]

    expected, stats = reference_pyramid(data[np.newaxis], info, "mean")
    # Exact halves do occur and go to the even integer (half-up would differ).
    assert all(s["halves_rounded_down"] > 0 for s in stats), stats
    check_every_level(viewer, tmp_path / "em", expected, (8, 4, 4), (24, 20, -28))


def test_writer_labels_every_level_is_the_mode_ties_to_smallest(make_napari_viewer,
                                                                tmp_path):
    viewer = make_napari_viewer()
    # Blocks of 3 x 5 x 6 voxels: most 2x2x2 windows straddle blocks (ties).
    data = label_volume((1, 131, 141, 151), "uint32", n_labels=40, seed=5)[0]
    layer = viewer.add_labels(data, name="seg")
    assert layer.save(str(tmp_path / "seg"), plugin=PLUGIN) == [str(tmp_path / "seg")]

    info = written_info(tmp_path / "seg")
    assert info["type"] == "segmentation" and info["data_type"] == "uint32"
    assert [s["size"] for s in info["scales"]] == [[151, 141, 131], [76, 71, 66],
                                                   [38, 36, 33]]
    assert all(s["encoding"] == "compressed_segmentation" for s in info["scales"])
    assert all(s["voxel_offset"] == [0, 0, 0] for s in info["scales"])

    expected, stats = reference_pyramid(data[np.newaxis], info, "mode")
    assert all(s["ties"] > 100 for s in stats), stats
    _, reopened = check_every_level(viewer, tmp_path / "seg", expected, (1, 1, 1), (0, 0, 0))
    assert type(reopened).__name__ == "Labels"


# --------------------------------------------------------------------------
# 2. The export panel


def test_panel_jpeg_export_of_uint8_image(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    data = smooth_volume((1, 131, 140, 150), "uint8", seed=7)[0]
    layer = viewer.add_image(data, name="em", translate=(3, -10, 5))
    widget = make_panel(viewer, layer, tmp_path / "em")
    assert widget.encoding.choices == ("raw", "jpeg", "png", "compressed_segmentation")
    widget.encoding.value = "jpeg"
    assert widget.jpeg_quality.value == 95 and widget.method.value == "mean"
    run_panel_export(qtbot, widget)

    info = written_info(tmp_path / "em")
    assert info["data_type"] == "uint8" and len(info["scales"]) == 3
    assert all(s["encoding"] == "jpeg" and s["jpeg_quality"] == 95 for s in info["scales"])
    assert info["scales"][0]["voxel_offset"] == [5, -10, 3]
    # The pyramid is computed from the exact values (before JPEG), so every
    # stored level is the reference mean up to the JPEG error.
    expected, _ = reference_pyramid(data[np.newaxis], info, "mean")
    got = tensorstore_levels(tmp_path / "em", info)    # every level opens and reads
    for index, (level, want) in enumerate(zip(got, expected)):
        error = np.abs(level.astype(int) - want.astype(int))
        assert error.mean() < JPEG_MEAN_ERR and error.max() <= JPEG_MAX_ERR, (
            index, error.mean(), error.max())
    _, levels = reader_levels(viewer, tmp_path / "em")
    assert len(levels) == 3
    # Two JPEG decoders, same bytes: at most a rounding step apart.
    for ours, theirs in zip(levels, got):
        assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 2


def test_panel_compressed_segmentation_with_stride(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    data = label_volume((1, 75, 133, 145), "uint64", n_labels=60, seed=11)[0]
    # Voxel offset (x, y, z) = (-3, 11, 7): the first window along each axis is partial.
    layer = viewer.add_labels(data, name="seg", scale=(2, 2, 2), translate=(14, 22, -6))
    widget = make_panel(viewer, layer, tmp_path / "seg")
    assert widget.encoding.value == "compressed_segmentation"
    assert widget.method.choices == ("mode", "stride")
    widget.method.value = "stride"
    run_panel_export(qtbot, widget)

    info = written_info(tmp_path / "seg")
    assert info["type"] == "segmentation" and info["data_type"] == "uint64"
    assert [s["voxel_offset"] for s in info["scales"]] == [[-3, 11, 7], [-2, 5, 3],
                                                           [-1, 2, 1]]
    assert all(s["encoding"] == "compressed_segmentation"
               and s["compressed_segmentation_block_size"] == [8, 8, 8]
               for s in info["scales"])
    expected, _ = reference_pyramid(data[np.newaxis], info, "stride")
    # Stride differs from the mode here: the method chosen in the panel was used.
    mode_level1, _, _ = reference_level(data[np.newaxis], [-3, 11, 7], [2, 2, 2], "mode")
    assert not np.array_equal(expected[1], mode_level1)
    check_every_level(viewer, tmp_path / "seg", expected, (2, 2, 2), (14, 22, -6))


def test_panel_bool_labels(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(2)
    # Noisy blobs: many windows hold as many True as False voxels (ties -> False).
    zz, yy, xx = np.meshgrid(*(np.arange(n) for n in (37, 70, 83)), indexing="ij")
    mask = (np.sin(xx / 4) + np.cos(yy / 5) + np.sin(zz / 3)
            + rng.normal(0, 0.6, xx.shape)) > 0.5
    layer = viewer.add_labels(mask, name="mask")
    # napari keeps bool labels as a uint8 view; the panel sees uint8 labels.
    assert layer.data.dtype == np.uint8
    widget = make_panel(viewer, layer, tmp_path / "mask")
    assert widget.encoding.choices == ("compressed_segmentation", "raw")
    assert widget.method.value == "mode"
    widget.chunk_size.value = (32, 32, 16)
    run_panel_export(qtbot, widget)

    info = written_info(tmp_path / "mask")
    # compressed_segmentation stores 32 or 64 bits: the 0/1 values as uint32.
    assert info["type"] == "segmentation" and info["data_type"] == "uint32"
    assert [s["size"] for s in info["scales"]] == [[83, 70, 37], [42, 35, 19],
                                                   [21, 18, 10]]
    level0 = mask.astype(np.uint32)[np.newaxis]
    expected, stats = reference_pyramid(level0, info, "mode")
    assert stats[0]["ties"] > 0 and set(np.unique(expected[-1])) == {0, 1}
    check_every_level(viewer, tmp_path / "mask", expected, (1, 1, 1), (0, 0, 0))


# --------------------------------------------------------------------------
# 3. Dask and multiscale layers


@pytest.mark.parametrize("kind", ["image", "labels"])
def test_writer_dask_layer(make_napari_viewer, tmp_path, kind):
    da = pytest.importorskip("dask.array")
    viewer = make_napari_viewer()
    shape = (1, 70, 131, 145)
    numpy_data = (smooth_volume(shape, "uint16", seed=13) if kind == "image"
                  else label_volume(shape, "uint32", seed=13))[0]
    # Blocks that do not line up with the 64^3 chunks: the export rechunks.
    data = da.from_array(numpy_data, chunks=(30, 50, 70))
    add = viewer.add_image if kind == "image" else viewer.add_labels
    layer = add(data, name=kind, translate=(-5, 9, 17))
    assert isinstance(layer.data, da.Array)
    layer.save(str(tmp_path / kind), plugin=PLUGIN)

    info = written_info(tmp_path / kind)
    assert info["scales"][0]["voxel_offset"] == [17, 9, -5]
    assert len(info["scales"]) == 3
    method = "mean" if kind == "image" else "mode"
    expected, _ = reference_pyramid(numpy_data[np.newaxis], info, method)
    check_every_level(viewer, tmp_path / kind, expected, (1, 1, 1), (-5, 9, 17))


def test_writer_multiscale_image_exports_level0_and_a_new_pyramid(make_napari_viewer,
                                                                  tmp_path):
    """``volume_for_layer``: "multiscale layers are exported from their finest
    level (the pyramid is computed again, for the chosen downsampling method)".
    The layer's own coarse levels are deliberately not a mean of level 0, and
    there are fewer of them than the automatic pyramid has."""
    viewer = make_napari_viewer()
    level0 = smooth_volume((1, 70, 101, 131), "uint16", seed=17)[0]
    given1 = (level0[::2, ::2, ::2] // 2).copy()           # neither mean nor stride
    layer = viewer.add_image([level0, given1], multiscale=True, name="ms",
                             scale=(4, 4, 4), translate=(8, -12, 20))
    assert layer.multiscale
    layer.save(str(tmp_path / "ms"), plugin=PLUGIN)

    info = written_info(tmp_path / "ms")
    assert info["scales"][0]["size"] == [131, 101, 70]
    assert info["scales"][0]["voxel_offset"] == [5, -3, 2]
    assert [s["size"] for s in info["scales"]] == [[131, 101, 70], [66, 51, 35],
                                                   [33, 26, 18]]
    expected, _ = reference_pyramid(level0[np.newaxis], info, "mean")
    assert not np.array_equal(expected[1], given1[np.newaxis])
    check_every_level(viewer, tmp_path / "ms", expected, (4, 4, 4), (8, -12, 20))
