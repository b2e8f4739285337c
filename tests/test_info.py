"""The chunk grid and file names of the format digest, and info parsing."""

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
    import numpy as np

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


def test_parse_info_names_the_source():
    with pytest.raises(InvalidInfoError, match="/some/where/info"):
        parse_info(b"{not json", source="/some/where/info")
