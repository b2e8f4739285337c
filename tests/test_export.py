"""Exporting layers: npe2 writers, the export panel, pyramids, cancel and repair."""

import os
import time
import warnings
from unittest import mock
from fractions import Fraction

import numpy as np
import pytest
from conftest import label_volume, smooth_volume

from napari_precomputed.accessor import get_accessor_for_url
from napari_precomputed.downsample import downsample_mean, downsample_mode
from napari_precomputed.export import iter_export, make_info
from napari_precomputed.precomputed_io import get_IO_for_existing_dataset
from napari_precomputed.volume import read_region, scale_bounds

PLUGIN = "napari-precomputed"


def read_scales(path):
    io = get_IO_for_existing_dataset(get_accessor_for_url(str(path)))
    return io.info, [read_region(io, s["key"], *scale_bounds(s)) for s in io.info["scales"]]


def expected_pyramid(volume, info, method):
    """Each level from the previous one, windows at absolute multiples of the factor."""
    levels = [volume]
    for previous, scale in zip(info["scales"], info["scales"][1:]):
        factors = [int(round(r / p)) for r, p in zip(scale["resolution"],
                                                     previous["resolution"])]
        front = [o % f for o, f in zip(previous["voxel_offset"], factors)]
        levels.append({"mean": downsample_mean, "mode": downsample_mode}[method](
            levels[-1], factors[::-1], front[::-1]))
    return levels


