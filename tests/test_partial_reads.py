"""Reading part of a chunk: raw z-slices by byte range, compressed_segmentation
z-slabs by layers of blocks. Results must equal slicing the whole chunk."""

import gzip
import io

import numpy as np
import pytest
from conftest import label_volume, make_info, smooth_volume
from PIL import Image

from napari_precomputed import compressed_segmentation, jpeg_bands
from napari_precomputed.accessor import get_accessor_for_url
from napari_precomputed.errors import ChunkNotFoundError, InvalidFormatError
from napari_precomputed.file_accessor import FileAccessor
from napari_precomputed.lazy_array import PrecomputedArray
from napari_precomputed.precomputed_io import get_IO_for_existing_dataset
from napari_precomputed.volume import read_region, write_region

COORDS = (0, 4, -2, 0, 10, 11)


@pytest.mark.parametrize("shape, block", [((64, 64, 64), (8, 8, 8)), ((37, 20, 9), (4, 3, 5)),
                                          ((5, 6, 7), (2, 2, 2)), ((9, 4, 4), (16, 2, 2))])
@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
@pytest.mark.parametrize("channels", [1, 2])
def test_slab_decode_equals_slice_of_whole(shape, block, dtype, channels):
    chunk = label_volume((channels,) + shape, dtype, n_labels=9)
    buf = compressed_segmentation.encode(chunk, block[::-1])
    z, bz = shape[0], block[0]
    layers = -(-z // bz)
    for first in range(layers):
        for stop in range(first + 1, layers + 1):
            slab = compressed_segmentation.decode(buf, shape[::-1], channels, dtype,
                                                  block[::-1], z_blocks=(first, stop))
            np.testing.assert_array_equal(slab, chunk[:, first * bz:min(stop * bz, z)])


def test_slab_decode_checks_its_range_and_its_blocks():
    chunk = label_volume((1, 16, 8, 8), np.uint32)
    buf = bytearray(compressed_segmentation.encode(chunk, (8, 8, 8)))
    with pytest.raises(ValueError, match="z_blocks"):
        compressed_segmentation.decode(buf, (8, 8, 16), 1, "uint32", (8, 8, 8), z_blocks=(1, 3))
    # Corrupt the bit width of the block in layer 1: layer 0 still decodes,
    # layer 1 names the block.
    buf[4 + 8 + 3] = 3  # after the channel offset and block 0: top byte of block 1
    compressed_segmentation.decode(bytes(buf), (8, 8, 16), 1, "uint32", (8, 8, 8),
                                   z_blocks=(0, 1))
    with pytest.raises(InvalidFormatError, match="bit width 3.*block layer 1"):
        compressed_segmentation.decode(bytes(buf), (8, 8, 16), 1, "uint32", (8, 8, 8),
                                       z_blocks=(1, 2))


@pytest.mark.parametrize("encoding, make", [
    ("raw", lambda: smooth_volume((1, 20, 50, 70), "uint16")),
    ("raw", lambda: smooth_volume((2, 20, 50, 70), "float32")),
    ("compressed_segmentation", lambda: label_volume((1, 20, 50, 70), np.uint64)),
    ("compressed_segmentation", lambda: label_volume((2, 20, 50, 70), np.uint32)),
])
def test_planes_and_slabs_equal_the_volume(new_dataset, encoding, make):
    volume = make()
    io, _ = new_dataset(volume, encoding=encoding, voxel_offset=(3, -4, 5),
                        chunk_size=(32, 32, 16),
                        **({"compressed_segmentation_block_size": [8, 8, 4]}
                           if encoding == "compressed_segmentation" else {}))
    for z0, z1 in [(5, 6), (12, 13), (20, 21), (24, 25), (7, 19), (6, 25)]:
        got = read_region(io, "s0", (3, -4, z0), (73, 46, z1))
        np.testing.assert_array_equal(got, volume[:, z0 - 5:z1 - 5])
    lazy = PrecomputedArray(io, "s0", channel=0)
    for z in (0, 3, 4, 19):
        np.testing.assert_array_equal(lazy[z], volume[0, z])
        np.testing.assert_array_equal(lazy[z, 10:20, 5], volume[0, z, 10:20, 5])


def test_raw_byte_range_reads_only_the_plane_and_checks_the_length(new_dataset):
    volume = smooth_volume((1, 16, 32, 32), "uint8")
    io, path = new_dataset(volume, chunk_size=(32, 32, 16))
    chunk_file = path / "s0" / "0-32_0-32_0-16"
    data, total = FileAccessor(path).fetch_chunk_range("s0", (0, 32, 0, 32, 0, 16),
                                                       3 * 1024, 4 * 1024)
    assert total == 16 * 1024 and data == volume[0, 3].tobytes()
    chunk_file.write_bytes(chunk_file.read_bytes() + b"\0")
    with pytest.raises(InvalidFormatError, match=r"0-32_0-32_0-16.*16385 bytes long"):
        read_region(io, "s0", (0, 0, 3), (32, 32, 4))


def test_range_of_gz_missing_and_nested_chunks(tmp_path):
    acc = FileAccessor(tmp_path)
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "0-4_-2-0_10-11.gz").write_bytes(gzip.compress(b"abcdef"))
    assert acc.fetch_chunk_range("s", COORDS, 1, 3) == (b"bc", 6)
    nested = tmp_path / "t" / "0-4" / "-2-0" / "10-11"
    nested.parent.mkdir(parents=True)
    nested.write_bytes(b"uvwxyz")
    assert acc.fetch_chunk_range("t", COORDS, 4, 10) == (b"yz", 6)
    with pytest.raises(ChunkNotFoundError):
        acc.fetch_chunk_range("u", COORDS, 0, 1)


