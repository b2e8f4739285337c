"""The chunk grid and file names of the format digest, and info parsing."""

import json

import numpy as np
import pytest

from napari_precomputed.errors import InvalidInfoError
from napari_precomputed.info import (
    chunk_name,
    iter_chunk_coords,
    parse_info,
    resolve_scale_key,
    scale_chunk_grid,
    validate_info,
)
from napari_precomputed.volume import chunk_coords_in_box

# Worked example of section 3.2 of the digest.
EXAMPLE_SCALE = {"key": "s", "size": [1000, 600, 130], "voxel_offset": [100, -20, 0],
                 "resolution": [8, 8, 8], "chunk_sizes": [[64, 64, 64]], "encoding": "raw"}


def test_worked_example_grid_and_names():
    assert scale_chunk_grid(EXAMPLE_SCALE, [64, 64, 64]) == (16, 10, 3)
    coords = list(iter_chunk_coords(EXAMPLE_SCALE))
    assert len(coords) == 480
    assert chunk_name(coords[0]) == "100-164_-20-44_0-64"
    assert chunk_name(coords[-1]) == "1060-1100_556-580_128-130"


def test_worked_example_border_chunk_file_is_stored_clipped(tmp_path):
    from napari_precomputed.accessor import get_accessor_for_url
    from napari_precomputed.precomputed_io import get_IO_for_new_dataset

    info = {"type": "image", "data_type": "uint16", "num_channels": 1,
            "scales": [EXAMPLE_SCALE]}
    io = get_IO_for_new_dataset(info, get_accessor_for_url(str(tmp_path)))
    coords = (1060, 1100, 556, 580, 128, 130)
    io.write_chunk(np.ones((1, 2, 24, 40), np.uint16), "s", coords)
    assert (tmp_path / "s" / "1060-1100_556-580_128-130").stat().st_size == 3840


def test_negative_offset_names_as_tensorstore_writes_them():
    scale = {"size": [4, 2, 2], "voxel_offset": [10, -3, 0], "chunk_sizes": [[4, 2, 2]]}
    assert [chunk_name(c) for c in iter_chunk_coords(scale)] == ["10-14_-3--1_0-2"]


def test_chunks_in_box_touch_exactly_the_intersecting_cells():
    coords = chunk_coords_in_box(EXAMPLE_SCALE, (163, -20, 127), (165, 45, 128))
    assert [chunk_name(c) for c in coords] == [
        "100-164_-20-44_64-128", "164-228_-20-44_64-128",
        "100-164_44-108_64-128", "164-228_44-108_64-128"]
    assert chunk_coords_in_box(EXAMPLE_SCALE, (0, 0, 0), (100, 10, 10)) == []


def test_boxes_past_the_clipped_end_or_empty_touch_no_chunk():
    # The last z chunk spans 128-130; 131-140 lies in its unclipped extent only.
    assert chunk_coords_in_box(EXAMPLE_SCALE, (100, -20, 131), (200, 0, 140)) == []
    assert chunk_coords_in_box(EXAMPLE_SCALE, (1100, -20, 0), (1120, 0, 10)) == []
    assert chunk_coords_in_box(EXAMPLE_SCALE, (100, -20, 5), (200, 0, 5)) == []


@pytest.mark.parametrize("key, expected", [
    ("8_8_8", "8_8_8"), ("./8_8_8/", "8_8_8"), ("a//b", "a/b"), ("a/../b", "b"),
])
def test_scale_keys_are_normalised(key, expected):
    assert resolve_scale_key(key) == expected


@pytest.mark.parametrize("key", ["", "/", ".", "..", "../x", "a/../../b", "/abs/path",
                                 "C:/windows"])
def test_scale_keys_outside_the_dataset_are_rejected(key):
    with pytest.raises(InvalidInfoError):
        resolve_scale_key(key)


def test_integral_floats_are_accepted_and_fractions_rejected():
    info = {"type": "image", "data_type": "uint8", "num_channels": 1.0,
            "scales": [dict(EXAMPLE_SCALE, size=[1000.0, 600, 130])]}
    validate_info(info)
    info["scales"][0]["size"] = [1000.5, 600, 130]
    with pytest.raises(InvalidInfoError, match="size"):
        validate_info(info)


def test_integral_floats_become_ints_in_the_io(tmp_path):
    from napari_precomputed.accessor import get_accessor_for_url
    from napari_precomputed.precomputed_io import (
        get_IO_for_existing_dataset,
        get_IO_for_new_dataset,
    )
    from napari_precomputed.volume import read_region, write_region

    scale = dict(EXAMPLE_SCALE, size=[30.0, 20, 10], voxel_offset=[1.0, 0, -2.0],
                 chunk_sizes=[[16.0, 16, 16]])
    info = {"type": "image", "data_type": "uint8", "num_channels": 2.0, "scales": [scale]}
    io = get_IO_for_new_dataset(info, get_accessor_for_url(str(tmp_path)))
    assert io.info["num_channels"] == 2 and type(io.info["num_channels"]) is int
    assert info["num_channels"] == 2.0, "the caller's info is left as it was"
    assert '"num_channels": 2,' in (tmp_path / "info").read_text()
    volume = np.arange(2 * 10 * 20 * 30, dtype=np.uint8).reshape(2, 10, 20, 30)
    write_region(io, "s", volume)
    # An info written by another tool with floats reads the same.
    (tmp_path / "info").write_text(json.dumps(info))
    io = get_IO_for_existing_dataset(get_accessor_for_url(str(tmp_path)))
    np.testing.assert_array_equal(read_region(io, "s", (1, 0, -2), (31, 20, 8)), volume)


@pytest.mark.parametrize("channels", [1e308, 2**63, 2**40])
def test_chunks_beyond_64_bit_byte_counts_are_rejected(channels):
    info = {"type": "image", "data_type": "uint64", "num_channels": channels,
            "scales": [dict(EXAMPLE_SCALE, chunk_sizes=[[1024, 1024, 1024]])]}
    with pytest.raises(InvalidInfoError, match=r"chunk_sizes.*64-bit"):
        validate_info(info)


@pytest.mark.parametrize("offset, size", [
    ((2**62 - 2, 0, 0), (2, 1, 1)), ((-(2**62 - 1), 0, 0), (1, 1, 1)),
])
def test_new_datasets_stay_in_the_range_tensorstore_opens(tmp_path, offset, size):
    from napari_precomputed.accessor import get_accessor_for_url
    from napari_precomputed.precomputed_io import get_IO_for_new_dataset

    scale = dict(EXAMPLE_SCALE, size=list(size), voxel_offset=list(offset))
    info = {"type": "image", "data_type": "uint8", "num_channels": 1, "scales": [scale]}
    validate_info(info)  # valid to read: only int64 overflow is invalid
    with pytest.raises(InvalidInfoError, match=r"voxel_offset.*TensorStore"):
        get_IO_for_new_dataset(info, get_accessor_for_url(str(tmp_path)))
    assert not (tmp_path / "info").exists()


def test_parse_info_names_the_source():
    with pytest.raises(InvalidInfoError, match="/some/where/info"):
        parse_info(b"{not json", source="/some/where/info")