def _tiny_reference_mean(block, factors):
    """Independent, loop-based mean (rounded half to even) for checking downsample_mean."""
    c, z, y, x = block.shape
    fz, fy, fx = factors
    out = np.zeros((c, -(-z // fz), -(-y // fy), -(-x // fx)))
    for index in np.ndindex(out.shape):
        ch, k, j, i = index
        window = block[ch, k * fz:(k + 1) * fz, j * fy:(j + 1) * fy, i * fx:(i + 1) * fx]
        out[index] = np.rint(window.mean())
    return out.astype(block.dtype)


def test_downsample_mean_matches_a_loop():
    volume = smooth_volume((2, 5, 7, 9), "uint16")
    np.testing.assert_array_equal(downsample_mean(volume, (2, 2, 2)),
                                  _tiny_reference_mean(volume, (2, 2, 2)))


@pytest.mark.parametrize("dtype", ["uint64", "int64"])
def test_downsample_mean_of_64_bit_integers_is_exact(dtype):
    # float64 holds integers up to 2**53 only, and 2**64 - 1 rounds to 2**64.
    limits = np.iinfo(dtype)
    rng = np.random.default_rng(0)
    block = rng.integers(limits.min, limits.max, size=(2, 3, 5, 4), dtype=dtype,
                         endpoint=True)
    # With front (1, 0, 1), window (0, 0, 0) holds z 0, y 0-1, x 0, and
    # window (0, 0, 1) holds z 0, y 0-1, x 1-2.
    block[0, 0, :2, 0] = limits.max
    block[1, 0, :2, 0] = limits.min
    block[0, 0, :2, 1:3] = 2**53 + 1
    front = (1, 0, 1)
    got = downsample_mean(block, (2, 2, 2), front)
    for index in np.ndindex(got.shape):
        c, k, j, i = index
        window = block[c, max(0, 2 * k - 1):2 * k + 1, 2 * j:2 * j + 2,
                       max(0, 2 * i - 1):2 * i + 1]
        values = [int(v) for v in window.ravel()]
        # Python's round of an exact fraction: nearest, ties to even.
        assert int(got[index]) == round(Fraction(sum(values), len(values))), index
    assert got[0, 0, 0, 0] == limits.max and got[1, 0, 0, 0] == limits.min
    assert got[0, 0, 0, 1] == 2**53 + 1


def test_automatic_levels_stop_where_halving_changes_nothing():
    # Windows never straddle 0: an axis spanning voxels -1 and 0 ends at two
    # voxels, so a chunk size of 1 there was never reached (make_info hung).
    info = make_info((1, 10, 16, 16), np.uint8, voxel_offset=(0, 0, -3), chunk_size=(16, 16, 1))
    assert [(s["voxel_offset"][2], s["size"][2]) for s in info["scales"]] == [
        (-3, 10), (-2, 6), (-1, 3), (-1, 2)]
    info = make_info((1, 2, 16, 16), np.uint8, voxel_offset=(0, 0, 1), chunk_size=(16, 16, 1))
    assert [(s["voxel_offset"][2], s["size"][2]) for s in info["scales"]] == [
        (1, 2), (0, 2), (0, 1)]


def test_layer_writers(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    image = smooth_volume((1, 12, 40, 50), "uint16")[0]
    labels = label_volume((1, 12, 40, 50), "uint32")[0]
    viewer.add_image(image, name="em", scale=(40, 4, 4), translate=(80, -8, 12))
    viewer.add_labels(labels, name="seg", scale=(40, 4, 4))
    viewer.layers["em"].save(str(tmp_path / "em"), plugin=PLUGIN)
    viewer.layers["seg"].save(str(tmp_path / "seg"), plugin=PLUGIN)

    info, levels = read_scales(tmp_path / "em")
    assert info["type"] == "image" and info["data_type"] == "uint16"
    scale0 = info["scales"][0]
    assert scale0["resolution"] == [4, 4, 40] and scale0["voxel_offset"] == [3, -2, 2]
    assert scale0["encoding"] == "raw" and scale0["chunk_sizes"] == [[50, 40, 12]]
    for got, expected in zip(levels, expected_pyramid(image[None], info, "mean")):
        np.testing.assert_array_equal(got, expected)

    info, levels = read_scales(tmp_path / "seg")
    assert info["type"] == "segmentation" and info["data_type"] == "uint32"
    assert info["scales"][0]["encoding"] == "compressed_segmentation"
    for got, expected in zip(levels, expected_pyramid(labels[None], info, "mode")):
        np.testing.assert_array_equal(got, expected)

    (reopened,) = viewer.open(str(tmp_path / "seg"), plugin=PLUGIN)
    assert not reopened.multiscale  # 50 x 40 x 12 fits in one 64^3 chunk: one scale
    np.testing.assert_array_equal(np.asarray(reopened.data), labels)


def test_writer_does_not_replace_an_existing_dataset(make_napari_viewer, tmp_path):
    from napari_precomputed._writer import ExportRefusedError

    viewer = make_napari_viewer()
    layer = viewer.add_image(smooth_volume((1, 4, 8, 8), "uint8")[0])
    layer.save(str(tmp_path / "ds"), plugin=PLUGIN)
    before = (tmp_path / "ds" / "info").read_bytes()
    with pytest.raises(ExportRefusedError, match="holds a dataset already"):
        layer.save(str(tmp_path / "ds"), plugin=PLUGIN)
    assert (tmp_path / "ds" / "info").read_bytes() == before


@pytest.mark.parametrize("ndim, expected_shape", [(2, (1, 1, 30, 40))])
def test_2d_layer_is_one_slice_and_4d_is_refused(tmp_path, ndim, expected_shape):
    from napari_precomputed._layer_export import info_for_layer

    volume, info = info_for_layer(np.zeros((30, 40), np.uint8), {"scale": (2, 3)}, "image")
    assert volume.shape == expected_shape
    assert info["scales"][0]["resolution"] == [3, 2, 1]
    # napari 0.9 has Split Stack in the layer list's context menu only.
    with pytest.raises(ValueError, match="in the layer list > Split Stack"):
        info_for_layer(np.zeros((2, 3, 4, 5), np.uint8), {}, "image")
    rgb, info = info_for_layer(np.zeros((6, 7, 3), np.uint8), {"rgb": True}, "image")
    assert rgb.shape == (3, 1, 6, 7) and info["num_channels"] == 3


def test_lossy_conversions_are_refused(tmp_path):
    data = np.array([[[-1, 2], [3, 4]]], dtype=np.int64)[None]
    info = make_info(data.shape, data.dtype, type_="segmentation")
    with pytest.raises(ValueError, match="values from -1 to 4, which uint64 cannot hold"):
        for _ in iter_export(data, str(tmp_path / "neg"), info):
            pass
    assert not (tmp_path / "neg").exists()  # NumPy data is checked before writing
    with pytest.raises(ValueError, match="values from -1 to 4"):
        for _ in iter_export(data, str(tmp_path / "sync"), info, scheduler="synchronous"):
            pass
    assert not (tmp_path / "sync").exists()  # whatever the scheduler
    ok = np.array([[[1, 2], [3, 2**40]]], dtype=np.int64)[None]
    for _ in iter_export(ok, str(tmp_path / "ok"), info):
        pass
    np.testing.assert_array_equal(read_scales(tmp_path / "ok")[1][0], ok)


def test_infos_with_several_chunk_sizes_are_refused_before_writing(tmp_path):
    data = np.zeros((1, 4, 4, 4), np.uint8)
    info = make_info(data.shape, data.dtype)
    info["scales"][0]["chunk_sizes"].append([2, 2, 2])
    with pytest.raises(ValueError, match="one chunk size per scale"):
        next(iter_export(data, str(tmp_path / "two"), info))
    assert not (tmp_path / "two").exists()


def test_dask_source_larger_chunks_and_jpeg_bound(tmp_path):
    da = pytest.importorskip("dask.array")
    volume = smooth_volume((1, 30, 70, 90), "uint8")
    source = da.from_array(volume, chunks=(1, 7, 33, 50))
    info = make_info(volume.shape, volume.dtype, encoding="jpeg", chunk_size=(32, 32, 16),
                     jpeg_quality=95)
    for _ in iter_export(source, str(tmp_path / "jpeg"), info):
        pass
    got = read_scales(tmp_path / "jpeg")[1][0].astype(int)
    assert np.abs(got - volume).mean() < 2 and np.abs(got - volume).max() <= 24


@pytest.mark.parametrize("method", ["mean", "mode"])
def test_coarse_scales_match_tensorstore_downsampling(tmp_path, method):
    """Odd offsets: every scale must line up with TensorStore's own downsampling."""
    ts = pytest.importorskip("tensorstore")
    volume = (label_volume((1, 9, 37, 45), "uint32", n_labels=6) if method == "mode"
              else smooth_volume((1, 9, 37, 45), "uint16"))
    type_ = "segmentation" if method == "mode" else "image"
    info = make_info(volume.shape, volume.dtype, type_=type_, encoding="raw",
                     voxel_offset=(-7, 5, 3), resolution=(4, 4, 4), chunk_size=(8, 8, 4))
    for _ in iter_export(volume, str(tmp_path / "ds"), info, method=method):
        pass
    spec = {"driver": "neuroglancer_precomputed",
            "kvstore": {"driver": "file", "path": str(tmp_path / "ds")}}
    base = ts.open(dict(spec, scale_index=0)).result()
    for index, scale in enumerate(info["scales"][1:], start=1):
        factor = 2 ** index
        reference = ts.downsample(base, [factor, factor, factor, 1], method=method)
        level = ts.open(dict(spec, scale_index=index)).result()
        assert list(reference.domain.inclusive_min[:3]) == scale["voxel_offset"]
        assert list(level.domain.shape[:3]) == list(reference.domain.shape[:3])
        if index == 1:  # further down, TensorStore takes one big window, we go 2x at a time
            np.testing.assert_array_equal(level.read().result(), reference.read().result())


def test_tensorstore_reads_the_export(tmp_path):
    ts = pytest.importorskip("tensorstore")
    labels = label_volume((1, 20, 40, 50), "uint64")
    info = make_info(labels.shape, labels.dtype, type_="segmentation",
                     voxel_offset=(-5, 7, 0), chunk_size=(16, 16, 8))
    for _ in iter_export(labels, str(tmp_path / "seg"), info):
        pass
    levels = expected_pyramid(labels, info, "mode")
    for index, expected in enumerate(levels):
        store = ts.open({"driver": "neuroglancer_precomputed",
                         "kvstore": {"driver": "file", "path": str(tmp_path / "seg")},
                         "scale_index": index}).result()
        got = store.read().result()[..., 0].transpose(2, 1, 0)
        np.testing.assert_array_equal(got, expected[0])


def test_cancel_leaves_complete_chunks_and_overwrite_repairs(tmp_path):
    # Big enough (600 chunks) to be still writing when the second progress
    # report (20 ms after the first) comes.
    volume = smooth_volume((1, 64, 128, 128), "uint16")
    info = make_info(volume.shape, volume.dtype, chunk_size=(16, 16, 8))
    steps = iter_export(volume, str(tmp_path / "ds"), info)
    for done, total in steps:
        if done >= 5:
            break
    steps.close()
    io = get_IO_for_existing_dataset(get_accessor_for_url(str(tmp_path / "ds")))
    written = [p for p in (tmp_path / "ds").rglob("*") if p.is_file() and p.name != "info"]
    assert 5 <= len(written) < total
    assert not [p for p in written if p.name.startswith(".")]  # no temporary files left
    for path in written:
        key = path.parent.name
        coords = [int(v) for part in path.name.split("_") for v in _split_range(part)]
        assert io.read_chunk(key, coords).shape[0] == 1
    for _ in iter_export(volume, str(tmp_path / "ds"), info, overwrite=True):
        pass
    np.testing.assert_array_equal(read_scales(tmp_path / "ds")[1][0], volume)


def _split_range(text):
    start, _, stop = text.partition("-") if not text.startswith("-") else (
        "-" + text[1:].partition("-")[0], "-", text[1:].partition("-")[2])
    return int(start), int(stop)


def _shown(widget):
    # .visible is False for every widget of a panel whose window is not shown.
    return not widget.native.isHidden()


def _wait_for(qtbot, widget, worker, timeout=60_000):
    """Wait until the panel has handled the end of ``worker``'s export.

    Not ``waitSignal(worker.finished)``: connected after the worker started,
    it misses an export that ends at once (a refusal), since a queued signal
    reaches only the slots connected when it was emitted.
    """
    assert worker is not None, widget.status.value
    qtbot.waitUntil(lambda: not widget.cancel_button.enabled, timeout=timeout)


def test_export_widget(make_napari_viewer, qtbot, tmp_path):
    from napari_precomputed._widget import ExportWidget

    viewer = make_napari_viewer()
    labels = label_volume((1, 12, 40, 50), "uint64")[0]
    viewer.add_image(smooth_volume((1, 12, 40, 50), "float32")[0], name="em")
    viewer.add_labels(labels, name="seg", scale=(40, 8, 8))
    widget = ExportWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.layer.value = viewer.layers["seg"]
    assert widget.encoding.choices == ("compressed_segmentation", "raw")
    assert _shown(widget.block_size) and not _shown(widget.jpeg_quality)
    assert widget.method.choices == ("mode", "stride")
    widget.output.value = str(tmp_path / "seg")
    widget.block_size.value = (4, 4, 4)
    widget.chunk_size.value = (16, 16, 8)
    worker = widget.start_export()
    _wait_for(qtbot, widget, worker)
    assert widget.status.value.startswith("Exported to")
    assert widget.progress.value == widget.progress.max
    info, levels = read_scales(tmp_path / "seg")
    assert info["scales"][0]["compressed_segmentation_block_size"] == [4, 4, 4]
    np.testing.assert_array_equal(levels[0][0], labels)
    assert _shown(widget.open_button)
    (layer,) = widget.open_result()
    assert layer.name.startswith("seg")  # napari numbers the duplicate name

    # The same folder again: explained in the panel, nothing started.
    assert any("already holds a dataset" in p for p in widget.problems()), widget.problems()
    assert not widget.export_button.enabled

    widget.layer.value = viewer.layers["em"]
    assert widget.encoding.choices == ("raw",)   # float32: only raw keeps the values
    assert widget.method.choices == ("mean", "stride")


def test_export_widget_pyramid_levels_say_what_automatic_makes(make_napari_viewer, qtbot,
                                                               tmp_path):
    from napari_precomputed._widget import ExportWidget

    viewer = make_napari_viewer()
    # x 50, y 40, z 12 voxels of 8 x 8 x 40 nm, chunks of 16 x 16 x 8: x and y are
    # halved twice before z, then all three once, and the last scale fits a chunk.
    viewer.add_labels(label_volume((1, 12, 40, 50), "uint32")[0], name="seg",
                      scale=(40, 8, 8))
    widget = ExportWidget(viewer)
    widget.chunk_size.value = (16, 16, 8)
    assert widget.levels.native.itemText(0) == "automatic (4 scales, down to one chunk)"
    assert widget.levels.value is None
    # Explicit counts go on until every axis is one voxel: 7x5x6, 4x3x3, 2x2x2, 1x1x1.
    assert widget.levels.choices == (None, 1, 2, 3, 4, 5, 6, 7)

    widget.levels.value = 6
    widget.chunk_size.value = (64, 64, 64)
    assert widget.levels.native.itemText(0) == "automatic (1 scale, down to one chunk)"
    assert widget.levels.value == 6  # still offered, so kept

    widget.levels.value = 2
    widget.output.value = str(tmp_path / "seg")
    _wait_for(qtbot, widget, widget.start_export())
    info, _ = read_scales(tmp_path / "seg")
    assert [s["size"] for s in info["scales"]] == [[50, 40, 12], [25, 20, 12]]


def test_export_widget_jpeg_options_and_cancel(make_napari_viewer, qtbot, tmp_path):
    from napari_precomputed._widget import ExportWidget

    viewer = make_napari_viewer()
    viewer.add_image(smooth_volume((1, 64, 128, 128), "uint8")[0], name="em")
    widget = ExportWidget(viewer)
    widget.layer.value = viewer.layers["em"]
    widget.encoding.value = "jpeg"
    assert _shown(widget.jpeg_quality) and _shown(widget.jpeg_plane)
    assert not _shown(widget.block_size)
    widget.chunk_size.value = (8, 8, 8)
    widget.output.value = str(tmp_path / "em")
    worker = widget.start_export()
    qtbot.waitUntil(lambda: widget.progress.value >= 3, timeout=30_000)
    widget.cancel_export()
    _wait_for(qtbot, widget, worker)
    assert widget.status.value.startswith("Export cancelled")
    io = get_IO_for_existing_dataset(get_accessor_for_url(str(tmp_path / "em")))
    files = [p for p in (tmp_path / "em").rglob("*") if p.is_file() and p.name != "info"]
    assert 0 < len(files) < widget.progress.max
    for path in files:
        coords = [v for part in path.name.split("_") for v in _split_range(part)]
        io.read_chunk(path.parent.name, coords)
    assert os.path.exists(tmp_path / "em" / "info")


def test_export_widget_explains_a_jpeg_chunk_too_tall(make_napari_viewer, tmp_path):
    from napari_precomputed._widget import ExportWidget

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((300, 300, 8), np.uint8), name="tall")
    widget = ExportWidget(viewer)
    widget.output.value = str(tmp_path / "tall")
    widget.encoding.value = "jpeg"
    widget.chunk_size.value = (8, 512, 512)
    assert any("JPEG allows 65500" in p for p in widget.problems())
    assert not widget.export_button.enabled
    assert widget.start_export() is None and not (tmp_path / "tall").exists()


def test_writers_are_listed_in_the_save_dialog(make_napari_viewer):
    from napari.plugins._npe2 import file_extensions_string_for_layers

    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros((4, 4), np.uint8))
    labels = viewer.add_labels(np.zeros((4, 4), np.uint8))
    assert "Neuroglancer precomputed image" in file_extensions_string_for_layers([image])[0]
    assert ("Neuroglancer precomputed segmentation"
            in file_extensions_string_for_layers([labels])[0])


def test_export_widget_never_carries_consent_or_settings_over(make_napari_viewer, tmp_path,
                                                             monkeypatch):
    from napari_precomputed._widget import ExportWidget

    monkeypatch.setenv("HOME", str(tmp_path))
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((4, 8, 8), np.uint8), name="a")
    viewer.add_image(np.zeros((4, 8, 8), np.uint8), name="b")
    widget = ExportWidget(viewer)
    widget.layer.value = viewer.layers["a"]
    assert widget.output.value.name == "a"            # automatic folder follows the layer
    assert widget.output.choose_btn.text == "Browse…"  # not "Select file": it is a folder
    widget.encoding.value = "jpeg"
    widget.overwrite.value = True
    widget.layer.value = viewer.layers["b"]
    assert widget.output.value.name == "b" and not widget.overwrite.value
    widget.encoding.value = "png"
    widget.method.value = "stride"
    viewer.add_points()                               # unrelated layer: settings stay
    assert (widget.encoding.value, widget.method.value) == ("png", "stride")
    widget.encoding.value = "jpeg"
    widget.jpeg_plane.value = "xz"
    widget.chunk_size.value = (4096, 32, 4)
    assert widget.problems() == []                    # clipped to 8 x 8 x 4
    viewer.add_image(np.zeros((4, 300, 300), np.uint8), name="wide")
    widget.layer.value = viewer.layers["wide"]
    widget.encoding.value = "jpeg"
    widget.jpeg_plane.value = "xz"
    widget.chunk_size.value = (300, 300, 4)
    assert any("90000x4 JPEG image" in p for p in widget.problems())


def test_float64_image_is_exported_as_float32(tmp_path):
    volume = np.random.default_rng(0).normal(size=(1, 4, 10, 12))
    info = make_info(volume.shape, volume.dtype)
    assert info["data_type"] == "float32"
    for _ in iter_export(volume, str(tmp_path / "f"), info):
        pass
    np.testing.assert_array_equal(read_scales(tmp_path / "f")[1][0], volume.astype(np.float32))
    too_big = np.full((1, 2, 2, 2), 1e300)
    with pytest.raises(ValueError, match="float32"):
        for _ in iter_export(too_big, str(tmp_path / "big"), make_info(too_big.shape,
                                                                        too_big.dtype)):
            pass


def test_writers_refusals_reach_the_caller(make_napari_viewer, tmp_path):
    # napari drops a writer's ValueError as "not my file type": layer.save
    # returned [] with no reason. Refusals must say why.
    from napari_precomputed._writer import ExportRefusedError, write_image

    viewer = make_napari_viewer()
    stack = viewer.add_image(np.zeros((2, 3, 4, 5), np.uint8), name="stack")
    with pytest.raises(ExportRefusedError, match="Split"):
        stack.save(str(tmp_path / "stack"), plugin=PLUGIN)
    labels = np.zeros((4, 8, 8), np.int64)
    labels[0, 0, 0] = -1
    seg = viewer.add_labels(labels, name="seg")
    with pytest.raises(ExportRefusedError, match="from -1 to 0"):
        seg.save(str(tmp_path / "seg"), plugin=PLUGIN)
    flipped = viewer.add_image(np.zeros((4, 8, 8), np.uint8), scale=(1, -1, 1))
    with pytest.raises(ExportRefusedError, match=r"scale \(1, -1, 1\) flips an axis"):
        flipped.save(str(tmp_path / "flipped"), plugin=PLUGIN)
    # (napari's own sliders overflow on a layer this far away: no viewer here.)
    with pytest.raises(ExportRefusedError, match="voxel_offset"):
        write_image(str(tmp_path / "far"), np.zeros((4, 8, 8), np.uint8),
                    {"translate": (0, 0, 1e30)})
    with pytest.raises(ExportRefusedError, match="empty"):
        write_image(str(tmp_path / "empty"), np.zeros((0, 4, 4), np.uint8), {})
    assert sorted(os.listdir(tmp_path)) == []  # nothing written, not even an info
    rotated = viewer.add_image(np.zeros((4, 8, 8), np.uint8), rotate=30)
    # napari's File > Save dialog records a save's warnings and drops them when
    # it succeeds: with napari showing notifications, the writer notifies.
    from napari.utils.notifications import notification_manager

    seen = len(notification_manager.records)
    with warnings.catch_warnings(record=True):
        assert rotated.save(str(tmp_path / "rotated"), plugin=PLUGIN)
    assert any("rotation is not exported" in str(n.message)
               for n in notification_manager.records[seen:])
    # Without napari's notifications (a script), it is a Python warning.
    from napari_precomputed._writer import write_image

    from napari.utils.events import EventEmitter

    with mock.patch.object(notification_manager, "notification_ready", EventEmitter()), \
            pytest.warns(UserWarning, match="rotation is not exported"):
        write_image(str(tmp_path / "rotated2"), np.zeros((4, 8, 8), np.uint8),
                    {"rotate": rotated.rotate})


def test_writers_refuse_a_file_or_a_dataset_and_take_back_a_refused_save(make_napari_viewer,
                                                                         tmp_path):
    import dask.array as da

    from napari_precomputed._writer import ExportRefusedError, write_image, write_labels

    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(ExportRefusedError, match="is a file"):
        write_image(str(tmp_path / "file"), np.zeros((4, 8, 8), np.uint8), {})
    assert write_image(str(tmp_path / "ds"), np.zeros((4, 8, 8), np.uint8), {})
    with pytest.raises(ExportRefusedError, match="holds a dataset already"):
        write_image(str(tmp_path / "ds"), np.ones((4, 8, 8), np.uint8), {})
    assert read_scales(tmp_path / "ds")[1][0].max() == 0  # left as it was

    # A dask layer is checked block by block, after the info and the first
    # chunks are written: a refusal takes them back, so saving again works.
    labels = np.zeros((64, 64, 64), np.int64)
    labels[-1, -1, -1] = -1
    lazy = da.from_array(labels, chunks=32)
    (tmp_path / "empty").mkdir()
    for target in (tmp_path / "new", tmp_path / "empty"):
        with pytest.raises(ExportRefusedError, match="nothing is left there"):
            write_labels(str(target), lazy, {})
    assert not (tmp_path / "new").exists() and os.listdir(tmp_path / "empty") == []
    # Folders the save made on the way are taken back too; a Finder's
    # .DS_Store is not the user's data, and is left where it was.
    (tmp_path / "shown").mkdir()
    for name in (".DS_Store", "Thumbs.db", "desktop.ini", "._notes.txt"):
        (tmp_path / "shown" / name).write_bytes(b"\0")
    for target in (str(tmp_path / "a" / "b" / "new"), str(tmp_path / "c" / "new") + os.sep,
                   str(tmp_path / "shown")):
        with pytest.raises(ExportRefusedError, match="nothing is left there"):
            write_labels(target, lazy, {})
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()
    assert sorted(os.listdir(tmp_path / "shown")) == sorted(
        [".DS_Store", "Thumbs.db", "desktop.ini", "._notes.txt"])
    assert write_image(str(tmp_path / "shown"), np.zeros((4, 8, 8), np.uint8), {})
    # Other files are never mixed with a dataset's (the panel asks instead).
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ExportRefusedError, match="holds other files"):
        write_labels(str(tmp_path / "busy"), da.from_array(labels + 1, chunks=32), {})
    assert os.listdir(tmp_path / "busy") == ["notes.txt"]
    labels[-1, -1, -1] = 7
    assert write_labels(str(tmp_path / "new"), da.from_array(labels, chunks=32), {})
    np.testing.assert_array_equal(read_scales(tmp_path / "new")[1][0][0], labels)


