"""Opening precomputed datasets in a real napari viewer (under Xvfb)."""

import json
import os

import numpy as np
import pytest
from conftest import label_volume, make_info, smooth_volume

from napari_precomputed._reader import get_reader
from napari_precomputed.export import export
from napari_precomputed.file_accessor import FileAccessor
from napari_precomputed.pyramid import pyramid_scales

PLUGIN = "napari-precomputed"


def write_pyramid(path, volume, type_="image", encoding="raw", offset=(0, 0, 0),
                  resolution=(4, 6, 30), chunk=(32, 32, 8), **extra):
    c, z, y, x = volume.shape
    scale0 = {"key": "s0", "size": [x, y, z], "voxel_offset": list(offset),
              "resolution": list(resolution), "chunk_sizes": [list(chunk)],
              "encoding": encoding, **extra}
    info = {"type": type_, "data_type": volume.dtype.name, "num_channels": c,
            "scales": pyramid_scales(scale0)}
    export(volume, str(path), info)
    return info


@pytest.fixture
def image_dataset(tmp_path):
    volume = smooth_volume((1, 20, 50, 70), "uint16")
    info = write_pyramid(tmp_path / "em", volume, offset=(-5, 10, 3))
    return tmp_path / "em", volume, info


def test_get_reader_accepts_folder_info_file_and_url(image_dataset, tmp_path):
    path, _, _ = image_dataset
    for candidate in (str(path), str(path / "info"), f"precomputed://{path}",
                      f"precomputed://file://{path}", [str(path)],
                      "precomputed://https://example.org/never/contacted"):
        assert callable(get_reader(candidate)), candidate


def test_get_reader_declines_other_things(tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "image.tif").write_bytes(b"II*\0")
    (tmp_path / "mesh").mkdir()
    (tmp_path / "mesh" / "info").write_text(json.dumps({"@type": "neuroglancer_legacy_mesh"}))
    (tmp_path / "notjson").mkdir()
    (tmp_path / "notjson" / "info").write_bytes(b"\x00\xff" * 10)
    for candidate in (tmp_path / "plain", tmp_path / "plain" / "image.tif",
                      tmp_path / "mesh", tmp_path / "notjson", tmp_path / "absent",
                      "https://example.org/x", None, 42, [str(tmp_path)] * 2):
        assert get_reader(candidate) is None, candidate


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_get_reader_declines_an_info_that_is_not_a_regular_file(tmp_path):
    # Reading a FIFO named info would block napari's reader discovery forever.
    import threading

    (tmp_path / "fifo").mkdir()
    os.mkfifo(tmp_path / "fifo" / "info")
    answer = []
    probe = threading.Thread(target=lambda: answer.append(get_reader(str(tmp_path / "fifo"))),
                             daemon=True)
    probe.start()
    probe.join(10)
    assert answer == [None]


def test_info_file_has_no_competing_reader(make_napari_viewer, image_dataset):
    from napari.plugins._npe2 import get_readers

    make_napari_viewer()  # plugins are discovered with the first viewer
    path, _, _ = image_dataset
    # One candidate: napari opens it without asking which reader to use.
    assert set(get_readers(str(path / "info"))) == {PLUGIN}


@pytest.mark.parametrize("how", ["folder", "info", "url"])
def test_open_image_in_viewer(make_napari_viewer, image_dataset, how):
    path, volume, info = image_dataset
    target = {"folder": str(path), "info": str(path / "info"),
              "url": f"precomputed://file://{path}"}[how]
    viewer = make_napari_viewer()
    layers = viewer.open(target, plugin=PLUGIN)
    assert len(layers) == 1
    layer = layers[0]
    assert layer.name == "em"
    assert layer.multiscale and len(layer.data) == len(info["scales"])
    np.testing.assert_allclose(layer.scale, [30, 6, 4])
    np.testing.assert_allclose(layer.translate, [3 * 30, 10 * 6, -5 * 4])
    assert tuple(layer.axis_labels) == ("z", "y", "x")
    assert layer.metadata["info"]["scales"][0]["key"] == "s0"
    np.testing.assert_array_equal(np.asarray(layer.data[0][7]), volume[0, 7])
    np.testing.assert_array_equal(layer.data[0][2:9, 5, ::3], volume[0, 2:9, 5, ::3])
    assert layer.data[0].dtype == np.uint16
    viewer.dims.current_step = (3 * 30 + 7 * 30, 60, -20)


