"""Bad input must raise the documented error, never crash, hang or return garbage.

Documented errors (``napari_precomputed.errors``):

* ``InvalidInfoError`` (``UnsupportedEncodingError`` for compresso / jxl):
  invalid info, naming the offending member (and the info file when read
  from disk);
* ``DataAccessError``: files that cannot be read (missing info, bad ``.gz``),
  info overwrite refused;
* ``InvalidFormatError``: chunk bytes that cannot be decoded, naming the chunk
  file;
* ``AssertionError`` (``InvalidChunkCoordsError``): chunk coordinates off the
  grid, or a chunk array of the wrong shape on write.
"""

import copy
import gzip
import io
import json
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from napari_precomputed import file_accessor
from napari_precomputed.accessor import get_accessor_for_url
from napari_precomputed.errors import (
    ChunkNotFoundError,
    DataAccessError,
    IncompatibleEncoderError,
    InvalidChunkCoordsError,
    InvalidFormatError,
    InvalidInfoError,
    UnsupportedEncodingError,
)
from napari_precomputed.info import chunk_name, iter_chunk_coords
from napari_precomputed.precomputed_io import (
    get_IO_for_existing_dataset,
    get_IO_for_new_dataset,
)
from napari_precomputed.volume import read_region, write_region

# --------------------------------------------------------------------------
# Helpers

SIZE = [20, 14, 6]
CHUNK = [8, 8, 4]
OFFSET = [3, -2, 1]
#: A full-size chunk and the clipped corner chunk of the grid above.
FULL = (3, 11, -2, 6, 1, 5)
EDGE = (19, 23, 6, 12, 5, 7)


def base_info(data_type="uint8", encoding="raw", num_channels=1, **scale_extra):
    scale = {"key": "s0", "size": list(SIZE), "voxel_offset": list(OFFSET),
             "resolution": [4, 4, 40], "chunk_sizes": [list(CHUNK)],
             "encoding": encoding}
    if encoding == "compressed_segmentation":
        scale["compressed_segmentation_block_size"] = [4, 4, 4]
    scale.update(scale_extra)
    return {"type": "segmentation" if encoding == "compressed_segmentation" else "image",
            "data_type": data_type, "num_channels": num_channels, "scales": [scale]}


