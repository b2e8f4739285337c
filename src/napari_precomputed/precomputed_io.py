"""High-level access to Neuroglancer pre-computed datasets.

The central component here is the :class:`PrecomputedIO` base class. Use
:func:`get_IO_for_existing_dataset` or :func:`get_IO_for_new_dataset` for
instantiating a concrete accessor object.
"""

import json

import numpy as np

from .accessor import _takes_max_size
from .chunk_encoding import get_encoder
from .errors import (
    InvalidChunkCoordsError,
    InvalidFormatError,
    InvalidInfoError,
    UnsupportedEncodingError,
)
from .info import chunk_name, chunk_shape, integral_info, parse_info, validate_new_info

__all__ = [
    "PrecomputedIO",
    "get_IO_for_existing_dataset",
    "get_IO_for_new_dataset",
]


def get_IO_for_existing_dataset(accessor, encoder_options={}):
    """Create an object for accessing a pyramid with an existing info.

    :param Accessor accessor: a low-level accessor
    :param dict encoder_options: extrinsic encoder options
    :rtype: PrecomputedIO
    :raises DataAccessError: if the info file cannot be retrieved
    :raises InvalidInfoError: if the info file is not valid JSON or not a
        valid precomputed volume info
    """
    describe = getattr(accessor, "describe", None)
    source = describe("info") if describe else "info"
    info = parse_info(accessor.fetch_file("info"), source=source)
    try:
        return PrecomputedIO(info, accessor, encoder_options=encoder_options)
    except InvalidInfoError as exc:
        raise type(exc)(f"{source}: {exc}") from exc


def get_IO_for_new_dataset(info, accessor, overwrite_info=False, encoder_options={}):
    """Create a new pyramid and store the provided info.

    :param dict info: the info of the new pyramid
    :param Accessor accessor: a low-level accessor
    :param bool overwrite_info: whether to replace an existing info file
    :param dict encoder_options: extrinsic encoder options
    :rtype: PrecomputedIO
    :raises DataAccessError: if the info file cannot be stored, or exists and
        ``overwrite_info`` is False
    :raises InvalidInfoError: if the info is not a valid precomputed volume
        info, or a scale's encoding cannot store its data type or channel count
    """
    validate_new_info(info)
    if "@type" not in info:
        info = {"@type": "neuroglancer_multiscale_volume", **info}
    # Build the encoders before writing anything, so that a bad combination
    # does not leave an info file behind.
    io = PrecomputedIO(info, accessor, encoder_options=encoder_options)
    accessor.store_file("info", json.dumps(io.info, indent=2).encode("utf-8"),
                        mime_type="application/json", overwrite=overwrite_info)
    return io