def test_export_widget_failure_is_shown_in_the_panel(make_napari_viewer, qtbot, tmp_path):
    # A failed export must be reported in the panel only: an exception raised
    # again in the Qt event loop would abort a plain PyQt application (and
    # fail this test).
    from napari_precomputed._widget import ExportWidget

    viewer = make_napari_viewer()
    labels = np.zeros((4, 8, 8), np.int64)
    labels[1, 2, 3] = -7
    viewer.add_labels(labels, name="seg")
    widget = ExportWidget(viewer)
    widget.output.value = str(tmp_path / "seg")
    worker = widget.start_export()
    _wait_for(qtbot, widget, worker)
    assert widget.status.value.startswith("Export failed: the data holds values from -7"), \
        widget.status.value
    assert not (tmp_path / "seg").exists()
    assert widget.export_button.enabled and not widget.cancel_button.enabled


def test_export_widget_gzip_and_16_bit_png(make_napari_viewer, tmp_path):
    from napari_precomputed._widget import ExportWidget

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((4, 8, 8, 3), np.uint16), rgb=True, name="rgb16")
    widget = ExportWidget(viewer)
    widget.output.value = str(tmp_path / "out")
    assert widget.encoding.value == "raw" and _shown(widget.gzip)
    widget.gzip.value = True
    assert "TensorStore does not read them" in widget.message.value
    assert widget.export_button.enabled  # a note, not a problem
    widget.encoding.value = "png"
    assert not _shown(widget.gzip)  # PNG is compressed already
    assert any("16-bit PNG with 3 channels" in p for p in widget.problems())
    assert not widget.export_button.enabled


