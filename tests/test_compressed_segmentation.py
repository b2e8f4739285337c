"""Tests of the ``compressed_segmentation`` codec (digest sections 4.5, 7.2, 7.4)."""

import struct
import time
import tracemalloc

import numpy as np
import pytest

from napari_precomputed import compressed_segmentation as cs
from napari_precomputed.compressed_segmentation import _blocks, _encode
from napari_precomputed.errors import InvalidFormatError

try:
    import compressed_segmentation as cseg  # the C++ codec, as a reference
except ImportError:  # pragma: no cover
    cseg = None

try:
    import tensorstore as ts
except ImportError:  # pragma: no cover
    ts = None

needs_cseg = pytest.mark.skipif(cseg is None, reason="compressed-segmentation not installed")
needs_ts = pytest.mark.skipif(ts is None, reason="tensorstore not installed")


def words(*values):
    return struct.pack(f"<{len(values)}I", *values)


def chunk_size_of(array):
    """(X, Y, Z) of a (C, Z, Y, X) array."""
    return array.shape[:0:-1]


def roundtrip(array, block_size):
    encoded = cs.encode(array, block_size)
    decoded = cs.decode(
        encoded, chunk_size_of(array), array.shape[0], array.dtype.name, block_size
    )
    assert decoded.dtype == array.dtype
    assert decoded.shape == array.shape
    np.testing.assert_array_equal(decoded, array)
    return encoded


# Worked example 1: uint32, chunk 4x2x1, block 2x2x1.
EXAMPLE1_ARRAY = np.array([[[[5, 5, 7, 7], [5, 9, 7, 7]]]], dtype=np.uint32)
EXAMPLE1_BYTES = words(1, 0x01000005, 4, 0x00000007, 7, 0x00000008, 5, 9, 7)
# Worked example 2: the same in uint64 with voxel (x=2, y=1) = 2**40 + 7.
EXAMPLE2_ARRAY = EXAMPLE1_ARRAY.astype(np.uint64)
EXAMPLE2_ARRAY[0, 0, 1, 2] = 2**40 + 7
EXAMPLE2_BYTES = words(1, 0x01000005, 4, 0x0100000A, 9, 8, 5, 0, 9, 0, 4, 7, 0, 7, 0x100)


# --------------------------------------------------------------------------
# Worked examples
# --------------------------------------------------------------------------


def test_worked_example_1_encode():
    assert cs.encode(EXAMPLE1_ARRAY, (2, 2, 1)) == EXAMPLE1_BYTES
    assert len(EXAMPLE1_BYTES) == 36


def test_worked_example_1_decode():
    out = cs.decode(EXAMPLE1_BYTES, (4, 2, 1), 1, "uint32", (2, 2, 1))
    assert out.dtype == np.uint32
    np.testing.assert_array_equal(out, EXAMPLE1_ARRAY)


def test_worked_example_2_encode():
    assert cs.encode(EXAMPLE2_ARRAY, (2, 2, 1)) == EXAMPLE2_BYTES


def test_worked_example_2_decode():
    out = cs.decode(EXAMPLE2_BYTES, (4, 2, 1), 1, "uint64", (2, 2, 1))
    assert out.dtype == np.uint64
    np.testing.assert_array_equal(out, EXAMPLE2_ARRAY)


def test_decode_accepts_any_bytes_like():
    for buf in (bytearray(EXAMPLE1_BYTES), memoryview(EXAMPLE1_BYTES),
                np.frombuffer(EXAMPLE1_BYTES, "<u4")):
        out = cs.decode(buf, (4, 2, 1), 1, "uint32", (2, 2, 1))
        np.testing.assert_array_equal(out, EXAMPLE1_ARRAY)


def test_encode_accepts_big_endian_input():
    big = EXAMPLE2_ARRAY.astype(">u8")
    assert cs.encode(big, (2, 2, 1)) == EXAMPLE2_BYTES


# --------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------


