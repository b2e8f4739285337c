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

from __future__ import annotations

import functools
import operator
import sys

import numpy as np

from .errors import InvalidFormatError

__all__ = ["encode", "decode"]

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

_LITTLE = sys.byteorder == "little"

_BITS_OK = np.zeros(256, dtype=bool)
_BITS_OK[list(VALID_BITS)] = True

# Distinct-value count -> bit width: searchsorted(_COUNT_LIMITS, n) indexes
# _WIDTH_FOR_RANK, i.e. the smallest allowed b with 2**b >= n (b = 0 for n = 1).
_COUNT_LIMITS = np.array([1, 2, 4, 16, 256, 65536], dtype=np.int64)
_WIDTH_FOR_RANK = np.array(VALID_BITS, dtype=np.int64)
# The non-zero widths, widest first and negated: ranked blocks come in that order.
_NEGATIVE_WIDTHS = -np.array(VALID_BITS[:0:-1], dtype=np.int64)

# Above this many distinct values per block, ranking by repeated comparison
# (one pass per table entry) loses against a per-row argsort.
_COMPARE_RANK_LIMIT = 24


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


def _positive_triple(value, name):
    try:
        triple = tuple(operator.index(v) for v in value)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of 3 integers, got {value!r}") from None
    if len(triple) != 3 or min(triple) < 1:
        raise ValueError(f"{name} must be 3 positive integers, got {value!r}")
    return triple


def _words_per_block(bits, block_voxels):
    return (bits * block_voxels + 31) // 32


def _axis_split(size, block):
    """Block coordinate and in-block offset of positions ``0..size-1`` of one axis."""
    # Dividing by min(block, size) gives the same results for every position
    # below ``size`` and keeps huge block sizes out of int64 arithmetic.
    block = min(block, size)
    return np.divmod(np.arange(size, dtype=np.int64), block)