def test_automatic_levels_end_at_one_chunk_with_an_offset(make_napari_viewer):
    from napari_precomputed._widget import ExportWidget

    # A 128^3 volume at offset 1: its coarser scales are a voxel larger than
    # half (windows sit at absolute multiples of 2), so one more level is
    # needed than without the offset.
    info = make_info((1, 128, 128, 128), np.uint8, voxel_offset=(1, 1, 1))
    assert [s["size"] for s in info["scales"]] == [[128] * 3, [65] * 3, [33] * 3]
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((128, 128, 128), np.uint8), translate=(1, 1, 1))
    widget = ExportWidget(viewer)
    assert widget.levels.native.itemText(0) == "automatic (3 scales, down to one chunk)"


def test_export_widget_notes_a_rotation_it_leaves_out(make_napari_viewer, tmp_path):
    from napari_precomputed._widget import ExportWidget

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((4, 8, 8), np.uint8), rotate=45)
    widget = ExportWidget(viewer)
    widget.output.value = str(tmp_path / "out")
    assert "The layer's rotation is not exported" in widget.message.value
    assert widget.export_button.enabled
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    widget.output.value = str(tmp_path / "other")
    widget.output.value = str(tmp_path / "out")
    assert "is not empty: the dataset's files will be added" in widget.message.value


