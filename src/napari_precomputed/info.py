"""Validation of the precomputed ``info`` file and the chunk grid it defines.

Everything here works on plain ``dict`` objects as parsed from JSON and knows
nothing of storage. Vectors in ``info`` are in (x, y, z) order; arrays handed
to users are (C, Z, Y, X).
"""

import copy
import json
import math
import operator

import numpy as np

from .errors import InvalidInfoError, UnsupportedEncodingError

__all__ = [
    "DATA_TYPES",
    "ENCODINGS",
    "UNSUPPORTED_ENCODINGS",
    "ENCODING_DATA_TYPES",
    "validate_info",
    "validate_new_info",
    "integral_info",
    "parse_info",
    "scale_chunk_grid",
    "chunk_name",
    "chunk_coords_for_grid_index",
    "iter_chunk_coords",
    "resolve_scale_key",
]

#: Element types the format allows (Neuroglancer and TensorStore agree on these).
DATA_TYPES = (
    "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "float32",
)

#: Encodings this package reads and writes.
ENCODINGS = ("raw", "jpeg", "png", "compressed_segmentation")

#: Encodings Neuroglancer knows but for which no decoder ships here.
UNSUPPORTED_ENCODINGS = ("compresso", "jxl")

#: Which data types and channel counts each encoding accepts.
ENCODING_DATA_TYPES = {
    "raw": (DATA_TYPES, None),
    "jpeg": (("uint8",), (1, 3)),
    "png": (("uint8", "uint16"), (1, 2, 3, 4)),
    "compressed_segmentation": (("uint32", "uint64"), None),
}

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

#: Largest coordinate magnitude TensorStore opens (its ``kMaxFiniteIndex``).
_PORTABLE_MAX = 2**62 - 2


def _where(scale_index, member):
    if scale_index is None:
        return f"info[{member!r}]"
    return f"info['scales'][{scale_index}][{member!r}]"


def whole_number(value):
    """``value`` as an int if it is a whole number (2, 2.0, a NumPy integer),
    else None; bools and strings are not numbers here."""
    if isinstance(value, (str, bytes, bool, np.bool_)):
        return None
    try:
        return operator.index(value)  # exact, beyond float's 53 bits too
    except TypeError:
        pass
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if math.isfinite(number) and number.is_integer() else None


def _as_int(value, what):
    # JSON holds ints and floats only; bool is a subclass of int in Python,
    # and JSON true must not pass as 1.
    number = whole_number(value) if isinstance(value, (int, float)) else None
    if number is None:
        raise InvalidInfoError(f"{what} must be an integer, not {value!r}")
    return number


def _int_vector(value, what, minimum=None):
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise InvalidInfoError(f"{what} must be a list of 3 integers, not {value!r}")
    out = [_as_int(v, what) for v in value]
    if minimum is not None and any(v < minimum for v in out):
        raise InvalidInfoError(f"{what} must be >= {minimum} on every axis, not {value!r}")
    return out


def _positive_vector(value, what):
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise InvalidInfoError(f"{what} must be a list of 3 numbers, not {value!r}")
    for v in value:
        if (type(v) is bool or not isinstance(v, (int, float))
                or not math.isfinite(v) or v <= 0):
            raise InvalidInfoError(f"{what} must hold finite numbers > 0, not {value!r}")
    return list(value)


def validate_info(info):
    """Check an info dict against the precomputed volume format.

    The checks are the strict reading recommended by the format digest: the
    eight data types, lowercase enumerations, integral vectors of length 3,
    positive sizes and resolutions, encodings compatible with the data type,
    encoding parameters only where they belong, and scale keys that stay
    inside the dataset.

    :param dict info: a parsed info file
    :raises InvalidInfoError: naming the first offending member
    """
    if not isinstance(info, dict):
        raise InvalidInfoError(f"info must be a JSON object, not {type(info).__name__}")
    if "@type" in info and info["@type"] != "neuroglancer_multiscale_volume":
        raise InvalidInfoError(
            f"info['@type'] is {info['@type']!r}; a precomputed volume has "
            "'neuroglancer_multiscale_volume'")
    for member in ("type", "data_type", "num_channels", "scales"):
        if member not in info:
            raise InvalidInfoError(f"info has no {member!r} member")
    if info["type"] not in ("image", "segmentation"):
        raise InvalidInfoError(
            f"info['type'] must be 'image' or 'segmentation', not {info['type']!r}")
    data_type = info["data_type"]
    if data_type not in DATA_TYPES:
        raise InvalidInfoError(
            f"info['data_type'] {data_type!r} is not one the format allows "
            f"({', '.join(DATA_TYPES)})")
    num_channels = _as_int(info["num_channels"], "info['num_channels']")
    if num_channels < 1:
        raise InvalidInfoError(f"info['num_channels'] must be >= 1, not {num_channels}")
    scales = info["scales"]
    if not isinstance(scales, list) or not scales:
        raise InvalidInfoError("info['scales'] must be a non-empty list")
    seen_keys = set()
    for index, scale in enumerate(scales):
        _validate_scale(scale, index, data_type, num_channels)
        key = resolve_scale_key(scale["key"])
        if key in seen_keys:
            raise InvalidInfoError(
                f"{_where(index, 'key')} {scale['key']!r} is used by two scales")
        seen_keys.add(key)


