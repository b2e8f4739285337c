"""Encoding / decoding of Neuroglancer precomputed chunks.

The central component here is the :class:`ChunkEncoder` base class. Use
:func:`get_encoder` for instantiating a concrete encoder object.

Chunks are 4-D NumPy arrays indexed (C, Z, Y, X), whose C-order memory is the
Fortran (x, y, z, c) order in which the format stores voxels.
"""

import argparse
import io
import math
import numbers
import struct
import warnings
import zlib

import numpy as np
from PIL import Image

from . import jpeg_bands
from .allocator import tune_allocator
from .errors import (
    IncompatibleEncoderError,
    InvalidFormatError,
    InvalidInfoError,
    UnsupportedEncodingError,
)
from .image_bytes import save_to_bytes
from .info import DATA_TYPES, UNSUPPORTED_ENCODINGS, numpy_dtype

__all__ = [
    "ChunkEncoder",
    "RawChunkEncoder",
    "JpegChunkEncoder",
    "PngChunkEncoder",
    "CompressedSegmentationEncoder",
    "get_encoder",
    "add_argparse_options",
    "IncompatibleEncoderError",
    "InvalidFormatError",
    "InvalidInfoError",
    "UnsupportedEncodingError",
]

#: libjpeg and Pillow refuse images with a side above this many pixels.
JPEG_MAX_SIDE = 65500


def get_encoder(info, scale_info, encoder_options={}):
    """Create an Encoder object for the provided scale.

    :param dict info: a Neuroglancer info dictionary containing general
        encoding parameters (``data_type`` and ``num_channels``)
    :param dict scale_info: an element of ``info["scales"]`` containing
        scale-specific encoding parameters (``encoding`` and
        encoding-specific parameters)
    :param dict encoder_options: extrinsic encoder parameters
        (``jpeg_quality``, ``jpeg_plane``, ``png_level``); they take
        precedence over the writer hints stored in ``scale_info``
    :returns: an instance of a chunk encoder
    :rtype: ChunkEncoder
    :raises InvalidInfoError: if the provided info dict is invalid, including
        an encoding that cannot store the data type or channel count of
        ``info``, or a writer hint (``jpeg_quality``, ``png_level``) out of range
    :raises ValueError: if an ``encoder_options`` value is out of range
    """
    # Every chunk codec allocates chunk-sized buffers; see allocator.py.
    tune_allocator()
    try:
        data_type = info["data_type"]
        num_channels = info["num_channels"]
        encoding = scale_info["encoding"]
    except (KeyError, TypeError) as exc:
        raise InvalidInfoError(f"the info lacks a required member: {exc}") from exc
    where = f"scale {scale_info.get('key')!r}"
    try:
        return _encoder_for(data_type, num_channels, encoding, scale_info,
                            encoder_options or {})
    except IncompatibleEncoderError as exc:
        # The reference raises InvalidInfoError here: the info asks for
        # something its encoding cannot hold.
        raise InvalidInfoError(f"{where}: {exc}") from exc
    except InvalidInfoError as exc:
        raise type(exc)(f"{where}: {exc}") from None


def _encoder_for(data_type, num_channels, encoding, scale_info, options):
    if encoding == "raw":
        return RawChunkEncoder(data_type, num_channels)
    if encoding == "jpeg":
        quality = options.get("jpeg_quality")
        if quality is None:
            # libjpeg treats the format's quality 0 as 1.
            quality = max(1, _hint(scale_info, "jpeg_quality", 95, range(0, 101)))
        plane = options.get("jpeg_plane") or "xy"
        return JpegChunkEncoder(data_type, num_channels, jpeg_quality=quality,
                                jpeg_plane=plane)
    if encoding == "png":
        if data_type == "uint16" and num_channels in (2, 3, 4):
            raise UnsupportedEncodingError(
                f"16-bit PNG with {num_channels} channels is valid, but cannot be read "
                "here (Pillow reduces it to 8 bits)")
        level = options.get("png_level")
        if level is None:
            level = _hint(scale_info, "png_level", 6, range(0, 10))
        return PngChunkEncoder(data_type, num_channels, png_level=level)
    if encoding == "compressed_segmentation":
        try:
            block_size = scale_info["compressed_segmentation_block_size"]
        except KeyError:
            raise InvalidInfoError(
                "a compressed_segmentation scale needs "
                "'compressed_segmentation_block_size'") from None
        return CompressedSegmentationEncoder(data_type, num_channels, block_size)
    if encoding in UNSUPPORTED_ENCODINGS:
        raise UnsupportedEncodingError(
            f"the {encoding!r} encoding is valid but not supported by napari-precomputed")
    raise InvalidInfoError(f"invalid encoding {encoding!r}")