def test_export_runs_on_a_dask_distributed_cluster(tmp_path):
    # Worker processes: the targets are pickled, so progress is counted in
    # this process and the stop flag lives on the cluster's scheduler.
    import threading

    da = pytest.importorskip("dask.array")
    distributed = pytest.importorskip("distributed")

    volume = label_volume((1, 40, 100, 90), "uint32")
    data = da.from_array(volume, chunks=(1, 20, 50, 45))
    info = make_info(volume.shape, volume.dtype, type_="segmentation", chunk_size=(32, 32, 16))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        steps = list(iter_export(data, str(tmp_path / "cluster"), info, scheduler=client.get))
        cancel = threading.Event()
        for done, total in iter_export(data, str(tmp_path / "cancelled"), info,
                                       scheduler=client, cancel=cancel):
            if done >= 3:
                cancel.set()
        # Blocks of many chunks, being written when the export is closed: the
        # workers see the stop, and nothing is written once it has returned.
        ones = da.ones((1, 128, 128, 128), dtype="uint16", chunks=(1, 64, 64, 64))
        small = make_info(ones.shape, ones.dtype, chunk_size=(8, 8, 8))
        steps_closed = iter_export(ones, str(tmp_path / "closed"), small, scheduler=client)
        for written, _ in steps_closed:
            if written:
                steps_closed.close()
        files = sorted((tmp_path / "closed").rglob("*"))
        time.sleep(1)
        assert sorted((tmp_path / "closed").rglob("*")) == files
        assert 1 < len(files) < 4096
    assert steps[0] == (0, steps[-1][1]) and steps[-1] == (steps[-1][1], steps[-1][1])
    assert all(a[0] < b[0] for a, b in zip(steps, steps[1:]))
    for _ in iter_export(volume, str(tmp_path / "threads"), info):
        pass
    got, expected = read_scales(tmp_path / "cluster")[1], read_scales(tmp_path / "threads")[1]
    assert len(got) == len(info["scales"]) > 1
    for level, reference in zip(got, expected):
        np.testing.assert_array_equal(level, reference)
    assert 3 <= done < total
    io = get_IO_for_existing_dataset(get_accessor_for_url(str(tmp_path / "cancelled")))
    written = [p for p in (tmp_path / "cancelled").rglob("*") if p.is_file() and p.name != "info"]
    assert 0 < len(written) < total
    for path in written:
        coords = [v for part in path.name.split("_") for v in _split_range(part)]
        io.read_chunk(path.parent.name, coords)


