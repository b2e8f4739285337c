"""Shared fixtures: small datasets written with the core into tmp_path."""

import numpy as np
import pytest


def make_info(data_type="uint8", num_channels=1, encoding="raw", size=(70, 50, 20),
              voxel_offset=(0, 0, 0), chunk_size=(32, 32, 8), type_=None, **scale_extra):
    """A one-scale info dict; keyword arguments are added to the scale."""
    if type_ is None:
        type_ = "segmentation" if encoding == "compressed_segmentation" else "image"
    scale = {"key": "s0", "size": list(size), "voxel_offset": list(voxel_offset),
             "resolution": [4, 5, 40], "chunk_sizes": [list(chunk_size)],
             "encoding": encoding}
    if encoding == "compressed_segmentation":
        scale.setdefault("compressed_segmentation_block_size", [8, 8, 8])
    scale.update(scale_extra)
    return {"type": type_, "data_type": data_type, "num_channels": num_channels,
            "scales": [scale]}


def smooth_volume(shape, dtype, seed=0):
    """A smooth (C, Z, Y, X) test volume spanning much of the dtype's range."""
    rng = np.random.default_rng(seed)
    c, z, y, x = shape
    zz, yy, xx = np.meshgrid(np.arange(z), np.arange(y), np.arange(x), indexing="ij")
    base = np.sin(xx / 7.0) + np.cos(yy / 5.0) + np.sin(zz / 3.0)
    out = np.stack([base + 0.5 * ch for ch in range(c)]) + rng.normal(0, 0.01, shape)
    out = (out - out.min()) / (np.ptp(out) or 1)
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return (out * 1000 - 500).astype(dtype)
    info = np.iinfo(dtype)
    low, high = max(info.min, -(2**40)), min(info.max, 2**40)
    return (low + out * (high - low)).astype(dtype)


def label_volume(shape, dtype, n_labels=40, seed=0):
    """Blocky (C, Z, Y, X) segmentation with large label values."""
    rng = np.random.default_rng(seed)
    c, z, y, x = shape
    labels = rng.integers(1, np.iinfo(dtype).max, size=n_labels, dtype=dtype)
    cells = rng.integers(0, n_labels, size=(c, -(-z // 3), -(-y // 5), -(-x // 6)))
    grid = cells.repeat(3, axis=1).repeat(5, axis=2).repeat(6, axis=3)
    return labels[grid[:, :z, :y, :x]]


@pytest.fixture
def new_dataset(tmp_path):
    """Factory: write a (C, Z, Y, X) volume with the core, return (io, path)."""
    from napari_precomputed.accessor import get_accessor_for_url
    from napari_precomputed.precomputed_io import get_IO_for_new_dataset
    from napari_precomputed.volume import write_region

    def make(volume, name="ds", **info_kwargs):
        c, z, y, x = volume.shape
        info = make_info(num_channels=c, size=(x, y, z), data_type=volume.dtype.name,
                         **info_kwargs)
        path = tmp_path / name
        io = get_IO_for_new_dataset(info, get_accessor_for_url(str(path)))
        write_region(io, "s0", volume)
        return io, path

    return make
