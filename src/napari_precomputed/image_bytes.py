"""Pillow image encoding that runs in parallel across threads.

Pillow releases the GIL while its encoder writes to a file descriptor, but
not while it fills an in-memory buffer (``io.BytesIO``). Encoding into a
per-thread anonymous memory file (Linux ``memfd``) and reading the bytes back
therefore lets JPEG chunks be encoded on every core from a thread pool, which
is how :func:`napari_precomputed.volume.write_region` writes them. Elsewhere
the in-memory buffer is used, with the same output.
"""

import io
import os
import threading

__all__ = ["save_to_bytes"]

_scratch = threading.local()


def save_to_bytes(image, **params):
    """The bytes of ``image.save(file, **params)``.

    :param PIL.Image.Image image: the image
    :param params: keyword arguments of :meth:`PIL.Image.Image.save`,
        ``format`` included
    :rtype: bytes
    """
    scratch = _scratch_file()
    if scratch is None:
        out = io.BytesIO()
        image.save(out, **params)
        return out.getvalue()
    # Start again at 0 without truncating: the pages stay allocated for the
    # next chunk, and only the bytes written this time are read back.
    scratch.seek(0)
    image.save(scratch, **params)
    scratch.flush()
    fd = scratch.fileno()
    size = os.lseek(fd, 0, os.SEEK_CUR)
    return os.pread(fd, size, 0)


def _scratch_file():
    scratch = getattr(_scratch, "file", False)
    if scratch is False:
        scratch = None
        if hasattr(os, "memfd_create") and hasattr(os, "pread"):
            try:
                fd = os.memfd_create("napari-precomputed-image", os.MFD_CLOEXEC)
            except OSError:  # e.g. a seccomp filter that forbids it
                pass
            else:
                scratch = open(fd, "w+b")
        _scratch.file = scratch
    return scratch
