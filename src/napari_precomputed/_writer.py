"""npe2 writers: File > Save Layers… as a precomputed dataset.

One single-layer writer per layer type: npe2 calls a writer whose
``layer_types`` add up to one layer as ``writer(path, data, meta)``.
Defaults: raw for images, compressed_segmentation for labels, 64^3 chunks, a
pyramid down to one chunk (mean for images, mode for labels). An existing
dataset is never replaced from here; the export panel has an overwrite
option. Saves go to a new or empty folder (files that file managers leave,
such as .DS_Store, do not count), and a save refused, failing or cancelled
half-way leaves it as it was, parent folders it made included. A long save
in the viewer shows a progress dialog with Cancel (``_save_progress``).
"""

import contextlib
import os
import shutil
import warnings

from .errors import InvalidInfoError


class ExportRefusedError(Exception):
    """The layer cannot be written as a precomputed dataset; the message says why.

    Deliberately not a ValueError: napari reads a writer's ValueError as "this
    writer does not apply" and drops its message, so ``layer.save(...)``
    returned an empty list with no reason given.
    """


def _write(path, data, meta, layer_type):
    from ._layer_export import info_for_layer, transforms_not_exported
    from ._save_progress import run_export
    from .export import holds_dataset, iter_export, user_entries

    path = os.fspath(path)
    if os.path.isfile(path):
        raise ExportRefusedError(f"cannot write {path}: it is a file; choose a folder")
    if holds_dataset(path):
        raise ExportRefusedError(
            f"cannot write {path}: it holds a dataset already, which Save Layers never "
            "replaces (the export panel can, with 'overwrite')")
    existed = os.path.isdir(path)
    created_from = None if existed else _first_missing_folder(path)
    if existed and user_entries(path):
        # Nothing to ask the user here (the panel does): a dataset's files
        # would be mixed with theirs.
        raise ExportRefusedError(
            f"cannot write {path}: the folder holds other files; choose a new or empty one")
    try:
        volume, info = info_for_layer(data, meta, layer_type)
        dropped = transforms_not_exported(meta)
        if dropped:
            _warn(f"{path}: {dropped}")
        finished = run_export(
            lambda cancel: iter_export(volume, path, info, overwrite=False, cancel=cancel),
            volume, f"Saving {meta.get('name') or 'the layer'} to {path}…")
    except (ValueError, InvalidInfoError) as exc:
        # InvalidInfoError: the layer maps to an info the format (or
        # TensorStore) cannot hold, e.g. a translate beyond 2**62 voxels.
        # Everything in the folder is this save's: a refusal half-way (a dask
        # block whose values do not fit) takes it back.
        left = _take_back(path, existed, created_from)
        raise ExportRefusedError(f"cannot write {path}: {exc} ({left})") from exc
    except Exception as exc:
        # Any other failure half-way (a dask block that raises, a full disk):
        # what was written would only make the next save there refused.
        exc.add_note(f"{path}: {_take_back(path, existed, created_from)}")
        raise
    if not finished:
        # Save Layers never overwrites, so a half-written dataset would only
        # stand in the way of saving there again.
        left = _take_back(path, existed, created_from)
        raise ExportRefusedError(f"saving {path} was cancelled ({left})")
    return [path]


def _take_back(path, existed, created_from):
    """Remove what a save wrote; says what is left."""
    from .export import user_entries

    _remove_written(path, existed)
    left = ("some of its files could not be removed" if user_entries(path)
            else "nothing is left there")
    if created_from is not None:
        _remove_empty_folders(os.path.dirname(os.path.abspath(path)), created_from)
    return left


def _first_missing_folder(path):
    """The outermost folder that saving to ``path`` creates."""
    path = os.path.abspath(path)
    while not os.path.exists(os.path.dirname(path)) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def _remove_written(path, keep_folder):
    from .export import user_entries

    if not keep_folder:
        shutil.rmtree(path, ignore_errors=True)
        return
    for entry in user_entries(path):
        entry = os.path.join(path, entry)
        if os.path.isdir(entry) and not os.path.islink(entry):
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(entry)


def _remove_empty_folders(folder, outermost):
    """Remove ``folder`` and its parents up to ``outermost`` while they are empty."""
    folder, outermost = os.path.abspath(folder), os.path.abspath(outermost)
    while folder == outermost or folder.startswith(outermost + os.sep):
        try:
            os.rmdir(folder)  # only if empty: something else may have written there
        except OSError:
            return
        folder = os.path.dirname(folder)


def _warn(message):
    """Tell the user: as a napari notification where napari shows them, else
    as a Python warning. napari's File > Save dialog records the warnings of
    a save and drops them when it succeeds, so a warning alone never reaches
    the user there."""
    from napari.utils.notifications import notification_manager, show_warning

    if notification_manager.notification_ready.callbacks:
        show_warning(message)
    else:
        warnings.warn(message, stacklevel=3)


def write_image(path, data, meta):
    """Write an image layer as a precomputed dataset (folder ``path``)."""
    return _write(path, data, meta, "image")


def write_labels(path, data, meta):
    """Write a labels layer as a precomputed segmentation (folder ``path``)."""
    return _write(path, data, meta, "labels")