def labels(rng, shape, dtype, num_values, high=None):
    """Random blocky labels: a coarse random field upsampled by 3."""
    coarse = [max(1, -(-s // 3)) for s in shape[1:]]
    pool = rng.integers(0, high or np.iinfo(dtype).max, size=num_values,
                        dtype=np.uint64, endpoint=True).astype(dtype)
    field = pool[rng.integers(0, num_values, size=[shape[0]] + coarse)]
    for axis in (1, 2, 3):
        field = np.repeat(field, 3, axis=axis)
    return np.ascontiguousarray(field[:, : shape[1], : shape[2], : shape[3]])


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(
    "zyx, block",
    [
        ((16, 16, 16), (8, 8, 8)),  # multiple of the block
        ((11, 13, 17), (8, 8, 8)),  # clipped edge blocks
        ((3, 5, 7), (8, 8, 8)),  # block bigger than the chunk
        ((9, 10, 12), (4, 8, 2)),  # non-cubic block
        ((1, 1, 1), (8, 8, 8)),  # one voxel
        ((5, 6, 7), (1, 1, 1)),  # one-voxel blocks
        ((4, 4, 24), (3, 3, 3)),  # block volume not a multiple of 32 bits
    ],
)
def test_roundtrip_shapes(dtype, channels, zyx, block):
    rng = np.random.default_rng(hash((zyx, block, channels)) % 2**32)
    for num_values in (1, 2, 5, 40):
        roundtrip(labels(rng, (channels,) + zyx, dtype, num_values), block)


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
def test_roundtrip_all_same(dtype):
    array = np.full((2, 20, 20, 20), 12345, dtype=dtype)
    encoded = roundtrip(array, (8, 8, 8))
    # One shared table per channel: every block points at the same offset.
    head = np.frombuffer(encoded, "<u4")
    base = head[0]
    headers = head[base : base + 2 * 27].reshape(27, 2)
    assert len(set(headers[:, 0].tolist())) == 1
    assert headers[0, 0] >> 24 == 0


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
@pytest.mark.parametrize("block", [(8, 8, 8), (4, 8, 2), (5, 3, 7)])
def test_roundtrip_random_noise(dtype, block):
    # All-distinct 8^3 blocks (b = 16) and ~30 values per block (b = 8, the
    # argsort ranking path), plus clipped blocks.
    rng = np.random.default_rng(7)
    for high in (None, 29):
        array = rng.integers(0, high or np.iinfo(dtype).max, size=(2, 13, 17, 19),
                             dtype=np.uint64, endpoint=True).astype(dtype)
        roundtrip(array, block)


def test_roundtrip_32_bit_indices():
    # More than 2**16 distinct values in one block needs b = 32.
    rng = np.random.default_rng(3)
    array = rng.integers(0, 2**32, size=(1, 32, 64, 64), dtype=np.uint64).astype(np.uint32)
    assert np.unique(array).size > 2**16
    encoded = roundtrip(array, (64, 64, 32))
    assert np.frombuffer(encoded, "<u4")[1] >> 24 == 32


def test_roundtrip_uint64_high_bits():
    rng = np.random.default_rng(4)
    high = rng.integers(1, 2**32, size=6, dtype=np.uint64) << np.uint64(32)
    array = (high[rng.integers(0, 6, size=(1, 12, 12, 12))] | np.uint64(5)).astype(np.uint64)
    array[0, 0, 0, 0] = 2**64 - 1
    array[0, 1, 0, 0] = 5  # shares the low word with every other value
    roundtrip(array, (8, 8, 8))


@pytest.mark.parametrize(
    "values",
    [
        [1, 2, 2**63],  # high words collide: 32-bit stand-ins unusable
        [2**40 + 1, 2**40 + 2, 2**40 + 2**31],  # constant high bits, low word decides
        [2**63 + 5, 2**40 + 5, 5, 2**64 - 1],  # distinct high words, equal low words
    ],
)
def test_roundtrip_uint64_narrowing_cases(values):
    rng = np.random.default_rng(12)
    values = np.array(values, dtype=np.uint64)
    array = values[rng.integers(0, len(values), size=(1, 9, 10, 11))]
    encoded = roundtrip(array, (4, 4, 4))
    if cseg is not None:
        assert encoded == cseg.compress(array[0].T, block_size=(4, 4, 4), order="F")


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
@pytest.mark.parametrize("zyx", [(64, 64, 64), (40, 50, 60)])
def test_roundtrip_sparse_and_dense(dtype, zyx):
    # Exercise both decoder strategies: per-block fill (mostly single-valued
    # blocks) and per-voxel gather (mostly multi-valued blocks).
    rng = np.random.default_rng(5)
    dense = labels(rng, (1,) + zyx, dtype, 200)
    sparse = np.zeros_like(dense)
    sparse[:, 10:20, 5:30, 7:9] = dense[:, 10:20, 5:30, 7:9]
    roundtrip(dense, (8, 8, 8))
    roundtrip(sparse, (8, 8, 8))


def test_encode_shares_identical_tables_only():
    # Blocks (2x1x1) holding {1, 2}, {2, 1}, {1}, {1, 2}, {1, 3}: tables of
    # blocks 0, 1 and 3 are the same set and must be written once.
    array = np.array([[[[1, 2, 2, 1, 1, 1, 1, 2, 3, 1]]]], dtype=np.uint32)
    encoded = np.frombuffer(cs.encode(array, (2, 1, 1)), "<u4")
    headers = encoded[1:11].reshape(5, 2)
    toff = headers[:, 0] & 0xFFFFFF
    assert toff[0] == toff[1] == toff[3]
    assert toff[4] != toff[0] and toff[2] != toff[0]
    # channel offset, 10 header words, one value word for each of the four
    # b = 1 blocks, tables [1, 2], [1], [1, 3]
    assert encoded.size == 1 + 10 + 4 + 2 + 1 + 2
    roundtrip(array, (2, 1, 1))


def test_encode_hash_collisions_fall_back_to_exact(monkeypatch):
    rng = np.random.default_rng(6)
    array = labels(rng, (1, 20, 20, 20), np.uint64, 30)
    expected = cs.encode(array, (8, 8, 8))
    monkeypatch.setattr(_encode, "_table_hashes", lambda t, s, c: np.zeros(c.size, np.uint64))
    assert cs.encode(array, (8, 8, 8)) == expected


def test_encode_offset_limit(monkeypatch):
    array = np.arange(64, dtype=np.uint32).reshape(1, 4, 4, 4)
    monkeypatch.setattr(_encode, "MAX_OFFSET", 40)
    with pytest.raises(ValueError, match="24-bit"):
        cs.encode(array, (2, 2, 2))


@pytest.mark.parametrize(
    "array, block",
    [
        (np.zeros((4, 4, 4), np.uint32), (2, 2, 2)),  # not 4-D
        (np.zeros((1, 4, 4, 4), np.int32), (2, 2, 2)),  # signed
        (np.zeros((1, 4, 4, 4), np.uint16), (2, 2, 2)),  # wrong width
        (np.zeros((1, 4, 4, 4), np.uint32), (2, 0, 2)),  # empty block
        (np.zeros((1, 4, 4, 4), np.uint32), (2, 2)),  # not 3 sizes
    ],
)
def test_encode_rejects_bad_arguments(array, block):
    with pytest.raises(ValueError):
        cs.encode(array, block)


# --------------------------------------------------------------------------
# Blocks much larger than the chunk (digest 7.4): cost follows the chunk
# --------------------------------------------------------------------------


@pytest.fixture
def voxelwise(monkeypatch):
    """Force the per-voxel path (normally only for blocks much larger than the chunk)."""
    _blocks.block_grid.cache_clear()
    monkeypatch.setattr(_blocks, "_VOXELWISE_RATIO", -1)
    yield
    _blocks.block_grid.cache_clear()


def single_value_buffer(num_blocks, value):
    """uint32 channel whose blocks all have b = 0 and share the table [value]."""
    return words(1, *([2 * num_blocks, 2 * num_blocks] * num_blocks), value)


def limited(func, raises=None):
    """Run ``func()``; return its result (or the exception of type ``raises``
    it raised), its peak traced allocation in bytes (NumPy reports its
    buffers to tracemalloc) and its duration in seconds."""
    _blocks.block_grid.cache_clear()
    tracemalloc.start()
    start = time.perf_counter()
    try:
        try:
            result = func()
        except raises or () as exc:
            result = exc
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    if raises is not None and not isinstance(result, raises):
        pytest.fail(f"{raises.__name__} not raised")
    return result, peak, elapsed


HUGE_BLOCKS = [((2048, 2048, 2048), 1), ((4096, 1, 1), 2), ((2**40, 2**40, 2**40), 1)]


@pytest.mark.parametrize("block, num_blocks", HUGE_BLOCKS, ids=["2048^3", "4096x1x1", "2^40^3"])
def test_huge_block_decode_is_bounded(block, num_blocks):
    buf = single_value_buffer(num_blocks, 7)
    out, peak, elapsed = limited(lambda: cs.decode(buf, (2, 2, 1), 1, "uint32", block))
    np.testing.assert_array_equal(out, np.full((1, 1, 2, 2), 7, np.uint32))
    assert peak < 1 << 20 and elapsed < 1


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
@pytest.mark.parametrize("block, num_blocks", HUGE_BLOCKS, ids=["2048^3", "4096x1x1", "2^40^3"])
def test_huge_block_single_value_roundtrip_is_bounded(dtype, block, num_blocks):
    array = np.full((1, 1, 2, 2), 2**31 + 5, dtype=dtype)
    encoded, peak, elapsed = limited(lambda: roundtrip(array, block))
    assert peak < 1 << 20 and elapsed < 1
    # Headers, then one shared table.
    wpe = np.dtype(dtype).itemsize // 4
    assert len(encoded) == 4 * (1 + 2 * num_blocks + wpe)
    if dtype == np.uint32:
        # Block 0 writes the table at its values offset, the others share it.
        header = [2 * num_blocks, 2 * num_blocks] + [2 * num_blocks, 2 * num_blocks + 1] * (
            num_blocks - 1
        )
        assert encoded == words(1, *header, 2**31 + 5)


def test_huge_block_two_values_roundtrip():
    # (4096, 1, 1) blocks: each 2-voxel x row is a block with b = 1, whose
    # values region is 4096 bits = 128 words, all but the first bits 0.
    array = np.array([[[[3, 4], [5, 3]]]], np.uint32)
    encoded, peak, elapsed = limited(lambda: roundtrip(array, (4096, 1, 1)))
    assert peak < 1 << 20 and elapsed < 1
    w = np.frombuffer(encoded, "<u4")
    assert w.size == 1 + 4 + 2 * (128 + 2)
    assert w[1] == (1 << 24) | (4 + 128) and w[2] == 4
    assert w[5] == 0b10 and not w[6:5 + 128].any() and w[5 + 128 :5 + 130].tolist() == [3, 4]
    assert w[3] == (1 << 24) | (4 + 130 + 128) and w[4] == 4 + 130
    assert w[5 + 130] == 0b01 and w[5 + 130 + 128 :].tolist() == [3, 5]


@pytest.mark.parametrize("data_type", ["uint32", "uint64"])
@pytest.mark.parametrize("block, words_needed", [
    ((2048,) * 3, "268435456"),
    ((2**40,) * 3, str(2**120 // 32)),
    ((2**30 + 1, 1, 1), str(2**25 + 1)),
])
def test_huge_block_short_values_region_rejected_before_allocating(data_type, block,
                                                                   words_needed):
    # A b = 1 block needs ceil(block voxels / 32) value words: a short buffer
    # is rejected without allocating anything of that size.
    buf = words(1, 0x01000002, 2, 7, 0)
    exc, peak, elapsed = limited(
        lambda: cs.decode(buf, (2, 1, 1), 1, data_type, block), InvalidFormatError
    )
    assert f"{words_needed} words) extend past the end" in str(exc)
    assert peak < 1 << 20 and elapsed < 1


@pytest.mark.parametrize("block", [(2048,) * 3, (2**40,) * 3, (2**29 + 1, 1, 1)])
def test_huge_block_encode_offset_limit_before_allocating(block):
    # Two values per block: b = 1 and a values region of >= 2**24 words.
    array = np.array([[[[3, 4], [5, 3]]]], np.uint32)
    exc, peak, elapsed = limited(lambda: cs.encode(array, block), ValueError)
    assert "24-bit" in str(exc)
    assert peak < 1 << 20 and elapsed < 1
    # Just below the limit it fits: a values region of 2**24 - 8 words.
    encoded = cs.encode(array[:, :, :1], (2**29 - 32 * 8, 1, 1))
    assert len(encoded) == 4 * (1 + 2 + 2**24 - 8 + 2)


def test_large_block_checks_in_chunk_indices_only():
    # One 16^3 block over a 3x2x1 chunk, b = 1, one-entry table [7] at the
    # end: index 1 at every padding position is ignored, at an in-chunk
    # position (p = x + 16 y) rejected.
    values = np.full(128, 0xFFFFFFFF, np.uint32)
    values[0] = 0xFFFFFFFF & ~0b111_0000000000000_111  # p = 0, 1, 2, 16, 17, 18
    buf = words(1, 0x01000000 | 130, 2) + values.astype("<u4").tobytes() + words(7)
    out = cs.decode(buf, (3, 2, 1), 1, "uint32", (16, 16, 16))
    np.testing.assert_array_equal(out, np.full((1, 1, 2, 3), 7, np.uint32))
    values[0] |= 1 << 17
    buf = words(1, 0x01000000 | 130, 2) + values.astype("<u4").tobytes() + words(7)
    match = r"block \(0, 0, 0\) uses table index 1 but only 1"
    with pytest.raises(InvalidFormatError, match=match):
        cs.decode(buf, (3, 2, 1), 1, "uint32", (16, 16, 16))


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
@pytest.mark.parametrize(
    "zyx, block",
    [
        ((16, 16, 16), (8, 8, 8)),
        ((11, 13, 17), (8, 8, 8)),
        ((3, 5, 7), (8, 8, 8)),
        ((9, 10, 12), (4, 8, 2)),
        ((5, 6, 7), (1, 1, 1)),
        ((4, 4, 24), (3, 3, 3)),
        ((13, 17, 19), (5, 3, 7)),
    ],
)
def test_voxelwise_path_matches_fast_path(request, dtype, zyx, block):
    rng = np.random.default_rng(hash((zyx, block)) % 2**32)
    arrays = [labels(rng, (2,) + zyx, dtype, n) for n in (1, 2, 5, 40)]
    noise = rng.integers(0, np.iinfo(dtype).max, size=(1,) + zyx, dtype=np.uint64,
                         endpoint=True).astype(dtype)
    arrays.append(noise)
    arrays.append(noise % 29)
    expected = [cs.encode(a, block) for a in arrays]
    request.getfixturevalue("voxelwise")
    for array, encoded in zip(arrays, expected):
        assert roundtrip(array, block) == encoded


def test_voxelwise_path_32_bit_indices(voxelwise):
    rng = np.random.default_rng(3)
    array = rng.integers(0, 2**32, size=(1, 2, 256, 160), dtype=np.uint64).astype(np.uint32)
    assert np.unique(array).size > 2**16
    encoded = roundtrip(array, (256, 256, 2))
    assert np.frombuffer(encoded, "<u4")[1] >> 24 == 32


@pytest.mark.usefixtures("voxelwise")
def test_voxelwise_path_leniency_and_rejections():
    test_worked_example_1_decode()
    test_worked_example_2_decode()
    test_decode_tables_first_unsorted_and_shared()
    test_decode_ignores_padding_indices()
    test_decode_values_offset_at_end_for_single_value_block()
    test_decode_uses_full_32_bit_values_offset()
    test_decode_rejects_uint64_half_entry()
    test_decode_rejects_bad_index_in_many_blocks()
    for param in REJECT_CASES:
        test_decode_rejects(*param)


@needs_ts
@pytest.mark.parametrize("data_type", ["uint32", "uint64"])
@pytest.mark.parametrize(
    "size_xyz, chunk, block",
    [
        ((3, 2, 2), (3, 2, 2), (16, 16, 16)),
        ((5, 3, 2), (3, 2, 2), (16, 16, 16)),  # clipped edge chunks
        ((4, 3, 2), (4, 3, 2), (64, 1, 1)),  # one block per x row
    ],
)
def test_large_block_byte_identical_to_tensorstore(tmp_path, data_type, size_xyz, chunk, block):
    dtype = np.dtype(data_type)
    X, Y, Z = size_xyz
    array = np.full((1, Z, Y, X), 2**31 + 17, dtype=dtype)
    array[0, :, 1:, ::2] = 3  # two labels: b = 1 blocks larger than the chunk
    files = read_tensorstore_chunks(tmp_path, array, chunk, block, data_type)
    for (x0, y0, z0, x1, y1, z1), stored in files.items():
        piece = array[:, z0:z1, y0:y1, x0:x1]
        assert _blocks.block_grid(piece.shape[1:], block[::-1]).voxelwise
        assert cs.encode(piece, block) == stored, (x0, y0, z0)
        decoded = cs.decode(stored, (x1 - x0, y1 - y0, z1 - z0), 1, data_type, block)
        np.testing.assert_array_equal(decoded, piece)


# --------------------------------------------------------------------------
# Reference implementations
# --------------------------------------------------------------------------


def read_tensorstore_chunks(path, array, chunk, block, data_type):
    """Write ``array`` (C, Z, Y, X) with TensorStore and return {origin: chunk bytes}."""
    C, Z, Y, X = array.shape
    store = ts.open(
        {
            "driver": "neuroglancer_precomputed",
            "kvstore": {"driver": "file", "path": str(path)},
            "multiscale_metadata": {
                "type": "segmentation",
                "data_type": data_type,
                "num_channels": C,
            },
            "scale_metadata": {
                "key": "s0",
                "size": [X, Y, Z],
                "resolution": [1, 1, 1],
                "encoding": "compressed_segmentation",
                "compressed_segmentation_block_size": list(block),
                "chunk_size": list(chunk),
            },
            "create": True,
        }
    ).result()
    store[...] = array.transpose(3, 2, 1, 0)  # TS domain is [x, y, z, channel]
    files = {}
    for x0 in range(0, X, chunk[0]):
        for y0 in range(0, Y, chunk[1]):
            for z0 in range(0, Z, chunk[2]):
                x1, y1, z1 = min(x0 + chunk[0], X), min(y0 + chunk[1], Y), min(z0 + chunk[2], Z)
                name = path / "s0" / f"{x0}-{x1}_{y0}-{y1}_{z0}-{z1}"
                files[(x0, y0, z0, x1, y1, z1)] = name.read_bytes()
    return files


@needs_ts
@pytest.mark.parametrize(
    "data_type, channels, size_xyz, chunk, block",
    [
        ("uint64", 1, (40, 37, 19), (32, 32, 16), (8, 8, 8)),  # clipped edge chunks
        ("uint32", 1, (24, 20, 9), (16, 16, 8), (4, 8, 2)),  # non-cubic blocks
        ("uint64", 2, (20, 18, 11), (16, 16, 8), (8, 4, 2)),  # two channels
        ("uint32", 2, (10, 6, 5), (10, 6, 5), (16, 16, 16)),  # block bigger than chunk
    ],
)
def test_byte_identical_to_tensorstore(tmp_path, data_type, channels, size_xyz, chunk, block):
    dtype = np.dtype(data_type)
    rng = np.random.default_rng(8)
    X, Y, Z = size_xyz
    # Non-zero everywhere: TensorStore does not write all-zero chunks.
    array = labels(rng, (channels, Z, Y, X), dtype, 25)
    array[array == 0] = 1
    array[:, ::5, ::7, ::3] = rng.integers(1, 2**31, size=array[:, ::5, ::7, ::3].shape)
    files = read_tensorstore_chunks(tmp_path, array, chunk, block, data_type)
    assert len(files) > 1 or size_xyz == chunk
    for (x0, y0, z0, x1, y1, z1), stored in files.items():
        piece = array[:, z0:z1, y0:y1, x0:x1]
        assert cs.encode(piece, block) == stored, (x0, y0, z0)
        decoded = cs.decode(stored, (x1 - x0, y1 - y0, z1 - z0), channels, data_type, block)
        np.testing.assert_array_equal(decoded, piece)


@needs_cseg
@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
@pytest.mark.parametrize("zyx, block", [((32, 32, 32), (8, 8, 8)), ((13, 21, 30), (4, 8, 2))])
def test_agrees_with_cpp_codec(dtype, zyx, block):
    rng = np.random.default_rng(9)
    for num_values in (1, 3, 17, 300):
        array = labels(rng, (1,) + zyx, dtype, num_values)
        array[0, ::4, ::3, ::5] = rng.integers(0, 1000, size=array[0, ::4, ::3, ::5].shape)
        fortran = array[0].T  # (X, Y, Z) in Fortran order, as the C++ codec expects
        reference = cseg.compress(fortran, block_size=block, order="F")
        assert cs.encode(array, block) == reference
        decoded = cs.decode(reference, chunk_size_of(array), 1, np.dtype(dtype).name, block)
        np.testing.assert_array_equal(decoded, array)
        ours = cs.decode(cs.encode(array, block), chunk_size_of(array), 1,
                         np.dtype(dtype).name, block)
        np.testing.assert_array_equal(
            ours[0].T, cseg.decompress(reference, chunk_size_of(array), dtype, block, order="F")
        )


# --------------------------------------------------------------------------
# Decoder leniency (section 7.4)
# --------------------------------------------------------------------------


def test_decode_tables_first_unsorted_and_shared():
    # Chunk 4x2x1, block 2x2x1, NGS-style: tables before values, block 0's
    # table unsorted, block 1 reusing a table with a different b.
    buf = words(
        1,
        0x01000004, 6,  # block 0: table at +4 ([9, 5]), b = 1, values at +6
        0x00000005, 7,  # block 1: table at +5 (entry 0 = 5), b = 0, values at +7 = end
        9, 5,  # table [9, 5]
        0b0111,  # block 0 indices: p = 0, 1, 2 -> 1 (= 5), p = 3 -> 0 (= 9)
    )
    out = cs.decode(buf, (4, 2, 1), 1, "uint32", (2, 2, 1))
    np.testing.assert_array_equal(out, [[[[5, 5, 5, 5], [5, 9, 5, 5]]]])


def test_decode_ignores_padding_indices():
    # Chunk 3x2x1 with block 2x2x1: block 1 covers x = 2 only; its x = 3
    # padding positions (p = 1, 3) point past its one-entry table [7].
    buf = words(1, 0x01000005, 4, 0x01000008, 7, 0b1000, 5, 9, 0b1010, 7)
    out = cs.decode(buf, (3, 2, 1), 1, "uint32", (2, 2, 1))
    np.testing.assert_array_equal(out, [[[[5, 5, 7], [5, 9, 7]]]])
    buf64 = words(1, 0x01000005, 4, 0x0100000A, 9, 0b1000, 5, 0, 9, 0, 0b1010, 7, 0)
    out = cs.decode(buf64, (3, 2, 1), 1, "uint64", (2, 2, 1))
    np.testing.assert_array_equal(out, [[[[5, 5, 7], [5, 9, 7]]]])
    # Block 0 single-valued: the decoder fills block by block instead.
    buf64 = words(1, 0x00000004, 4, 0x01000007, 6, 5, 0, 0b1010, 7, 0)
    out = cs.decode(buf64, (3, 2, 1), 1, "uint64", (2, 2, 1))
    np.testing.assert_array_equal(out, [[[[5, 5, 7], [5, 5, 7]]]])


def test_decode_values_offset_at_end_for_single_value_block():
    # Example 1 already points block 1's values offset at +7 (word 8, inside);
    # moving it to +8 (= buffer end) is still legal because b = 0.
    buf = bytearray(EXAMPLE1_BYTES)
    buf[16:20] = struct.pack("<I", 8)
    out = cs.decode(bytes(buf), (4, 2, 1), 1, "uint32", (2, 2, 1))
    np.testing.assert_array_equal(out, EXAMPLE1_ARRAY)


def test_decode_uses_full_32_bit_values_offset():
    # A values offset of 2**24 + 4 must not be truncated to +4.
    buf = bytearray(EXAMPLE1_BYTES)
    buf[8:12] = struct.pack("<I", 2**24 + 4)
    with pytest.raises(InvalidFormatError, match="past the end"):
        cs.decode(bytes(buf), (4, 2, 1), 1, "uint32", (2, 2, 1))


# --------------------------------------------------------------------------
# Rejections (section 7.2)
# --------------------------------------------------------------------------


def patched(buf, word_index, value):
    b = bytearray(buf)
    b[4 * word_index : 4 * word_index + 4] = struct.pack("<I", value)
    return bytes(b)


REJECT_CASES = [
    (EXAMPLE1_BYTES + b"\0", 1, "multiple of 4"),
    (b"", 1, "fewer than"),
    (words(2), 2, "fewer than"),
    (patched(EXAMPLE1_BYTES, 0, 100), 1, "channel 0: data offset 100"),
    (patched(EXAMPLE1_BYTES, 0, 0), 1, "channel 0: data offset 0"),
    (EXAMPLE1_BYTES[:12], 1, "header table"),
    (words(2, 9, *struct.unpack("<8I", EXAMPLE1_BYTES[4:])), 2, "channel 1: header table"),
    (patched(EXAMPLE1_BYTES, 1, 0x03000005), 1, r"bit width 3\b"),
    (patched(EXAMPLE1_BYTES, 1, 0x40000005), 1, "bit width 64"),
    (patched(EXAMPLE1_BYTES, 1, 0xFF000005), 1, "bit width 255"),
    (patched(EXAMPLE1_BYTES, 1, 0x01000000 | 100), 1, r"table offset 100 of block \(0, 0, 0\)"),
    (patched(EXAMPLE1_BYTES, 3, 9), 1, r"table offset 9 of block \(1, 0, 0\)"),
    (patched(EXAMPLE1_BYTES, 2, 100), 1, r"values of block \(0, 0, 0\)"),
    (patched(EXAMPLE1_BYTES, 2, 8), 1, r"values of block \(0, 0, 0\)"),  # 1 word at end
    (patched(EXAMPLE1_BYTES, 4, 9), 1, r"values of block \(1, 0, 0\)"),  # b = 0, past end
    (patched(EXAMPLE1_BYTES, 3, 8), 1, "no complete table entry"),  # b = 0, table at end
    (EXAMPLE1_BYTES[:-4], 1, "no complete table entry"),  # truncated
    (patched(EXAMPLE1_BYTES, 1, 0x01000007), 1, "uses table index 1 but only 1"),
]


@pytest.mark.parametrize("buf, channels, match", REJECT_CASES)
def test_decode_rejects(buf, channels, match):
    with pytest.raises(InvalidFormatError, match=match):
        cs.decode(buf, (4, 2, 1), channels, "uint32", (2, 2, 1))


def test_decode_rejects_uint64_half_entry():
    # Block 1's table [7, 2**40 + 7] loses its last word: only one complete
    # uint64 entry is left, but index 1 is used.
    with pytest.raises(InvalidFormatError, match="uses table index 1 but only 1"):
        cs.decode(EXAMPLE2_BYTES[:-4], (4, 2, 1), 1, "uint64", (2, 2, 1))


def test_decode_rejects_bad_index_in_many_blocks():
    # Large chunks take the per-voxel gather path; corrupt the last block's
    # table offset so its indices run past the buffer end.
    rng = np.random.default_rng(10)
    array = labels(rng, (1, 16, 16, 16), np.uint32, 200)
    buf = np.frombuffer(cs.encode(array, (8, 8, 8)), "<u4").copy()
    nwords = buf.size
    buf[1 + 2 * 7] = (buf[1 + 2 * 7] & 0xFF000000) | (nwords - 2)
    with pytest.raises(InvalidFormatError, match=r"block \(1, 1, 1\) uses table index"):
        cs.decode(buf.tobytes(), (16, 16, 16), 1, "uint32", (8, 8, 8))


def test_decode_rejects_bad_arguments():
    with pytest.raises(ValueError):
        cs.decode(EXAMPLE1_BYTES, (4, 2, 1), 1, "uint16", (2, 2, 1))
    with pytest.raises(ValueError):
        cs.decode(EXAMPLE1_BYTES, (4, 0, 1), 1, "uint32", (2, 2, 1))
    with pytest.raises(ValueError):
        cs.decode(EXAMPLE1_BYTES, (4, 2, 1), 0, "uint32", (2, 2, 1))


def reference_decode(buf, chunk_size, channels, data_type, block):
    """Voxel-by-voxel decoder written from the digest's pseudo-code (slow).

    Applies the rejection rules of section 7.2 to in-chunk voxels only.
    """
    if len(buf) % 4:
        raise InvalidFormatError("length")
    w = struct.unpack(f"<{len(buf) // 4}I", buf)
    n = len(w)
    if n < channels:
        raise InvalidFormatError("channels")
    X, Y, Z = chunk_size
    bx_, by_, bz_ = block
    gx, gy, gz = -(-X // bx_), -(-Y // by_), -(-Z // bz_)
    wpe = 2 if data_type == "uint64" else 1
    out = np.zeros((channels, Z, Y, X), dtype=data_type)
    for c in range(channels):
        base = w[c]
        if base < channels or base > n or base + 2 * gx * gy * gz > n:
            raise InvalidFormatError("channel")
        for bz in range(gz):
            for by in range(gy):
                for bx in range(gx):
                    blk = bx + gx * (by + gy * bz)
                    h0, h1 = w[base + 2 * blk], w[base + 2 * blk + 1]
                    toff, b, voff = base + (h0 & 0xFFFFFF), h0 >> 24, base + h1
                    if b not in cs.VALID_BITS or toff > n or voff > n:
                        raise InvalidFormatError("header")
                    if voff + (b * bx_ * by_ * bz_ + 31) // 32 > n:
                        raise InvalidFormatError("values")
                    entries = (n - toff) // wpe
                    for z in range(bz * bz_, min(Z, (bz + 1) * bz_)):
                        for y in range(by * by_, min(Y, (by + 1) * by_)):
                            for x in range(bx * bx_, min(X, (bx + 1) * bx_)):
                                p = (x - bx * bx_) + bx_ * ((y - by * by_) + by_ * (z - bz * bz_))
                                idx = 0
                                if b:
                                    idx = (w[voff + p * b // 32] >> (p * b % 32)) & ((1 << b) - 1)
                                if idx >= entries:
                                    raise InvalidFormatError("index")
                                value = w[toff + idx * wpe]
                                if wpe == 2:
                                    value |= w[toff + idx * wpe + 1] << 32
                                out[c, z, y, x] = value
    return out


def test_reference_decoder_matches_examples():
    np.testing.assert_array_equal(
        reference_decode(EXAMPLE2_BYTES, (4, 2, 1), 1, "uint64", (2, 2, 1)), EXAMPLE2_ARRAY
    )


@pytest.mark.parametrize("force_voxelwise", [False, True], ids=["auto", "voxelwise"])
@pytest.mark.parametrize("data_type, zyx, block", [
    ("uint64", (5, 9, 11), (4, 4, 4)),
    ("uint32", (12, 12, 12), (8, 8, 8)),
    ("uint32", (3, 7, 5), (2, 3, 4)),
    ("uint32", (2, 3, 5), (16, 16, 16)),  # blocks much larger than the chunk
    ("uint64", (3, 4, 5), (1, 64, 2)),
])
def test_fuzz_agrees_with_reference_decoder(request, data_type, zyx, block, force_voxelwise):
    if force_voxelwise:
        request.getfixturevalue("voxelwise")
    # Mutated buffers must either be rejected by both decoders (ours with
    # InvalidFormatError only) or decode to the same array.
    rng = np.random.default_rng(11)
    dtype = np.dtype(data_type)
    array = labels(rng, (2,) + zyx, dtype, 12)
    array[:, 3:] = 0  # mostly single-valued blocks below, multi-valued above
    valid = cs.encode(array, block)
    chunk_size = chunk_size_of(array)
    header_words = 2 + 2 * 2 * int(np.prod([-(-s // b) for s, b in zip(zyx, block[::-1])]))
    outcomes = {"ok": 0, "error": 0}
    for trial in range(300):
        buf = bytearray(valid)
        kind = trial % 5
        if kind == 0:
            del buf[rng.integers(0, len(buf)):]
        elif kind == 1:
            for _ in range(rng.integers(1, 4)):
                buf[rng.integers(0, len(buf))] = rng.integers(0, 256)
        elif kind == 2:
            # A random header word: where damage is most interesting.
            i = rng.integers(0, min(len(buf) // 4, header_words))
            buf[4 * i : 4 * i + 4] = struct.pack("<I", int(rng.integers(0, 2**32)))
        elif kind == 3:
            # A plausible header word: small offset, sometimes a valid width.
            i = rng.integers(0, min(len(buf) // 4, header_words))
            value = int(rng.integers(0, len(buf) // 4 + 3))
            value |= int(rng.choice(cs.VALID_BITS)) << 24 if rng.random() < 0.5 else 0
            buf[4 * i : 4 * i + 4] = struct.pack("<I", value)
        else:
            buf += bytes(rng.integers(0, 256, size=rng.integers(1, 9), dtype=np.uint8))
        buf = bytes(buf)
        try:
            expected = reference_decode(buf, chunk_size, 2, data_type, block)
        except InvalidFormatError:
            expected = None
        try:
            out = cs.decode(buf, chunk_size, 2, data_type, block)
        except InvalidFormatError:
            assert expected is None, f"trial {trial}: valid buffer rejected"
            outcomes["error"] += 1
        else:
            assert expected is not None, f"trial {trial}: invalid buffer accepted"
            assert out.shape == array.shape and out.dtype == dtype
            np.testing.assert_array_equal(out, expected)
            outcomes["ok"] += 1
    assert outcomes["error"] > 0 and outcomes["ok"] > 0


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
def test_encode_leaves_the_input_alone(dtype):
    # A chunk of exactly one block is already in block-row layout; sorting
    # must not happen in the caller's array.
    rng = np.random.default_rng(21)
    array = rng.integers(0, 2**40, size=(1, 4, 4, 4), dtype=np.uint64).astype(dtype)
    before = array.copy()
    roundtrip(array, (4, 4, 4))
    assert np.array_equal(array, before)


@pytest.mark.parametrize("inner", [7, 2**50 + 3, 2**64 - 1])
def test_roundtrip_uint64_label_missed_by_the_narrowing_sample(inner):
    # The 32-bit ranking keys are chosen from the first and last voxel of
    # every block; a label found only inside a block must still come out
    # right, whether it widens the label range or is the only other label.
    array = np.zeros((1, 8, 8, 8), dtype=np.uint64)
    array[0, :4] = 5
    array[0, 1, 2, 1] = inner
    encoded = roundtrip(array, (4, 4, 4))
    if cseg is not None:
        assert encoded == cseg.compress(array[0].T, block_size=(4, 4, 4), order="F")
