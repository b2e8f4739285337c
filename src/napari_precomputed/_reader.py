"""npe2 reader: open a precomputed dataset as lazy multiscale napari layers.

``get_reader`` runs whenever napari asks which plugins can open a path, so it
imports nothing heavy, does no network I/O and reads at most the first bytes
of a local ``info`` file.
"""

import os
import stat

# Light on purpose (os and urllib only): napari imports this at start-up.
from .accessor import (
    PRECOMPUTED_PREFIX,
    convert_file_url_to_pathname,
    local_dataset_folder,
    split_precomputed_url,
)

# Enough of an info file to see its "@type" or "scales" member.
_SNIFF_BYTES = 64 * 1024


def get_reader(path):
    """Return :func:`read_precomputed` if ``path`` is a precomputed volume, else None.

    :param path: a folder holding an ``info`` file, the ``info`` file itself,
        or a ``precomputed://`` URL (a list of exactly one such path is
        accepted too)
    """
    try:
        if isinstance(path, (list, tuple)):
            if len(path) != 1:
                return None
            path = path[0]
        path = os.fspath(path)
        scheme, rest = split_precomputed_url(path)
        if scheme != "file":
            # Remote: if the user said it is precomputed, look at it only when
            # it is really opened, not while napari is asking around.
            return read_precomputed if path.startswith(PRECOMPUTED_PREFIX) else None
        folder = local_dataset_folder(convert_file_url_to_pathname(rest))
        return read_precomputed if _is_volume_info(os.path.join(folder, "info")) else None
    except Exception:  # never let napari's reader discovery fail because of us
        return None


def _is_volume_info(info_path):
    try:
        # A FIFO or device named info would block the read, and napari with it.
        fd = os.open(info_path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
                     | getattr(os, "O_BINARY", 0))
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return False
            head = f.read(_SNIFF_BYTES)
    except OSError:
        return False
    if b"neuroglancer_multiscale_volume" in head:
        return True
    # Meshes, skeletons and annotations have info files too, with their own @type.
    return b'"scales"' in head and b'"data_type"' in head and b"neuroglancer_" not in head


def read_precomputed(path):
    """Open a precomputed dataset as napari layer data.

    A broken dataset is reported as a napari error notification that names
    the file and what is wrong, and opens nothing.

    :param path: as for :func:`get_reader`
    :returns: list of (data, kwargs, layer_type) tuples
    """
    from napari.utils.notifications import show_error

    from .errors import DataAccessError, IncompatibleEncoderError, InvalidInfoError
    from ._layer_data import layer_data_for_url

    if isinstance(path, (list, tuple)):
        path = path[0]
    try:
        return layer_data_for_url(os.fspath(path), on_error=_ChunkErrorReporter(show_error))
    except (InvalidInfoError, IncompatibleEncoderError, DataAccessError, ValueError) as exc:
        show_error(f"napari-precomputed cannot open {path}: {exc}")
        # napari's documented "read, but no layers" value: no traceback dialog.
        return [(None,)]


class _ChunkErrorReporter:
    """Shows each unreadable chunk once, as a napari error notification."""

    def __init__(self, show):
        self._show = show
        self._seen = set()

    def __call__(self, exc):
        message = str(exc)
        if message not in self._seen:
            self._seen.add(message)
            self._show(f"napari-precomputed: {message} (shown as zeros)")