def snapshot(root):
    """Every file under root with its contents (to prove nothing changed)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
        for name in dirnames:
            out[os.path.relpath(os.path.join(dirpath, name), root) + "/"] = None
    return out


def make_dataset(path, **kwargs):
    return get_IO_for_new_dataset(base_info(**kwargs), get_accessor_for_url(str(path)))


def chunk_file(path, coords, key="s0"):
    return path / key / chunk_name(coords)


def chunk_shape_czyx(coords, num_channels=1):
    x0, x1, y0, y1, z0, z1 = coords
    return (num_channels, z1 - z0, y1 - y0, x1 - x0)


def assert_names_chunk(exc_info, path, coords, key="s0"):
    msg = str(exc_info.value)
    assert chunk_name(coords) in msg, msg
    assert str(chunk_file(path, coords, key)) in msg, msg


# --------------------------------------------------------------------------
# 1. Invalid info

DELETE = object()


def _case(case_id, member, top=None, scale=None, exc=InvalidInfoError):
    """An info mutation: top-level and scale-0 members to set (or DELETE).

    ``member`` is the name the error message must contain (a tuple: any of).
    """
    return (case_id, top or {}, scale or {}, member, exc)


INFO_CASES = [
    # missing required members
    *[_case(f"missing-{m}", m, top={m: DELETE})
      for m in ("type", "data_type", "num_channels", "scales")],
    *[_case(f"missing-scale-{m}", m, scale={m: DELETE})
      for m in ("key", "size", "resolution", "chunk_sizes", "encoding")],
    # top level
    _case("@type-wrong", "@type", top={"@type": "neuroglancer_skeletons"}),
    _case("@type-number", "@type", top={"@type": 1}),
    _case("type-mesh", "type", top={"type": "mesh"}),
    _case("type-Image", "type", top={"type": "Image"}),
    _case("type-list", "type", top={"type": ["image"]}),
    *[_case(f"data_type-{d}", "data_type", top={"data_type": d})
      for d in ("int64", "float64", "bool", "UINT8", "uint8 ", "")],
    _case("data_type-number", "data_type", top={"data_type": 8}),
    _case("data_type-null", "data_type", top={"data_type": None}),
    *[_case(f"num_channels-{v!r}", "num_channels", top={"num_channels": v})
      for v in (0, -1, True, 1.5, "1", None, [1])],
    _case("scales-empty", "scales", top={"scales": []}),
    _case("scales-object", "scales", top={"scales": {"key": "s0"}}),
    _case("scales-string", "scales", top={"scales": "s0"}),
    _case("scale-not-object", "scales", top={"scales": [5]}),
    # size
    *[_case(f"size-{i}", "size", scale={"size": v}) for i, v in enumerate(
        ([0, 14, 6], [20, -1, 6], [20, 14], [20, 14, 6, 1], "20,14,6", 20,
         [True, 14, 6], [20, 14, 1.5], [20, "14", 6], None, [20, 14, float("inf")]))],
    # voxel_offset
    *[_case(f"voxel_offset-{i}", "voxel_offset", scale={"voxel_offset": v})
      for i, v in enumerate(([0, 0], ["0", 0, 0], [0.5, 0, 0], [False, 0, 0],
                             [2**63 - 10, 0, 0], [None, 0, 0]))],
    # resolution
    *[_case(f"resolution-{i}", "resolution", scale={"resolution": v}) for i, v in enumerate(
        ([0, 4, 40], [4, -1, 40], [4, 4, float("nan")], [4, 4, float("inf")],
         [4, 4, -float("inf")], [4, 4], "4", [True, 4, 40], [4, "4", 40], None))],
    # chunk_sizes
    *[_case(f"chunk_sizes-{i}", "chunk_sizes", scale={"chunk_sizes": v}) for i, v in enumerate(
        ([], [[]], [[0, 8, 4]], [[8, 8]], [8, 8, 4], "8", [[8, 8, 4.5]], [[8, True, 4]],
         [[8, 8, 4], [8, 8, -4]], None))],
    # key
    _case("key-number", "key", scale={"key": 5}),
    _case("key-null", "key", scale={"key": None}),
    _case("key-duplicate", "key",
          top={"scales": [base_info()["scales"][0], dict(base_info()["scales"][0],
                                                         resolution=[8, 8, 40])]}),
    _case("key-duplicate-normalised", "key",
          top={"scales": [base_info()["scales"][0],
                          dict(base_info()["scales"][0], key="./s0/",
                               resolution=[8, 8, 40])]}),
    # encoding
    *[_case(f"encoding-{e!r}", "encoding", scale={"encoding": e})
      for e in ("gzip", "RAW", "Jpeg", "", None, 5, "zstd")],
    _case("encoding-compresso", "encoding", scale={"encoding": "compresso"},
          exc=UnsupportedEncodingError),
    _case("encoding-jxl", "encoding", scale={"encoding": "jxl"},
          exc=UnsupportedEncodingError),
    _case("jpeg-uint16", "encoding", top={"data_type": "uint16"}, scale={"encoding": "jpeg"}),
    _case("jpeg-float32", "encoding", top={"data_type": "float32"},
          scale={"encoding": "jpeg"}),
    _case("jpeg-2-channels", "encoding", top={"num_channels": 2},
          scale={"encoding": "jpeg"}),
    _case("jpeg-4-channels", "encoding", top={"num_channels": 4},
          scale={"encoding": "jpeg"}),
    _case("png-5-channels", "encoding", top={"num_channels": 5}, scale={"encoding": "png"}),
    _case("png-uint32", "encoding", top={"data_type": "uint32"}, scale={"encoding": "png"}),
    _case("png-int8", "encoding", top={"data_type": "int8"}, scale={"encoding": "png"}),
    _case("cseg-uint8", "encoding",
          scale={"encoding": "compressed_segmentation",
                 "compressed_segmentation_block_size": [8, 8, 8]}),
    _case("cseg-int32", "encoding", top={"data_type": "int32"},
          scale={"encoding": "compressed_segmentation",
                 "compressed_segmentation_block_size": [8, 8, 8]}),
    _case("cseg-without-block-size", "compressed_segmentation_block_size",
          top={"data_type": "uint32"}, scale={"encoding": "compressed_segmentation"}),
    *[_case(f"cseg-block-size-{i}", "compressed_segmentation_block_size",
            top={"data_type": "uint32"},
            scale={"encoding": "compressed_segmentation",
                   "compressed_segmentation_block_size": v})
      for i, v in enumerate(([8, 8], [0, 8, 8], [8, -8, 8], "8", [8, 8, 8.5],
                             [True, 8, 8], None))],
    _case("block-size-on-raw", "compressed_segmentation_block_size",
          scale={"compressed_segmentation_block_size": [8, 8, 8]}),
    _case("jpeg_quality-on-raw", "jpeg_quality", scale={"jpeg_quality": 90}),
    _case("jpeg_quality-101", "jpeg_quality", scale={"encoding": "jpeg", "jpeg_quality": 101}),
    _case("jpeg_quality-negative", "jpeg_quality",
          scale={"encoding": "jpeg", "jpeg_quality": -1}),
    _case("jpeg_quality-string", "jpeg_quality",
          scale={"encoding": "jpeg", "jpeg_quality": "high"}),
    _case("png_level-on-jpeg", "png_level", scale={"encoding": "jpeg", "png_level": 5}),
    _case("png_level-10", "png_level", scale={"encoding": "png", "png_level": 10}),
    # sharding
    _case("sharding-2-chunk-sizes", ("sharding", "chunk_sizes"),
          scale={"chunk_sizes": [[8, 8, 4], [4, 4, 4]],
                 "sharding": {"@type": "neuroglancer_uint64_sharded_v1", "hash": "identity",
                              "preshift_bits": 0, "minishard_bits": 0, "shard_bits": 0}}),
    *[_case(f"sharding-{i}", "sharding", scale={"sharding": v}) for i, v in enumerate((
        {"@type": "neuroglancer_sharded", "hash": "identity", "preshift_bits": 0,
         "minishard_bits": 0, "shard_bits": 0},
        {"hash": "identity", "preshift_bits": 0, "minishard_bits": 0, "shard_bits": 0},
        {"@type": "neuroglancer_uint64_sharded_v1", "hash": "md5", "preshift_bits": 0,
         "minishard_bits": 0, "shard_bits": 0},
        {"@type": "neuroglancer_uint64_sharded_v1", "preshift_bits": 0,
         "minishard_bits": 0, "shard_bits": 0},
        {"@type": "neuroglancer_uint64_sharded_v1", "hash": "identity", "preshift_bits": 0,
         "minishard_bits": 0},
        {"@type": "neuroglancer_uint64_sharded_v1", "hash": "identity", "preshift_bits": -1,
         "minishard_bits": 0, "shard_bits": 0},
        {"@type": "neuroglancer_uint64_sharded_v1", "hash": "identity", "preshift_bits": 0,
         "minishard_bits": 40, "shard_bits": 40},
        {"@type": "neuroglancer_uint64_sharded_v1", "hash": "identity", "preshift_bits": 0,
         "minishard_bits": 0, "shard_bits": 0, "data_encoding": "zstd"},
        {"@type": "neuroglancer_uint64_sharded_v1", "hash": "identity", "preshift_bits": 0,
         "minishard_bits": True, "shard_bits": 0},
        "sharded",
        [1],
    ))],
]


def _mutated_info(top, scale):
    info = base_info()
    for target, changes in ((info, top), (info["scales"][0], scale)):
        for member, value in changes.items():
            if value is DELETE:
                del target[member]
            else:
                target[member] = copy.deepcopy(value)
    return info


def _names_member(msg, member):
    members = member if isinstance(member, tuple) else (member,)
    return any(m in msg for m in members)


def _info_params():
    return [pytest.param(top, scale, member, exc, id=case_id)
            for case_id, top, scale, member, exc in INFO_CASES]


@pytest.mark.parametrize("top, scale, member, exc", _info_params())
def test_invalid_info_rejected_for_new_dataset(tmp_path, top, scale, member, exc):
    info = _mutated_info(top, scale)
    frozen = copy.deepcopy(info)
    with pytest.raises(exc) as exc_info:
        get_IO_for_new_dataset(info, get_accessor_for_url(str(tmp_path / "ds")))
    assert _names_member(str(exc_info.value), member), str(exc_info.value)
    assert snapshot(tmp_path) == {}, "an info file was written for an invalid info"
    assert info == frozen, "the caller's info dict was modified"


@pytest.mark.parametrize("top, scale, member, exc", _info_params())
def test_invalid_info_rejected_for_existing_dataset(tmp_path, top, scale, member, exc):
    info = _mutated_info(top, scale)
    # Python's json writes NaN/Infinity tokens, which Python's json reads back:
    # the validator (not the JSON parser) must catch them.
    (tmp_path / "info").write_text(json.dumps(info))
    with pytest.raises(exc) as exc_info:
        get_IO_for_existing_dataset(get_accessor_for_url(str(tmp_path)))
    msg = str(exc_info.value)
    assert _names_member(msg, member), msg
    assert str(tmp_path / "info") in msg


@pytest.mark.parametrize("content", [
    b"", b" \n", b"{", b"not json", b"\xff\xfe\x00\x01", b'{"type": "image",}',
    b"{'type': 'image'}", b"[]", b"null", b"42", b'"info"', b"true",
    json.dumps(base_info()).encode("utf-16"),
    json.dumps(base_info()).encode()[:-1],
], ids=lambda c: repr(c[:12]))
def test_info_file_not_a_json_object(tmp_path, content):
    (tmp_path / "info").write_bytes(content)
    with pytest.raises(InvalidInfoError) as exc_info:
        get_IO_for_existing_dataset(get_accessor_for_url(str(tmp_path)))
    assert str(tmp_path / "info") in str(exc_info.value)


@pytest.mark.parametrize("content", [
    b"[" * 100_000,
    b'{"a":' * 100_000,
], ids=["nested-lists", "nested-objects"])
def test_deeply_nested_info_is_invalid_not_a_crash(tmp_path, content):
    # json.loads raises RecursionError (not ValueError) on this.
    (tmp_path / "info").write_bytes(content)
    with pytest.raises(InvalidInfoError) as exc_info:
        get_IO_for_existing_dataset(get_accessor_for_url(str(tmp_path)))
    assert str(tmp_path / "info") in str(exc_info.value)


@pytest.mark.parametrize("info", [[], "info", 42, None, [base_info()]],
                         ids=["list", "str", "int", "None", "list-of-info"])
def test_info_not_an_object_for_new_dataset(tmp_path, info):
    with pytest.raises(InvalidInfoError):
        get_IO_for_new_dataset(info, get_accessor_for_url(str(tmp_path / "ds")))
    assert snapshot(tmp_path) == {}


def test_png_uint16_several_channels_is_refused_cleanly(tmp_path):
    # Valid in the format, but Pillow would silently drop 16-bit multi-channel
    # PNGs to 8 bits: refusing is fine, crashing or writing an info is not.
    info = base_info("uint16", "png", 3)
    with pytest.raises(UnsupportedEncodingError, match="scale 's0'.*16-bit PNG"):
        get_IO_for_new_dataset(info, get_accessor_for_url(str(tmp_path / "new")))
    assert snapshot(tmp_path) == {}
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "info").write_text(json.dumps(info))
    with pytest.raises(UnsupportedEncodingError) as exc_info:
        get_IO_for_existing_dataset(get_accessor_for_url(str(tmp_path / "old")))
    assert str(tmp_path / "old" / "info") in str(exc_info.value)


@pytest.mark.parametrize("info", [
    base_info(size=[20.0, 14.0, 6.0], voxel_offset=[3.0, -2.0, 1.0]),
    base_info(resolution=[4.5, 4.25, 40]),
    {**base_info(), "@type": "neuroglancer_multiscale_volume", "unknown": {"x": 1}},
    base_info("uint32", "compressed_segmentation", 1, extra_member=[1, 2]),
    base_info(key="./a/b/../s0/"),
    base_info(encoding="jpeg", jpeg_quality=50.0),
    base_info(encoding="png", png_level=0),
    base_info(sharding=None),
    base_info(encoding="jpeg", jpeg_quality=0),
], ids=["integral-floats", "fractional-resolution", "unknown-members", "extra-scale-member",
        "key-with-dots", "jpeg_quality-integral-float", "png_level-0", "sharding-null",
        "jpeg_quality-0"])
def test_valid_but_unusual_info_is_accepted(tmp_path, info):
    """Counterpart of the rejections above: the validator is not over-strict."""
    (tmp_path / "info").write_text(json.dumps(info))
    get_IO_for_existing_dataset(get_accessor_for_url(str(tmp_path)))


# --------------------------------------------------------------------------
# 2. Scale keys escaping the dataset folder


ESCAPING_KEYS = ["..", "../x", "../../x", "a/../../b", "a/../..", "/abs/path", "/", "",
                 ".", "./", "//", "\\x", "..\\x", "a/b/../../../x", "C:/x", "c:\\x"]


@pytest.mark.parametrize("key", ESCAPING_KEYS)
def test_escaping_scale_key_rejected(tmp_path, key):
    outside = tmp_path / "outside"
    dataset = outside / "ds"
    # Decoys where an escaping key could point to, each holding a valid
    # chunk for the grid: a reader that follows the key would read them.
    decoy = bytes(int(np.prod(chunk_shape_czyx(FULL))))
    for folder in (outside / "x", outside / "b", outside, tmp_path / "x", dataset):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / chunk_name(FULL)).write_bytes(decoy)
    info = base_info(key=key)
    (dataset / "info").write_text(json.dumps(info))
    before = snapshot(tmp_path)

    with pytest.raises(InvalidInfoError) as exc_info:
        get_IO_for_existing_dataset(get_accessor_for_url(str(dataset)))
    assert "key" in str(exc_info.value)

    new_root = tmp_path / "outside" / "new"
    with pytest.raises(InvalidInfoError) as exc_info:
        get_IO_for_new_dataset(info, get_accessor_for_url(str(new_root)))
    assert "key" in str(exc_info.value)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("key", ["..", "../decoy", "a/../../decoy", "/etc/passwd", ""])
def test_accessor_refuses_paths_outside_the_dataset(tmp_path, key):
    (tmp_path / "decoy").write_bytes(b"secret")
    (tmp_path / "ds").mkdir()
    accessor = get_accessor_for_url(str(tmp_path / "ds"))
    before = snapshot(tmp_path)
    with pytest.raises((InvalidInfoError, DataAccessError)):
        accessor.fetch_file(key)
    with pytest.raises((InvalidInfoError, DataAccessError)):
        accessor.store_file(key, b"overwritten", overwrite=True)
    with pytest.raises((InvalidInfoError, DataAccessError)):
        accessor.fetch_chunk(key, FULL)
    with pytest.raises((InvalidInfoError, DataAccessError)):
        accessor.store_chunk(b"overwritten", key, FULL)
    assert snapshot(tmp_path) == before


def test_scale_key_with_nul_byte(tmp_path):
    """A JSON string may hold U+0000; the OS cannot. Documented error, no crash."""
    (tmp_path / "info").write_text(json.dumps(base_info(key="s\u00000")))
    try:
        io_ = get_IO_for_existing_dataset(get_accessor_for_url(str(tmp_path)))
    except InvalidInfoError as exc:
        assert "key" in str(exc)
        return
    with pytest.raises(DataAccessError):
        io_.read_chunk("s\u00000", FULL)
    with pytest.raises(DataAccessError):
        io_.write_chunk(np.zeros(chunk_shape_czyx(FULL), np.uint8), "s\u00000", FULL)


# --------------------------------------------------------------------------
# 3. Missing info, refused overwrite


@pytest.mark.parametrize("layout", ["empty-folder", "no-folder", "info-is-a-folder",
                                    "info-gz-not-gzip", "info-gz-truncated"])
def test_missing_or_unreadable_info(tmp_path, layout):
    root = tmp_path / "ds"
    if layout != "no-folder":
        root.mkdir()
    culprit = root / "info"
    if layout == "info-is-a-folder":
        culprit.mkdir()
    elif layout == "info-gz-not-gzip":
        culprit = root / "info.gz"
        culprit.write_bytes(json.dumps(base_info()).encode())
    elif layout == "info-gz-truncated":
        culprit = root / "info.gz"
        culprit.write_bytes(gzip.compress(json.dumps(base_info()).encode())[:-12])
    with pytest.raises(DataAccessError) as exc_info:
        get_IO_for_existing_dataset(get_accessor_for_url(str(root)))
    assert str(culprit) in str(exc_info.value)


@pytest.mark.parametrize("existing", ["info", "info.gz"])
def test_info_overwrite_needs_permission(tmp_path, existing):
    old = json.dumps(base_info()).encode()
    (tmp_path / existing).write_bytes(gzip.compress(old) if existing.endswith(".gz") else old)
    before = snapshot(tmp_path)
    new_info = base_info("uint16")
    with pytest.raises(DataAccessError) as exc_info:
        get_IO_for_new_dataset(new_info, get_accessor_for_url(str(tmp_path)))
    assert "info" in str(exc_info.value)
    assert snapshot(tmp_path) == before

    io_ = get_IO_for_new_dataset(new_info, get_accessor_for_url(str(tmp_path)),
                                 overwrite_info=True)
    assert io_.info["data_type"] == "uint16"
    reread = get_IO_for_existing_dataset(get_accessor_for_url(str(tmp_path)))
    assert reread.info["data_type"] == "uint16"


# --------------------------------------------------------------------------
# 4. Bad chunk data


def _png(array, mode=None):
    out = io.BytesIO()
    img = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    img.save(out, format="PNG")
    return out.getvalue()


def _png_by_hand(array, depth, color_type, rows_kept=None):
    """A PNG of (H, W) or (H, W, S) samples, written here, with an image
    data stream that may end cleanly after ``rows_kept`` rows."""
    height, width = array.shape[:2]
    kind = ">u2" if depth == 16 else "u1"
    rows = b"".join(b"\x00" + row.astype(kind).tobytes() for row in array[:rows_kept])

    def part(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    header = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + part(b"IHDR", header) + part(b"IDAT", zlib.compress(rows))
            + part(b"IEND", b""))


def _png16_color(array):
    """A 16-bit RGB or RGBA PNG, which Pillow reads but cannot write."""
    return _png_by_hand(array, 16, {3: 2, 4: 6}[array.shape[2]])


def _jpeg(array, mode=None):
    out = io.BytesIO()
    img = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    img.save(out, format="JPEG", quality=90)
    return out.getvalue()


def _image_for(coords, channels, dtype=np.uint8, transpose=False):
    c, z, y, x = chunk_shape_czyx(coords, channels)
    shape = (x, z * y) if transpose else (z * y, x)
    arr = (np.arange(int(np.prod(shape)) * channels) % 200).astype(dtype)
    return arr.reshape(shape + ((channels,) if channels > 1 else ()))


def _raw_cases():
    n_full = int(np.prod(chunk_shape_czyx(FULL)))
    n_edge = int(np.prod(chunk_shape_czyx(EDGE)))
    return [
        ("raw-short", "uint8", 1, FULL, bytes(n_full - 1)),
        ("raw-long", "uint8", 1, FULL, bytes(n_full + 1)),
        ("raw-double", "uint8", 1, FULL, bytes(2 * n_full)),
        ("raw-padded-border", "uint8", 1, EDGE, bytes(n_full)),
        ("raw-gzip-body-under-plain-name", "uint8", 1, FULL,
         gzip.compress(bytes(n_full))),
        ("raw-uint16-odd-length", "uint16", 1, EDGE, bytes(2 * n_edge - 1)),
        ("raw-uint16-wrong-itemsize", "uint16", 1, EDGE, bytes(n_edge)),
        ("raw-float32-missing-channel", "float32", 2, EDGE, bytes(4 * n_edge)),
        ("raw-uint64-extra-channel", "uint64", 1, FULL, bytes(16 * n_full)),
    ]


def _image_cases():
    gray = _image_for(FULL, 1)
    rgb = _image_for(FULL, 3)
    gray_edge = _image_for(EDGE, 1)
    good_png = _png(gray)
    good_jpeg = _jpeg(gray)
    wrong_area = np.zeros((gray.shape[0] + 1, gray.shape[1]), np.uint8)
    palette = Image.fromarray(gray).convert("P")
    out = io.BytesIO()
    palette.save(out, format="PNG")
    palette_png = out.getvalue()
    out = io.BytesIO()
    Image.fromarray(gray > 100).save(out, format="PNG")  # mode "1"
    bilevel_png = out.getvalue()
    out = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(out, format="JPEG")
    cmyk_jpeg = out.getvalue()
    # A valid PNG header announcing an enormous image (decompression bomb).
    huge = bytearray(good_png)
    struct.pack_into(">II", huge, 16, 100_000, 100_000)
    struct.pack_into(">I", huge, 29, zlib.crc32(huge[12:29]))
    return [
        # jpeg, 1 channel
        ("jpeg-rgb-in-1-channel", "uint8", "jpeg", 1, FULL, _jpeg(rgb)),
        ("jpeg-wrong-area", "uint8", "jpeg", 1, FULL, _jpeg(wrong_area)),
        ("jpeg-full-size-at-border", "uint8", "jpeg", 1, EDGE, good_jpeg),
        ("jpeg-truncated", "uint8", "jpeg", 1, FULL, good_jpeg[: len(good_jpeg) // 2]),
        ("jpeg-header-only", "uint8", "jpeg", 1, FULL, good_jpeg[:20]),
        ("jpeg-garbage", "uint8", "jpeg", 1, FULL, b"\xff\xd8" + bytes(range(256)) * 4),
        ("jpeg-is-png", "uint8", "jpeg", 1, FULL, good_png),
        # jpeg, 3 channels
        ("jpeg-gray-in-3-channels", "uint8", "jpeg", 3, FULL, good_jpeg),
        ("jpeg-cmyk-in-3-channels", "uint8", "jpeg", 3, FULL, cmyk_jpeg),
        # png
        ("png-16bit-in-uint8", "uint8", "png", 1, FULL, _png(gray.astype(np.uint16) * 300)),
        ("png-8bit-in-uint16", "uint16", "png", 1, FULL, good_png),
        # Pillow opens these as 8-bit RGB(A), keeping the high bytes.
        ("png-16bit-rgb-in-uint8", "uint8", "png", 3, FULL,
         _png16_color(rgb.astype(np.uint16) * 300)),
        ("png-16bit-rgba-in-uint8", "uint8", "png", 4, FULL,
         _png16_color(_image_for(FULL, 4).astype(np.uint16) * 300)),
        ("png-palette", "uint8", "png", 1, FULL, palette_png),
        ("png-bilevel", "uint8", "png", 1, FULL, bilevel_png),
        ("png-rgb-in-1-channel", "uint8", "png", 1, FULL, _png(rgb)),
        ("png-gray-in-3-channels", "uint8", "png", 3, FULL, good_png),
        ("png-rgba-in-3-channels", "uint8", "png", 3, FULL, _png(rgb, "RGBA")),
        ("png-la-in-2-channels-wanted-4", "uint8", "png", 4, FULL, _png(gray, "LA")),
        ("png-wrong-area", "uint8", "png", 1, FULL, _png(wrong_area)),
        ("png-full-size-at-border", "uint8", "png", 1, EDGE, good_png),
        ("png-edge-size-in-full-chunk", "uint8", "png", 1, FULL, _png(gray_edge)),
        ("png-truncated", "uint8", "png", 1, FULL, good_png[: len(good_png) // 2]),
        # Pillow fills the missing rows with zeros; libpng refuses.
        ("png-rows-missing", "uint8", "png", 1, FULL, _png_by_hand(gray, 8, 0, rows_kept=3)),
        ("png-signature-only", "uint8", "png", 1, FULL, good_png[:8]),
        ("png-bad-crc", "uint8", "png", 1, FULL,
         good_png[:29] + bytes([good_png[29] ^ 0xFF]) + good_png[30:]),
        ("png-huge-header", "uint8", "png", 1, FULL, bytes(huge)),
        ("png-is-jpeg", "uint8", "png", 1, FULL, good_jpeg),
        ("png-garbage", "uint8", "png", 1, FULL, b"\x89PNG\r\n\x1a\n" + bytes(500)),
    ]


@pytest.mark.parametrize(
    "data_type, encoding, num_channels, coords, content",
    [pytest.param(d, "raw", c, co, b, id=i) for i, d, c, co, b in _raw_cases()]
    + [pytest.param(d, e, c, co, b, id=i) for i, d, e, c, co, b in _image_cases()])
def test_bad_chunk_bytes_raise_invalid_format(tmp_path, data_type, encoding, num_channels,
                                              coords, content):
    io_ = make_dataset(tmp_path, data_type=data_type, encoding=encoding,
                      num_channels=num_channels)
    path = chunk_file(tmp_path, coords)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    with pytest.raises(InvalidFormatError) as exc_info:
        io_.read_chunk("s0", coords)
    assert_names_chunk(exc_info, tmp_path, coords)
    # The same through the region reader (thread pool path).
    with pytest.raises(InvalidFormatError) as exc_info:
        read_region(io_, "s0", OFFSET, [o + s for o, s in zip(OFFSET, SIZE)])
    assert_names_chunk(exc_info, tmp_path, coords)


@pytest.mark.parametrize("data_type, encoding, num_channels", [
    ("uint8", "raw", 1), ("float32", "raw", 3), ("uint8", "png", 1), ("uint16", "png", 1),
    ("uint8", "jpeg", 3), ("uint32", "compressed_segmentation", 1),
    ("uint64", "compressed_segmentation", 2),
])
@pytest.mark.parametrize("coords", [FULL, EDGE], ids=["full", "edge"])
def test_zero_length_chunk_file(tmp_path, data_type, encoding, num_channels, coords):
    io_ = make_dataset(tmp_path, data_type=data_type, encoding=encoding,
                      num_channels=num_channels)
    path = chunk_file(tmp_path, coords)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    with pytest.raises(InvalidFormatError) as exc_info:
        io_.read_chunk("s0", coords)
    assert_names_chunk(exc_info, tmp_path, coords)


@pytest.mark.parametrize("content, exc", [
    (b"this is not gzip at all", DataAccessError),
    (b"", DataAccessError),
    (b"\x1f\x8b", DataAccessError),
    (gzip.compress(bytes(256))[:-8], DataAccessError),  # no CRC/size trailer
    (gzip.compress(bytes(256))[:15], DataAccessError),
    (gzip.compress(bytes(256))[:-8] + b"\0" * 8, DataAccessError),  # bad CRC
    (gzip.compress(bytes(10)), InvalidFormatError),  # valid gzip, wrong raw length
], ids=["not-gzip", "empty", "magic-only", "no-trailer", "header-only", "bad-crc",
        "wrong-length-inside"])
def test_bad_gz_chunk_file(tmp_path, content, exc):
    io_ = make_dataset(tmp_path)
    path = chunk_file(tmp_path, FULL)
    path.parent.mkdir(parents=True)
    gz = path.with_name(path.name + ".gz")
    gz.write_bytes(content)
    with pytest.raises(exc) as exc_info:
        io_.read_chunk("s0", FULL)
    assert chunk_name(FULL) in str(exc_info.value)
    if exc is DataAccessError:
        assert str(gz) in str(exc_info.value)


def test_gzip_bomb_is_capped(tmp_path, monkeypatch):
    monkeypatch.setattr(file_accessor, "MAX_INFLATED_BYTES", 10_000)
    io_ = make_dataset(tmp_path)
    gz = _gz_chunk_path(tmp_path)
    gz.write_bytes(gzip.compress(bytes(1_000_000)))
    with pytest.raises(DataAccessError) as exc_info:
        io_.accessor.fetch_chunk("s0", FULL)
    assert str(gz) in str(exc_info.value)


def _gz_chunk_path(root, coords=FULL):
    path = chunk_file(root, coords)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(path.name + ".gz")


@pytest.mark.parametrize("encoding, data_type, peak_mib", [
    ("raw", "uint8", 8), ("png", "uint8", 8),
    # The bound for compressed_segmentation is 24-bit offsets' worth of words.
    ("compressed_segmentation", "uint32", 256)])
def test_gz_chunk_stops_inflating_at_what_its_size_can_hold(tmp_path, encoding, data_type,
                                                            peak_mib):
    # A small file that inflates to 1 GiB must not be inflated: reading stops
    # at the most bytes a chunk of this size can take (raw: its exact length).
    import tracemalloc

    io_ = make_dataset(tmp_path, data_type=data_type, encoding=encoding)
    gz = _gz_chunk_path(tmp_path)
    gz.write_bytes(gzip.compress(bytes(1 << 24), compresslevel=9) * 64)
    tracemalloc.start()
    try:
        with pytest.raises(DataAccessError, match="inflates to more than") as exc_info:
            io_.read_chunk("s0", FULL)
        with pytest.raises(DataAccessError, match="inflates to more than"):
            read_region(io_, "s0", (3, -2, 1), (11, 6, 5))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(gz) in str(exc_info.value)
    assert peak < peak_mib << 20, peak


def test_gz_chunk_of_several_members_is_read_whole(tmp_path):
    # RFC 1952 allows members one after another, as gzip.decompress reads them.
    io_ = make_dataset(tmp_path)
    chunk = np.arange(np.prod(chunk_shape_czyx(FULL)), dtype=np.uint8).reshape(
        chunk_shape_czyx(FULL))
    raw = chunk.tobytes()
    gz = _gz_chunk_path(tmp_path)
    gz.write_bytes(gzip.compress(raw[:50]) + gzip.compress(raw[50:]) + bytes(8))
    np.testing.assert_array_equal(io_.read_chunk("s0", FULL), chunk)
    # Anything else after a member is corruption, not to be ignored.
    gz.write_bytes(gzip.compress(raw) + b"garbage")
    with pytest.raises(DataAccessError, match="after its gzip stream") as exc_info:
        io_.read_chunk("s0", FULL)
    assert str(gz) in str(exc_info.value)


# --------------------------------------------------------------------------
# 5. Corrupt compressed_segmentation buffers
#
# A single-channel uint32 (or uint64) chunk of 4x4x4 voxels with 4x4x4 blocks:
# one block, so the buffer is [channel offset][2 header words][values][table].


def _cseg(bits=1, table=(7, 9), values=None, wpe=1, channel_offset=1, table_off=None,
          values_off=2, extra=()):
    words_for_values = (bits * 64 + 31) // 32
    if values is None:
        values = [0xAAAA_AAAA] * words_for_values if bits else []
    table_words = []
    for t in table:
        table_words += [t & 0xFFFF_FFFF, t >> 32] if wpe == 2 else [t]
    if table_off is None:
        table_off = 2 + len(values)
    words = [channel_offset, table_off | (bits << 24), values_off, *values, *table_words,
             *extra]
    return struct.pack(f"<{len(words)}I", *words)


CSEG_CHUNK = (0, 4, 0, 4, 0, 4)


def _cseg_dataset(tmp_path, data_type="uint32", num_channels=1):
    info = {"type": "segmentation", "data_type": data_type, "num_channels": num_channels,
            "scales": [{"key": "s0", "size": [4, 4, 4], "resolution": [1, 1, 1],
                        "chunk_sizes": [[4, 4, 4]], "encoding": "compressed_segmentation",
                        "compressed_segmentation_block_size": [4, 4, 4]}]}
    return get_IO_for_new_dataset(info, get_accessor_for_url(str(tmp_path)))


@pytest.mark.parametrize("data_type, wpe", [("uint32", 1), ("uint64", 2)])
def test_handmade_cseg_buffer_is_valid(tmp_path, data_type, wpe):
    """The builder below makes valid buffers; the corrupt ones derive from it."""
    io_ = _cseg_dataset(tmp_path, data_type)
    table = (7, 2**40 + 9) if wpe == 2 else (7, 9)
    chunk_file(tmp_path, CSEG_CHUNK).parent.mkdir()
    chunk_file(tmp_path, CSEG_CHUNK).write_bytes(_cseg(table=table, wpe=wpe))
    got = io_.read_chunk("s0", CSEG_CHUNK)
    expected = np.array(table, dtype=data_type)[np.arange(64) % 2].reshape(1, 4, 4, 4)
    np.testing.assert_array_equal(got, expected)


CSEG_BAD = [
    ("length-not-multiple-of-4", "uint32", 1, _cseg() + b"\0"),
    ("empty", "uint32", 1, b""),
    ("three-bytes", "uint32", 1, b"\1\0\0"),
    ("fewer-words-than-channels", "uint32", 2, struct.pack("<I", 2)),
    ("channel-offset-past-end", "uint32", 1, _cseg(channel_offset=1000)),
    ("channel-offset-0xffffffff", "uint32", 1, _cseg(channel_offset=0xFFFF_FFFF)),
    ("channel-offset-inside-header", "uint32", 2,
     struct.pack("<2I", 1, 2) + _cseg()[4:]),
    ("header-does-not-fit", "uint32", 1, struct.pack("<2I", 1, 0)),
    ("only-channel-offset", "uint32", 1, struct.pack("<I", 1)),
    *[(f"bits-{b}", "uint32", 1, _cseg(bits=b, values=[0] * 8)) for b in (3, 5, 31, 64, 255)],
    ("table-offset-past-end", "uint32", 1, _cseg(table_off=0xFF_FFFF)),
    ("values-offset-past-end", "uint32", 1, _cseg(values_off=100)),
    ("values-offset-huge", "uint32", 1, _cseg(values_off=0xFFFF_FFFF)),
    ("values-run-past-end", "uint32", 1, _cseg(bits=32, values=[0] * 4, table=())),
    ("index-beyond-table", "uint32", 1, _cseg(table=(7,))),
    ("8-bit-index-beyond-table", "uint32", 1,
     _cseg(bits=8, values=[0x0302_0100] * 16, table=(1, 2, 3))),
    ("bits-0-no-table-entry", "uint32", 1, _cseg(bits=0, table=())),
    ("uint64-half-table-entry", "uint64", 1, _cseg(bits=0, table=(), extra=(5,))),
    ("uint64-index-beyond-table", "uint64", 1, _cseg(table=(7,), wpe=2)),
    ("second-channel-offset-past-end", "uint32", 2,
     struct.pack("<2I", 2, 10_000) + _cseg()[4:]),
]


@pytest.mark.parametrize("data_type, num_channels, content",
                         [pytest.param(d, c, b, id=i) for i, d, c, b in CSEG_BAD])
def test_corrupt_cseg_chunk(tmp_path, data_type, num_channels, content):
    io_ = _cseg_dataset(tmp_path, data_type, num_channels)
    path = chunk_file(tmp_path, CSEG_CHUNK)
    path.parent.mkdir()
    path.write_bytes(content)
    with pytest.raises(InvalidFormatError) as exc_info:
        io_.read_chunk("s0", CSEG_CHUNK)
    assert_names_chunk(exc_info, tmp_path, CSEG_CHUNK)


_HUGE_CHUNK_SCRIPT = r"""
import resource, struct
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
from napari_precomputed.compressed_segmentation import decode
from napari_precomputed.errors import InvalidFormatError
try:
    # 16 bytes claiming to be a 1024^3 uint64 chunk (8 GiB decoded).
    decode(struct.pack("<4I", 1, 2, 2, 7), (1024, 1024, 1024), 1, "uint64", (8, 8, 8))