class PrecomputedIO:
    """Object for high-level access to a Neuroglancer precomputed dataset.

    An object of this class provides access to chunk data in terms of NumPy
    arrays. It handles the reading/writing of files through the provided
    accessor, as well as the encoding/decoding of chunks.

    The structure of the dataset (info) is stored in the PrecomputedIO
    instance and must not change during its lifetime. If you need to change
    the info of a dataset, use :func:`get_IO_for_new_dataset` to store the new
    info and create a new PrecomputedIO object.

    :param dict info: description of the dataset's structure (see
        :ref:`The Neuroglancer info file`)
    :param Accessor accessor: an object providing low-level access to the
        dataset's files
    :param dict encoder_options: extrinsic encoder options (see
        :func:`~napari_precomputed.chunk_encoding.get_encoder`)
    :raises InvalidInfoError: if a scale's encoding is unknown or cannot store the
        info's data type or channel count
    """

    def __init__(self, info, accessor, encoder_options={}):
        # "64.0" is a valid integer in an info; sizes and channel counts are
        # used in integer arithmetic and array shapes everywhere after this.
        self._info = info = integral_info(info)
        self.accessor = accessor
        self._bounded_fetch = _takes_max_size(type(accessor), "fetch_chunk")
        self._bounded_range = _takes_max_size(type(accessor), "fetch_chunk_range")
        self._scales = {}
        self._encoders = {}
        for scale_info in info["scales"]:
            key = scale_info["key"]
            if scale_info.get("sharding") is not None:
                # Reading shards as unsharded chunks would show zeros
                # everywhere: refuse instead of showing wrong data.
                raise UnsupportedEncodingError(
                    f"scale {key!r} is sharded, which napari-precomputed cannot read yet")
            self._scales[key] = scale_info
            self._encoders[key] = get_encoder(info, scale_info, encoder_options)

    @property
    def info(self):
        """The precomputed dataset's info dictionary."""
        return self._info

    def scale_info(self, scale_key):
        """The info for a given scale.

        :param str scale_key: the key property of the chosen scale.
        :return: ``info["scales"][i]`` where
            ``info["scales"][i]["key"] == scale_key``
        :rtype: dict
        :raises KeyError: if the scale_key is not a valid scale of this dataset
        """
        return self._scales[scale_key]

    def scale_is_lossy(self, scale_key):
        """Test if the scale is using a lossy encoding.

        :param str scale_key: the key attribute of the scale
        :returns: True if the scale is using a lossy encoding
        :rtype: bool
        :raises KeyError: if the scale_key is not a valid scale of this dataset
        """
        return self._encoders[scale_key].lossy

    def encoder(self, scale_key):
        """The :class:`~napari_precomputed.chunk_encoding.ChunkEncoder` of a scale.

        :raises KeyError: if the scale_key is not a valid scale of this dataset
        """
        return self._encoders[scale_key]

    def validate_chunk_coords(self, scale_key, chunk_coords):
        """Validate the coordinates of a chunk.

        The coordinates must lie on the grid of one of the scale's chunk
        sizes, anchored at ``voxel_offset``, and be clipped to the scale's
        extent exactly as the chunk files are named.

        :param str scale_key: the key attribute of the scale
        :param tuple chunk_coords: (xmin, xmax, ymin, ymax, zmin, zmax)
        :returns: True if the chunk coordinates are valid according to the
            dataset's info
        :rtype: bool
        """
        return self._grid_coords(scale_key, chunk_coords) is not None

    def _grid_coords(self, scale_key, chunk_coords):
        """The coordinates as a tuple of ints if they are valid, else None.

        Whole-number floats are valid coordinates, but a file name made from
        them would read ``0.0-64.0``, which no reader looks for.
        """
        scale_info = self._scales.get(scale_key)
        if scale_info is None:
            return None
        try:
            coords = tuple(int(c) for c in chunk_coords)
        except (TypeError, ValueError):
            return None
        if len(coords) != 6 or any(c != o for c, o in zip(coords, chunk_coords)):
            return None
        offset = scale_info.get("voxel_offset", (0, 0, 0))
        size = scale_info["size"]
        for chunk_size in scale_info["chunk_sizes"]:
            for axis in range(3):
                lo, hi = coords[2 * axis], coords[2 * axis + 1]
                o, s, c = int(offset[axis]), int(size[axis]), int(chunk_size[axis])
                if (lo - o) % c or not o <= lo < o + s or hi != min(lo + c, o + s):
                    break
            else:
                return coords
        return None

    def _check_coords(self, scale_key, chunk_coords):
        if scale_key not in self._scales:
            raise KeyError(f"{scale_key!r} is not a scale of this dataset")
        coords = self._grid_coords(scale_key, chunk_coords)
        if coords is None:
            raise InvalidChunkCoordsError(
                f"chunk coordinates {tuple(chunk_coords)} do not match the chunk grid "
                f"of scale {scale_key!r}")
        return coords

    def read_chunk(self, scale_key, chunk_coords):
        """Read a chunk from the dataset.

        The chunk coordinates must be compatible with the dataset's info. This
        can be checked with :meth:`validate_chunk_coords`.

        :param str scale_key: the key attribute of the scale
        :param tuple chunk_coords: the chunk coordinates
            (xmin, xmax, ymin, ymax, zmin, zmax)
        :returns: chunk data contained in a 4-D NumPy array (C, Z, Y, X)
        :rtype: numpy.ndarray
        :raises DataAccessError: if the chunk's file cannot be accessed
            (:class:`~napari_precomputed.errors.ChunkNotFoundError` if it is
            not stored at all)
        :raises InvalidFormatError: if the chunk cannot be decoded, naming it
        :raises AssertionError: if the chunk coordinates are incompatible with
            the dataset's info
        """
        chunk_coords = self._check_coords(scale_key, chunk_coords)
        buf = self.fetch_encoded_chunk(scale_key, chunk_coords)
        return self.decode_chunk(buf, scale_key, chunk_coords)

    def fetch_encoded_chunk(self, scale_key, chunk_coords):
        """The stored bytes of a chunk, for :meth:`decode_chunk`.

        Accessors whose ``fetch_chunk`` takes ``max_size`` are told the most
        bytes a chunk of this size can take, so that a compressed file that
        inflates beyond it is refused early.

        :raises DataAccessError: as :meth:`read_chunk`
        """
        if self._bounded_fetch:
            limit = self._encoders[scale_key].max_encoded_size(chunk_shape(chunk_coords))
            return self.accessor.fetch_chunk(scale_key, chunk_coords, max_size=limit)
        return self.accessor.fetch_chunk(scale_key, chunk_coords)

    def decode_chunk(self, buf, scale_key, chunk_coords):
        """Decode the bytes of a chunk fetched separately (e.g. concurrently).

        :raises InvalidFormatError: if the chunk cannot be decoded, naming it
        """
        try:
            return self._encoders[scale_key].decode(buf, chunk_shape(chunk_coords))
        except InvalidFormatError as exc:
            raise self._name_chunk(exc, scale_key, chunk_coords) from exc

    def read_chunk_z_range(self, scale_key, chunk_coords, z_start, z_stop):
        """Read at least z-slices ``z_start`` to ``z_stop`` of a chunk.

        Where the encoding allows, less than the whole chunk is fetched (raw:
        only the slices' bytes) or decoded (compressed_segmentation: only the
        layers of blocks that hold them).

        :param int z_start: first z-slice, counted in the chunk
        :param int z_stop: end of the z-slices (exclusive)
        :returns: ``(array, first)``: a (C, Z', Y, X) array holding the
            chunk's z-slices ``first`` to ``first + Z'``
        :raises DataAccessError: as :meth:`read_chunk`
        :raises InvalidFormatError: if the chunk cannot be decoded, naming it
        """
        return self._read_chunk_z_range(scale_key, self._check_coords(scale_key, chunk_coords),
                                        z_start, z_stop)

    def _read_chunk_z_range(self, scale_key, chunk_coords, z_start, z_stop):
        # For coordinates known to be on the grid (read_region's): checking
        # them again costs a fifth of a raw plane read.
        encoder = self._encoders[scale_key]
        size = chunk_shape(chunk_coords)
        byte_range = encoder.z_byte_range(size, z_start, z_stop)
        fetch_range = getattr(self.accessor, "fetch_chunk_range", None)
        try:
            if byte_range is not None and fetch_range is not None:
                if self._bounded_range:
                    data, total = fetch_range(scale_key, chunk_coords, *byte_range,
                                              max_size=encoder.max_encoded_size(size))
                else:
                    data, total = fetch_range(scale_key, chunk_coords, *byte_range)
                return encoder.decode_z_bytes(data, total, size, z_start, z_stop), z_start
            buf = self.fetch_encoded_chunk(scale_key, chunk_coords)
            return encoder.decode_z_range(buf, size, z_start, z_stop)
        except InvalidFormatError as exc:
            raise self._name_chunk(exc, scale_key, chunk_coords) from exc

    def _name_chunk(self, exc, scale_key, chunk_coords):
        where = f"{scale_key}/{chunk_name(chunk_coords)}"
        describe = getattr(self.accessor, "describe", None)
        if describe is not None:
            where = describe(where)
        return InvalidFormatError(f"chunk {where}: {exc}")

    def write_chunk(self, chunk, scale_key, chunk_coords):
        """Write a chunk into the dataset.

        The chunk coordinates must be compatible with the dataset's info. This
        can be checked with :meth:`validate_chunk_coords`.

        :param numpy.ndarray chunk: chunk data contained in a 4-D NumPy array
            (C, Z, Y, X)
        :param str scale_key: the key attribute of the scale
        :param tuple chunk_coords: the chunk coordinates
            (xmin, xmax, ymin, ymax, zmin, zmax)
        :raises DataAccessError: if the chunk's file cannot be accessed
        :raises AssertionError: if the chunk coordinates are incompatible with
            the dataset's info, or the chunk's shape with its coordinates
        """
        self.store_encoded_chunk(self.encode_chunk(chunk, scale_key, chunk_coords),
                                 scale_key, chunk_coords)

    def encode_chunk(self, chunk, scale_key, chunk_coords):
        """Encode a chunk as :meth:`write_chunk` does, without storing it.

        With :meth:`store_encoded_chunk`, this lets encoding and storage run
        on different threads.

        :param numpy.ndarray chunk: chunk data contained in a 4-D NumPy array
            (C, Z, Y, X)
        :param str scale_key: the key attribute of the scale
        :param tuple chunk_coords: the chunk coordinates
            (xmin, xmax, ymin, ymax, zmin, zmax)
        :returns: the encoded chunk
        :rtype: bytes
        :raises AssertionError: if the chunk coordinates are incompatible with
            the dataset's info, or the chunk's shape with its coordinates
        """
        chunk_coords = self._check_coords(scale_key, chunk_coords)
        chunk = np.asarray(chunk)
        x, y, z = chunk_shape(chunk_coords)
        expected = (self._info["num_channels"], z, y, x)
        if chunk.shape != expected:
            raise InvalidChunkCoordsError(
                f"chunk of shape {chunk.shape} written at {tuple(chunk_coords)} of scale "
                f"{scale_key!r}, which needs (C, Z, Y, X) = {expected}")
        return self._encoders[scale_key].encode(chunk)

    def store_encoded_chunk(self, buf, scale_key, chunk_coords):
        """Store a chunk encoded by :meth:`encode_chunk`.

        :param bytes buf: the encoded chunk
        :param str scale_key: the key attribute of the scale
        :param tuple chunk_coords: the chunk coordinates
            (xmin, xmax, ymin, ymax, zmin, zmax)
        :raises DataAccessError: if the chunk's file cannot be written
        :raises AssertionError: if the chunk coordinates are incompatible with
            the dataset's info
        """
        chunk_coords = self._check_coords(scale_key, chunk_coords)
        self.accessor.store_chunk(buf, scale_key, chunk_coords,
                                  mime_type=self._encoders[scale_key].mime_type)
