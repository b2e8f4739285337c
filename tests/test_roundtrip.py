"""Every encoding x data type x channel count the format allows survives a round trip.

Volumes are not multiples of the chunk size, so clipped edge chunks are
written and read; voxel offsets are zero, positive and negative.
"""

import numpy as np
import pytest
from conftest import label_volume, smooth_volume

from napari_precomputed.accessor import get_accessor_for_url
from napari_precomputed.info import DATA_TYPES, chunk_name, iter_chunk_coords
from napari_precomputed.precomputed_io import get_IO_for_existing_dataset
from napari_precomputed.volume import read_region, scale_bounds

LOSSLESS = (
    [("raw", dt, c) for dt in DATA_TYPES for c in (1, 3)]
    + [("png", "uint8", c) for c in (1, 2, 3, 4)] + [("png", "uint16", 1)]
    + [("compressed_segmentation", dt, c) for dt in ("uint32", "uint64") for c in (1, 2)]
)
OFFSETS = [(0, 0, 0), (7, 100, 3), (-33, -64, -5)]


def _volume(encoding, data_type, channels, shape=(20, 50, 70)):
    if encoding == "compressed_segmentation":
        return label_volume((channels,) + shape, data_type)
    return smooth_volume((channels,) + shape, data_type)


@pytest.mark.parametrize("offset", OFFSETS, ids=["origin", "positive", "negative"])
@pytest.mark.parametrize("encoding, data_type, channels", LOSSLESS,
                         ids=[f"{e}-{d}-{c}ch" for e, d, c in LOSSLESS])
def test_lossless_round_trip(new_dataset, encoding, data_type, channels, offset):
    volume = _volume(encoding, data_type, channels)
    io, path = new_dataset(volume, encoding=encoding, voxel_offset=offset)
    reopened = get_IO_for_existing_dataset(get_accessor_for_url(str(path)))
    scale = reopened.info["scales"][0]
    names = {chunk_name(c) for c in iter_chunk_coords(scale)}
    assert {p.name for p in (path / "s0").iterdir()} == names  # flat names, no temp files
    for coords in iter_chunk_coords(scale):
        x0, x1, y0, y1, z0, z1 = coords
        chunk = reopened.read_chunk("s0", coords)
        assert chunk.dtype == np.dtype(data_type)
        expected = volume[:, z0 - offset[2]:z1 - offset[2], y0 - offset[1]:y1 - offset[1],
                          x0 - offset[0]:x1 - offset[0]]
        np.testing.assert_array_equal(chunk, expected)
    lo, hi = scale_bounds(scale)
    np.testing.assert_array_equal(read_region(reopened, "s0", lo, hi), volume)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("plane", ["xy", "xz"])
def test_jpeg_round_trip_within_bound(new_dataset, channels, plane, tmp_path):
    volume = smooth_volume((channels, 20, 50, 70), "uint8")
    io, path = new_dataset(volume, encoding="jpeg", voxel_offset=(-5, 3, 2))
    io = get_IO_for_existing_dataset(get_accessor_for_url(str(path)),
                                     encoder_options={"jpeg_plane": plane,
                                                      "jpeg_quality": 95})
    assert io.scale_is_lossy("s0")
    lo, hi = scale_bounds(io.info["scales"][0])
    from napari_precomputed.volume import write_region
    write_region(io, "s0", volume)
    got = read_region(io, "s0", lo, hi).astype(int)
    error = np.abs(got - volume)
    # Quality 95 on smooth data: a few grey levels on average, a bounded worst case.
    assert error.mean() < 2.0
    assert error.max() <= 24