def _hint(scale_info, name, default, allowed):
    """The scale's writer hint ``name``, else ``default``.

    Extrinsic options are checked by the encoders and raise the caller's
    ValueError; a bad hint is a fault of the info.
    """
    value = scale_info.get(name, default)
    if type(value) is bool or not isinstance(value, numbers.Real) or value not in allowed:
        raise InvalidInfoError(f"{name} {value!r} is not an integer from {allowed.start} "
                               f"to {allowed.stop - 1}")
    return int(value)


def add_argparse_options(parser, allow_lossy=False):
    """Add command-line options for chunk encoding.

    :param argparse.ArgumentParser parser: an argument parser
    :param bool allow_lossy: whether to offer the options of lossy encodings

    The extrinsic encoder parameters can be obtained from command-line
    arguments with :func:`add_argparse_options` and passed to
    :func:`get_encoder`::

        import argparse
        parser = argparse.ArgumentParser()
        add_argparse_options(parser)
        args = parser.parse_args()
        get_encoder(info, scale_info, vars(args))
    """
    group = parser.add_argument_group("Options for chunk encoding")
    group.add_argument("--png-level", type=int, default=None, choices=range(10),
                       metavar="0-9",
                       help="zlib compression level of PNG chunks (default: the "
                       "scale's png_level, else 6)")
    if allow_lossy:
        group.add_argument("--jpeg-quality", type=_jpeg_quality, default=None,
                           metavar="1-100",
                           help="JPEG quality, from 1 (smallest files) to 100; "
                           "above 95 files grow fast for little gain (default: the "
                           "scale's jpeg_quality, else 95)")
        group.add_argument("--jpeg-plane", choices=("xy", "xz"), default="xy",
                           help="image plane in which JPEG compresses a chunk; its "
                           "artefacts appear in that plane (default: xy)")


def _jpeg_quality(text):
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not 1 <= value <= 100:
        raise argparse.ArgumentTypeError(f"JPEG quality must be an integer from 1 to 100, "
                                         f"not {text!r}")
    return value


def _check_chunk(chunk, num_channels, dtype):
    chunk = np.asarray(chunk)
    if chunk.ndim != 4 or chunk.shape[0] != num_channels:
        raise ValueError(
            f"a chunk must be a 4-D (C, Z, Y, X) array with C = {num_channels}, "
            f"got shape {chunk.shape}")
    if chunk.dtype != dtype:
        if not np.can_cast(chunk.dtype, dtype, "safe"):
            raise IncompatibleEncoderError(
                f"cannot store {chunk.dtype} voxels as {dtype.name} without loss")
        chunk = chunk.astype(dtype)
    return chunk


def _check_z_range(depth, z_start, z_stop):
    if not 0 <= z_start < z_stop <= depth:
        raise ValueError(f"z-slices {z_start}..{z_stop} are not in a chunk of depth {depth}")