def test_missing_chunks_read_as_zeros_in_planes(new_dataset):
    volume = label_volume((1, 16, 40, 40), np.uint32)
    io, path = new_dataset(volume, encoding="compressed_segmentation", chunk_size=(32, 32, 16))
    (path / "s0" / "0-32_0-32_0-16").unlink()
    io = get_IO_for_existing_dataset(get_accessor_for_url(str(path)))
    got = read_region(io, "s0", (0, 0, 9), (40, 40, 10))
    expected = volume[:, 9:10].copy()
    expected[:, :, :32, :32] = 0
    np.testing.assert_array_equal(got, expected)
    # Remembered as missing by a read that takes it as zeros, it still
    # raises for one that does not.
    from napari_precomputed.chunk_cache import ChunkCache

    cache = ChunkCache()
    read_region(io, "s0", (0, 0, 9), (40, 40, 10), cache=cache)
    with pytest.raises(ChunkNotFoundError):
        read_region(io, "s0", (0, 0, 3), (40, 40, 4), cache=cache, missing="error")


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("plane", ["xy", "xz"])
def test_jpeg_z_ranges_equal_the_whole_decode(channels, plane):
    from napari_precomputed.chunk_encoding import JpegChunkEncoder

    encoder = JpegChunkEncoder("uint8", channels, 90, plane)
    chunk = smooth_volume((channels, 20, 24, 40), "uint8")
    buf = encoder.encode(chunk)
    assert jpeg_bands.parse(buf) is not None  # written with restart markers
    whole = encoder.decode(buf, (40, 24, 20))
    for z0 in range(20):
        for z1 in range(z0 + 1, 21):
            part, first = encoder.decode_z_range(buf, (40, 24, 20), z0, z1)
            assert first == z0
            np.testing.assert_array_equal(part, whole[:, z0:z1])


@pytest.mark.parametrize("options", [{}, {"progressive": True, "restart_marker_rows": 1},
                                     {"restart_marker_blocks": 3}])
def test_jpeg_that_cannot_be_cut_is_decoded_whole(options):
    # What TensorStore and neuroglancer-scripts write has no restart markers;
    # progressive images and intervals that end mid-row cannot be cut either.
    from napari_precomputed.chunk_encoding import JpegChunkEncoder

    pixels = smooth_volume((1, 16, 16, 16), "uint8")[0].reshape(256, 16)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=90, **options)
    buf = out.getvalue()
    assert jpeg_bands.parse(buf) is None
    encoder = JpegChunkEncoder("uint8", 1)
    part, first = encoder.decode_z_range(buf, (16, 16, 16), 5, 6)
    # All of it, since it was decoded whole: the other planes reuse it.
    assert first == 0
    np.testing.assert_array_equal(part, encoder.decode(buf, (16, 16, 16)))


def test_planes_of_jpegs_without_restart_markers_decode_each_chunk_once(new_dataset,
                                                                         monkeypatch):
    # As TensorStore and neuroglancer-scripts write them. Each plane used to
    # decode its chunk whole and cache a view of one z-slice that kept the
    # whole chunk alive: 64 times the bytes counted, without bound.
    from napari_precomputed.chunk_encoding import JpegChunkEncoder

    volume = smooth_volume((1, 32, 32, 32), "uint8")
    io_, path = new_dataset(volume, encoding="jpeg", chunk_size=(16, 16, 16))
    for chunk_file in (path / "s0").iterdir():
        pixels = np.asarray(Image.open(chunk_file))
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, format="JPEG", quality=95)
        chunk_file.write_bytes(out.getvalue())
    decodes = []
    decode = JpegChunkEncoder.decode
    monkeypatch.setattr(JpegChunkEncoder, "decode",
                        lambda self, *a: decodes.append(1) or decode(self, *a))
    array = PrecomputedArray(io_, "s0")
    whole = read_region(io_, "s0", (0, 0, 0), (32, 32, 32))
    decodes.clear()
    for z in range(32):
        np.testing.assert_array_equal(array[0, z], whole[0, z])
    assert len(decodes) == 8 and len(array.cache) == 8
    assert array.cache.nbytes < 8 * (16**3 + 200)


