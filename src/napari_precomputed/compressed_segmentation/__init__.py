"""Neuroglancer ``compressed_segmentation`` chunk codec, vectorised with NumPy.

The format (section 4.5 of the precomputed digest) splits each channel of a
chunk into blocks of ``block_size`` voxels; every block stores a sorted lookup
table of its distinct labels and, per voxel, a 0/1/2/4/8/16/32-bit index into
that table.

Both directions work on all blocks of a channel at once: blocks are laid out as
rows of an ``(nblocks, Bz*By*Bx)`` array, rows are grouped by bit width, and the
only Python loops run over channels, over the seven possible bit widths, or
over table ranks of low-cardinality blocks (bounded by a small constant).

The encoder reproduces the bytes written by TensorStore and Neuroglancer: per
block, in x-fastest block order, the packed indices followed by the lookup
table unless an identical table was already written in the same channel.
The decoder accepts everything those readers accept (shared tables, tables
anywhere, arbitrary padding indices) and raises
:class:`~napari_precomputed.errors.InvalidFormatError` for every malformed
buffer, never reading outside of it.
"""

from ._blocks import MAX_OFFSET, VALID_BITS
from ._decode import decode
from ._encode import encode

__all__ = ["encode", "decode", "VALID_BITS", "MAX_OFFSET"]