def test_several_chunk_sizes_are_each_complete(tmp_path):
    from napari_precomputed.precomputed_io import get_IO_for_new_dataset

    volume = smooth_volume((1, 9, 20, 30), "uint16")
    info = {"type": "image", "data_type": "uint16", "num_channels": 1, "scales": [
        {"key": "full", "size": [30, 20, 9], "voxel_offset": [1, 2, 3],
         "resolution": [1, 1, 1], "chunk_sizes": [[16, 16, 1], [16, 1, 16], [1, 16, 16]],
         "encoding": "raw"}]}
    io = get_IO_for_new_dataset(info, get_accessor_for_url(str(tmp_path)))
    scale = info["scales"][0]
    for chunk_size in scale["chunk_sizes"]:
        for coords in iter_chunk_coords(scale, chunk_size):
            x0, x1, y0, y1, z0, z1 = coords
            io.write_chunk(volume[:, z0 - 3:z1 - 3, y0 - 2:y1 - 2, x0 - 1:x1 - 1], "full",
                           coords)
    for chunk_size in scale["chunk_sizes"]:
        for coords in iter_chunk_coords(scale, chunk_size):
            assert io.validate_chunk_coords("full", coords)
            x0, x1, y0, y1, z0, z1 = coords
            np.testing.assert_array_equal(
                io.read_chunk("full", coords),
                volume[:, z0 - 3:z1 - 3, y0 - 2:y1 - 2, x0 - 1:x1 - 1])
    assert len(list((tmp_path / "full").iterdir())) == sum(
        len(list(iter_chunk_coords(scale, cs))) for cs in scale["chunk_sizes"])


def test_write_region_fills_every_chunk_size(tmp_path):
    from napari_precomputed.precomputed_io import get_IO_for_new_dataset
    from napari_precomputed.volume import write_region

    volume = smooth_volume((1, 9, 12, 20), "uint16")
    info = {"type": "image", "data_type": "uint16", "num_channels": 1, "scales": [
        {"key": "s", "size": [20, 12, 9], "voxel_offset": [-5, 3, 0],
         "resolution": [1, 1, 1], "chunk_sizes": [[8, 8, 4], [20, 1, 9], [8, 8, 4]],
         "encoding": "raw"}]}
    io = get_IO_for_new_dataset(info, get_accessor_for_url(str(tmp_path)))
    write_region(io, "s", volume)
    scale = info["scales"][0]
    names = {chunk_name(c) for cs in scale["chunk_sizes"] for c in iter_chunk_coords(scale, cs)}
    assert {p.name for p in (tmp_path / "s").iterdir()} == names
    for chunk_size in scale["chunk_sizes"]:
        for coords in iter_chunk_coords(scale, chunk_size):
            x0, x1, y0, y1, z0, z1 = coords
            np.testing.assert_array_equal(
                io.read_chunk("s", coords), volume[:, z0:z1, y0 - 3:y1 - 3, x0 + 5:x1 + 5])


def test_boxes_past_the_end_read_as_zeros(new_dataset):
    volume = smooth_volume((1, 10, 10, 10), "uint8") | 1
    io, _ = new_dataset(volume, chunk_size=(64, 64, 64))
    for lo, hi, shape in [((0, 0, 12), (10, 10, 14), (1, 2, 10, 10)),
                          ((12, 0, 0), (20, 10, 10), (1, 10, 10, 8)),
                          ((0, 0, 3), (10, 10, 3), (1, 0, 10, 10))]:
        out = read_region(io, "s0", lo, hi)
        assert out.shape == shape and not out.any()
    out = read_region(io, "s0", (5, 5, 5), (15, 15, 15))
    np.testing.assert_array_equal(out[:, :5, :5, :5], volume[:, 5:, 5:, 5:])
    assert out.sum() == volume[:, 5:, 5:, 5:].sum()


def test_chunk_larger_than_volume(new_dataset):
    volume = smooth_volume((1, 3, 5, 7), "int16")
    io, path = new_dataset(volume, chunk_size=(64, 64, 64))
    assert [p.name for p in (path / "s0").iterdir()] == ["0-7_0-5_0-3"]
    np.testing.assert_array_equal(io.read_chunk("s0", (0, 7, 0, 5, 0, 3)), volume)


def test_validate_chunk_coords():
    from napari_precomputed.precomputed_io import PrecomputedIO
    from conftest import make_info

    io = PrecomputedIO(make_info(size=(70, 50, 20), voxel_offset=(-10, 0, 5)), None)
    assert io.validate_chunk_coords("s0", (-10, 22, 0, 32, 5, 13))
    assert io.validate_chunk_coords("s0", (54, 60, 32, 50, 21, 25))   # clipped edge
    assert not io.validate_chunk_coords("s0", (54, 86, 32, 50, 21, 25))  # padded edge
    assert not io.validate_chunk_coords("s0", (0, 32, 0, 32, 5, 13))    # off the grid
    assert not io.validate_chunk_coords("s0", (-10, 22, 0, 32))
    assert not io.validate_chunk_coords("other", (-10, 22, 0, 32, 5, 13))