def _slow_block(block):
    time.sleep(1.0)
    return block


def test_a_cancelled_cluster_export_writes_nothing_more(tmp_path):
    # Blocks still computing their data when the export is cancelled are not
    # interrupted by the cancel: they must find the stop flag set afterwards.
    import threading

    da = pytest.importorskip("dask.array")
    distributed = pytest.importorskip("distributed")

    slow = da.zeros((1, 64, 64, 64), dtype=np.uint8, chunks=(1, 16, 64, 64))
    slow = slow.map_blocks(_slow_block, dtype=np.uint8)
    info = make_info(slow.shape, np.uint8, chunk_size=(64, 64, 16), levels=1)
    cancel = threading.Event()
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        threading.Timer(0.3, cancel.set).start()
        start = time.monotonic()
        steps = list(iter_export(slow, str(tmp_path / "ds"), info, scheduler=client,
                                 cancel=cancel))
        # The cancel reached the workers without waiting for a block to finish.
        assert time.monotonic() - start < 0.9 and steps[-1][0] == 0
        time.sleep(1.5)
    assert [p.name for p in (tmp_path / "ds").rglob("*")] == ["info"]


def test_process_schedulers_are_refused_before_writing(tmp_path):
    import dask.multiprocessing

    import concurrent.futures

    info = make_info((1, 8, 8, 8), np.uint8)
    with concurrent.futures.ProcessPoolExecutor(1) as executor:
        for scheduler in ("processes", dask.multiprocessing.get, executor):
            with pytest.raises(ValueError, match="process-based scheduler .* cannot report"):
                next(iter_export(np.zeros((1, 8, 8, 8), np.uint8), str(tmp_path / "ds"), info,
                                 scheduler=scheduler))
    with concurrent.futures.ThreadPoolExecutor(2) as threads:
        assert list(iter_export(np.ones((1, 8, 8, 8), np.uint8), str(tmp_path / "pool"), info,
                                scheduler=threads))[-1] == (1, 1)
    assert not (tmp_path / "ds").exists()
    assert list(iter_export(np.ones((1, 8, 8, 8), np.uint8), str(tmp_path / "ds"), info,
                            scheduler="synchronous"))[-1] == (1, 1)