class _Grid:
    """Block grid of one (clipped chunk shape, block shape) pair, in ZYX order.

    Instances are cached by :func:`_grid` and hold only per-block arrays, so
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
            self.words_for_bits[b] = min(_words_per_block(b, self.block_voxels), _WORDS_CAP)
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
def _grid(shape_zyx, block_zyx):
    return _Grid(shape_zyx, block_zyx)


# --------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------


def encode(chunk, block_size):
    """Encode a chunk as ``compressed_segmentation``.

    The output is byte-identical to TensorStore's and Neuroglancer's encoders:
    channel offsets, then per channel the block headers followed, block by
    block in x-fastest order, by the packed indices and (unless an identical
    table was already written in this channel) the sorted lookup table.

    :param chunk: 4-D array of shape (C, Z, Y, X) with dtype uint32 or uint64
        (any byte order).
    :param block_size: block shape ``(Bx, By, Bz)`` -- x, y, z order as in the
        ``info`` file.
    :returns: the encoded buffer, little-endian.
    :raises ValueError: if the array has the wrong rank or dtype, or if an
        offset would not fit in the 24-bit header fields.
    """
    array = np.asarray(chunk)
    if array.ndim != 4:
        raise ValueError(f"chunk must be a 4-D (C, Z, Y, X) array, got shape {array.shape}")
    if array.dtype.kind != "u" or array.dtype.itemsize not in (4, 8):
        raise ValueError(f"compressed_segmentation needs uint32 or uint64 data, got {array.dtype}")
    bx, by, bz = _positive_triple(block_size, "block_size")
    num_channels = array.shape[0]
    if min(array.shape) < 1:
        raise ValueError(f"chunk must not be empty, got shape {array.shape}")
    array = array.astype(array.dtype.newbyteorder("="), copy=False)
    grid = _grid(tuple(int(s) for s in array.shape[1:]), (bz, by, bx))

    pieces = [None] * (num_channels + 1)
    channel_offsets = np.empty(num_channels, dtype=np.int64)
    position = num_channels
    for c in range(num_channels):
        words = _encode_channel(array[c], grid, c)
        channel_offsets[c] = position
        position += words.size
        pieces[c + 1] = words
    if channel_offsets[-1] >= 1 << 32:
        raise ValueError(
            f"encoded chunk too large: channel offset {channel_offsets[-1]} exceeds 32 bits"
        )
    pieces[0] = channel_offsets.astype("<u4")
    return np.concatenate(pieces).tobytes()


def _to_block_rows(channel, grid):
    """Rearrange one (Z, Y, X) channel as (nblocks, block voxels) rows."""
    gz, gy, gx, bz, by, bx = grid.blocks6
    full = grid.pad_chunk(channel)
    if full.strides[-1] != full.itemsize:
        # The row view below needs contiguous x rows; a block cut out of a
        # larger array has them, and is not copied twice.
        full = np.ascontiguousarray(full)
    # Move whole x rows of a block (viewed as one opaque item): the transposition
    # then copies gz*gy*gx*bz*by items instead of every voxel.
    row = np.dtype((np.void, bx * full.dtype.itemsize))
    rows = full.view(row).reshape(gz, bz, gy, by, gx).transpose(0, 2, 4, 1, 3)
    return np.ascontiguousarray(rows).view(full.dtype).reshape(grid.nblocks, grid.block_voxels)


def _rank_in_rows(rows, is_new, tables, starts, counts, dtype):
    """Index of every voxel in its block's sorted table of distinct values.

    Only blocks with more than one value are ranked (the others are coded
    with 0 bits), in order of decreasing count, so that the rows of one bit
    width come out as one contiguous slice.

    :param rows: (n, P) block rows.
    :param is_new: (n, P) mask of the rows sorted along axis 1: True where a
        new distinct value starts.
    :param tables: the sorted distinct values of all rows, concatenated.
    :param starts: where each row's values start in ``tables``.
    :param counts: distinct values per row.
    :param dtype: dtype of the returned indices.
    :returns: ``(order, ranks)``: the ranked blocks, and their (len(order), P)
        indices.
    """
    block_voxels = rows.shape[1]
    active = int(np.count_nonzero(counts > 1))
    # Sorting by decreasing count also makes "rows with more than k values"
    # a prefix, for the comparisons below.
    order = np.argsort(-counts, kind="stable")[:active]
    act_ranks = np.zeros((active, block_voxels), dtype=dtype)
    if active == 0:
        return order, act_ranks
    sorted_counts = counts[order]
    many = int(np.count_nonzero(sorted_counts > _COMPARE_RANK_LIMIT))
    act_rows = rows[order]

    if many:
        # High-cardinality rows: rank = running count of new values in sorted
        # order, scattered back through the argsort permutation.
        perm = np.argsort(act_rows[:many], axis=1)
        sorted_rank = np.cumsum(is_new[order[:many]], axis=1, dtype=np.int64) - 1
        np.put_along_axis(act_ranks[:many], perm, sorted_rank.astype(dtype, copy=False), axis=1)

    if many < active:
        # Low-cardinality rows: index(v) = #{table entries t_k, k >= 1, with
        # v >= t_k}: one vectorised comparison per rank k over the rows that
        # have one, i.e. sum(count - 1) passes over a row, not max(count).
        low_counts = sorted_counts[many:]
        low_starts = starts[order[many:]]
        rows_with = np.searchsorted(-low_counts, -np.arange(1, int(low_counts[0])), side="left")
        scratch = np.empty((active - many, block_voxels), dtype=bool)
        # Adding bools to uint8 without a cast keeps the add vectorised.
        step = scratch.view(np.uint8) if dtype == np.uint8 else scratch
        low_rows = act_rows[many:]
        low_ranks = act_ranks[many:]
        for k, m in enumerate(rows_with.tolist(), start=1):
            threshold = tables.take(low_starts[:m] + k)[:, None]
            np.greater_equal(low_rows[:m], threshold, out=scratch[:m])
            low_ranks[:m] += step[:m]
    return order, act_ranks


def _narrow_shift(values):
    """Smallest right shift after which 32 bits order ``values`` exactly.

    Bits above the highest bit in which the smallest and largest value differ
    are the same in all of them, so the 32 bits just below it order the
    values like the full 64 bits.
    """
    return _shift_for_spread(int(values.min()) ^ int(values.max()))


def _shift_for_spread(spread):
    return max(0, spread.bit_length() - 32)


def _narrow(rows, shift):
    narrow = np.empty(rows.shape, dtype=np.uint32)
    # One pass, no 64-bit temporary: the ufunc casts its output in buffers.
    np.right_shift(rows, np.uint64(shift), out=narrow, casting="unsafe")
    return narrow


def _narrow_guess(rows):
    """32-bit stand-ins for 64-bit block rows, made before they are sorted.

    Ranking only compares a voxel with the table entries of its own block;
    comparing order-preserving 32-bit stand-ins gives the same ranks at half
    the memory traffic. The shift is guessed from the first and last voxel
    of every block, since the rows are about to be sorted in place and the
    exact label range is only known from the tables; :func:`_rank_keys`
    checks the guess.

    :returns: ``(narrow_rows, shift)``, or ``(None, 0)`` if the sampled
        voxels hold one label (most likely the chunk needs no ranking).
    """
    # Copied out once: the strided view spans a cache line per voxel, and
    # is reduced twice.
    ends = rows[:, :: max(1, rows.shape[1] - 1)].copy()
    low, high = int(ends.min()), int(ends.max())
    if low == high:
        return None, 0
    shift = _shift_for_spread(low ^ high)
    return _narrow(rows, shift), shift


def _narrow_tables(tables, starts, shift):
    """``tables`` narrowed by ``shift``, or None if two labels of one block
    would share a narrow value."""
    narrow = (tables >> np.uint64(shift)).astype(np.uint32)
    increasing = narrow[1:] > narrow[:-1]
    # Pairs that straddle two blocks need not increase.
    increasing[starts[1:] - 1] = True
    return narrow if increasing.all() else None


def _rank_keys(channel, grid, guess, tables, starts):
    """Unsorted block rows and tables to rank 64-bit labels with.

    :param guess: ``(narrow_rows, shift)`` from :func:`_narrow_guess`.
    :returns: ``(rows, tables)``, 32-bit when narrowing is exact.
    """
    narrow_rows, shift = guess
    exact_shift = _narrow_shift(tables)
    if narrow_rows is not None and shift == exact_shift:
        narrow_tables = _narrow_tables(tables, starts, shift)
        if narrow_tables is not None:
            return narrow_rows, narrow_tables
    # The sample missed the extreme labels, or two labels of a block differ
    # only below the shift: start again from the channel.
    rows = _to_block_rows(channel, grid)
    narrow_tables = _narrow_tables(tables, starts, exact_shift)
    if narrow_tables is None:
        return rows, tables
    return _narrow(rows, exact_shift), narrow_tables


def _pack(indices, bits, block_voxels):
    """Pack (n, P) indices into (n, words) little-endian words, first voxel in the low bits."""
    n = indices.shape[0]
    nwords = _words_per_block(bits, block_voxels)
    slots = nwords * 32 // bits
    if bits < 8:
        indices = indices.astype(np.uint8, copy=False)
    if slots != block_voxels or not indices.flags.c_contiguous:
        padded = np.zeros((n, slots), dtype=indices.dtype)
        padded[:, :block_voxels] = indices
        indices = padded
    if bits == 32:
        packed = indices.astype("<u4")
    elif bits == 16:
        packed = indices.astype("<u2")
    elif bits == 8:
        packed = indices.astype(np.uint8)
    elif bits == 1:
        packed = np.packbits(indices, axis=1, bitorder="little")
    else:
        # Gather the 8 // bits indices of one output byte with a multiply:
        # index j of a little-endian word (at bit 8j) moves to bit
        # (8 // bits - 1) * 8 + j * bits, into the top byte, while the
        # cross terms land on disjoint bits below it or overflow away.
        if bits == 2:
            words, magic, top = indices.view(np.uint32), np.uint32(0x01041040), 24
        else:
            words, magic, top = indices.view(np.uint16), np.uint16(0x0110), 8
        spread = words * magic
        packed = np.empty(spread.shape, dtype=np.uint8)
        np.right_shift(spread, spread.dtype.type(top), out=packed, casting="unsafe")
    return np.ascontiguousarray(packed).view("<u4").reshape(n, nwords)


_MIX1 = np.uint64(0x9E3779B97F4A7C15)
_MIX2 = np.uint64(0xBF58476D1CE4E5B9)
_MIX3 = np.uint64(0x94D049BB133111EB)


def _table_hashes(tables, starts, counts):
    """64-bit hash of every block's table (entries in ``tables[start:start+count]``).

    Only used to find candidate duplicates; :func:`_dedupe_tables` verifies
    every match exactly.
    """
    x = tables.astype(np.uint64)
    x ^= np.arange(x.size, dtype=np.uint64) - np.repeat(starts, counts).astype(np.uint64)
    x *= _MIX1
    x ^= x >> np.uint64(29)
    x *= _MIX2
    x ^= x >> np.uint64(32)
    h = np.add.reduceat(x, starts)
    h ^= counts.astype(np.uint64) * _MIX3
    return h


def _dedupe_tables(tables, starts, counts):
    """Block index of the first block with the same table, for every block."""
    hashes = _table_hashes(tables, starts, counts)
    # Sort (hash, block) pairs packed in one word: the low bits of the hash
    # make room for the block index, so that a plain sort puts the first
    # block of every run of equal hashes first, which an index sort of the
    # hashes would do at several times the cost.
    nblocks = counts.size
    index_bits = max(1, (nblocks - 1).bit_length())
    keys = hashes >> np.uint64(index_bits) << np.uint64(index_bits)
    keys |= np.arange(nblocks, dtype=np.uint64)
    keys.sort()
    block = (keys & np.uint64((1 << index_bits) - 1)).astype(np.intp)
    keys >>= np.uint64(index_bits)
    run_start = np.empty(nblocks, dtype=bool)
    run_start[0] = True
    np.not_equal(keys[1:], keys[:-1], out=run_start[1:])
    first = block[run_start]
    owner = np.empty(nblocks, dtype=np.intp)
    owner[block] = first[np.cumsum(run_start) - 1]
    # Hashes only propose owners; confirm that every table equals its owner's.
    same = counts[owner] == counts
    if same.all():
        shift = np.repeat(starts[owner] - starts, counts)
        same_entries = tables[np.arange(tables.size) + shift] == tables
        if same_entries.all():
            return owner
    return _dedupe_tables_exact(tables, starts, counts)


def _dedupe_tables_exact(tables, starts, counts):
    # Reached only on a 64-bit hash collision; correctness over speed.
    seen = {}
    owner = np.empty(counts.size, dtype=np.int64)
    for i, (s, n) in enumerate(zip(starts.tolist(), counts.tolist())):
        owner[i] = seen.setdefault(tables[s : s + n].tobytes(), i)
    return owner


def _segment_arange(lengths, total):
    """Concatenation of ``arange(n)`` for every n in ``lengths``."""
    ends = np.cumsum(lengths)
    return np.arange(total, dtype=np.int64) - np.repeat(ends - lengths, lengths)


def _encode_channel(channel, grid, c):
    if grid.voxelwise:
        return _encode_channel_voxelwise(channel, grid, c)
    nblocks, block_voxels = grid.nblocks, grid.block_voxels
    wpe = channel.dtype.itemsize // 4
    rows = _to_block_rows(channel, grid)
    if wpe == 2:
        # Narrow before sorting, so that the 64-bit rows can be sorted in
        # place: they are not needed unsorted unless narrowing fails.
        guess = _narrow_guess(rows)
        if np.may_share_memory(rows, channel):
            rows = rows.copy()
        sorted_rows = rows
        sorted_rows.sort(axis=1)
    else:
        sorted_rows = np.sort(rows, axis=1)
    flat_sorted = sorted_rows.reshape(-1)
    is_new = np.empty(flat_sorted.size, dtype=bool)
    # One flat comparison, then the first voxel of every row: a 2-D compare
    # would run one short inner loop per row.
    np.not_equal(flat_sorted[1:], flat_sorted[:-1], out=is_new[1:])
    is_new = is_new.reshape(rows.shape)
    is_new[:, 0] = True
    first_of_value = np.flatnonzero(is_new)
    tables = flat_sorted.take(first_of_value)
    counts = np.bincount(first_of_value // block_voxels, minlength=nblocks)
    starts = np.zeros(nblocks, dtype=np.intp)
    np.cumsum(counts[:-1], out=starts[1:])
    bits = _WIDTH_FOR_RANK[np.searchsorted(_COUNT_LIMITS, counts)]
    max_bits = int(bits.max())

    index_dtype = np.uint8 if max_bits <= 8 else np.uint16 if max_bits <= 16 else np.uint32
    if max_bits:
        if wpe == 2:
            rank_rows, rank_tables = _rank_keys(channel, grid, guess, tables, starts)
        else:
            rank_rows, rank_tables = rows, tables
        order, ranks = _rank_in_rows(rank_rows, is_new, rank_tables, starts, counts, index_dtype)
        if not grid.exact:
            # TensorStore and Neuroglancer leave padding indices at 0.
            ranks[grid.padding_mask(order)] = 0

    layout = _layout(grid, tables, starts, counts, bits, wpe, c)
    owner, is_owner, values_offset, table_offset, total = layout
    out = np.empty(total, dtype="<u4")
    header_words = 2 * nblocks
    out[0:header_words:2] = table_offset | (bits << 24)
    out[1:header_words:2] = values_offset

    if max_bits:
        # Ranked rows come by decreasing count, hence by decreasing width.
        descending = -bits[order]
        firsts = descending.searchsorted(_NEGATIVE_WIDTHS, side="left").tolist()
        stops = descending.searchsorted(_NEGATIVE_WIDTHS, side="right").tolist()
        for b, first, stop in zip(VALID_BITS[:0:-1], firsts, stops):
            if first == stop:
                continue
            packed = _pack(ranks[first:stop], b, block_voxels)
            dest = values_offset[order[first:stop]][:, None] + np.arange(packed.shape[1])
            out[dest] = packed

    _write_tables(out, tables, counts, is_owner, table_offset, wpe)
    return out


def _layout(grid, tables, starts, counts, bits, wpe, c):
    """Place every block's values and (deduplicated) table in the channel.

    :returns: ``(owner, is_owner, values_offset, table_offset, total)``: the
        block whose table each block uses, the mask of blocks that write their
        table, the word offsets of values and tables relative to the channel
        start, and the channel's length in words.
    :raises ValueError: if an offset does not fit in 24 bits -- checked before
        anything of the channel's size is allocated.
    """
    nblocks = grid.nblocks
    owner = _dedupe_tables(tables, starts, counts)
    is_owner = owner == np.arange(nblocks)

    value_words = grid.words_for_bits[bits]
    table_words = np.where(is_owner, counts * wpe, 0)
    segment = value_words + table_words
    header_words = 2 * nblocks
    values_offset = np.empty(nblocks, dtype=np.int64)
    values_offset[0] = header_words
    np.cumsum(segment[:-1], out=values_offset[1:])
    values_offset[1:] += header_words
    table_offset = (values_offset + value_words)[owner]
    largest = max(int(values_offset[-1]), int(table_offset.max()))
    if largest >= MAX_OFFSET:
        raise ValueError(
            f"channel {c}: compressed_segmentation offset {largest} does not fit in the "
            f"24-bit header field (limit {MAX_OFFSET - 1} words); use a smaller chunk "
            f"or block size"
        )
    # Every values region ends at or before the next offset or, for the last
    # block, is no longer than its owner's values region (same table size,
    # same width), so the channel is below about 2 * MAX_OFFSET words here.
    total = header_words + int(segment.sum())
    return owner, is_owner, values_offset, table_offset, total


def _write_tables(out, tables, counts, is_owner, table_offset, wpe):
    """Write the tables of the blocks that own theirs at their offsets in ``out``."""
    owners = np.flatnonzero(is_owner)
    entry_mask = np.repeat(is_owner, counts)
    entries = tables[entry_mask].astype(f"<u{4 * wpe}", copy=False).view("<u4")
    owner_words = counts[owners] * wpe
    dest = np.repeat(table_offset[owners], owner_words) + _segment_arange(owner_words, entries.size)
    out[dest] = entries


def _encode_channel_voxelwise(channel, grid, c):
    """:func:`_encode_channel` for blocks much larger than the chunk.

    Works on in-chunk voxels only: tables come from sorting (block, value)
    pairs, and each voxel's index is OR-ed into its block's values region at
    bit ``b * p``, p = x + Bx*(y + By*z) in the block.  Padding indices stay
    0, as in TensorStore's and Neuroglancer's output.
    """
    nblocks = grid.nblocks
    wpe = channel.dtype.itemsize // 4
    values = channel.reshape(-1)
    block = grid.voxel_blocks().reshape(-1)
    order = np.lexsort((values, block))
    sorted_values = values[order]
    sorted_block = block[order]
    is_new = np.empty(values.size, dtype=bool)
    is_new[0] = True
    np.not_equal(sorted_values[1:], sorted_values[:-1], out=is_new[1:])
    is_new[1:] |= sorted_block[1:] != sorted_block[:-1]
    first_of_value = np.flatnonzero(is_new)
    tables = sorted_values[first_of_value]
    # Every block holds at least one in-chunk voxel, so every count is >= 1.
    counts = np.bincount(sorted_block[first_of_value], minlength=nblocks)
    starts = np.zeros(nblocks, dtype=np.intp)
    np.cumsum(counts[:-1], out=starts[1:])
    bits = _WIDTH_FOR_RANK[np.searchsorted(_COUNT_LIMITS, counts)]

    owner, is_owner, values_offset, table_offset, total = _layout(
        grid, tables, starts, counts, bits, wpe, c
    )
    out = np.zeros(total, dtype=np.uint32)
    header_words = 2 * nblocks
    out[0:header_words:2] = table_offset | (bits << 24)
    out[1:header_words:2] = values_offset

    if bits.any():
        rank = np.cumsum(is_new, dtype=np.int64) - 1
        rank -= starts[sorted_block]
        index = np.empty(values.size, dtype=np.uint64)
        index[order] = rank
        width = bits[block]
        coded = np.flatnonzero(width)
        # Offsets passed the 24-bit check, so b * block voxels < 2**29 here.
        bit = grid.voxel_positions().reshape(-1)[coded] * width[coded]
        word = values_offset[block[coded]] + (bit >> 5)
        shifted = (index[coded] << (bit & 31).astype(np.uint64)).astype(np.uint32)
        # Fields of distinct voxels never overlap: OR accumulates them.
        np.bitwise_or.at(out, word, shifted)

    _write_tables(out, tables, counts, is_owner, table_offset, wpe)
    return out.astype("<u4", copy=False)


# --------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------


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
    X, Y, Z = _positive_triple(chunk_size, "chunk_size")
    bx, by, bz = _positive_triple(block_size, "block_size")
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
    grid = _grid((Z, Y, X), (bz, by, bx))
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
    nwords = _words_per_block(bits, block_voxels)
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
            f"{_words_per_block(int(bits[i]), grid.block_voxels)} "
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