def _validate_scale(scale, index, data_type, num_channels):
    if not isinstance(scale, dict):
        raise InvalidInfoError(f"info['scales'][{index}] must be a JSON object")
    for member in ("key", "size", "resolution", "chunk_sizes", "encoding"):
        if member not in scale:
            raise InvalidInfoError(f"info['scales'][{index}] has no {member!r} member")
    if not isinstance(scale["key"], str):
        raise InvalidInfoError(f"{_where(index, 'key')} must be a string")
    try:
        resolve_scale_key(scale["key"])
    except InvalidInfoError as exc:
        raise InvalidInfoError(f"{_where(index, 'key')}: {exc}") from None
    size = _int_vector(scale["size"], _where(index, "size"), minimum=1)
    offset = _int_vector(scale.get("voxel_offset", [0, 0, 0]),
                         _where(index, "voxel_offset"))
    if any(not (_INT64_MIN <= o and o + s <= _INT64_MAX) for o, s in zip(offset, size)):
        raise InvalidInfoError(
            f"{_where(index, 'voxel_offset')} + size overflows 64-bit coordinates")
    _positive_vector(scale["resolution"], _where(index, "resolution"))
    chunk_sizes = scale["chunk_sizes"]
    if not isinstance(chunk_sizes, list) or not chunk_sizes:
        raise InvalidInfoError(f"{_where(index, 'chunk_sizes')} must be a non-empty list")
    itemsize = np.dtype(data_type).itemsize
    for chunk_size in chunk_sizes:
        voxels = math.prod(_int_vector(chunk_size, _where(index, "chunk_sizes"), minimum=1))
        # Byte counts and array shapes are int64 everywhere (NumPy, and every
        # other reader): a chunk beyond that cannot be held by anyone.
        if num_channels * voxels * itemsize > _INT64_MAX:
            shown = num_channels if num_channels < 10**15 else f"{num_channels:.3g}"
            raise InvalidInfoError(
                f"{_where(index, 'chunk_sizes')}: a chunk of {shown} channels of "
                f"{chunk_size} {data_type} voxels exceeds 64-bit byte counts")
    encoding = scale["encoding"]
    if encoding in UNSUPPORTED_ENCODINGS:
        raise UnsupportedEncodingError(
            f"{_where(index, 'encoding')} is {encoding!r}: a valid Neuroglancer "
            "encoding that napari-precomputed cannot decode")
    if encoding not in ENCODINGS:
        raise InvalidInfoError(
            f"{_where(index, 'encoding')} {encoding!r} is not a precomputed encoding "
            f"({', '.join(ENCODINGS)})")
    allowed_types, allowed_channels = ENCODING_DATA_TYPES[encoding]
    if data_type not in allowed_types:
        raise InvalidInfoError(
            f"{_where(index, 'encoding')} {encoding!r} cannot store {data_type} "
            f"(only {', '.join(allowed_types)})")
    if allowed_channels is not None and num_channels not in allowed_channels:
        raise InvalidInfoError(
            f"{_where(index, 'encoding')} {encoding!r} cannot store {num_channels} "
            f"channels (only {', '.join(map(str, allowed_channels))})")
    block_member = "compressed_segmentation_block_size"
    if encoding == "compressed_segmentation":
        if block_member not in scale:
            raise InvalidInfoError(
                f"info['scales'][{index}] uses compressed_segmentation but has no "
                f"{block_member!r}")
        _int_vector(scale[block_member], _where(index, block_member), minimum=1)
    elif block_member in scale:
        raise InvalidInfoError(
            f"{_where(index, block_member)} is only allowed with compressed_segmentation")
    for member, owner, high in (("jpeg_quality", "jpeg", 100), ("png_level", "png", 9)):
        if member in scale:
            if encoding != owner:
                raise InvalidInfoError(
                    f"{_where(index, member)} is only allowed with the {owner} encoding")
            value = _as_int(scale[member], _where(index, member))
            if not 0 <= value <= high:
                raise InvalidInfoError(f"{_where(index, member)} must be in 0..{high}")
    sharding = scale.get("sharding")
    if sharding is not None:
        if len(chunk_sizes) != 1:
            raise InvalidInfoError(
                f"{_where(index, 'chunk_sizes')} must hold exactly one chunk size "
                "because the scale has 'sharding'")
        _validate_sharding(sharding, _where(index, "sharding"))