@pytest.mark.parametrize("options, message", [
    (dict(voxel_offset=(0.5, 0, 0)), "voxel_offset must be 3 whole numbers"),
    (dict(chunk_size=(4.5, 4, 4)), "chunk_size must be 3 whole numbers"),
    (dict(chunk_size=(4, 4)), "chunk_size must be 3 whole numbers"),
    (dict(levels=0), "levels must be a whole number of at least 1"),
    (dict(levels=2.5), "levels must be a whole number of at least 1"),
    (dict(levels="2"), "levels must be a whole number of at least 1"),
    (dict(levels=True), "levels must be a whole number of at least 1"),
    (dict(voxel_offset=(True, 0, 0)), "voxel_offset must be 3 whole numbers"),
    (dict(encoding="compressed_segmentation", block_size=(4.5, 8, 8)),
     "block_size must be 3 whole numbers"),
    (dict(encoding="jpeg", jpeg_quality=90.7), "jpeg_quality must be a whole number"),
])
def test_make_info_refuses_fractions_instead_of_truncating(options, message):
    from napari_precomputed.errors import InvalidInfoError

    with pytest.raises(InvalidInfoError, match=message):
        make_info((1, 16, 16, 16), np.uint8, **options)
    info = make_info((1, 16, 16, 16), np.uint8, voxel_offset=(2**62 - 20, np.int64(-5), 3.0))
    assert info["scales"][0]["voxel_offset"] == [2**62 - 20, -5, 3]


@pytest.mark.parametrize("layer_type, dtype, expected", [
    ("image", "uint8", ["raw", "jpeg", "png", "compressed_segmentation"]),
    ("image", "uint16", ["raw", "png", "compressed_segmentation"]),
    # 64 bits are narrowed to 32 at most (checked chunk by chunk), never to the
    # 8 or 16 bits of JPEG and PNG, which would fail after Export is clicked.
    ("image", "uint64", ["raw", "compressed_segmentation"]),
    ("image", "int64", ["raw"]),
    ("image", "float64", ["raw"]),
    ("labels", "int64", ["compressed_segmentation", "raw"]),
    ("labels", "float32", ["raw"]),
])
def test_encodings_offered_keep_the_values(layer_type, dtype, expected):
    from napari_precomputed._widget import encodings_for

    assert encodings_for(layer_type, dtype) == expected


