"""From napari layer data to what the exporter needs. No napari import here.

napari hands writers ``(data, meta)``; the widget has the layer itself and
passes ``layer.as_layer_data_tuple()[:2]``, so both go through
:func:`volume_for_layer`.
"""

import math

import numpy as np

from .export import make_info

_NM_PER_UNIT = {
    "nm": 1.0, "nanometer": 1.0, "nanometre": 1.0,
    "um": 1e3, "µm": 1e3, "μm": 1e3, "micrometer": 1e3, "micrometre": 1e3, "micron": 1e3,
    "mm": 1e6, "millimeter": 1e6, "millimetre": 1e6,
    "cm": 1e7, "m": 1e9, "meter": 1e9, "metre": 1e9,
    "angstrom": 0.1, "Å": 0.1,
}


def nm_per_unit(unit):
    """Nanometres in one ``unit`` (a string or a pint unit); unitless means nm."""
    if unit is None:
        return 1.0
    name = str(unit).strip()
    if name in ("", "pixel", "px", "dimensionless"):
        return 1.0
    try:
        return _NM_PER_UNIT[name]
    except KeyError:
        raise ValueError(
            f"cannot express the layer's unit {name!r} in nanometres, the unit of "
            "precomputed resolutions") from None


def volume_for_layer(data, meta, layer_type):
    """The (C, Z, Y, X) array, resolution and voxel offset of a layer.

    - 2-D layers become one z-slice; 3-D layers are (z, y, x);
    - RGB(A) images become 3 (4) channels;
    - layers with more axes are refused: precomputed volumes are 3-D (split
      the layer, e.g. with napari's *Split Stack*, and export each part);
    - multiscale layers are exported from their finest level (the pyramid is
      computed again, for the chosen downsampling method).

    :returns: (array, resolution_xyz_nm, voxel_offset_xyz)
    :raises ValueError: for layers that cannot be exported, with the reason
    """
    if meta.get("multiscale") or (isinstance(data, (list, tuple)) and data
                                  and hasattr(data[0], "shape")):
        data = data[0]
    data = _as_array(data)
    rgb = layer_type == "image" and bool(meta.get("rgb"))
    spatial_ndim = data.ndim - (1 if rgb else 0)
    if spatial_ndim not in (2, 3):
        raise ValueError(
            f"the layer has {spatial_ndim} spatial axes; precomputed volumes have 3 "
            "(z, y, x). Split it into 3-D layers first (right-click it in the layer list > "
            "Split Stack).")
    if 0 in data.shape:
        raise ValueError(f"the layer is empty (shape {tuple(data.shape)}): nothing to export")
    scale = list(meta.get("scale") if meta.get("scale") is not None else [1] * data.ndim)
    translate = list(meta.get("translate") if meta.get("translate") is not None
                     else [0] * data.ndim)
    scale, translate = scale[-spatial_ndim:], translate[-spatial_ndim:]
    units = meta.get("units")
    units = list(units)[-spatial_ndim:] if units is not None else [None] * spatial_ndim
    if spatial_ndim == 2:
        scale, translate, units = [1.0] + scale, [0.0] + translate, [units[0]] + units
    factors = [nm_per_unit(u) for u in units]
    resolution_zyx = [float(s) * f for s, f in zip(scale, factors)]
    if any(r < 0 for r in resolution_zyx):
        # Exporting the voxels unflipped would move the data in the world.
        raise ValueError(
            f"the layer's scale {_numbers(scale)} flips an axis; precomputed voxel sizes "
            "are positive. Flip the data instead (e.g. data[::-1]) and export that.")
    if any(r == 0 or not math.isfinite(r) for r in resolution_zyx):
        raise ValueError(f"the layer's scale {_numbers(scale)} is not a valid voxel size")
    offset_zyx = []
    for t, s in zip(translate, scale):
        voxels = float(t) / float(s)
        if not math.isclose(voxels, round(voxels), abs_tol=1e-6):
            raise ValueError(
                f"the layer's translate {_numbers(translate)} is not a whole number of "
                f"voxels of size {_numbers(scale)}; precomputed offsets are in whole voxels")
        offset_zyx.append(int(round(voxels)))
    if rgb:
        channels_last = data if spatial_ndim == 3 else data[np.newaxis]
        volume = np.moveaxis(channels_last, -1, 0)  # dask arrays stay lazy
    else:
        volume = (data if spatial_ndim == 3 else data[np.newaxis])[np.newaxis]
    return volume, tuple(resolution_zyx[::-1]), tuple(offset_zyx[::-1])


def _numbers(values):
    """``(4, 4, 40)``, not ``(np.float64(4.0), ...)``."""
    return "(" + ", ".join(f"{float(v):g}" for v in values) + ")"


def transforms_not_exported(meta):
    """What of the layer's rotate, shear and affine an export leaves out, or "".

    A precomputed volume places voxels with a size and an offset only.
    """
    dropped = []
    rotate = meta.get("rotate")
    if rotate is not None and not np.allclose(rotate, np.eye(np.shape(rotate)[0])):
        dropped.append("rotation")
    shear = meta.get("shear")
    if shear is not None and np.size(shear) and not np.allclose(shear, 0):
        dropped.append("shear")
    affine = meta.get("affine")
    if affine is not None:
        matrix = getattr(affine, "affine_matrix", affine)
        if not np.allclose(matrix, np.eye(np.shape(matrix)[0])):
            dropped.append("affine transform")
    if not dropped:
        return ""
    return (f"the layer's {' and '.join(dropped)} is not exported: precomputed volumes "
            "place voxels by size and offset only")


def _as_array(data):
    """NumPy and dask arrays as they are; other array-likes (zarr, our lazy
    arrays...) wrapped in dask, so that reshaping stays lazy."""
    if isinstance(data, np.ndarray) or type(data).__module__.split(".")[0] == "dask":
        return data
    import dask.array as da

    chunk_size = getattr(data, "chunk_size", None)  # PrecomputedArray: (x, y, z)
    chunks = tuple(chunk_size[::-1])[-data.ndim:] if chunk_size else "auto"
    if len(chunks) < data.ndim and chunks != "auto":
        chunks = (1,) * (data.ndim - len(chunks)) + chunks
    return da.from_array(data, chunks=chunks, asarray=True, fancy=False)


def info_for_layer(data, meta, layer_type, **options):
    """Volume and info for exporting a layer; ``options`` go to :func:`make_info`."""
    volume, resolution, offset = volume_for_layer(data, meta, layer_type)
    type_ = "segmentation" if layer_type == "labels" else "image"
    info = make_info(volume.shape, volume.dtype, type_=type_, resolution=resolution,
                     voxel_offset=offset, **options)
    return volume, info
