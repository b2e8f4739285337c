"""Access to a precomputed dataset stored in a local folder."""

import gzip
import numbers
import os
import pathlib
import zlib

from .accessor import Accessor, _takes_max_size
from .errors import ChunkNotFoundError, DataAccessError
from .info import chunk_name, nested_chunk_name, resolve_scale_key

__all__ = ["FileAccessor"]

# No gzip'd file inflates beyond this (a 512^3 uint64 chunk is 1 GiB); chunks
# are held to the tighter bound their reader gives (max_size).
MAX_INFLATED_BYTES = 2**30


class FileAccessor(Accessor):
    """Access a precomputed dataset in a local folder.

    Chunks are written with the format's flat names
    (``<key>/<xmin>-<xmax>_<ymin>-<ymax>_<zmin>-<zmax>``). For reading,
    the ``.gz`` files and the nested layout
    (``<key>/<xmin>-<xmax>/<ymin>-<ymax>/<zmin>-<zmax>``) written by
    neuroglancer-scripts and cloud-volume are found too.

    Every file is written to a temporary name in its final folder and renamed
    into place, so a killed writer never leaves a torn file behind.

    :param str base_dir: path to the dataset's folder
    :param bool flat: write chunks with flat names (the format's); False
        writes neuroglancer-scripts' nested layout
    :param bool gzip: compress raw and compressed_segmentation chunks as
        ``<name>.gz`` files (not readable by Neuroglancer or TensorStore
        without a server that sends them with Content-Encoding)
    :param int compresslevel: gzip level, 0 to 9
    :raises ValueError: if compresslevel is not one
    """

    can_read = True
    can_write = True
    #: Reading a file again costs little more than copying it from the OS cache.
    cheap_reads = True
    #: Files written from several threads at once contend in the kernel; see
    #: :mod:`napari_precomputed.store_queue`.
    serial_stores = True

    def __init__(self, base_dir, flat=True, gzip=False, compresslevel=9):
        if type(compresslevel) is bool or not isinstance(compresslevel, numbers.Integral) \
                or not 0 <= compresslevel <= 9:
            # Checked here: the first chunk written would fail, after the info.
            raise ValueError(f"gzip compresslevel must be an integer from 0 to 9, not "
                             f"{compresslevel!r}")
        self.base_path = pathlib.Path(base_dir)
        self.flat = flat
        self.gzip = gzip
        self.compresslevel = int(compresslevel)
        self._scale_dirs = {}
        self._made_scale_dirs = {}

    def __repr__(self):
        return f"FileAccessor({str(self.base_path)!r})"

    def describe(self, relative_path=""):
        return str(self.base_path / relative_path) if relative_path else str(self.base_path)

    def _path(self, relative_path):
        return self.base_path / resolve_scale_key(relative_path)

    # files -----------------------------------------------------------------

    def file_exists(self, relative_path):
        path = self._path(relative_path)
        try:
            return path.is_file() or path.with_name(path.name + ".gz").is_file()
        except OSError as exc:
            raise DataAccessError(f"cannot probe {path}: {exc}") from exc

    def fetch_file(self, relative_path):
        path = self._path(relative_path)
        buf = self._read_first(path, path.with_name(path.name + ".gz"))
        if buf is None:
            raise DataAccessError(f"{path} does not exist")
        return buf

    def store_file(self, relative_path, buf, mime_type="application/octet-stream",
                   overwrite=False):
        path = self._path(relative_path)
        if not overwrite and (path.exists() or path.with_name(path.name + ".gz").exists()):
            raise DataAccessError(f"{path} already exists (not overwriting it)")
        _make_folder(path.parent)
        self._write_atomically(path, buf)

    # chunks ----------------------------------------------------------------

    def _scale_dir(self, key):
        # Plain strings: napari reads thousands of chunks a second, and
        # pathlib costs more than the read of a small chunk.
        scale_dir = self._scale_dirs.get(key)
        if scale_dir is None:
            scale_dir = self._scale_dirs[key] = str(self._path(key))
        return scale_dir

    def _chunk_paths(self, key, chunk_coords):
        """The flat, then the nested path of a chunk (made only if asked for:
        reads mostly stop at the flat one)."""
        scale_dir = self._scale_dir(key)
        yield os.path.join(scale_dir, chunk_name(chunk_coords))
        yield os.path.join(scale_dir, nested_chunk_name(chunk_coords))

    def fetch_chunk(self, key, chunk_coords, max_size=None):
        for path in self._chunk_paths(key, chunk_coords):
            buf = self._read_first(path, path + ".gz", max_size)
            if buf is not None:
                return buf
        raise ChunkNotFoundError(
            f"chunk {chunk_name(chunk_coords)} of scale {key!r} is not stored in "
            f"{self.base_path}")

    def fetch_chunk_range(self, key, chunk_coords, start, stop, max_size=None):
        for path in self._chunk_paths(key, chunk_coords):
            try:
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            except (FileNotFoundError, NotADirectoryError):
                if os.path.exists(path + ".gz"):
                    break  # compressed: only whole
                continue
            except (OSError, ValueError) as exc:
                raise DataAccessError(f"cannot read {path}: {exc}") from exc
            try:
                return _pread(fd, max(0, stop - start), start), os.fstat(fd).st_size
            except OSError as exc:
                raise DataAccessError(f"cannot read {path}: {exc}") from exc
            finally:
                os.close(fd)
        # The whole chunk (inflated), or the error saying it is missing,
        # through fetch_chunk as a subclass may have redefined it.
        if max_size is not None and _takes_max_size(type(self), "fetch_chunk"):
            buf = self.fetch_chunk(key, chunk_coords, max_size=max_size)
        else:
            buf = self.fetch_chunk(key, chunk_coords)
        return bytes(memoryview(buf)[start:stop]), len(buf)

    def store_chunk(self, buf, key, chunk_coords, mime_type="application/octet-stream",
                    overwrite=True):
        flat, nested = self._chunk_paths(key, chunk_coords)
        path = flat if self.flat else nested
        # Images are compressed already; gzip only helps raw-like data.
        compress = self.gzip and not mime_type.startswith("image/")
        target = path + ".gz" if compress else path
        # A scale folder this accessor created holds only chunks it wrote, in
        # its one layout: no other variant of a chunk can be there.
        fresh = self._scale_folder(key)
        others = [] if fresh and overwrite else [
            p for p in (flat, nested) for p in (p, p + ".gz") if p != target]
        if not overwrite and any(os.path.lexists(p) for p in [target, *others]):
            raise DataAccessError(f"chunk file {target} already exists (not overwriting it)")
        if compress:
            buf = gzip.compress(buf, compresslevel=self.compresslevel, mtime=0)
        if not self.flat:
            _make_folder(os.path.dirname(target))
        self._write_atomically(target, buf)
        # Never leave two variants of one chunk: readers would pick the stale one.
        for other in others:
            try:
                os.unlink(other)
            except (FileNotFoundError, NotADirectoryError):
                pass
            except OSError as exc:
                raise DataAccessError(f"cannot remove stale chunk file {other}: {exc}") \
                    from exc

    def _scale_folder(self, key):
        """Make the folder of scale ``key`` if needed; True if this accessor made it."""
        fresh = self._made_scale_dirs.get(key)
        if fresh is None:
            fresh = _make_folder(self._scale_dir(key))
            # With two threads, the first answer recorded stands; a wrong
            # False only costs the removal of variants that are not there.
            fresh = self._made_scale_dirs.setdefault(key, fresh)
        return fresh

    # helpers ---------------------------------------------------------------

    def _read_first(self, path, gz_path, max_size=None):
        """Contents of ``path``, else the inflated ``gz_path``, else None.

        :param max_size: inflate ``gz_path`` to at most this many bytes
            (default and upper limit: :data:`MAX_INFLATED_BYTES`)
        """
        try:
            with open(path, "rb") as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError):
            pass
        except (OSError, ValueError) as exc:
            raise DataAccessError(f"cannot read {path}: {exc}") from exc
        try:
            with open(gz_path, "rb") as f:
                compressed = f.read()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, ValueError) as exc:
            raise DataAccessError(f"cannot read {gz_path}: {exc}") from exc
        limit = MAX_INFLATED_BYTES if max_size is None else min(max_size, MAX_INFLATED_BYTES)
        return _gunzip(compressed, gz_path, limit)

    def _write_atomically(self, path, buf):
        path = os.fspath(path)
        folder, name = os.path.split(path)
        # The temporary name is unique to this write, so concurrent writers of
        # one chunk (threads, processes, hosts) never share a file.
        tmp_name = os.path.join(folder, f".{name}.{os.urandom(6).hex()}.part")
        try:
            try:
                fd = os.open(tmp_name, _CREATE_FLAGS, 0o644)
            except FileNotFoundError:  # the folder was removed since it was made
                _make_folder(folder)
                fd = os.open(tmp_name, _CREATE_FLAGS, 0o644)
        except (OSError, ValueError) as exc:
            raise DataAccessError(f"cannot create {path}: {exc}") from exc
        try:
            try:
                view = memoryview(buf)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            os.replace(tmp_name, path)
        except BaseException as exc:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass
            if isinstance(exc, OSError):
                raise DataAccessError(f"cannot write {path}: {exc}") from exc
            raise


