"""Encoding of compressed_segmentation chunks: see the package docstring."""

from __future__ import annotations

import numpy as np

from ._blocks import MAX_OFFSET, VALID_BITS, block_grid, positive_triple, words_per_block

# Distinct-value count -> bit width: searchsorted(_COUNT_LIMITS, n) indexes
# _WIDTH_FOR_RANK, i.e. the smallest allowed b with 2**b >= n (b = 0 for n = 1).
_COUNT_LIMITS = np.array([1, 2, 4, 16, 256, 65536], dtype=np.int64)
_WIDTH_FOR_RANK = np.array(VALID_BITS, dtype=np.int64)
# The non-zero widths, widest first and negated: ranked blocks come in that order.
_NEGATIVE_WIDTHS = -np.array(VALID_BITS[:0:-1], dtype=np.int64)

# Above this many distinct values per block, ranking by repeated comparison
# (one pass per table entry) loses against a per-row argsort.
_COMPARE_RANK_LIMIT = 24


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
    bx, by, bz = positive_triple(block_size, "block_size")
    num_channels = array.shape[0]
    if min(array.shape) < 1:
        raise ValueError(f"chunk must not be empty, got shape {array.shape}")
    array = array.astype(array.dtype.newbyteorder("="), copy=False)
    grid = block_grid(tuple(int(s) for s in array.shape[1:]), (bz, by, bx))

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
    nwords = words_per_block(bits, block_voxels)
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