class ChunkEncoder:
    """Encode/decode chunks from NumPy arrays to byte buffers.

    :param str data_type: data type supported by Neuroglancer
    :param int num_channels: number of image channels
    :raises IncompatibleEncoderError: if data_type is not a precomputed type
        or num_channels is not a positive integer
    """

    #: True if this encoder is lossy.
    lossy = False
    #: MIME type of the encoded chunk.
    mime_type = "application/octet-stream"
    #: Whether decoding spends its time outside the GIL, so that chunks decode
    #: faster in several threads than in one.
    parallel_decode = True
    #: Whether :meth:`decode_z_range` decodes less than the whole chunk.
    partial_z_decode = False

    def __init__(self, data_type, num_channels):
        if data_type not in DATA_TYPES:
            raise IncompatibleEncoderError(
                f"{data_type!r} is not a precomputed data type ({', '.join(DATA_TYPES)})")
        if type(num_channels) is bool or not isinstance(num_channels, numbers.Real) \
                or int(num_channels) != num_channels or num_channels < 1:
            raise IncompatibleEncoderError(f"invalid number of channels {num_channels!r}")
        self.data_type = data_type
        self.num_channels = int(num_channels)
        self.dtype = numpy_dtype(data_type)

    def encode(self, chunk):
        """Encode a chunk from a NumPy array into bytes.

        :param numpy.ndarray chunk: array with four dimensions (C, Z, Y, X)
        :returns: encoded chunk
        :rtype: bytes
        """
        raise NotImplementedError

    def decode(self, buf, chunk_size):
        """Decode a chunk from bytes into a NumPy array.

        :param bytes buf: encoded chunk
        :param tuple chunk_size: the 3-D size of the chunk (X, Y, Z)
        :returns: chunk contained in a 4-D NumPy array (C, Z, Y, X)
        :rtype: numpy.ndarray
        :raises InvalidFormatError: if the chunk data cannot be decoded properly
        """
        raise NotImplementedError

    def decode_z_range(self, buf, chunk_size, z_start, z_stop):
        """Decode at least the z-slices ``z_start`` to ``z_stop`` of a chunk.

        Encodings that can decode part of a chunk (compressed_segmentation,
        by layers of blocks) do less work for a plane than for the chunk.

        :param bytes buf: encoded chunk
        :param tuple chunk_size: the chunk's (X, Y, Z) size
        :param int z_start: first z-slice needed, counted in the chunk
        :param int z_stop: end of the z-slices needed (exclusive)
        :returns: ``(array, first)``: a (C, Z', Y, X) array holding the
            chunk's z-slices ``first`` to ``first + Z'``, which include the
            ones asked for
        :raises InvalidFormatError: if the chunk cannot be decoded
        """
        return self.decode(buf, chunk_size), 0

    def z_slab(self, depth, z_start, z_stop):
        """The z-slices :meth:`decode_z_range` decodes for a request.

        :param int depth: the chunk's Z size
        :returns: ``(first, stop)``, z-slices in the chunk; requests with the
            same answer decode the same array, so it can key a cache
        """
        return 0, depth

    def z_byte_range(self, chunk_size, z_start, z_stop):
        """Where z-slices of a chunk lie in its encoded bytes, if in one piece.

        :returns: ``(start, stop)`` byte offsets, or None if the z-slices
            cannot be read without the rest of the chunk
        """
        return None

    def decode_z_bytes(self, data, total_size, chunk_size, z_start, z_stop):
        """Decode the bytes :meth:`z_byte_range` named.

        :param bytes data: the bytes from ``start`` to ``stop``
        :param int total_size: the size of the whole encoded chunk, to check
        :returns: (C, z_stop - z_start, Y, X) array
        :raises InvalidFormatError: if the chunk cannot be decoded
        """
        raise NotImplementedError

    def max_encoded_size(self, chunk_size):
        """The most bytes an encoded chunk of this size can take.

        A bound, not an estimate: storage that inflates compressed chunk
        files (``.gz``) stops there, so that a small corrupt file cannot
        inflate without limit.

        :param tuple chunk_size: the chunk's (X, Y, Z) size
        :rtype: int
        """
        # JPEG and PNG stay well below this even for noise at full quality,
        # or for tiny images padded to whole 16x16 blocks.
        return 8 * self._raw_size(chunk_size) + 65536

    def _shape(self, chunk_size):
        x, y, z = (int(v) for v in chunk_size)
        return (self.num_channels, z, y, x)

    def _raw_size(self, chunk_size):
        x, y, z = chunk_size
        return int(x) * int(y) * int(z) * self.num_channels * self.dtype.itemsize