_CREATE_FLAGS = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
                 | getattr(os, "O_BINARY", 0))


def _make_folder(folder):
    """Create ``folder`` and its parents; True if it did not exist before."""
    try:
        os.mkdir(folder)
        return True
    except FileExistsError:
        return False
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise DataAccessError(f"cannot create {folder}: {exc}") from exc
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise DataAccessError(f"cannot create {folder}: {exc}") from exc
    return True


def _pread(fd, length, offset):
    if hasattr(os, "pread"):
        return os.pread(fd, length, offset)
    os.lseek(fd, offset, os.SEEK_SET)  # Windows has no pread
    return os.read(fd, length)


def _gunzip(compressed, path, limit=MAX_INFLATED_BYTES):
    """Inflate a gzip file of one or more members (RFC 1952), at most ``limit`` bytes."""
    if compressed[:2] != b"\x1f\x8b":
        raise DataAccessError(f"{path} is not a gzip file")
    pieces, size, rest = [], 0, compressed
    try:
        while True:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            # One byte past the limit tells "too long" from "just right"
            # without inflating the rest of a bomb.
            piece = inflater.decompress(rest, limit - size + 1)
            size += len(piece)
            if size > limit:
                raise DataAccessError(f"{path} inflates to more than {limit} bytes")
            if not inflater.eof:
                raise DataAccessError(f"{path} is a truncated gzip file")
            pieces.append(piece)
            rest = inflater.unused_data
            if not rest.strip(b"\0"):  # gzip tolerates zero padding at the end
                break
            if rest[:2] != b"\x1f\x8b":
                raise DataAccessError(f"{path} has data after its gzip stream")
    except zlib.error as exc:
        raise DataAccessError(f"{path} is a corrupt gzip file: {exc}") from exc
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)