def test_3d_view_shows_the_coarsest_level_or_a_locked_one(make_napari_viewer, image_dataset):
    path, volume, info = image_dataset
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(path), plugin=PLUGIN)
    viewer.dims.ndisplay = 3
    assert layer.data_level == len(info["scales"]) - 1
    layer.locked_data_level = 0
    viewer.dims.ndisplay = 2
    viewer.dims.ndisplay = 3
    assert layer.data_level == 0
    np.testing.assert_array_equal(np.asarray(layer.data[0]), volume[0])


def test_segmentation_opens_as_labels(make_napari_viewer, tmp_path):
    volume = label_volume((1, 16, 40, 48), "uint64")
    write_pyramid(tmp_path / "seg", volume, type_="segmentation",
                  encoding="compressed_segmentation",
                  compressed_segmentation_block_size=[8, 8, 8])
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(tmp_path / "seg"), plugin=PLUGIN)
    assert layer._type_string == "labels"
    np.testing.assert_array_equal(np.asarray(layer.data[0][5]), volume[0, 5])


@pytest.mark.parametrize("channels", [1, 2])
def test_a_dataset_3_or_4_voxels_wide_is_not_taken_for_rgb(make_napari_viewer, tmp_path,
                                                          channels):
    # napari guesses RGB from a last axis of 3 or 4 once the others exceed 30.
    volume = smooth_volume((channels, 31, 33, 3 + channels - 1), "uint16")
    write_pyramid(tmp_path / "thin", volume, chunk=(4, 16, 16))
    viewer = make_napari_viewer()
    layers = viewer.open(str(tmp_path / "thin"), plugin=PLUGIN)
    assert len(layers) == channels
    for c, layer in enumerate(layers):
        assert not layer.rgb
        assert layer.ndim == 3
        np.testing.assert_array_equal(np.asarray(layer.data[0][7]), volume[c, 7])


def test_float32_segmentation_opens_as_an_image(make_napari_viewer, tmp_path):
    # Valid per the digest (7.1), but napari's Labels hold only integers.
    volume = smooth_volume((1, 8, 30, 40), "float32")
    write_pyramid(tmp_path / "fseg", volume, type_="segmentation", chunk=(16, 16, 4))
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(tmp_path / "fseg"), plugin=PLUGIN)
    assert layer._type_string == "image"
    np.testing.assert_array_equal(np.asarray(layer.data[0][4]), volume[0, 4])


def test_channels_become_layers(make_napari_viewer, tmp_path):
    volume = smooth_volume((3, 8, 30, 40), "uint8")
    write_pyramid(tmp_path / "rgb", volume, chunk=(16, 16, 4))
    viewer = make_napari_viewer()
    layers = viewer.open(str(tmp_path / "rgb"), plugin=PLUGIN)
    assert [layer.name for layer in layers] == ["rgb [0]", "rgb [1]", "rgb [2]"]
    assert [layer.colormap.name for layer in layers] == ["red", "green", "blue"]
    for c, layer in enumerate(layers):
        np.testing.assert_array_equal(np.asarray(layer.data[0][4]), volume[c, 4])


def test_dataset_written_by_tensorstore(make_napari_viewer, tmp_path):
    ts = pytest.importorskip("tensorstore")
    volume = label_volume((1, 10, 30, 40), "uint32")
    store = ts.open({
        "driver": "neuroglancer_precomputed",
        "kvstore": {"driver": "file", "path": str(tmp_path / "tsds")},
        "multiscale_metadata": {"type": "segmentation", "data_type": "uint32",
                                "num_channels": 1},
        "scale_metadata": {"size": [40, 30, 10], "voxel_offset": [-7, 2, 0],
                           "resolution": [8, 8, 40], "chunk_size": [16, 16, 4],
                           "encoding": "compressed_segmentation",
                           "compressed_segmentation_block_size": [8, 8, 8]},
        "create": True}).result()
    store[..., 0].write(volume[0].transpose(2, 1, 0)).result()
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(tmp_path / "tsds"), plugin=PLUGIN)
    np.testing.assert_allclose(layer.translate, [0, 16, -56])
    assert not layer.multiscale  # TensorStore wrote one scale
    np.testing.assert_array_equal(np.asarray(layer.data), volume[0])