def test_the_cache_gives_heap_memory_back_when_it_held_many_entries(monkeypatch):
    import gc

    from napari_precomputed import chunk_cache

    trims = []
    monkeypatch.setattr(chunk_cache, "release_free_memory", lambda: trims.append(1))
    cache = chunk_cache.ChunkCache()
    for n in range(chunk_cache._PUTS_PER_TRIM + 10):
        cache.put(n, np.zeros(8, np.uint8))
    assert len(trims) == 1  # every _PUTS_PER_TRIM entries added
    del cache
    gc.collect()
    assert len(trims) == 2  # dropped holding many entries, right after a trim
    small = chunk_cache.ChunkCache()
    small.put(0, np.zeros(8, np.uint8))
    del small
    gc.collect()
    assert len(trims) == 2  # one made for a read: a trim would cost more than it gives


def test_the_cache_keeps_slices_as_copies():
    from napari_precomputed.chunk_cache import ChunkCache

    cache = ChunkCache()
    chunk = np.zeros((1, 64, 64, 64), np.uint8)
    cache.put("plane", chunk[:, 3:4])
    kept = cache.get("plane")
    assert not np.shares_memory(kept, chunk) and kept.shape == (1, 1, 64, 64)
    cache.put("whole", chunk)
    assert cache.get("whole") is chunk