def test_export_widget_follows_the_layer_and_pauses_painting(make_napari_viewer, qtbot,
                                                            tmp_path):
    from qtpy.QtCore import Qt

    from napari_precomputed._widget import ExportWidget

    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros((4, 16, 16), np.uint8), name="em")
    widget = ExportWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.encoding.choices == ("raw", "jpeg", "png", "compressed_segmentation")
    widget.encoding.value = "png"
    widget.method.value = "stride"

    # A rename shows in the layer list, and in the folder the panel chose;
    # the options chosen stay.
    image.name = "renamed"
    assert widget.layer.native.currentText() == "renamed"
    assert os.path.basename(widget.output.value) == "renamed"
    assert (widget.encoding.value, widget.method.value) == ("png", "stride")

    # New data or placement: what can be exported is worked out again.
    image.data = np.zeros((4, 16, 16), np.float32)
    assert widget.encoding.choices == ("raw",) and widget.encoding.value == "raw"
    image.translate = (0.5, 0, 0)
    assert any("translate" in p for p in widget.problems()) and not widget.export_button.enabled
    image.translate = (0, 0, 0)
    image.rotate = 30
    assert "rotation is not exported" in widget.message.value

    # A labels layer cannot be painted while the export reads it, and keeps
    # its undo history (napari clears it when a layer stops being editable).
    seg = viewer.add_labels(label_volume((1, 64, 64, 64), "uint32")[0], name="seg")
    widget.layer.value = seg
    widget.output.value = str(tmp_path / "seg")
    widget.chunk_size.value = (8, 8, 8)
    seg.mode = "paint"
    before = seg.data.copy()
    seg.data_setitem((np.array([0]), np.array([0]), np.array([0])), 99)  # undoable
    viewer.layers.selection.active = seg
    controls = viewer.window._qt_viewer.controls.widgets[seg]
    worker = widget.start_export()
    assert seg.mode == "pan_zoom" and "paused" in widget.status.value
    seg.mode = "fill"  # as the layer controls' fill button does
    assert seg.mode == "pan_zoom" and controls.panzoom_button.isChecked()
    seg.mode = "pick"
    # napari's undo ignores `editable`: its key is paused on the layer.
    canvas = viewer.window._qt_viewer.canvas.native
    qtbot.keyClick(canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert widget._edit_pause is not None, "the export ended before the key press"
    assert seg.data[0, 0, 0] == 99
    _wait_for(qtbot, widget, worker)
    assert widget.status.value.startswith("Exported to")
    assert read_scales(tmp_path / "seg")[1][0][0, 0, 0, 0] == 99
    # Another harmless tool chosen meanwhile stays; undo works again.
    assert seg.mode == "pick" and seg.editable
    qtbot.keyClick(canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    np.testing.assert_array_equal(seg.data, before)
    # Without a tool change, the painting tool comes back.
    seg.mode = "erase"
    widget.overwrite.value = True
    _wait_for(qtbot, widget, widget.start_export())
    assert seg.mode == "erase"


def test_labels_edit_pauses_of_one_layer_nest():
    # Two export panels on one layer: the first pause's end must not give
    # painting and undo back while the second export still reads the layer.
    from napari.layers import Labels

    from napari_precomputed._edit_pause import LabelsEditPause

    layer = Labels(np.zeros((4, 8, 8), np.uint8))
    layer.mode = "paint"
    first, second = LabelsEditPause(layer), LabelsEditPause(layer)
    first.end()
    first.end()  # once only
    layer.mode = "fill"
    assert layer.mode == "pan_zoom" and len(layer.keymap) == 2
    second.end()
    assert layer.mode == "paint" and layer.keymap == {}


@pytest.mark.parametrize("closed", ["panel", "viewer"])
def test_closing_the_panel_or_the_viewer_stops_the_export(make_napari_viewer, qtbot, tmp_path,
                                                          closed):
    from napari_precomputed._widget import ExportWidget

    viewer = make_napari_viewer()
    seg = viewer.add_labels(label_volume((1, 128, 128, 128), "uint32")[0], name="seg")
    seg.mode = "paint"
    widget = ExportWidget(viewer)
    dock = viewer.window.add_dock_widget(widget)
    widget.layer.value = seg
    widget.output.value = str(tmp_path / "seg")
    widget.chunk_size.value = (8, 8, 8)
    worker = widget.start_export()
    qtbot.waitUntil(lambda: widget._steps[0] > 0, timeout=20000)
    if closed == "panel":
        # The dock's close button: napari takes the panel out, without deleting it.
        dock.destroyOnClose()
    else:
        viewer.close()
    # The worker ends after the chunks in flight; its last signals do not
    # reach a deleted panel (which would abort the application), and the
    # layer gets its painting tool back.
    qtbot.waitUntil(lambda: not worker.is_running and widget._edit_pause is None,
                    timeout=20000)
    assert seg.mode == "paint"
    chunks = [p for p in (tmp_path / "seg").rglob("*-*_*-*_*-*") if p.is_file()]
    assert 0 < len(chunks) < 4096 + 512 + 64 + 8 + 1
    io = get_IO_for_existing_dataset(get_accessor_for_url(str(tmp_path / "seg")))
    for path in chunks[:50]:
        x, y, z = (tuple(int(v) for v in part.split("-")) for part in path.name.split("_"))
        io.read_chunk(path.parent.name, (*x, *y, *z))
    if closed == "panel":
        done, total = widget._steps
        assert done < total and widget.status.value.startswith("Export cancelled")