class CountingAccessor(FileAccessor):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.files, self.chunks = [], []

    def fetch_file(self, relative_path):
        self.files.append(relative_path)
        return super().fetch_file(relative_path)

    def fetch_chunk(self, key, chunk_coords):
        self.chunks.append((key, tuple(chunk_coords)))
        return super().fetch_chunk(key, chunk_coords)

    def fetch_chunk_range(self, key, chunk_coords, start, stop):
        self.chunks.append((key, tuple(chunk_coords)))
        return super().fetch_chunk_range(key, chunk_coords, start, stop)


def test_opening_reads_info_only_and_a_plane_reads_its_chunks(tmp_path, monkeypatch):
    from napari_precomputed import _layer_data
    from napari_precomputed.volume import chunk_coords_in_box

    volume = smooth_volume((1, 20, 50, 70), "uint16")
    # png: decoded chunks are cached (raw chunks on local disk are re-read instead)
    info = write_pyramid(tmp_path / "em", volume, offset=(-5, 10, 3), encoding="png")
    accessor = CountingAccessor(tmp_path / "em")
    monkeypatch.setattr(_layer_data, "get_accessor_for_url", lambda url: accessor)
    (data, kwargs, kind), = _layer_data.layer_data_for_url(str(tmp_path / "em"))
    assert accessor.files == ["info"] and accessor.chunks == []
    for level, scale in enumerate(info["scales"]):
        array = data[level]
        z = array.shape[0] // 2
        accessor.chunks.clear()
        plane = array[z]
        (ox, oy, oz) = scale["voxel_offset"]
        expected = chunk_coords_in_box(scale, (ox, oy, oz + z),
                                       (ox + scale["size"][0], oy + scale["size"][1], oz + z + 1))
        assert sorted(accessor.chunks) == sorted((scale["key"], c) for c in expected)
        assert plane.shape == array.shape[1:]
        accessor.chunks.clear()
        array[z]  # cached now
        assert accessor.chunks == []


@pytest.mark.parametrize("encoding", ["raw", "png"])
def test_viewer_reads_only_the_chunks_of_the_plane_it_shows(make_napari_viewer, tmp_path,
                                                            monkeypatch, encoding):
    # napari cuts the tile out of a level with slices over the whole depth
    # and picks the plane afterwards; that must not read the whole depth.
    from napari_precomputed import _layer_data

    volume = smooth_volume((1, 48, 50, 70), "uint16")
    info = write_pyramid(tmp_path / "em", volume, offset=(-5, 10, 3), encoding=encoding)
    accessor = CountingAccessor(tmp_path / "em")
    monkeypatch.setattr(_layer_data, "get_accessor_for_url", lambda url: accessor)
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(tmp_path / "em"), plugin=PLUGIN)
    assert layer.multiscale and len(info["scales"]) > 2
    for level in range(len(info["scales"])):
        layer.locked_data_level = level
        for z in (7, 29, 40):
            accessor.chunks.clear()
            viewer.dims.set_point(0, (3 + z) * 30)
            shown = info["scales"][level]["key"]
            if level == 0:
                assert any(key == shown for key, _ in accessor.chunks)
            for key in {key for key, _ in accessor.chunks}:
                layers = {coords[4:] for k, coords in accessor.chunks if k == key}
                assert len(layers) == 1, (level, z, key, sorted(layers))


