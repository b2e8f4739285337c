"""npe2 sample data: a small synthetic EM-like volume and its segmentation.

Both are written once as real precomputed datasets (with their pyramids) into
the temporary folder and then opened with this plugin's reader, so the sample
exercises exactly what opening a real dataset does.
"""

import os
import shutil
import tempfile

import numpy as np

from . import __version__

SIZE = (256, 256, 64)          # x, y, z voxels
RESOLUTION = (8, 8, 16)        # nm; anisotropic like serial-section EM


def sample_root():
    """Folder holding the sample datasets (created on first use)."""
    return os.path.join(tempfile.gettempdir(), f"napari-precomputed-sample-{__version__}")


def _synthetic_volumes(seed=0):
    rng = np.random.default_rng(seed)
    x, y, z = SIZE
    centres = rng.uniform(0, 1, size=(60, 3)) * np.array([z, y, x])
    zz, yy, xx = np.meshgrid(np.arange(z), np.arange(y), np.arange(x), indexing="ij",
                             sparse=True)
    # Distance to the nearest "cell" centre, in nm so anisotropy is honest.
    scale = np.array(RESOLUTION[::-1], dtype=np.float32)
    nearest = np.full((z, y, x), np.inf, dtype=np.float32)
    labels = np.zeros((z, y, x), dtype=np.uint64)
    for index, (cz, cy, cx) in enumerate(centres):
        d = (((zz - cz) * scale[0]) ** 2 + ((yy - cy) * scale[1]) ** 2
             + ((xx - cx) * scale[2]) ** 2).astype(np.float32)
        closer = d < nearest
        nearest[closer] = d[closer]
        labels[closer] = np.uint64(1_000_000_007 * (index + 1))
    radius = np.sqrt(nearest)
    membrane = np.exp(-((radius % 350.0) - 300.0) ** 2 / 800.0)
    image = 150 - 90 * membrane + rng.normal(0, 12, size=radius.shape)
    image = np.clip(image, 0, 255).astype(np.uint8)
    labels[radius > 320] = 0  # extracellular space
    return image[None], labels[None]


def _write_dataset(path, volume, type_, encoding, method, **scale_extra):
    from .export import export
    from .pyramid import pyramid_scales, scale_key_for_resolution

    scale0 = {"key": scale_key_for_resolution(RESOLUTION), "size": list(SIZE),
              "voxel_offset": [0, 0, 0], "resolution": list(RESOLUTION),
              "chunk_sizes": [[64, 64, 64]], "encoding": encoding, **scale_extra}
    info = {"@type": "neuroglancer_multiscale_volume", "type": type_,
            "data_type": volume.dtype.name, "num_channels": 1,
            "scales": pyramid_scales(scale0)}
    export(volume, path, info, method=method)


def ensure_sample_datasets():
    """Write the sample datasets if they are not there yet; return their paths."""
    root = sample_root()
    paths = {"image": os.path.join(root, "em"), "segmentation": os.path.join(root, "cells")}
    if all(os.path.isfile(os.path.join(p, "info")) for p in paths.values()):
        return paths
    staging = tempfile.mkdtemp(prefix=".staging-", dir=os.path.dirname(root))
    try:
        image, labels = _synthetic_volumes()
        _write_dataset(os.path.join(staging, "em"), image, "image", "jpeg", "mean",
                       jpeg_quality=90)
        _write_dataset(os.path.join(staging, "cells"), labels, "segmentation",
                       "compressed_segmentation", "mode",
                       compressed_segmentation_block_size=[8, 8, 8])
        try:
            os.rename(staging, root)  # atomic: another process may be doing the same
        except OSError:
            if not os.path.isdir(root):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return paths


def make_sample_data():
    """The sample EM-like image and its segmentation, as napari layer data."""
    from ._reader import read_precomputed

    paths = ensure_sample_datasets()
    return read_precomputed(paths["image"]) + read_precomputed(paths["segmentation"])