except InvalidFormatError as exc:
    print("DOCUMENTED", exc)
"""


def test_tiny_cseg_buffer_for_a_huge_chunk_fails_before_allocating():
    proc = subprocess.run([sys.executable, "-c", _HUGE_CHUNK_SCRIPT],
                          capture_output=True, text=True, timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "DOCUMENTED" in out and "header table" in out, out[-2000:]


@pytest.mark.parametrize("z_blocks", [None, (0, 1)])
def test_tiny_cseg_buffer_with_tiny_blocks_fails_before_building_the_grid(z_blocks):
    # Block size 1 is legal: a 256^3 chunk has 16.7 M blocks, whose per-block
    # arrays (384 MiB, then cached) were built before the header check.
    import tracemalloc

    from napari_precomputed.compressed_segmentation import decode

    tracemalloc.start()
    try:
        with pytest.raises(InvalidFormatError, match="header table"):
            decode(b"\x01\0\0\0", (256, 256, 256), 1, "uint32", (1, 1, 1),
                   z_blocks=z_blocks)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


_HUGE_BLOCK_SCRIPT = r"""
import json, pathlib, resource, struct, sys
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
from napari_precomputed.accessor import get_accessor_for_url
from napari_precomputed.errors import DataAccessError, InvalidFormatError, InvalidInfoError
from napari_precomputed.precomputed_io import get_IO_for_existing_dataset
root = pathlib.Path(sys.argv[1])
block = int(sys.argv[2])
info = {"type": "segmentation", "data_type": "uint32", "num_channels": 1,
        "scales": [{"key": "s0", "size": [8, 8, 4], "resolution": [1, 1, 1],
                    "chunk_sizes": [[8, 8, 4]], "encoding": "compressed_segmentation",
                    "compressed_segmentation_block_size": [block] * 3}]}
