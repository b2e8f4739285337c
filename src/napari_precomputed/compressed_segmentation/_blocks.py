"""The block grid of a chunk and the constants shared by the encoder and decoder."""

from __future__ import annotations

import functools
import operator

import numpy as np

#: Bit widths the format allows for the per-voxel table indices.
VALID_BITS = (0, 1, 2, 4, 8, 16, 32)

#: Header fields are 24 bits wide in every known reader (NG and TS even mask
#: the 32-bit values offset to 24 bits), so encoders must stay below this.
MAX_OFFSET = 1 << 24

#: Chunks whose padded block volume exceeds this many times their own voxel
#: count (blocks much larger than the chunk) are coded voxel by voxel, so that
#: memory and time follow the chunk, never the block size.
_VOXELWISE_RATIO = 4

#: Cap of the per-block values-region size in words: any larger value cannot
#: fit in a buffer anyway, and the cap keeps offset arithmetic in int64.
_WORDS_CAP = 1 << 62


def positive_triple(value, name):
    try:
        triple = tuple(operator.index(v) for v in value)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of 3 integers, got {value!r}") from None
    if len(triple) != 3 or min(triple) < 1:
        raise ValueError(f"{name} must be 3 positive integers, got {value!r}")
    return triple


def words_per_block(bits, block_voxels):
    return (bits * block_voxels + 31) // 32


def _axis_split(size, block):
    """Block coordinate and in-block offset of positions ``0..size-1`` of one axis."""
    # Dividing by min(block, size) gives the same results for every position
    # below ``size`` and keeps huge block sizes out of int64 arithmetic.
    block = min(block, size)
    return np.divmod(np.arange(size, dtype=np.int64), block)


class BlockGrid:
    """Block grid of one (clipped chunk shape, block shape) pair, in ZYX order.

    Instances are cached by :func:`block_grid` and hold only per-block arrays, so
    the cache stays small whatever the chunk size.  Nothing here is sized by
    the block volume: with ``voxelwise`` set (padded blocks much larger than
    the chunk), the codec only ever works on in-chunk voxels.
    """

    def __init__(self, shape_zyx, block_zyx):
        self.shape = shape_zyx
        self.block = block_zyx
        self.grid = tuple(-(-s // b) for s, b in zip(shape_zyx, block_zyx))
        self.padded = tuple(g * b for g, b in zip(self.grid, block_zyx))
        self.nblocks = self.grid[0] * self.grid[1] * self.grid[2]
        self.block_voxels = block_zyx[0] * block_zyx[1] * block_zyx[2]
        self.exact = self.padded == shape_zyx
        self.voxels = shape_zyx[0] * shape_zyx[1] * shape_zyx[2]
        self.voxelwise = self.nblocks * self.block_voxels > _VOXELWISE_RATIO * self.voxels
        # Block layout (Gz, Gy, Gx, Bz, By, Bx); transposing axes (0, 3, 1, 4,
        # 2, 5) gives the padded chunk (Gz, Bz, Gy, By, Gx, Bx).
        self.blocks6 = self.grid + block_zyx
        # In-chunk extent of the last block along z, y, x.
        self.last_extent = tuple(s - (g - 1) * b for s, g, b in zip(shape_zyx, self.grid, block_zyx))
        self.words_for_bits = np.zeros(33, dtype=np.int64)
        for b in VALID_BITS:
            self.words_for_bits[b] = min(words_per_block(b, self.block_voxels), _WORDS_CAP)
        self.words_for_bits.setflags(write=False)
        # (gz, gy, gx) of every block, to scatter whole blocks into the chunk.
        self.block_zyx_index = tuple(a.ravel() for a in np.indices(self.grid, dtype=np.intp))
        for a in self.block_zyx_index:
            a.setflags(write=False)

    def padding_mask(self, blocks):
        """(len(blocks), P) mask of the padding positions of the given blocks."""
        bz, by, bx = self.block
        mask = np.zeros((len(blocks), bz, by, bx), dtype=bool)
        for axis, (coord, extent, g) in enumerate(
            zip(self.block_zyx_index, self.last_extent, self.grid)
        ):
            last = coord[blocks] == g - 1
            view = [slice(None)] * 4
            view[0] = last
            view[axis + 1] = slice(extent, None)
            mask[tuple(view)] = True
        return mask.reshape(len(blocks), self.block_voxels)

    def pad_chunk(self, channel):
        """Pad a (Z, Y, X) channel to whole blocks by repeating its last voxels.

        Replicated voxels lie in the same block as their source, so padding
        never adds a value to a block's lookup table.
        """
        if self.exact:
            return channel
        Z, Y, X = self.shape
        full = np.empty(self.padded, dtype=channel.dtype)
        full[:Z, :Y, :X] = channel
        full[:Z, :Y, X:] = full[:Z, :Y, X - 1 : X]
        full[:Z, Y:, :] = full[:Z, Y - 1 : Y, :]
        full[Z:] = full[Z - 1 : Z]
        return full

    def voxel_blocks(self):
        """(Z, Y, X) index of the block holding every voxel (x-fastest block order)."""
        gy, gx = self.grid[1:]
        iz, iy, ix = (_axis_split(s, b)[0] for s, b in zip(self.shape, self.block))
        index = (iz * (gy * gx))[:, None, None] + (iy * gx)[None, :, None] + ix[None, None, :]
        return index.astype(np.intp, copy=False)

    def voxel_positions(self):
        """(Z, Y, X) in-block position ``x + Bx*(y + By*z)`` of every voxel.

        Only call when a block with b > 0 exists, i.e. when its values region
        (b * block_voxels bits) is known to be of a reasonable size.
        """
        by, bx = self.block[1:]
        oz, oy, ox = (_axis_split(s, b)[1] for s, b in zip(self.shape, self.block))
        return (oz * (by * bx))[:, None, None] + (oy * bx)[None, :, None] + ox[None, None, :]

    def block_coords(self, block_index):
        """(bx, by, bz) of a block, for error messages."""
        bz, by, bx = np.unravel_index(int(block_index), self.grid)
        return (int(bx), int(by), int(bz))


@functools.lru_cache(maxsize=64)
def block_grid(shape_zyx, block_zyx):
    return BlockGrid(shape_zyx, block_zyx)
