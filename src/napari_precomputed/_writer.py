"""npe2 writers: File > Save Layers… as a precomputed dataset.

One single-layer writer per layer type: npe2 calls a writer whose
``layer_types`` add up to one layer as ``writer(path, data, meta)``.
Defaults: raw for images, compressed_segmentation for labels, 64^3 chunks, a
pyramid down to one chunk (mean for images, mode for labels). An existing
dataset is never replaced from here; the export panel has an overwrite
option.
"""

import os


def _write(path, data, meta, layer_type):
    from ._layer_export import info_for_layer
    from .export import export

    path = os.fspath(path)
    volume, info = info_for_layer(data, meta, layer_type)
    export(volume, path, info, overwrite=False)
    return [path]


def write_image(path, data, meta):
    """Write an image layer as a precomputed dataset (folder ``path``)."""
    return _write(path, data, meta, "image")


def write_labels(path, data, meta):
    """Write a labels layer as a precomputed segmentation (folder ``path``)."""
    return _write(path, data, meta, "labels")