(root / "info").write_text(json.dumps(info))
(root / "s0").mkdir()
# One block, 0 bits, table entry 7 right after the header: a valid 16-byte chunk.
(root / "s0" / "0-8_0-8_0-4").write_bytes(struct.pack("<4I", 1, 2, 2, 7))
try:
    io = get_IO_for_existing_dataset(get_accessor_for_url(str(root)))
    chunk = io.read_chunk("s0", (0, 8, 0, 8, 0, 4))
    print("DECODED", int(chunk.min()), int(chunk.max()), chunk.shape)
except (InvalidInfoError, InvalidFormatError, DataAccessError) as exc:
    print("DOCUMENTED", type(exc).__name__, exc)
"""


@pytest.mark.parametrize("block", [64, 2048])
def test_cseg_huge_block_size_is_bounded(tmp_path, block):
    """A block size far larger than the chunk is legal (digest 7.4); decoding a
    tiny chunk must stay cheap, or fail with a documented error -- run in a
    child process capped at 3 GiB of address space and 60 s."""
    proc = subprocess.run([sys.executable, "-c", _HUGE_BLOCK_SCRIPT, str(tmp_path),
                           str(block)], capture_output=True, text=True, timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-2000:]
    assert "DECODED 7 7 (1, 4, 8, 8)" in out or "DOCUMENTED" in out, out[-2000:]


# --------------------------------------------------------------------------
# 6. Chunk coordinates off the grid, wrong chunk shapes


OFF_GRID = {
    "misaligned-x": (4, 12, -2, 6, 1, 5),
    "misaligned-z": (3, 11, -2, 6, 2, 6),
    "ignores-offset": (0, 8, 0, 8, 0, 4),
    "too-short": (3, 10, -2, 6, 1, 5),
    "too-long": (3, 12, -2, 6, 1, 5),
    "unclipped-border": (19, 27, 6, 14, 5, 9),
    "past-the-end": (27, 35, -2, 6, 1, 5),
    "before-the-start": (-5, 3, -2, 6, 1, 5),
    "reversed": (11, 3, -2, 6, 1, 5),
    "empty": (3, 3, -2, 6, 1, 5),
    "five-coords": (3, 11, -2, 6, 1),
    "seven-coords": (3, 11, -2, 6, 1, 5, 0),
    "fractional": (3.5, 11, -2, 6, 1, 5),
    "strings": ("3", "11", "-2", "6", "1", "5"),
}


@pytest.mark.parametrize("coords", list(OFF_GRID.values()), ids=list(OFF_GRID))
def test_off_grid_coords_raise_assertion(tmp_path, coords):
    io_ = make_dataset(tmp_path)
    write_region(io_, "s0", np.ones((1, *SIZE[::-1]), np.uint8))
    before = snapshot(tmp_path)
    with pytest.raises(AssertionError) as exc_info:
        io_.read_chunk("s0", coords)
    assert isinstance(exc_info.value, InvalidChunkCoordsError)
    chunk = np.zeros((1, 4, 8, 8), np.uint8)
    with pytest.raises(AssertionError):
        io_.write_chunk(chunk, "s0", coords)
    assert snapshot(tmp_path) == before


def test_whole_number_coords_of_other_types_name_the_chunk_as_integers(tmp_path):
    # A file named 3.0-11.0_... would be found by no reader.
    io_ = make_dataset(tmp_path)
    chunk = np.arange(4 * 8 * 8, dtype=np.uint8).reshape(1, 4, 8, 8)
    io_.write_chunk(chunk, "s0", tuple(float(c) for c in FULL))
    assert sorted(p.name for p in (tmp_path / "s0").iterdir()) == [chunk_name(FULL)]
    encoded = io_.encode_chunk(chunk, "s0", tuple(np.int64(c) for c in FULL))
    io_.store_encoded_chunk(encoded, "s0", tuple(np.float64(c) for c in FULL))
    assert sorted(p.name for p in (tmp_path / "s0").iterdir()) == [chunk_name(FULL)]
    back = io_.read_chunk("s0", tuple(np.int32(c) for c in FULL))
    assert np.array_equal(back, chunk)


def test_unknown_scale_key(tmp_path):
    io_ = make_dataset(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(KeyError):
        io_.read_chunk("nope", FULL)
    with pytest.raises(KeyError):
        io_.write_chunk(np.zeros(chunk_shape_czyx(FULL), np.uint8), "nope", FULL)
    assert snapshot(tmp_path) == before


WRONG_SHAPES = {
    "zyx-no-channel-axis": (4, 8, 8),
    "xyzc-order": (8, 8, 4, 1),
    "czyx-swapped-z-x": (1, 8, 8, 4),
    "two-channels": (2, 4, 8, 8),
    "five-d": (1, 1, 4, 8, 8),
    "full-size-at-border": "full-at-edge",
    "empty": (1, 0, 8, 8),
}


@pytest.mark.parametrize("encoding, data_type", [
    ("raw", "uint8"), ("png", "uint8"), ("jpeg", "uint8"),
    ("compressed_segmentation", "uint32")])
@pytest.mark.parametrize("shape", list(WRONG_SHAPES.values()), ids=list(WRONG_SHAPES))
def test_wrong_chunk_shape_on_write(tmp_path, encoding, data_type, shape):
    io_ = make_dataset(tmp_path, data_type=data_type, encoding=encoding)
    before = snapshot(tmp_path)
    coords = FULL
    if shape == "full-at-edge":
        coords, shape = EDGE, chunk_shape_czyx(FULL)
    with pytest.raises(AssertionError):
        io_.write_chunk(np.zeros(shape, data_type), "s0", coords)
    assert snapshot(tmp_path) == before


def test_lossy_dtype_on_write_is_refused(tmp_path):
    io_ = make_dataset(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises((IncompatibleEncoderError, AssertionError, ValueError)):
        io_.write_chunk(np.full(chunk_shape_czyx(FULL), 300.5), "s0", FULL)
    assert snapshot(tmp_path) == before


def test_missing_chunk_is_reported_or_zero(tmp_path):
    io_ = make_dataset(tmp_path)
    with pytest.raises(ChunkNotFoundError) as exc_info:
        io_.read_chunk("s0", FULL)
    assert chunk_name(FULL) in str(exc_info.value)
    region = read_region(io_, "s0", OFFSET, [o + s for o, s in zip(OFFSET, SIZE)])
    assert region.shape == (1, *SIZE[::-1]) and not region.any()
    with pytest.raises(ChunkNotFoundError):
        read_region(io_, "s0", OFFSET, [o + s for o, s in zip(OFFSET, SIZE)],
                    missing="error")


# --------------------------------------------------------------------------
# 7. Seeded fuzz: truncate / flip bytes of valid chunks

FUZZ_CASES = 100
FUZZ_DATASETS = {
    "raw-uint16-2ch": ("uint16", "raw", 2),
    "png-uint8-3ch": ("uint8", "png", 3),
    "png-uint16-1ch": ("uint16", "png", 1),
    "jpeg-uint8-1ch": ("uint8", "jpeg", 1),
    "jpeg-uint8-3ch": ("uint8", "jpeg", 3),
    "cseg-uint32-1ch": ("uint32", "compressed_segmentation", 1),
    "cseg-uint64-2ch": ("uint64", "compressed_segmentation", 2),
}


def _mutations(rng, good):
    """Yield FUZZ_CASES corrupted copies of ``good``."""
    for _ in range(FUZZ_CASES):
        buf = bytearray(good)
        kind = rng.integers(0, 4)
        if kind == 0:  # truncate
            buf = buf[: rng.integers(0, len(buf))]
        elif kind == 1:  # flip a few bytes
            for pos in rng.integers(0, len(buf), rng.integers(1, 6)):
                buf[pos] ^= int(rng.integers(1, 256))
        elif kind == 2:  # flip bytes near the start (headers live there)
            for pos in rng.integers(0, min(len(buf), 64), rng.integers(1, 4)):
                buf[pos] = int(rng.integers(0, 256))
        else:  # overwrite one 32-bit word with an extreme value
            if len(buf) >= 4:
                pos = 4 * int(rng.integers(0, len(buf) // 4))
                buf[pos:pos + 4] = struct.pack(
                    "<I", int(rng.choice([0, 1, 0xFF_FFFF, 0x2000_0000, 0xFFFF_FFFF])))
        yield bytes(buf)


@pytest.mark.parametrize("data_type, encoding, num_channels",
                         list(FUZZ_DATASETS.values()), ids=list(FUZZ_DATASETS))
def test_fuzzed_chunks(tmp_path, data_type, encoding, num_channels):
    io_ = make_dataset(tmp_path, data_type=data_type, encoding=encoding,
                      num_channels=num_channels)
    rng = np.random.default_rng(1234)
    shape = (num_channels, *SIZE[::-1])
    if encoding == "compressed_segmentation":
        data = rng.integers(0, 5, shape).astype(data_type) * (2**33 + 1 if data_type ==
                                                              "uint64" else 1001)
        data[:, :, :7] = rng.integers(0, 2**31, (num_channels, SIZE[2], 7, SIZE[0]))
    elif encoding == "jpeg":
        zz, yy, xx = np.meshgrid(*(np.arange(n) for n in SIZE[::-1]), indexing="ij")
        data = np.clip(20 * zz + 5 * yy + 7 * xx, 0, 255).astype(data_type)
        data = np.ascontiguousarray(np.broadcast_to(data, shape))
    else:
        data = rng.integers(0, np.iinfo(data_type).max, shape, dtype=data_type,
                            endpoint=True)
    write_region(io_, "s0", data)
    coords_list = list(iter_chunk_coords(io_.scale_info("s0")))
    for coords in (FULL, EDGE):
        assert coords in coords_list
        path = chunk_file(tmp_path, coords)
        good = path.read_bytes()
        expected_shape = chunk_shape_czyx(coords, num_channels)
        outcomes = {"error": 0, "array": 0}
        for bad in _mutations(rng, good):
            path.write_bytes(bad)
            try:
                got = io_.read_chunk("s0", coords)
            except (InvalidFormatError, DataAccessError) as exc:
                assert chunk_name(coords) in str(exc)
                outcomes["error"] += 1
                continue
            assert got.shape == expected_shape
            assert got.dtype == np.dtype(data_type)
            outcomes["array"] += 1
        assert outcomes["error"] > 0, outcomes


def test_sharded_scale_is_refused_not_read_as_zeros(tmp_path):
    from napari_precomputed.errors import UnsupportedEncodingError

    info = base_info(sharding={"@type": "neuroglancer_uint64_sharded_v1", "hash": "identity",
                               "preshift_bits": 0, "minishard_bits": 0, "shard_bits": 0})
    (tmp_path / "info").write_text(json.dumps(info))
    with pytest.raises(UnsupportedEncodingError, match="sharded"):
        get_IO_for_existing_dataset(get_accessor_for_url(str(tmp_path)))
