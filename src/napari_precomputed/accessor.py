"""Low-level access to the files of a precomputed dataset.

An accessor knows where a dataset's files live and how to read and write
them; it knows nothing of their contents. :func:`get_accessor_for_url` picks
the accessor for a path or URL; other storage back ends register a URL scheme
with :func:`register_accessor_scheme`.
"""

import functools
import inspect
import os
import urllib.parse

from .errors import ChunkNotFoundError, DataAccessError

__all__ = [
    "Accessor",
    "DataAccessError",
    "ChunkNotFoundError",
    "get_accessor_for_url",
    "register_accessor_scheme",
    "split_precomputed_url",
    "convert_file_url_to_pathname",
]

#: Neuroglancer's prefix for precomputed data sources.
PRECOMPUTED_PREFIX = "precomputed://"


class Accessor:
    """Base class of dataset accessors.

    Paths given to the methods are relative to the dataset's root and use
    ``/`` as separator; chunk coordinates are
    ``(xmin, xmax, ymin, ymax, zmin, zmax)``.
    """

    can_read = False
    can_write = False

    def file_exists(self, relative_path):
        """Test existence of a file relative to the base directory.

        :param str relative_path: path to the file relative to the dataset root
        :returns: True if the file exists
        :rtype: bool
        :raises DataAccessError: if an error occurs when probing file existence
        """
        raise NotImplementedError

    def fetch_file(self, relative_path):
        """Fetch a file relative to the dataset root.

        :param str relative_path: path to the file relative to the dataset root
        :returns: the contents of the file
        :rtype: bytes
        :raises DataAccessError: if the file cannot be read
        """
        raise NotImplementedError

    def store_file(self, relative_path, buf, mime_type="application/octet-stream",
                   overwrite=False):
        """Store a file relative to the dataset root.

        :param str relative_path: path to the file relative to the dataset root
        :param bytes buf: the contents of the file
        :param str mime_type: MIME type of the contents
        :param bool overwrite: whether to replace an existing file
        :raises DataAccessError: if the file cannot be written, or exists and
            ``overwrite`` is False
        """
        raise NotImplementedError

    def fetch_chunk(self, key, chunk_coords):
        """Fetch a chunk from the dataset.

        Accessors that store chunks compressed (``.gz``) may take a
        ``max_size`` keyword as well: the most bytes the caller accepts for
        the chunk, so that a corrupt file stops inflating there.
        :class:`~napari_precomputed.precomputed_io.PrecomputedIO` passes it
        when the method's signature has it (and to :meth:`fetch_chunk_range`
        likewise).

        :param str key: the ``key`` of the chunk's scale
        :param tuple chunk_coords: (xmin, xmax, ymin, ymax, zmin, zmax)
        :returns: the encoded chunk
        :rtype: bytes
        :raises ChunkNotFoundError: if the chunk is not stored
        :raises DataAccessError: if the chunk cannot be read
        """
        raise NotImplementedError

    def fetch_chunk_range(self, key, chunk_coords, start, stop):
        """Fetch part of an encoded chunk.

        This fetches the whole chunk; accessors that can read a byte range
        (a local file, HTTP Range requests) do less.

        :param int start: first byte
        :param int stop: end byte (exclusive)
        :returns: ``(data, total_size)``: bytes ``start`` to ``stop`` (fewer
            if the chunk is shorter) and the size of the whole chunk
        :raises ChunkNotFoundError: if the chunk is not stored
        :raises DataAccessError: if the chunk cannot be read
        """
        buf = self.fetch_chunk(key, chunk_coords)
        return bytes(memoryview(buf)[start:stop]), len(buf)

    def store_chunk(self, buf, key, chunk_coords, mime_type="application/octet-stream",
                    overwrite=True):
        """Store a chunk in the dataset.

        :param bytes buf: the encoded chunk
        :param str key: the ``key`` of the chunk's scale
        :param tuple chunk_coords: (xmin, xmax, ymin, ymax, zmin, zmax)
        :param str mime_type: MIME type of the encoded chunk
        :param bool overwrite: whether to replace an existing chunk
        :raises DataAccessError: if the chunk cannot be written
        """
        raise NotImplementedError

    def describe(self, relative_path=""):
        """Human-readable location of a file, for error messages."""
        return relative_path


@functools.lru_cache(maxsize=64)
def _takes_max_size(accessor_class, name):
    """True if an accessor class's method takes ``max_size`` (see
    :meth:`Accessor.fetch_chunk`); read once per class, since reading a
    signature costs a third of opening a dataset."""
    try:
        return "max_size" in inspect.signature(getattr(accessor_class, name)).parameters
    except (AttributeError, TypeError, ValueError):  # no such method, or no signature
        return False


_SCHEMES = {}


def register_accessor_scheme(scheme, factory):
    """Make :func:`get_accessor_for_url` open URLs of ``scheme`` with ``factory``.

    :param str scheme: a URL scheme such as ``"http"``
    :param factory: callable ``(url, accessor_options) -> Accessor``
    """
    _SCHEMES[scheme] = factory


def split_precomputed_url(url):
    """Strip Neuroglancer's ``precomputed://`` prefix and return (scheme, rest).

    A plain path (no scheme) gives ``("file", path)``. Windows drive letters
    are not mistaken for schemes.
    """
    url = os.fspath(url)
    if url.startswith(PRECOMPUTED_PREFIX):
        url = url[len(PRECOMPUTED_PREFIX):]
    scheme, sep, _ = url.partition("://")
    if sep and len(scheme) > 1 and scheme.replace("+", "").isalnum():
        return scheme.lower(), url
    return "file", url


def convert_file_url_to_pathname(url):
    """Convert a ``file://`` URL (or a plain path) to a local path name."""
    url = os.fspath(url)
    if url.startswith("file://"):
        parsed = urllib.parse.urlparse(url)
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"{url!r} names a file on another host")
        return urllib.parse.unquote(parsed.path)
    return url


def local_dataset_folder(path):
    """The dataset folder of a local path, which may name its ``info`` file."""
    if os.path.basename(os.path.normpath(path)) == "info" and os.path.isfile(path):
        return os.path.dirname(os.path.abspath(path))
    return path


def get_accessor_for_url(url, accessor_options={}):
    """Create an accessor for the dataset at a path or URL.

    :param str url: a local path, a ``file://`` URL, or either behind
        Neuroglancer's ``precomputed://`` prefix; a path to the ``info`` file
        itself stands for its folder
    :param dict accessor_options: options of the accessor (for local folders:
        ``gzip``, ``compresslevel``, ``flat``)
    :returns: an accessor for the dataset
    :rtype: Accessor
    :raises ValueError: if the URL's scheme is not supported
    """
    scheme, rest = split_precomputed_url(url)
    if scheme == "file":
        from .file_accessor import FileAccessor

        path = local_dataset_folder(convert_file_url_to_pathname(rest))
        options = dict(accessor_options or {})
        return FileAccessor(path, **{k: v for k, v in options.items()
                                     if k in ("gzip", "compresslevel", "flat")})
    try:
        factory = _SCHEMES[scheme]
    except KeyError:
        raise ValueError(f"URL scheme {scheme!r} of {url!r} is not supported") from None
    return factory(rest, accessor_options or {})