class RawChunkEncoder(ChunkEncoder):
    """Codec for the Neuroglancer raw chunk format.

    :param str data_type: data type supported by Neuroglancer
    :param int num_channels: number of image channels
    """

    # A z-slab of a one-channel raw chunk is one contiguous run of bytes.
    partial_z_decode = True

    def encode(self, chunk):
        chunk = _check_chunk(chunk, self.num_channels, self.dtype)
        return np.ascontiguousarray(chunk, dtype=self.dtype).tobytes()

    def z_slab(self, depth, z_start, z_stop):
        _check_z_range(depth, z_start, z_stop)
        if self.num_channels != 1:
            return 0, depth
        return z_start, z_stop

    def z_byte_range(self, chunk_size, z_start, z_stop):
        if self.num_channels != 1:
            return None
        plane = int(chunk_size[0]) * int(chunk_size[1]) * self.dtype.itemsize
        return z_start * plane, z_stop * plane

    def decode_z_range(self, buf, chunk_size, z_start, z_stop):
        first, stop = self.z_slab(int(chunk_size[2]), z_start, z_stop)
        return self.decode(buf, chunk_size)[:, first:stop], first

    def decode_z_bytes(self, data, total_size, chunk_size, z_start, z_stop):
        self._check_length(total_size, chunk_size)
        x, y = int(chunk_size[0]), int(chunk_size[1])
        wanted = (z_stop - z_start) * x * y * self.dtype.itemsize
        if len(data) != wanted:
            raise InvalidFormatError(
                f"raw chunk: got {len(data)} bytes for z-slices {z_start} to {z_stop}, "
                f"expected {wanted} (the file changed while it was read?)")
        return np.frombuffer(data, dtype=self.dtype).reshape(
            1, z_stop - z_start, y, x).astype(self.dtype.newbyteorder("="), copy=False)

    def max_encoded_size(self, chunk_size):
        return self._raw_size(chunk_size)

    def _check_length(self, length, chunk_size):
        expected = self._raw_size(chunk_size)
        if length != expected:
            raise InvalidFormatError(
                f"raw chunk is {length} bytes long, expected "
                f"{expected} for {self.num_channels} channel(s) of {self.data_type} "
                f"and size {tuple(chunk_size)}")

    def decode(self, buf, chunk_size):
        shape = self._shape(chunk_size)
        self._check_length(len(buf), chunk_size)
        return np.frombuffer(buf, dtype=self.dtype).reshape(shape).astype(
            self.dtype.newbyteorder("="), copy=False)


class _ImageChunkEncoder(ChunkEncoder):
    """Shared logic of the encodings that store a chunk as one 2-D image."""

    _format = None
    _modes = {}

    def _image_array(self, chunk, plane="xy"):
        c, z, y, x = chunk.shape
        height, width = (z * y, x) if plane == "xy" else (z, y * x)
        pixels = np.ascontiguousarray(chunk.transpose(1, 2, 3, 0)).reshape(height, width, c)
        return pixels[:, :, 0] if c == 1 else pixels

    def _open_image(self, buf, chunk_size):
        what = f"{self._format} chunk of size {tuple(chunk_size)}"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(io.BytesIO(buf), formats=[self._format])
                # Check the area before decoding, so that a corrupt header
                # cannot make us decode something enormous.
                width, height = img.size
                expected = int(np.prod(chunk_size))
                if width * height != expected:
                    raise InvalidFormatError(
                        f"{what}: the image is {width}x{height} = {width * height} "
                        f"pixels, expected {expected}")
                img.load()
        except InvalidFormatError:
            raise
        except Exception as exc:  # Pillow raises many kinds for corrupt data
            raise InvalidFormatError(f"{what} cannot be decoded: {exc}") from exc
        accepted = self._modes.get(img.mode)
        if accepted is None:
            raise InvalidFormatError(
                f"{what}: image mode {img.mode!r} does not hold {self.num_channels} "
                f"channel(s) of {self.data_type}")
        self._check_decoded(buf, what)
        return img

    def _check_decoded(self, buf, what):
        """Refuse what the decoder let through (another bit depth, missing data)."""

    def _pixels_to_chunk(self, img, chunk_size):
        pixels = img if isinstance(img, np.ndarray) else np.asarray(img)
        if pixels.dtype != self.dtype:
            pixels = pixels.astype(self.dtype)
        x, y, z = (int(v) for v in chunk_size)
        if self.num_channels == 1:
            return pixels.reshape(1, z, y, x)
        return np.ascontiguousarray(
            pixels.reshape(-1, self.num_channels).T).reshape(self.num_channels, z, y, x)


