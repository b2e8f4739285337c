"""Interoperability with TensorStore's ``neuroglancer_precomputed`` driver.

Two directions, voxel for voxel:

* core -> TensorStore: our writer produces a dataset (clipped edge chunks,
  positive and negative ``voxel_offset``, optionally two scales) and
  TensorStore must read back exactly what we wrote (JPEG: within a bound).
* TensorStore -> core: TensorStore creates and writes a dataset and our reader
  must return, chunk by chunk (``read_chunk``) and as a whole box
  (``read_region``), exactly what TensorStore reads back (JPEG: within a bound,
  since the two JPEG decoders may round differently).

Arrays of the core are (C, Z, Y, X); TensorStore's domain is
[x, y, z, channel] with its origin at ``voxel_offset``.
"""

import dataclasses
import json

import numpy as np
import pytest

ts = pytest.importorskip("tensorstore")

from napari_precomputed.accessor import get_accessor_for_url  # noqa: E402
from napari_precomputed.errors import ChunkNotFoundError  # noqa: E402
from napari_precomputed.info import chunk_name, iter_chunk_coords  # noqa: E402
from napari_precomputed.precomputed_io import (  # noqa: E402
    get_IO_for_existing_dataset,
    get_IO_for_new_dataset,
)
from napari_precomputed.volume import read_region, write_region  # noqa: E402

# --------------------------------------------------------------------------
# Test cases

#: (X, Y, Z) of scale 0; no axis is a multiple of CHUNK, so every axis has a
#: clipped last chunk.
SIZE = (70, 50, 20)
CHUNK = (32, 24, 8)

#: A positive and a negative voxel offset (the grid is anchored there).
OFFSETS = {"pos-offset": (5, 17, 3), "neg-offset": (-37, -5, -11)}

#: Bounds on |TensorStore - core| for JPEG (same bytes, two decoders:
#: libjpeg-turbo in Pillow vs TensorStore's libjpeg build).
JPEG_DECODER_MAX_DIFF = 2
#: Bounds on the JPEG round trip error (lossy encoder) on smooth data.
JPEG_LOSSY_MEAN_ERR = 3.0
JPEG_LOSSY_MAX_ERR = 40


@dataclasses.dataclass(frozen=True)
class Case:
    data_type: str
    encoding: str
    num_channels: int = 1
    block_size: tuple = None  # compressed_segmentation only

    @property
    def id(self):
        s = f"{self.encoding}-{self.data_type}-c{self.num_channels}"
        if self.block_size:
            s += "-b" + "x".join(map(str, self.block_size))
        return s

    @property
    def lossy(self):
        return self.encoding == "jpeg"

    @property
    def layer_type(self):
        return "segmentation" if self.encoding == "compressed_segmentation" else "image"


CASES = (
    [Case(dt, "raw") for dt in ("uint8", "int8", "uint16", "int16", "uint32",
                                "int32", "uint64", "float32")]
    + [Case("uint16", "raw", 3), Case("float32", "raw", 2)]
    + [Case("uint8", "png", c) for c in (1, 2, 3, 4)]
    + [Case("uint16", "png", 1)]
    + [Case("uint8", "jpeg", c) for c in (1, 3)]
    + [Case(dt, "compressed_segmentation", c, b)
       for dt in ("uint32", "uint64") for c in (1, 2) for b in ((8, 8, 8), (4, 6, 2))]
)

CASE_PARAMS = [pytest.param(c, id=c.id) for c in CASES]
OFFSET_PARAMS = [pytest.param(o, id=k) for k, o in OFFSETS.items()]


# --------------------------------------------------------------------------
# Test data


def _smooth_field(rng, shape_zyx, sigma=3):
    """Noise blurred with a separable box filter, scaled to [0, 1]."""
    field = rng.standard_normal(shape_zyx)
    kernel = np.ones(2 * sigma + 1) / (2 * sigma + 1)
    for axis in range(3):
        field = np.apply_along_axis(
            lambda v: np.convolve(np.pad(v, sigma, mode="reflect"), kernel, "valid"),
            axis, field)
    field -= field.min()
    return field / max(field.max(), 1e-12)


