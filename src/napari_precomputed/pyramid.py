"""Choosing the scales of a multiscale pyramid and writing small pyramids.

Factors are 2 per halved axis. An axis whose voxels are much coarser than the
finest axis (EM sections, light-sheet z steps) is not halved until the others
catch up, so that coarser scales approach isotropic voxels.
"""

__all__ = ["pyramid_factors", "pyramid_scales", "scale_key_for_resolution"]


def pyramid_factors(resolution, size, chunk_size, levels=None, voxel_offset=(0, 0, 0)):
    """Per-level (x, y, z) factors relative to the previous level.

    :param resolution: (x, y, z) voxel size of the finest scale
    :param size: (x, y, z) voxel count of the finest scale
    :param chunk_size: (x, y, z) chunk shape; by default levels are added
        until the coarsest fits in one chunk
    :param levels: total number of scales wanted (including the finest), or
        None for automatic
    :param voxel_offset: (x, y, z) offset of the finest scale: windows sit at
        absolute multiples of the factor, so an offset can add a voxel to a
        coarser scale (see :func:`pyramid_scales`)
    :returns: list of (fx, fy, fz), one per coarser level
    """
    resolution = [float(r) for r in resolution]
    size = [int(s) for s in size]
    offset = [int(o) for o in voxel_offset]
    out = []
    while levels is None or len(out) + 1 < levels:
        # Windows never straddle 0, so an axis that spans voxels -1 and 0
        # ends at 2 voxels: halving it again would change nothing.
        halved = coarser_extent(offset, size, (2, 2, 2))
        shrinks = [s > 1 and (o2, s2) != (o, s)
                   for o, s, o2, s2 in zip(offset, size, *halved)]
        if not any(shrinks):
            break
        if levels is None and all(s <= c or not k
                                  for s, c, k in zip(size, chunk_size, shrinks)):
            break
        finest = min(r for r, k in zip(resolution, shrinks) if k)
        # Halve the axes within a factor 2 of the finest one that halving
        # still changes.
        factors = tuple(2 if k and r < 2 * finest else 1
                        for r, k in zip(resolution, shrinks))
        out.append(factors)
        resolution = [r * f for r, f in zip(resolution, factors)]
        offset, size = coarser_extent(offset, size, factors)
    return out


def coarser_extent(voxel_offset, size, factors):
    """``(voxel_offset, size)`` of the next scale: windows sit at absolute
    multiples of the factor, so coarse voxel ``v`` covers fine voxels
    ``v*f .. v*f + f - 1``."""
    offset = [int(o) for o in voxel_offset]
    return ([o // f for o, f in zip(offset, factors)],
            [-(-(o + int(s)) // f) - o // f for o, s, f in zip(offset, size, factors)])


def scale_key_for_resolution(resolution):
    """Key in TensorStore's style, e.g. ``8_8_40`` (``4.5_4.5_40`` if fractional)."""
    return "_".join(f"{r:g}" for r in resolution)


def pyramid_scales(scale0, levels=None):
    """The scale infos of a pyramid above ``scale0`` (included first).

    Coarser scales keep ``scale0``'s encoding parameters and chunk size.
    Downsampling windows sit at absolute multiples of the factor, as in
    TensorStore, so coarse voxel ``v`` covers fine voxels ``v*f .. v*f + f - 1``
    and every scale lines up in Neuroglancer:
    ``voxel_offset = floor(offset / f)`` and
    ``size = ceil((offset + size) / f) - floor(offset / f)``.
    """
    chunk = scale0["chunk_sizes"][0]
    scales = [scale0]
    current = dict(scale0)
    for factors in pyramid_factors(scale0["resolution"], scale0["size"], chunk, levels,
                                   scale0.get("voxel_offset", (0, 0, 0))):
        resolution = [r * f for r, f in zip(current["resolution"], factors)]
        offset, size = coarser_extent(current.get("voxel_offset", [0, 0, 0]),
                                      current["size"], factors)
        current = dict(current, key=scale_key_for_resolution(resolution), size=size,
                       voxel_offset=offset, resolution=resolution,
                       chunk_sizes=[[min(int(c), s) for c, s in zip(chunk, size)]])
        scales.append(current)
    return scales