def test_missing_chunks_read_as_zeros_or_fail_in_strict_mode(tmp_path):
    from napari_precomputed._layer_data import layer_data_for_url
    from napari_precomputed.errors import ChunkNotFoundError

    volume = smooth_volume((1, 8, 40, 40), "uint8")
    write_pyramid(tmp_path / "em", volume, chunk=(16, 16, 8))
    (tmp_path / "em" / "s0" / "0-16_0-16_0-8").unlink()
    (data, _, _), = layer_data_for_url(str(tmp_path / "em"))
    plane = data[0][3]
    assert not plane[:16, :16].any() and np.array_equal(plane[16:], volume[0, 3, 16:])
    (strict, _, _), = layer_data_for_url(str(tmp_path / "em"), missing="error")
    with pytest.raises(ChunkNotFoundError, match="0-16_0-16_0-8"):
        strict[0][3]


def test_corrupt_chunk_notifies_and_viewer_keeps_working(make_napari_viewer, tmp_path,
                                                         monkeypatch):
    from napari.utils import notifications

    shown = []
    monkeypatch.setattr(notifications, "show_error", shown.append)
    volume = smooth_volume((1, 8, 40, 40), "uint8")
    write_pyramid(tmp_path / "em", volume, chunk=(16, 16, 8))
    (tmp_path / "em" / "s0" / "16-32_0-16_0-8").write_bytes(b"garbage")
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(tmp_path / "em"), plugin=PLUGIN)
    plane = np.asarray(layer.data[0][3])
    assert not plane[:16, 16:32].any()
    assert np.array_equal(plane[16:], volume[0, 3, 16:])
    assert any("16-32_0-16_0-8" in message for message in shown)
    viewer.dims.current_step = (90, 0, 0)


def test_broken_info_is_a_clear_notification(make_napari_viewer, tmp_path, monkeypatch):
    from napari.utils import notifications

    shown = []
    monkeypatch.setattr(notifications, "show_error", shown.append)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "info").write_text(json.dumps(make_info(data_type="int64")))
    viewer = make_napari_viewer()
    assert viewer.open(str(tmp_path / "bad"), plugin=PLUGIN) == []
    assert len(shown) == 1 and "int64" in shown[0] and "bad" in shown[0]
    assert len(viewer.layers) == 0


def test_sample_data(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "synthetic_em")
    assert [layer._type_string for layer in viewer.layers] == ["image", "labels"]
    assert len(viewer.layers[0].data) == 3


def _drop(viewer, path):
    from qtpy.QtCore import QMimeData, QPointF, Qt, QUrl
    from qtpy.QtGui import QDropEvent

    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    event = QDropEvent(QPointF(5, 5), Qt.DropAction.CopyAction, mime,
                       Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier)
    viewer.window._qt_viewer.dropEvent(event)


def test_drag_and_drop_info_file_opens_without_a_dialog(make_napari_viewer, image_dataset):
    path, volume, _ = image_dataset
    viewer = make_napari_viewer()
    _drop(viewer, path / "info")
    assert [layer.name for layer in viewer.layers] == ["em"]
    np.testing.assert_array_equal(np.asarray(viewer.layers[0].data[0][4]), volume[0, 4])


def test_drag_and_drop_folder_with_remembered_reader(make_napari_viewer, image_dataset):
    from napari.settings import get_settings

    path, volume, _ = image_dataset
    viewer = make_napari_viewer()
    # napari's own reader accepts folders too; the choice dialog can remember ours.
    get_settings().plugins.extension2reader = {"*/em/": PLUGIN}
    _drop(viewer, path)
    assert [layer.name for layer in viewer.layers] == ["em"]


def test_unsupported_dataset_is_a_notification(make_napari_viewer, tmp_path, monkeypatch):
    from napari.utils import notifications

    shown = []
    monkeypatch.setattr(notifications, "show_error", shown.append)
    (tmp_path / "rgb16").mkdir()
    info = make_info(data_type="uint16", num_channels=3, encoding="png")
    (tmp_path / "rgb16" / "info").write_text(json.dumps(info))
    viewer = make_napari_viewer()
    assert viewer.open(str(tmp_path / "rgb16"), plugin=PLUGIN) == []
    assert len(shown) == 1 and "16-bit PNG" in shown[0]
