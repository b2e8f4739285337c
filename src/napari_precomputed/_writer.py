"""npe2 writers: File > Save Layers… as a precomputed dataset.

One single-layer writer per layer type: npe2 calls a writer whose
``layer_types`` add up to one layer as ``writer(path, data, meta)``.
Defaults: raw for images, compressed_segmentation for labels, 64^3 chunks, a
pyramid down to one chunk (mean for images, mode for labels). An existing
dataset is never replaced from here; the export panel has an overwrite
option.
"""

import os
import warnings

from .errors import InvalidInfoError


class ExportRefusedError(Exception):
    """The layer cannot be written as a precomputed dataset; the message says why.

    Deliberately not a ValueError: napari reads a writer's ValueError as "this
    writer does not apply" and drops its message, so ``layer.save(...)``
    returned an empty list with no reason given.
    """


def _write(path, data, meta, layer_type):
    from ._layer_export import info_for_layer, transforms_not_exported
    from .export import export

    path = os.fspath(path)
    try:
        volume, info = info_for_layer(data, meta, layer_type)
        dropped = transforms_not_exported(meta)
        if dropped:
            warnings.warn(f"{path}: {dropped}", stacklevel=2)
        export(volume, path, info, overwrite=False)
    except (ValueError, InvalidInfoError) as exc:
        # InvalidInfoError: the layer maps to an info the format (or
        # TensorStore) cannot hold, e.g. a translate beyond 2**62 voxels.
        raise ExportRefusedError(f"cannot write {path}: {exc}") from exc
    return [path]


def write_image(path, data, meta):
    """Write an image layer as a precomputed dataset (folder ``path``)."""
    return _write(path, data, meta, "image")


def write_labels(path, data, meta):
    """Write a labels layer as a precomputed segmentation (folder ``path``)."""
    return _write(path, data, meta, "labels")
