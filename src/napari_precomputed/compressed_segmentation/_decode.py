"""Decoding of compressed_segmentation chunks: see the package docstring."""

from __future__ import annotations

import functools
import operator
import sys

import numpy as np

from ..errors import InvalidFormatError
from ._blocks import VALID_BITS, block_grid, positive_triple, words_per_block

_LITTLE = sys.byteorder == "little"

_BITS_OK = np.zeros(256, dtype=bool)
_BITS_OK[list(VALID_BITS)] = True


def _first_true(mask):
    """Index of the first True of a 1-D mask (the block to name), or None."""
    return int(np.argmax(mask)) if mask.any() else None


@functools.lru_cache(maxsize=None)
def _unpack_table(bits):
    """Lookup table mapping a 16-bit word to its ``16 // bits`` packed indices.

    Row w of the ``(65536, 16 // bits)`` uint8 table holds the indices packed
    in w, least significant bits first; each row is viewed as one unsigned
    integer so that unpacking a whole stream is a single :func:`numpy.take`,
    whose result viewed as uint8 lists the indices in stream order.  Built on
    first use (256 KiB for b = 4, 512 KiB for b = 2).
    """
    per = 16 // bits
    word = np.arange(1 << 16, dtype=np.uint32)[:, None]
    shifts = (np.arange(per, dtype=np.uint32) * bits)[None, :]
    table = ((word >> shifts) & ((1 << bits) - 1)).astype(np.uint8)
    table = table.view(np.dtype(f"u{per}")).ravel()
    table.setflags(write=False)
    return table