@pytest.mark.parametrize("subsampling", [0, 1, 2])
def test_jpeg_planes_of_colour_subsampled_images_equal_the_whole_decode(subsampling):
    # Pillow writes 4:2:0 (subsampling=2) by default; with restart markers
    # such a file looks cuttable, but its chroma is upsampled across rows.
    from napari_precomputed.chunk_encoding import JpegChunkEncoder

    rgb = np.random.default_rng(0).integers(0, 256, (64, 16, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="JPEG", quality=75, subsampling=subsampling,
                              restart_marker_rows=1)
    buf = out.getvalue()
    assert (jpeg_bands.parse(buf) is None) == (subsampling == 2)
    encoder = JpegChunkEncoder("uint8", 3)
    whole = encoder.decode(buf, (16, 16, 4))
    for z in range(4):
        part, first = encoder.decode_z_range(buf, (16, 16, 4), z, z + 1)
        np.testing.assert_array_equal(part[:, z - first], whole[:, z])


def test_jpeg_band_parse_rejects_garbage():
    from napari_precomputed.chunk_encoding import JpegChunkEncoder

    buf = JpegChunkEncoder("uint8", 1).encode(np.zeros((1, 8, 8, 8), np.uint8))
    for bad in (b"", b"\xff\xd8", buf[:40], buf[:-2], b"\x00" + buf, buf[:200] + b"\xff\xd9"):
        assert jpeg_bands.parse(bad) is None
    with pytest.raises(InvalidFormatError, match="jpeg|JPEG"):
        JpegChunkEncoder("uint8", 1).decode_z_range(buf[:-30], (8, 8, 8), 2, 3)


def test_jpeg_planes_equal_the_whole_read(new_dataset):
    volume = smooth_volume((1, 20, 50, 70), "uint8")
    io, _ = new_dataset(volume, encoding="jpeg", voxel_offset=(3, -4, 5), chunk_size=(32, 32, 16))
    whole = read_region(io, "s0", (3, -4, 5), (73, 46, 25))
    for z in range(5, 25):
        np.testing.assert_array_equal(read_region(io, "s0", (3, -4, z), (73, 46, z + 1)),
                                      whole[:, z - 5:z - 4])


def test_slices_give_lazy_views_that_read_only_when_indexed(new_dataset):
    volume = smooth_volume((2, 20, 50, 70), "uint16")
    io, _ = new_dataset(volume, voxel_offset=(3, -4, 5), chunk_size=(32, 32, 8))
    array = PrecomputedArray(io, "s0")
    view = array[:, 2:18, 10:45, 5:69]
    assert isinstance(view, PrecomputedArray) and view.shape == (2, 16, 35, 64)
    inner = view[:, 3:, :20, 60:100]
    assert isinstance(inner, PrecomputedArray) and inner.shape == (2, 13, 20, 4)
    np.testing.assert_array_equal(np.asarray(inner), volume[:, 5:18, 10:30, 65:69])
    np.testing.assert_array_equal(inner[1, 4], volume[1, 9, 10:30, 65:69])
    np.testing.assert_array_equal(view[..., ::-3], volume[:, 2:18, 10:45, 5:69][..., ::-3])
    channel = view[1]
    assert isinstance(channel, PrecomputedArray) and channel.shape == (16, 35, 64)
    np.testing.assert_array_equal(channel[4:6][1], volume[1, 7, 10:45, 5:69])
    assert array[:, 5:5].shape == (2, 0, 50, 70) and np.asarray(array[:, 5:5]).size == 0


def test_boxes_larger_than_the_cache_do_not_fill_it(new_dataset):
    from napari_precomputed.chunk_cache import ChunkCache

    volume = label_volume((1, 20, 50, 70), np.uint64)
    io, _ = new_dataset(volume, encoding="compressed_segmentation", chunk_size=(32, 32, 16),
                        compressed_segmentation_block_size=[8, 8, 4])
    cache = ChunkCache(max_bytes=volume.nbytes // 2)
    whole = read_region(io, "s0", (0, 0, 0), (70, 50, 20), cache=cache)
    np.testing.assert_array_equal(whole, volume)
    assert len(cache) == 0  # it would have evicted itself, at a page fault a chunk
    plane = read_region(io, "s0", (0, 0, 3), (70, 50, 4), cache=cache)
    np.testing.assert_array_equal(plane, volume[:, 3:4])
    assert len(cache) > 0
    # What is cached is still used by a large read.
    again = read_region(io, "s0", (0, 0, 0), (70, 50, 20), cache=cache)
    np.testing.assert_array_equal(again, volume)


def test_strided_indexing_reads_no_chunk_past_its_last_element(new_dataset):
    volume = smooth_volume((1, 1, 1, 10), "uint8")
    io, path = new_dataset(volume, chunk_size=(5, 1, 1))
    (path / "s0" / "5-10_0-1_0-1").unlink()
    array = PrecomputedArray(io, "s0", missing="error")
    # Elements 0, 2, 4 (and 0, 3) all lie in chunk 0-5; the stop does not.
    np.testing.assert_array_equal(array[0, 0, 0, 0:5:2], volume[0, 0, 0, 0:5:2])
    np.testing.assert_array_equal(array[0, 0, 0, 0:4:3], volume[0, 0, 0, 0:4:3])
    np.testing.assert_array_equal(array[0, 0, 0, 4::-2], volume[0, 0, 0, 4::-2])
    np.testing.assert_array_equal(array[..., 0:4][..., ::3], volume[..., 0:4][..., ::3])
    with pytest.raises(ChunkNotFoundError):
        array[0, 0, 0, 0:6:5]
    with pytest.raises(IndexError):
        array[..., ...]


def test_read_region_into_out_zeros_what_lies_past_the_scale(new_dataset):
    volume = smooth_volume((1, 1, 1, 4), "uint8") + 1
    io, path = new_dataset(volume, chunk_size=(2, 1, 1))
    (path / "s0" / "2-4_0-1_0-1").unlink()
    out = np.full((1, 1, 1, 6), 9, np.uint8)
    got = read_region(io, "s0", (0, 0, 0), (6, 1, 1), out=out)
    assert got is out
    np.testing.assert_array_equal(out[0, 0, 0], [*volume[0, 0, 0, :2], 0, 0, 0, 0])


def test_subclass_with_the_reference_fetch_chunk_signature_still_reads(tmp_path):
    # Subclasses that override fetch_chunk(key, chunk_coords) without
    # max_size (as the reference API has it) keep working, .gz and missing
    # chunks included, for whole chunks and planes.
    from napari_precomputed.precomputed_io import get_IO_for_new_dataset

    calls = []

    class Counting(FileAccessor):
        def fetch_chunk(self, key, chunk_coords):
            calls.append(chunk_coords)
            return super().fetch_chunk(key, chunk_coords)

    volume = smooth_volume((1, 8, 8, 16), "uint8")
    info = make_info(size=(16, 8, 8), chunk_size=(8, 8, 8))
    io_ = get_IO_for_new_dataset(info, FileAccessor(str(tmp_path), gzip=True))
    write_region(io_, "s0", volume)
    (tmp_path / "s0" / "8-16_0-8_0-8.gz").unlink()
    io_ = get_IO_for_existing_dataset(Counting(str(tmp_path)))
    expected = volume.copy()
    expected[..., 8:] = 0
    np.testing.assert_array_equal(read_region(io_, "s0", (0, 0, 0), (16, 8, 8)), expected)
    np.testing.assert_array_equal(read_region(io_, "s0", (0, 0, 3), (16, 8, 4)),
                                  expected[:, 3:4])
    assert calls