def make_data(case, size_xyz, seed=0):
    """(C, Z, Y, X) test data suited to the case's encoding."""
    rng = np.random.default_rng(seed)
    x, y, z = size_xyz
    c = case.num_channels
    dtype = np.dtype(case.data_type)
    shape = (c, z, y, x)
    if case.encoding == "jpeg":
        # Smooth gradients plus blurred noise: JPEG's home turf.
        zz, yy, xx = np.meshgrid(np.arange(z), np.arange(y), np.arange(x), indexing="ij")
        out = []
        for ch in range(c):
            grad = (xx / max(x - 1, 1) + yy / max(y - 1, 1) + zz / max(z - 1, 1)) / 3
            if ch % 2:
                grad = 1 - grad
            blob = _smooth_field(rng, (z, y, x))
            out.append(40 + 170 * (0.6 * grad + 0.4 * blob))
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    if case.encoding == "compressed_segmentation":
        # Label-like data mixing every number of encoded bits: constant
        # regions (0 bits), few labels, and dense random labels; values
        # above 2**32 for uint64 so that the high word matters.
        idx = rng.integers(0, 3, shape)
        idx[:, :, : y // 3, :] = 0
        idx[:, : z // 2, y // 3: 2 * y // 3, : x // 2] = rng.integers(
            0, 300, idx[:, : z // 2, y // 3: 2 * y // 3, : x // 2].shape)
        idx[:, z // 2:, 2 * y // 3:, x // 2:] = rng.integers(
            0, 17, idx[:, z // 2:, 2 * y // 3:, x // 2:].shape)
        high = 2**63 if dtype == np.uint64 else 2**31
        table = rng.integers(1, high, 400, dtype=dtype)
        table[0] = 0
        table[1] = np.iinfo(dtype).max
        return table[idx]
    if dtype.kind == "f":
        data = rng.standard_normal(shape).astype(dtype) * np.float32(1e5)
        flat = data.reshape(-1)
        flat[:6] = [np.inf, -np.inf, np.finfo(dtype).max, np.finfo(dtype).tiny, -0.0, 0.5]
        return data
    info = np.iinfo(dtype)
    data = rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    flat = data.reshape(-1)
    flat[:2] = [info.min, info.max]
    return data


# --------------------------------------------------------------------------
# Helpers


def _czyx(ts_array):
    """TensorStore's (x, y, z, c) array as (C, Z, Y, X)."""
    return np.ascontiguousarray(np.asarray(ts_array).transpose(3, 2, 1, 0))


def _ts_open(path, scale_index=None, **extra):
    spec = {"driver": "neuroglancer_precomputed",
            "kvstore": {"driver": "file", "path": str(path)}}
    if scale_index is not None:
        spec["scale_index"] = scale_index
    spec.update(extra)
    return ts.open(spec).result()


def _scale_info(case, key, size, offset, resolution, chunk):
    scale = {"key": key, "size": list(size), "voxel_offset": list(offset),
             "resolution": list(resolution), "chunk_sizes": [list(chunk)],
             "encoding": case.encoding}
    if case.block_size:
        scale["compressed_segmentation_block_size"] = list(case.block_size)
    return scale


def _assert_matches(actual, expected, case, what, bound=None):
    """Exact equality, or within the JPEG bounds for lossy cases."""
    assert actual.shape == expected.shape, what
    assert actual.dtype == expected.dtype, what
    if not case.lossy:
        np.testing.assert_array_equal(actual, expected, err_msg=what)
        return
    diff = np.abs(actual.astype(np.int32) - expected.astype(np.int32))
    if bound is None:  # lossy round trip against the original data
        assert diff.mean() < JPEG_LOSSY_MEAN_ERR, f"{what}: mean error {diff.mean()}"
        assert diff.max() < JPEG_LOSSY_MAX_ERR, f"{what}: max error {diff.max()}"
    else:  # two decoders of the same bytes
        assert diff.max() <= bound, f"{what}: decoders differ by {diff.max()}"


# --------------------------------------------------------------------------
def _two_scales(offset):
    """(size, offset, resolution, chunk) of two scales; scale 1 differs in every
    one and, like scale 0, has a size that is not a multiple of its chunk."""
    return [
        (SIZE, offset, (4.0, 4.0, 40.0), CHUNK),
        ((35, 25, 20), tuple(o // 2 for o in offset[:2]) + (offset[2],),
         (8.0, 8.0, 40.0), (16, 16, 6)),
    ]


# core -> TensorStore


@pytest.mark.parametrize("offset", OFFSET_PARAMS)
@pytest.mark.parametrize("case", CASE_PARAMS)
def test_core_written_dataset_reads_identically_in_tensorstore(tmp_path, case, offset):
    scales = _two_scales(offset)
    info = {"type": case.layer_type, "data_type": case.data_type,
            "num_channels": case.num_channels,
            "scales": [_scale_info(case, f"s{i}", *s) for i, s in enumerate(scales)]}
    io = get_IO_for_new_dataset(info, get_accessor_for_url(str(tmp_path)))
    written = []
    for i, (size, *_rest) in enumerate(scales):
        data = make_data(case, size, seed=i)
        write_region(io, f"s{i}", data)
        written.append(data)

    for i, (size, scale_offset, resolution, _chunk) in enumerate(scales):
        store = _ts_open(tmp_path, scale_index=i)
        assert store.dtype.numpy_dtype == np.dtype(case.data_type)
        assert list(store.domain.origin) == [*scale_offset, 0]
        assert list(store.domain.shape) == [*size, case.num_channels]
        got = _czyx(store.read().result())
        # TensorStore decodes the same bytes we encoded, so for JPEG the
        # comparison is against the original (lossy bound).
        _assert_matches(got, written[i], case, f"scale {i} read by TensorStore")
        if case.lossy:
            # ... and our own decoder must agree with TensorStore's.
            ours = read_region(io, f"s{i}", scale_offset,
                               tuple(o + s for o, s in zip(scale_offset, size)))
            _assert_matches(ours, got, case, f"scale {i}: core vs TensorStore",
                            bound=JPEG_DECODER_MAX_DIFF)


# --------------------------------------------------------------------------
# TensorStore -> core


def _ts_create(path, case, size, offset, resolution, chunk):
    scale_metadata = {"size": list(size), "voxel_offset": list(offset),
                      "resolution": list(resolution), "chunk_size": list(chunk),
                      "encoding": case.encoding}
    if case.block_size:
        scale_metadata["compressed_segmentation_block_size"] = list(case.block_size)
    if case.encoding == "jpeg":
        # TensorStore's default (75, 4:2:0) is too coarse for the lossy bound
        # on colour data; the decoder comparison does not depend on it.
        scale_metadata["jpeg_quality"] = 95
    return _ts_open(path, create=True,
                    multiscale_metadata={"type": case.layer_type,
                                         "data_type": case.data_type,
                                         "num_channels": case.num_channels},
                    scale_metadata=scale_metadata)


@pytest.mark.parametrize("offset", OFFSET_PARAMS)
@pytest.mark.parametrize("case", CASE_PARAMS)
def test_tensorstore_written_dataset_reads_identically_in_core(tmp_path, case, offset):
    scales = _two_scales(offset)
    ts_reads = []
    for i, (size, scale_offset, resolution, chunk) in enumerate(scales):
        # Opening with create=True and a new resolution adds a scale.
        store = _ts_create(tmp_path, case, size, scale_offset, resolution, chunk)
        data = make_data(case, size, seed=10 + i)
        # Blank the first chunk of the grid: TensorStore stores no all-zero
        # chunk, so that chunk file will be missing.
        data[:, :chunk[2], :chunk[1], :chunk[0]] = 0
        store[...] = data.transpose(3, 2, 1, 0)
        ts_reads.append(_czyx(store.read().result()))
        _assert_matches(ts_reads[i], data, case, f"TensorStore round trip of scale {i}")

    io = get_IO_for_existing_dataset(get_accessor_for_url(str(tmp_path)))
    info = io.info
    assert len(info["scales"]) == len(scales)
    bound = JPEG_DECODER_MAX_DIFF if case.lossy else None
    for i, (size, scale_offset, _res, chunk) in enumerate(scales):
        scale = info["scales"][i]
        key = scale["key"]
        assert scale["size"] == list(size) and scale["voxel_offset"] == list(scale_offset)
        expected = ts_reads[i]

        # Every chunk of the grid on its own.
        n_missing = 0
        for coords in iter_chunk_coords(scale):
            x0, x1, y0, y1, z0, z1 = coords
            ox, oy, oz = scale_offset
            want = expected[:, z0 - oz:z1 - oz, y0 - oy:y1 - oy, x0 - ox:x1 - ox]
            if not (tmp_path / key / chunk_name(coords)).exists():
                n_missing += 1
                assert not want.any(), f"TensorStore skipped a non-zero chunk {coords}"
                with pytest.raises(ChunkNotFoundError):
                    io.read_chunk(key, coords)
                continue
            got = io.read_chunk(key, coords)
            _assert_matches(got, want, case, f"scale {i} chunk {coords}", bound=bound)
        assert n_missing >= 1  # the blanked first chunk

        # The whole box at once (missing chunk -> zeros).
        hi = tuple(o + s for o, s in zip(scale_offset, size))
        got = read_region(io, key, scale_offset, hi)
        _assert_matches(got, expected, case, f"scale {i} read_region", bound=bound)
        # A box sticking out of the volume on both sides reads zeros outside.
        lo2 = tuple(o - 3 for o in scale_offset)
        hi2 = tuple(h + 2 for h in hi)
        padded = read_region(io, key, lo2, hi2)
        inner = padded[:, 3:-2, 3:-2, 3:-2]
        _assert_matches(inner, expected, case, f"scale {i} padded read_region",
                        bound=bound)
        outer = padded.copy()
        outer[:, 3:-2, 3:-2, 3:-2] = 0
        assert not outer.any()


def test_tensorstore_info_is_parsed_without_loss(tmp_path):
    """The info TensorStore writes (with @type, float resolutions) is accepted
    as is, and the one we write is accepted by TensorStore unchanged."""
    case = Case("uint64", "compressed_segmentation", 1, (8, 8, 8))
    _ts_create(tmp_path / "ts", case, SIZE, (-1, 2, -3), (4.5, 4.5, 40.0), CHUNK)
    ts_info = json.loads((tmp_path / "ts" / "info").read_text())
    io = get_IO_for_existing_dataset(get_accessor_for_url(str(tmp_path / "ts")))
    assert io.info == ts_info

    get_IO_for_new_dataset(ts_info, get_accessor_for_url(str(tmp_path / "core")))
    store = _ts_open(tmp_path / "core")
    assert list(store.domain.origin) == [-1, 2, -3, 0]
    assert list(store.domain.shape) == [*SIZE, 1]