def decode(buf, chunk_size, num_channels, data_type, block_size, z_blocks=None):
    """Decode a ``compressed_segmentation`` buffer, or a z-slab of it.

    Accepts everything Neuroglancer and TensorStore accept: tables shared
    between blocks or placed anywhere, unsorted tables, arbitrary indices at
    padding positions, and a values offset equal to the buffer end for
    single-valued blocks.  The values offset is read as the full 32-bit word.

    :param buf: the encoded chunk (any bytes-like object).
    :param chunk_size: clipped chunk shape ``(X, Y, Z)``.
    :param num_channels: number of channels C.
    :param data_type: ``"uint32"`` or ``"uint64"`` (or the NumPy dtype).
    :param block_size: block shape ``(Bx, By, Bz)``.
    :param z_blocks: optional ``(first, stop)`` range of block layers along
        z; only their blocks are read and checked, and the result holds the
        chunk's z-slices ``first * Bz`` to ``min(stop * Bz, Z)``. A plane
        needs one layer of blocks, not the whole chunk.
    :returns: array of shape (C, Z, Y, X) (Z of the slab with ``z_blocks``)
        and the given dtype, native byte order.
    :raises InvalidFormatError: if the buffer is malformed (section 7.2 of the
        digest); the message says what is wrong and where.
    """
    if not isinstance(data_type, str):
        data_type = np.dtype(data_type).name
    if data_type not in ("uint32", "uint64"):
        raise ValueError(f"compressed_segmentation needs uint32 or uint64, got {data_type!r}")
    X, Y, Z = positive_triple(chunk_size, "chunk_size")
    bx, by, bz = positive_triple(block_size, "block_size")
    num_channels = operator.index(num_channels)
    if num_channels < 1:
        raise ValueError(f"num_channels must be >= 1, got {num_channels}")
    # Block counts only: the grid's per-block arrays are built once the
    # buffer is known to hold that many headers (tiny blocks in a large
    # chunk would otherwise cost memory for a 4-byte corrupt buffer).
    layers, rows, columns = (-(-s // b) for s, b in zip((Z, Y, X), (bz, by, bx)))
    first_block = 0
    if z_blocks is not None:
        z_first, z_stop = (operator.index(v) for v in z_blocks)
        if not 0 <= z_first < z_stop <= layers:
            raise ValueError(f"z_blocks {tuple(z_blocks)} is not a range of the "
                             f"{layers} block layers")
        # The blocks of a z-slab are consecutive in the header (x fastest),
        # and every offset is relative to the channel, so a slab decodes as
        # a chunk of the slab's depth whose header starts further on.
        Z = min(z_stop * bz, Z) - z_first * bz
        first_block = z_first * rows * columns
    nblocks = -(-Z // bz) * rows * columns

    raw = memoryview(buf).cast("B")
    nbytes = raw.nbytes
    if nbytes % 4:
        raise InvalidFormatError(
            f"compressed_segmentation buffer length {nbytes} bytes is not a multiple of 4"
        )
    nwords = nbytes // 4
    if nwords < num_channels:
        raise InvalidFormatError(
            f"compressed_segmentation buffer has {nwords} words, fewer than the "
            f"{num_channels} channel offsets"
        )
    words_le = np.frombuffer(raw, dtype="<u4")
    words = words_le if _LITTLE else words_le.astype(np.uint32)
    wide = data_type == "uint64"
    if wide:
        # Table entry at word t is a uint64 at byte 4t, aligned to 8 bytes or
        # not depending on t's parity: gather from [even pairs, odd pairs].
        n_even = nwords // 2
        n_odd = (nwords - 1) // 2 if nwords else 0
        source = np.concatenate(
            [
                np.frombuffer(raw, dtype="<u8", count=n_even),
                np.frombuffer(raw, dtype="<u8", count=n_odd, offset=4),
            ]
        ).astype(np.uint64, copy=False)
        out_dtype = np.dtype(np.uint64)
    else:
        source = words
        n_even = 0
        out_dtype = np.dtype(np.uint32)

    offsets = words[:num_channels].astype(np.int64).tolist()
    header_end = 2 * (first_block + nblocks)
    # Before the output is allocated: a few corrupt bytes must not make us
    # allocate a huge chunk first.
    for c, base in enumerate(offsets):
        if base < num_channels or base > nwords:
            raise InvalidFormatError(
                f"channel {c}: data offset {base} lies outside words "
                f"{num_channels}..{nwords} of the {nwords}-word buffer"
            )
        if base + header_end > nwords:
            raise InvalidFormatError(
                f"channel {c}: header table of {first_block + nblocks} blocks at word "
                f"{base} does not fit in the {nwords}-word buffer"
            )
    grid = block_grid((Z, Y, X), (bz, by, bx))
    out = np.empty((num_channels, Z, Y, X), dtype=out_dtype)
    for c, base in enumerate(offsets):
        try:
            _decode_channel(words, words_le, source, nwords, base, grid, wide, n_even, c,
                            out[c], first_block)
        except InvalidFormatError as exc:
            if not first_block:
                raise
            raise InvalidFormatError(
                f"{exc} (block z counted from block layer {first_block // (grid.grid[1] * grid.grid[2])})"
            ) from None
    return out


def _unpack(words_le, starts, bits, block_voxels):
    """Unpack the index streams of blocks of one bit width into (n, P) indices.

    :param words_le: the whole buffer as little-endian words.
    :param starts: absolute word offsets of the blocks' streams (validated).
    """
    nwords = words_per_block(bits, block_voxels)
    packed = words_le[starts[:, None] + np.arange(nwords)]
    if bits == 32:
        return packed.astype(np.uint32, copy=False)[:, :block_voxels]
    if bits == 16:
        return packed.view("<u2").astype(np.uint16, copy=False)[:, :block_voxels]
    as_bytes = packed.view(np.uint8)
    if bits == 8:
        return as_bytes[:, :block_voxels]
    if bits == 1:
        return np.unpackbits(as_bytes, axis=1, count=block_voxels, bitorder="little")
    # Valid 16-bit words always index inside the table: 'wrap' just skips
    # numpy's bounds-checking path.
    unpacked = _unpack_table(bits).take(packed.view("<u2"), mode="wrap")
    return unpacked.view(np.uint8).reshape(starts.size, -1)[:, :block_voxels]


def _decode_channel(words, words_le, source, nwords, base, grid, wide, n_even, c, out,
                    first_block=0):
    nblocks, block_voxels = grid.nblocks, grid.block_voxels
    header_start = base + 2 * first_block  # decode() checked that the header fits
    header = words[header_start : header_start + 2 * nblocks]
    head0 = header[0::2]
    bits = (head0 >> 24).astype(np.intp)
    i = _first_true(~_BITS_OK[bits])
    if i is not None:
        raise InvalidFormatError(
            f"channel {c}: block {grid.block_coords(i)} has encoded bit width {bits[i]}, "
            f"not one of {VALID_BITS}"
        )
    table_start = (head0 & 0xFFFFFF).astype(np.intp) + base
    values_start = header[1::2].astype(np.intp) + base
    i = _first_true(table_start > nwords)
    if i is not None:
        raise InvalidFormatError(
            f"channel {c}: lookup table offset {table_start[i] - base} of block "
            f"{grid.block_coords(i)} lies outside the {nwords}-word buffer"
        )
    values_end = values_start + grid.words_for_bits[bits]
    i = _first_true(values_end > nwords)
    if i is not None:
        raise InvalidFormatError(
            f"channel {c}: encoded values of block {grid.block_coords(i)} (offset "
            f"{values_start[i] - base}, {bits[i]} bits, "
            f"{words_per_block(int(bits[i]), grid.block_voxels)} "
            f"words) extend past the end of the {nwords}-word buffer"
        )

    wpe = 2 if wide else 1
    # Complete table entries between each table offset and the buffer end.
    entries = (nwords - table_start) // wpe
    if wide:
        # Where entry 0 of each table sits in `source` (even pairs, then odd).
        first = (table_start >> 1) + (table_start & 1) * n_even
    else:
        first = table_start

    present = np.bincount(bits, minlength=33)
    if present[0]:
        i = _first_true((bits == 0) & (entries < 1))
        if i is not None:
            raise InvalidFormatError(
                f"channel {c}: block {grid.block_coords(i)} has a single value but its "
                f"lookup table offset {table_start[i] - base} leaves no complete table "
                f"entry in the {nwords}-word buffer"
            )
    if grid.voxelwise:
        _decode_voxelwise(
            words, source, first, bits, values_start, entries, grid, table_start, base,
            nwords, c, out,
        )
        return
    groups = []
    for b in VALID_BITS[1:]:
        if present[b]:
            members = np.flatnonzero(bits == b) if present[b] < nblocks else None
            starts = values_start if members is None else values_start[members]
            indices = _unpack(words_le, starts, b, block_voxels)
            _check_indices(indices, members, b, entries, grid, table_start, base, nwords, c)
            groups.append((members, indices))

    if 2 * (nblocks - int(present[0])) <= nblocks:
        _fill_blocks(source, first, groups, grid, out)
    else:
        _gather_voxels(source, first, groups, grid, out)


def _check_indices(indices, members, bits, entries, grid, table_start, base, nwords, c):
    """Reject in-chunk indices that point past the complete table entries.

    Only blocks whose table has fewer than ``2**bits`` complete entries before
    the buffer end can hold a bad index; with writer-produced buffers that is
    at most the last few blocks, so this usually costs nothing.  Padding
    indices of those blocks are zeroed in place (they are never part of the
    output) so that later gathers stay inside the buffer.
    """
    block_entries = entries if members is None else entries[members]
    suspect = np.flatnonzero(block_entries < (1 << bits))
    if suspect.size == 0:
        return
    rows = indices[suspect]
    blocks = suspect if members is None else members[suspect]
    if not grid.exact:
        rows[grid.padding_mask(blocks)] = 0
    largest = rows.max(axis=1)
    bad = largest >= block_entries[suspect]
    if bad.any():
        k = int(np.argmax(bad))
        i = int(blocks[k])
        raise InvalidFormatError(
            f"channel {c}: block {grid.block_coords(i)} uses table index {largest[k]} but "
            f"only {entries[i]} table entries fit between its lookup table offset "
            f"{table_start[i] - base} and the end of the {nwords}-word buffer"
        )
    indices[suspect] = rows


def _fill_blocks(source, first, groups, grid, out):
    """Write the chunk block by block: suits chunks where most blocks hold one value.

    Every block is first filled with its table entry 0 (exact for b = 0
    blocks), then multi-valued blocks are gathered in block layout and
    scattered into place.
    """
    gz, gy, gx, bz, by, bx = grid.blocks6
    full = out if grid.exact else np.empty(grid.padded, dtype=out.dtype)
    entry0 = np.take(source, first, mode="wrap")
    # Repeat along x first so the broadcast copy runs over whole x rows.
    rows = np.repeat(entry0.reshape(gz, gy, gx), bx, axis=2)
    full.reshape(gz, bz, gy, by, gx * bx)[...] = rows.reshape(gz, 1, gy, 1, gx * bx)
    blocks = full.reshape(gz, bz, gy, by, gx, bx).transpose(0, 2, 4, 1, 3, 5)
    bzi, byi, bxi = grid.block_zyx_index
    for members, indices in groups:
        if members is None:
            members = np.arange(grid.nblocks)
        position = np.add(indices, first[members][:, None], dtype=np.intp)
        values = np.take(source, position, mode="wrap")
        blocks[bzi[members], byi[members], bxi[members]] = values.reshape(-1, bz, by, bx)
    if full is not out:
        Z, Y, X = grid.shape
        out[...] = full[:Z, :Y, :X]


def _gather_voxels(source, first, groups, grid, out):
    """Write the chunk with one table gather over all voxels: suits dense chunks."""
    nblocks, block_voxels = grid.nblocks, grid.block_voxels
    gz, gy, gx, bz, by, bx = grid.blocks6
    if len(groups) == 1 and groups[0][0] is None:
        indices = np.ascontiguousarray(groups[0][1])
    else:
        dtype = np.result_type(*(g[1].dtype for g in groups))
        indices = np.zeros((nblocks, block_voxels), dtype=dtype)
        for members, group in groups:
            indices[members] = group
    # Move whole x rows of a block (viewed as one opaque item) so that the
    # block -> chunk transposition copies gz*gy*gx*bz*by items, not voxels.
    row = np.dtype((np.void, bx * indices.dtype.itemsize))
    rows = indices.view(row).reshape(gz, gy, gx, bz, by)
    in_chunk = np.ascontiguousarray(rows.transpose(0, 3, 1, 4, 2)).view(indices.dtype)
    xp = gx * bx
    first_rows = np.repeat(first.reshape(gz, gy, gx), bx, axis=2).reshape(gz, 1, gy, 1, xp)
    # uint32 positions halve the memory traffic of the add; take() widens them.
    position_type = np.uint32 if source.size < (1 << 32) else np.intp
    first_rows = first_rows.astype(position_type)
    position = np.add(in_chunk.reshape(gz, bz, gy, by, xp), first_rows, dtype=position_type)
    position = position.reshape(grid.padded)
    if not grid.exact:
        Z, Y, X = grid.shape
        position = position[:Z, :Y, :X]
    # Every in-chunk position was validated; 'wrap' avoids numpy's slower
    # bounds-checking path and could never read outside `source` anyway.
    np.take(source, position, out=out, mode="wrap")


# Mask of the low b bits, indexed by b.
_LOW_BITS = np.array([(1 << b) - 1 for b in range(33)], dtype=np.uint64).astype(np.uint32)


def _decode_voxelwise(words, source, first, bits, values_start, entries, grid, table_start,
                      base, nwords, c, out):
    """Decode one channel voxel by voxel: for blocks much larger than the chunk.

    Only in-chunk voxels are visited: for each, its block, its in-block
    position p, the index at bit ``b * p`` of the block's values region
    (validated to lie in the buffer) and the table entry it selects.
    """
    block = grid.voxel_blocks()
    position = first[block]
    if bits.any():
        width = bits[block]
        # Blocks with b > 0 have values regions inside the buffer, so
        # b * block voxels < 32 * nwords and these products fit in int64.
        bit = grid.voxel_positions() * width
        # b = 0 blocks may have a values offset at the buffer end: read word 0.
        word = np.where(width > 0, values_start[block] + (bit >> 5), 0)
        index = words[word] >> (bit & 31).astype(np.uint32)
        index &= _LOW_BITS[width]
        block_entries = entries[block]
        bad = index >= block_entries
        if bad.any():
            k = np.unravel_index(int(np.argmax(bad)), bad.shape)
            i = int(block[k])
            raise InvalidFormatError(
                f"channel {c}: block {grid.block_coords(i)} uses table index {index[k]} but "
                f"only {entries[i]} table entries fit between its lookup table offset "
                f"{table_start[i] - base} and the end of the {nwords}-word buffer"
            )
        position += index
    np.take(source, position, out=out, mode="wrap")