class JpegChunkEncoder(_ImageChunkEncoder):
    """Codec for the Neuroglancer jpeg chunk format.

    :param str data_type: data type supported by Neuroglancer
    :param int num_channels: number of image channels
    :param int jpeg_quality: quality factor for JPEG compression (1 to 100)
    :param str jpeg_plane: plane of JPEG compression ("xy" or "xz")
    :raises IncompatibleEncoderError: if data_type or num_channels are
        unsupported
    :raises ValueError: if jpeg_quality or jpeg_plane is out of range
    """

    lossy = True
    mime_type = "image/jpeg"
    partial_z_decode = True
    _format = "JPEG"

    def __init__(self, data_type, num_channels, jpeg_quality=95, jpeg_plane="xy"):
        super().__init__(data_type, num_channels)
        if data_type != "uint8" or self.num_channels not in (1, 3):
            raise IncompatibleEncoderError(
                "the jpeg encoding stores uint8 data with 1 or 3 channels, not "
                f"{self.num_channels} channel(s) of {data_type}")
        if type(jpeg_quality) is bool or int(jpeg_quality) != jpeg_quality \
                or not 1 <= jpeg_quality <= 100:
            raise ValueError(f"JPEG quality must be an integer from 1 to 100, not "
                             f"{jpeg_quality!r}")
        if jpeg_plane not in ("xy", "xz"):
            raise ValueError(f"JPEG plane must be 'xy' or 'xz', not {jpeg_plane!r}")
        self.jpeg_quality = int(jpeg_quality)
        self.jpeg_plane = jpeg_plane
        self._modes = {"L": 1} if self.num_channels == 1 else {"RGB": 3}

    def encode(self, chunk):
        chunk = _check_chunk(chunk, self.num_channels, self.dtype)
        pixels = self._image_array(chunk, self.jpeg_plane)
        if max(pixels.shape[:2]) > JPEG_MAX_SIDE:
            raise IncompatibleEncoderError(
                f"a chunk of shape (C, Z, Y, X) {chunk.shape} makes a "
                f"{pixels.shape[1]}x{pixels.shape[0]} JPEG image; JPEG allows at most "
                f"{JPEG_MAX_SIDE} pixels per side (use smaller chunks)")
        # 4:4:4 avoids colour bleeding across the z-slices tiled in one image.
        # A restart marker after each row of 8x8 blocks (about 1% larger)
        # lets a plane be decoded without the rest (see jpeg_bands.py).
        return save_to_bytes(Image.fromarray(pixels), format="JPEG",
                             quality=self.jpeg_quality, subsampling=0,
                             restart_marker_rows=1)

    def decode(self, buf, chunk_size):
        img = self._open_image(buf, chunk_size)
        return self._pixels_to_chunk(img, chunk_size)

    def z_slab(self, depth, z_start, z_stop):
        _check_z_range(depth, z_start, z_stop)
        return z_start, z_stop

    def decode_z_range(self, buf, chunk_size, z_start, z_stop):
        x, y, z = (int(v) for v in chunk_size)
        _check_z_range(z, z_start, z_stop)
        layout = None if z_stop - z_start == z else jpeg_bands.parse(buf)
        if layout is None or layout.width * layout.height != x * y * z:
            # Decoded whole anyway: all of it, for the other slabs to reuse.
            return self.decode(buf, chunk_size), 0
        # Pixels are in (z, y, x) order whatever the image's shape (xy or xz
        # plane), so z-slices are runs of whole pixels.
        width, plane = layout.width, x * y
        piece, first_row, rows = jpeg_bands.band(buf, layout, z_start * plane // width,
                                                 -(-z_stop * plane // width))
        pixels = np.asarray(self._open_image(piece, (width, rows, 1)))
        pixels = pixels.reshape((-1, self.num_channels) if self.num_channels > 1 else -1)
        skip = z_start * plane - first_row * width
        pixels = pixels[skip:skip + (z_stop - z_start) * plane]
        return self._pixels_to_chunk(pixels, (x, y, z_stop - z_start)), z_start


class PngChunkEncoder(_ImageChunkEncoder):
    """Codec for the Neuroglancer png chunk format (lossless).

    :param str data_type: ``uint8`` (1 to 4 channels) or ``uint16`` (1 channel)
    :param int num_channels: number of image channels
    :param int png_level: zlib compression level, 0 to 9
    :raises IncompatibleEncoderError: if data_type or num_channels are
        unsupported
    """

    mime_type = "image/png"
    _format = "PNG"

    def __init__(self, data_type, num_channels, png_level=6):
        super().__init__(data_type, num_channels)
        if data_type == "uint8" and 1 <= self.num_channels <= 4:
            self._modes = {{1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[self.num_channels]: 1}
        elif data_type == "uint16" and self.num_channels == 1:
            self._modes = {"I;16": 1, "I;16B": 1, "I;16L": 1}
        elif data_type == "uint16" and self.num_channels <= 4:
            # Pillow silently drops 16-bit multi-channel PNGs to 8 bits.
            raise IncompatibleEncoderError(
                "16-bit PNG with several channels is not supported (Pillow reduces "
                "it to 8 bits); use raw encoding")
        else:
            raise IncompatibleEncoderError(
                "the png encoding stores uint8 or uint16 data with 1 to 4 channels, "
                f"not {self.num_channels} channel(s) of {data_type}")
        if type(png_level) is bool or int(png_level) != png_level \
                or not 0 <= png_level <= 9:
            raise ValueError(f"PNG level must be an integer from 0 to 9, not {png_level!r}")
        self.png_level = int(png_level)

    def encode(self, chunk):
        chunk = _check_chunk(chunk, self.num_channels, self.dtype)
        pixels = self._image_array(chunk.astype(self.dtype.newbyteorder("="), copy=False))
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, format="PNG", compress_level=self.png_level)
        return out.getvalue()

    def decode(self, buf, chunk_size):
        img = self._open_image(buf, chunk_size)
        return self._pixels_to_chunk(img, chunk_size)

    def _check_decoded(self, buf, what):
        # Pillow opens 16-bit RGB(A) as 8-bit RGB(A), keeping the high bytes,
        # so the mode alone would let such a chunk pass for uint8 data. The
        # bit depth is byte 24 of a PNG: after the signature and the IHDR
        # chunk's length, type, width and height.
        depth = bytes(buf[24:25])
        expected = 8 * self.dtype.itemsize
        if depth and depth[0] != expected:
            raise InvalidFormatError(
                f"{what}: the PNG has {depth[0]}-bit samples, expected {expected}-bit "
                f"for {self.data_type}")
        _check_png_rows(buf, what)


# Samples per pixel of each PNG colour type.
_PNG_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
# Adam7 passes: (x start, x step, y start, y step).
_ADAM7 = ((0, 8, 0, 8), (4, 8, 0, 8), (0, 4, 4, 8), (2, 4, 0, 4), (0, 2, 2, 4), (1, 2, 0, 2),
          (0, 1, 1, 2))


def _check_png_rows(buf, what):
    """Refuse a PNG whose compressed data ends before its last row.

    Pillow fills the missing rows with zeros when the zlib stream ends early
    but cleanly; libpng (TensorStore) refuses such a file. Inflating the data
    once more costs about a third of decoding it.
    """
    view = memoryview(buf)
    width, height, depth, colour, _, _, interlace = struct.unpack_from(">IIBBBBB", view, 16)
    bits = depth * _PNG_SAMPLES.get(colour, 1)
    if interlace:
        passes = [(-(-(width - x0) // dx), -(-(height - y0) // dy))
                  for x0, dx, y0, dy in _ADAM7]
    else:
        passes = [(width, height)]
    expected = sum(h * (1 + -(-w * bits // 8)) for w, h in passes if w > 0 and h > 0)
    inflater = zlib.decompressobj()
    got, pos = 0, 8
    try:
        while pos + 8 <= len(view) and got < expected:
            length, kind = struct.unpack_from(">I4s", view, pos)
            if kind == b"IDAT":
                got += len(inflater.decompress(view[pos + 8:pos + 8 + length], expected - got))
            pos += 12 + length
    except zlib.error as exc:
        raise InvalidFormatError(f"{what}: the PNG's image data is corrupt: {exc}") from exc
    if got < expected:
        raise InvalidFormatError(
            f"{what}: the PNG's image data ends after {got} of {expected} bytes")


class CompressedSegmentationEncoder(ChunkEncoder):
    """Codec for the Neuroglancer compressed_segmentation chunk format.

    :param str data_type: data type supported by Neuroglancer
    :param int num_channels: number of image channels
    :param list block_size: block_size for the compressed segmentation
        compression algorithm, (Bx, By, Bz)
    :raises IncompatibleEncoderError: if data_type or num_channels are
        unsupported
    """

    # Many small NumPy operations per chunk: threads mostly wait for the GIL
    # (a 512x512x256 read took 150 ms in one thread, 230-800 ms in two).
    parallel_decode = False
    partial_z_decode = True

    def __init__(self, data_type, num_channels, block_size):
        super().__init__(data_type, num_channels)
        if data_type not in ("uint32", "uint64"):
            raise IncompatibleEncoderError(
                f"compressed_segmentation stores uint32 or uint64, not {data_type}")
        try:
            block_size = tuple(int(b) for b in block_size)
        except (TypeError, ValueError):
            raise IncompatibleEncoderError(f"invalid block size {block_size!r}") from None
        if len(block_size) != 3 or min(block_size) < 1:
            raise IncompatibleEncoderError(f"invalid block size {block_size!r}")
        self.block_size = block_size

    def encode(self, chunk):
        from . import compressed_segmentation

        chunk = _check_chunk(chunk, self.num_channels, self.dtype)
        return compressed_segmentation.encode(chunk, self.block_size)

    def decode(self, buf, chunk_size):
        from . import compressed_segmentation

        return compressed_segmentation.decode(buf, chunk_size, self.num_channels,
                                              self.data_type, self.block_size)

    def decode_z_range(self, buf, chunk_size, z_start, z_stop):
        from . import compressed_segmentation

        first, stop = self.z_slab(int(chunk_size[2]), z_start, z_stop)
        if first == 0 and stop == int(chunk_size[2]):
            return self.decode(buf, chunk_size), 0
        bz = self.block_size[2]
        slab = compressed_segmentation.decode(buf, chunk_size, self.num_channels,
                                              self.data_type, self.block_size,
                                              z_blocks=(first // bz, -(-stop // bz)))
        return slab, first

    def max_encoded_size(self, chunk_size):
        # TensorStore and Neuroglancer read header offsets as 24-bit word
        # counts, so a chunk they read ends at most one block's values and
        # table past 2**24 words per channel, wherever a writer put them.
        block_voxels = math.prod(self.block_size)
        words = (1 << 24) + block_voxels * (1 + self.dtype.itemsize // 4)
        return 4 * self.num_channels * (1 + words)

    def z_slab(self, depth, z_start, z_stop):
        _check_z_range(depth, z_start, z_stop)
        bz = self.block_size[2]
        return z_start // bz * bz, min(-(-z_stop // bz) * bz, depth)