def validate_new_info(info):
    """Check the info of a dataset about to be written.

    On top of :func:`validate_info`, coordinates must stay within the range
    TensorStore opens (magnitude below 2**62 - 1): the format allows any
    int64, but writing a dataset that a major reader refuses helps nobody.

    :param dict info: the info to write
    :raises InvalidInfoError: naming the first offending member
    """
    validate_info(info)
    for index, scale in enumerate(info["scales"]):
        offset = [int(v) for v in scale.get("voxel_offset", (0, 0, 0))]
        size = [int(v) for v in scale["size"]]
        if any(o < -_PORTABLE_MAX or o + s - 1 > _PORTABLE_MAX for o, s in zip(offset, size)):
            raise InvalidInfoError(
                f"{_where(index, 'voxel_offset')} {offset} with size {size} reaches "
                f"beyond +/-(2**62 - 2), which TensorStore cannot open")


#: Members of each scale and of its sharding that hold integers or integer vectors.
_SCALE_INTEGER_MEMBERS = ("size", "voxel_offset", "chunk_sizes", "jpeg_quality", "png_level",
                          "compressed_segmentation_block_size")
_SHARDING_INTEGER_MEMBERS = ("preshift_bits", "minishard_bits", "shard_bits")


def _integral(value):
    """``value`` with integral floats (``64.0``) made ints, nested lists included."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


def _has_float(value):
    if isinstance(value, float):
        return True
    return isinstance(value, list) and any(_has_float(v) for v in value)


def _integer_slots(info):
    """(dict, member) pairs of ``info`` that hold integers or integer vectors."""
    yield info, "num_channels"
    for scale in info.get("scales") or ():
        if isinstance(scale, dict):
            for member in _SCALE_INTEGER_MEMBERS:
                yield scale, member
            sharding = scale.get("sharding")
            if isinstance(sharding, dict):
                for member in _SHARDING_INTEGER_MEMBERS:
                    yield sharding, member


def integral_info(info):
    """``info`` with integral floats in its integer members made ints.

    The format digest recommends accepting ``64.0`` where an integer is
    expected (TensorStore does); converting once keeps every later use of
    sizes, channels and block sizes in integer arithmetic. An info without
    such floats is returned as is, any other as a converted deep copy.

    :param dict info: a validated info dict
    :returns: the same dict, or a converted copy
    """
    if not isinstance(info, dict) or not any(
            member in where and _has_float(where[member])
            for where, member in _integer_slots(info)):
        return info
    info = copy.deepcopy(info)
    for where, member in _integer_slots(info):
        if member in where:
            where[member] = _integral(where[member])
    return info


def _validate_sharding(sharding, what):
    if not isinstance(sharding, dict):
        raise InvalidInfoError(f"{what} must be a JSON object")
    if sharding.get("@type") != "neuroglancer_uint64_sharded_v1":
        raise InvalidInfoError(
            f"{what}['@type'] must be 'neuroglancer_uint64_sharded_v1'")
    if sharding.get("hash") not in ("identity", "murmurhash3_x86_128"):
        raise InvalidInfoError(
            f"{what}['hash'] must be 'identity' or 'murmurhash3_x86_128'")
    bits = {}
    for member in ("preshift_bits", "minishard_bits", "shard_bits"):
        if member not in sharding:
            raise InvalidInfoError(f"{what} has no {member!r} member")
        bits[member] = _as_int(sharding[member], f"{what}[{member!r}]")
        if not 0 <= bits[member] <= 64:
            raise InvalidInfoError(f"{what}[{member!r}] must be in 0..64")
    if bits["minishard_bits"] + bits["shard_bits"] > 64:
        raise InvalidInfoError(f"{what}: minishard_bits + shard_bits exceeds 64")
    for member in ("minishard_index_encoding", "data_encoding"):
        if sharding.get(member, "raw") not in ("raw", "gzip"):
            raise InvalidInfoError(f"{what}[{member!r}] must be 'raw' or 'gzip'")


def parse_info(text, source="info"):
    """Parse and validate the text of an info file.

    :param text: the file's contents (bytes or str)
    :param str source: how to name the file in error messages
    :returns: the info dict
    :raises InvalidInfoError: if the text is not valid JSON or not a valid info
    """
    try:
        if isinstance(text, (bytes, bytearray)):
            text = bytes(text).decode("utf-8")
        info = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidInfoError(f"{source} is not valid JSON: {exc}") from None
    try:
        validate_info(info)
    except InvalidInfoError as exc:
        # Keep the subclass (e.g. UnsupportedEncodingError) callers may catch.
        raise type(exc)(f"{source}: {exc}") from None
    return info


def resolve_scale_key(key):
    """Normalise a scale key into a relative ``/``-separated path.

    Empty components and ``.`` are skipped as Neuroglancer does; ``..`` is
    applied lexically. A key that is empty or climbs above the dataset's
    folder is rejected, so that no scale can name files outside the storage
    root it was opened with.

    :param str key: the ``key`` member of a scale
    :returns: the normalised key, e.g. ``"8_8_8"``
    :raises InvalidInfoError: if the key is empty or escapes the dataset
    """
    if "\0" in key:
        raise InvalidInfoError(f"scale key {key!r} contains a NUL character")
    if key.startswith(("/", "\\")) or (len(key) > 1 and key[1] == ":"):
        raise InvalidInfoError(f"scale key {key!r} is an absolute path")
    parts = []
    for part in key.replace("\\", "/").split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            # Keys like "../other/8_8_8" are legal in the format, but they
            # reach outside the folder we were given, which we do not allow.
            if not parts:
                raise InvalidInfoError(f"scale key {key!r} escapes the dataset folder")
            parts.pop()
            continue
        parts.append(part)
    if not parts:
        raise InvalidInfoError(f"scale key {key!r} is empty")
    return "/".join(parts)


def scale_chunk_grid(scale_info, chunk_size):
    """Number of chunks along x, y and z for one chunk size of a scale.

    :param dict scale_info: an element of ``info["scales"]``
    :param chunk_size: (X, Y, Z) chunk shape
    :returns: tuple of 3 ints
    """
    return tuple(-(-int(s) // int(c)) for s, c in zip(scale_info["size"], chunk_size))


def chunk_coords_for_grid_index(scale_info, chunk_size, grid_index):
    """Chunk coordinates (xmin, xmax, ymin, ymax, zmin, zmax) of a grid cell.

    The coordinates are absolute voxel positions (they include
    ``voxel_offset``) and clipped to the scale's extent, so they name the
    chunk file directly.
    """
    offset = scale_info.get("voxel_offset", (0, 0, 0))
    coords = []
    for g, c, o, s in zip(grid_index, chunk_size, offset, scale_info["size"]):
        begin = int(o) + int(g) * int(c)
        coords += [begin, int(o) + min((int(g) + 1) * int(c), int(s))]
    return tuple(coords)


def iter_chunk_coords(scale_info, chunk_size=None):
    """Yield the coordinates of every chunk of a scale, x fastest.

    :param dict scale_info: an element of ``info["scales"]``
    :param chunk_size: one of the scale's chunk sizes (default: the first)
    """
    if chunk_size is None:
        chunk_size = scale_info["chunk_sizes"][0]
    gx, gy, gz = scale_chunk_grid(scale_info, chunk_size)
    for z in range(gz):
        for y in range(gy):
            for x in range(gx):
                yield chunk_coords_for_grid_index(scale_info, chunk_size, (x, y, z))


def chunk_name(chunk_coords):
    """File name of a chunk in the flat layout, e.g. ``0-64_-20-44_0-64``."""
    xmin, xmax, ymin, ymax, zmin, zmax = chunk_coords
    return f"{xmin}-{xmax}_{ymin}-{ymax}_{zmin}-{zmax}"


def nested_chunk_name(chunk_coords):
    """Chunk path in neuroglancer-scripts' nested layout, e.g. ``0-64/0-64/0-64``."""
    xmin, xmax, ymin, ymax, zmin, zmax = chunk_coords
    return f"{xmin}-{xmax}/{ymin}-{ymax}/{zmin}-{zmax}"


def chunk_shape(chunk_coords):
    """The (X, Y, Z) shape of a chunk from its coordinates."""
    xmin, xmax, ymin, ymax, zmin, zmax = chunk_coords
    return (xmax - xmin, ymax - ymin, zmax - zmin)


def numpy_dtype(data_type):
    """Little-endian NumPy dtype of a precomputed data type."""
    return np.dtype(data_type).newbyteorder("<")
