"""The export panel: choose a layer and the encoding, watch the export progress.

The export runs in a napari thread worker (on a thread pool of the panel's
own) that yields (chunks done, total);
the viewer stays responsive, Cancel stops it after the chunks in flight, and
a finished export can be opened straight back. The panel reaches the viewer
only through its public API (``viewer.layers``, ``viewer.open``).
"""

import functools
import os
import threading

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
    TupleEdit,
)

from .export import holds_dataset, user_entries
from .pyramid import pyramid_factors

PLUGIN = "napari-precomputed"
# Above any pyramid a volume can have: it ends when every axis is one voxel.
_MOST_LEVELS = 64
# Layer events after which what can be exported may differ.
_LAYER_EVENTS = ("data", "scale", "translate", "rotate", "shear", "affine", "units")


def encodings_for(layer_type, dtype):
    """Encodings that can store the layer's values, the default first.

    An encoding qualifies when its data type holds every value of the
    layer's type, or when the export checks each chunk (labels stored
    unsigned, 64-bit data narrowed to 32 bits).
    """
    from .export import default_encoding, export_dtype

    type_ = "segmentation" if layer_type == "labels" else "image"
    order = ["compressed_segmentation", "raw"] if layer_type == "labels" else \
        ["raw", "jpeg", "png", "compressed_segmentation"]
    source = np.dtype(dtype)
    out = []
    for encoding in order:
        try:
            target = np.dtype(export_dtype(source, type_, encoding))
        except ValueError:
            continue
        by_type = source.kind == "b" or np.can_cast(source, target, "safe")
        checked = ((layer_type == "labels" and source.kind in "iu")
                   or (source.itemsize == 8 and target.kind == source.kind
                       and target.itemsize == 4))
        if by_type or checked:
            out.append(encoding)
    default = default_encoding(type_)
    if default in out:
        out.remove(default)
        out.insert(0, default)
    return out


def validate_options(volume_shape, encoding, chunk_size, path, overwrite, channels,
                     jpeg_plane="xy", data_type=None):
    """Problems that would make the export fail, explained before it starts.

    :param data_type: the precomputed data type the layer is stored as
    """
    from .chunk_encoding import JPEG_MAX_SIDE

    problems = []
    if not path:
        problems.append("Choose an output folder.")
    elif os.path.isfile(path):
        problems.append(f"{path} is a file; choose a folder.")
    elif holds_dataset(path) and not overwrite:
        problems.append(f"{path} already holds a dataset; tick 'overwrite' to replace it.")
    if encoding == "jpeg":
        if channels not in (1, 3):
            problems.append(f"JPEG stores 1 or 3 channels, not {channels}.")
        cx, cy, cz = (min(c, s) for c, s in zip(chunk_size, volume_shape[:0:-1]))
        width, height = (cx, cy * cz) if jpeg_plane == "xy" else (cx * cy, cz)
        if max(width, height) > JPEG_MAX_SIDE:
            problems.append(
                f"A {cx}x{cy}x{cz} chunk makes a {width}x{height} JPEG image; JPEG allows "
                f"{JPEG_MAX_SIDE} pixels per side. Use smaller chunks.")
    if encoding == "png" and channels > 4:
        problems.append(f"PNG stores 1 to 4 channels, not {channels}.")
    elif encoding == "png" and data_type == "uint16" and channels > 1:
        problems.append(
            f"16-bit PNG with {channels} channels cannot be read back (Pillow reduces "
            "it to 8 bits); choose raw.")
    return problems


def notes_for(encoding, gzip):
    """What the user should know about choices that work."""
    if gzip and encoding in GZIP_ENCODINGS:
        return ["gzip: Neuroglancer reads .gz chunks only from a server that sends them "
                "as gzip-encoded (e.g. nginx's gzip_static); TensorStore does not read "
                "them and shows zeros."]
    return []


#: Encodings whose chunks gzip makes smaller (JPEG and PNG are compressed).
GZIP_ENCODINGS = ("raw", "compressed_segmentation")


class ExportWidget(Container):
    """Export an Image or Labels layer as a Neuroglancer precomputed dataset."""

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self._viewer = napari_viewer
        self._worker = None
        self._cancel = threading.Event()
        self._steps = (0, 0)
        self._auto_output = None
        self._current_layer = None
        self._followed = None
        self._edit_pause = None
        self._last_output = None
        self._level_choices = None

        self.layer = ComboBox(label="layer", choices=self._layer_choices)
        self.output = FileEdit(label="output folder", mode="w", filter="")
        # Mode "w" names its button "Select file", but a dataset is a folder;
        # mode "d" would pick existing folders only.
        self.output.choose_btn.text = "Browse…"
        self.encoding = ComboBox(label="encoding", choices=[])
        self.jpeg_quality = SpinBox(label="JPEG quality", min=1, max=100, value=95)
        self.jpeg_plane = ComboBox(label="JPEG plane", choices=["xy", "xz"], value="xy")
        self.block_size = TupleEdit(label="block size (x, y, z)", value=(8, 8, 8),
                                    options={"min": 1, "max": 512})
        self.chunk_size = TupleEdit(label="chunk size (x, y, z)", value=(64, 64, 64),
                                    options={"min": 1, "max": 4096})
        # A combo box, not a spin box: superqt's spin box (magicgui's) cannot
        # show "automatic" for a special value, and a bare 0 says nothing.
        self.levels = ComboBox(label="pyramid levels", choices=[("automatic", None)])
        self.method = ComboBox(label="downsampling", choices=["mean", "stride"])
        self.gzip = CheckBox(text="gzip chunk files (.gz)", value=False)
        self.overwrite = CheckBox(text="overwrite an existing dataset", value=False)
        self.message = Label(value="")  # why the current choices cannot be exported
        self.status = Label(value="")   # what the last export did
        self.progress = ProgressBar(label="progress", min=0, max=1, value=0, visible=False)
        self.export_button = PushButton(text="Export")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.open_button = PushButton(text="Open the exported dataset", visible=False)
        self.extend([self.layer, self.output, self.encoding, self.jpeg_quality,
                     self.jpeg_plane, self.block_size, self.chunk_size, self.levels,
                     self.method, self.gzip, self.overwrite, self.message, self.status, self.progress,
                     self.export_button, self.cancel_button, self.open_button])

        self.layer.changed.connect(self._on_layer_chosen)
        for widget in (self.encoding, self.overwrite, self.chunk_size, self.jpeg_plane,
                       self.gzip):
            widget.changed.connect(self._update)
        self.output.changed.connect(self._on_output_changed)
        self.export_button.clicked.connect(self.start_export)
        self.cancel_button.clicked.connect(self.cancel_export)
        self.open_button.clicked.connect(self.open_result)
        self._viewer.layers.events.inserted.connect(self._refresh_layers)
        self._viewer.layers.events.removed.connect(self._refresh_layers)
        self._viewer.layers.events.renamed.connect(self._on_renamed)
        # Closing the viewer destroys the panel: stop its export with it. (A
        # lambda, since Qt holds bound methods weakly.)
        self._closed = False
        self.native.destroyed.connect(lambda *_: self._on_closed())
        # The close button of napari's dock unparents the panel instead:
        # its export would run on where nobody sees or can cancel it.
        self.native_parent_changed.connect(self._on_parent_changed)
        self._refresh_layers()

    # layer and options -----------------------------------------------------

    def _layer_choices(self, _widget=None):
        return [(layer.name, layer) for layer in self._viewer.layers
                if _layer_type(layer) in ("image", "labels")]

    def reset_choices(self, event=None):
        """Does nothing: napari calls it on docked magicgui containers when
        layers change, and the generic version would reset every combo box
        to the choices it was built with. Our own connection to the layer
        list keeps the layer choice current."""

    def _refresh_layers(self, event=None):
        self.layer.reset_choices()
        if self.layer.value is None:
            active = self._viewer.layers.selection.active
            if active is not None and _layer_type(active) in ("image", "labels"):
                self.layer.value = active
        if self.layer.value is not self._current_layer:
            self._on_layer_changed()

    def _on_renamed(self, event=None):
        self.layer.reset_choices()  # the combo shows names
        layer = self.layer.value
        if layer is not None and _path(self.output.value) == self._auto_output:
            self._auto_output = os.path.join(os.path.expanduser("~"), layer.name)
            self.output.value = self._auto_output

    def _follow(self, layer):
        """Listen to the data and transform of ``layer`` only."""
        for followed, method in ((self._followed, "disconnect"), (layer, "connect")):
            if followed is None:
                continue
            for name in _LAYER_EVENTS:
                emitter = getattr(followed.events, name, None)
                if emitter is not None:
                    getattr(emitter, method)(self._on_layer_edited)
        self._followed = layer

    def _on_layer_edited(self, event=None):
        """The layer's data or transform changed: new dtype, shape or placement."""
        layer = self.layer.value
        if layer is None:
            return
        choices = encodings_for(_layer_type(layer), _layer_dtype(layer))
        if tuple(choices) != tuple(self.encoding.choices):
            keep = self.encoding.value
            self.encoding.choices = []
            self.encoding.choices = choices
            self.encoding.value = keep if keep in choices else (choices[0] if choices else None)
        self._update()

    def _on_layer_chosen(self, event=None):
        # The combo says "changed" when it is refilled (a rename) with the
        # same layer chosen: the user's options stay.
        if self.layer.value is not self._current_layer:
            self._on_layer_changed()

    def _on_layer_changed(self, event=None):
        layer = self._current_layer = self.layer.value
        self._follow(layer)
        # Never carry consent to replace a dataset over to another layer.
        self.overwrite.value = False
        if layer is None:
            self.encoding.choices = []
            self._update()
            return
        kind = _layer_type(layer)
        dtype = _layer_dtype(layer)
        # magicgui keeps surviving choices in place; clear to get our order.
        for combo, choices in ((self.encoding, encodings_for(kind, dtype)),
                               (self.method, ["mode", "stride"] if kind == "labels"
                                else ["mean", "stride"])):
            combo.choices = []
            combo.choices = choices
            combo.value = choices[0] if choices else None
        if not _path(self.output.value) or _path(self.output.value) == self._auto_output:
            self._auto_output = os.path.join(os.path.expanduser("~"), layer.name)
            self.output.value = self._auto_output
        self._update()

    def _on_output_changed(self, event=None):
        self.overwrite.value = False
        self._update()

    def _update(self, event=None):
        encoding = self.encoding.value
        self.jpeg_quality.visible = self.jpeg_plane.visible = encoding == "jpeg"
        self.block_size.visible = encoding == "compressed_segmentation"
        self.gzip.visible = encoding in GZIP_ENCODINGS
        volume = self._volume()
        problems = self._problems(volume)
        self._update_levels(volume)
        path = _path(self.output.value)
        notes = list(problems)
        if not problems:
            if self.overwrite.value and holds_dataset(path):
                notes.append(f"Exporting will replace the dataset in {path}.")
            elif user_entries(path) and not holds_dataset(path):
                notes.append(f"{path} is not empty: the dataset's files will be added "
                             "to what is there.")
            notes += notes_for(encoding, self.gzip.value)
            dropped = volume[3]
            if dropped:
                notes.append(dropped[0].upper() + dropped[1:] + ".")
        self.message.value = "\n".join(notes)
        busy = self._worker is not None
        self.export_button.enabled = not problems and not busy

    def _update_levels(self, volume):
        """Offer 1 to the most scales the layer can have; "automatic" says how many it makes.

        :param volume: what :meth:`_volume` returned
        """
        if isinstance(volume, str):
            automatic, most = None, 1
        else:
            array, resolution, offset, _ = volume
            size, chunk = array.shape[:0:-1], self.chunk_size.value
            automatic = 1 + len(pyramid_factors(resolution, size, chunk, voxel_offset=offset))
            most = 1 + len(pyramid_factors(resolution, size, chunk, levels=_MOST_LEVELS,
                                           voxel_offset=offset))
        label = "automatic" if automatic is None else (
            f"automatic ({automatic} scale{'s' if automatic > 1 else ''}, down to one chunk)")
        choices = [(label, None)] + [(str(n), n) for n in range(1, most + 1)]
        if choices == self._level_choices:
            return
        self._level_choices = choices
        keep = self.levels.value
        self.levels.choices = []
        self.levels.choices = choices
        self.levels.value = keep if keep is None or keep <= most else most

    def _volume(self):
        """The layer's (C, Z, Y, X) volume, (x, y, z) resolution, voxel offset
        and what of its transform is not exported, or why there is no volume."""
        layer = self.layer.value
        if layer is None:
            return "no layer"
        from ._layer_export import transforms_not_exported, volume_for_layer

        data, meta = _data_and_meta(layer)
        try:
            array, resolution, offset = volume_for_layer(data, meta, _layer_type(layer))
        except ValueError as exc:
            return str(exc)
        return array, resolution, offset, transforms_not_exported(meta)

    def problems(self):
        """Why the current choices cannot be exported (empty when they can)."""
        return self._problems(self._volume())

    def _problems(self, volume):
        layer = self.layer.value
        if layer is None:
            return ["Add an image or labels layer to export."]
        if not self.encoding.choices:
            return [f"No encoding can store {_layer_dtype(layer)} data."]
        if isinstance(volume, str):
            return [volume]
        from .export import export_dtype

        array = volume[0]
        type_ = "segmentation" if _layer_type(layer) == "labels" else "image"
        return validate_options(array.shape, self.encoding.value, self.chunk_size.value,
                                _path(self.output.value), self.overwrite.value,
                                array.shape[0], self.jpeg_plane.value,
                                export_dtype(array.dtype, type_, self.encoding.value))

    # running ---------------------------------------------------------------

    def start_export(self):
        """Start the export in a thread worker (returns the worker)."""
        from napari.qt.threading import create_worker

        from ._layer_export import info_for_layer
        from .export import iter_export

        problems = self.problems()
        if problems:
            self.message.value = "\n".join(problems)
            return None
        layer = self.layer.value
        data, meta = _data_and_meta(layer)
        path = _path(self.output.value)
        try:
            volume, info = info_for_layer(
                data, meta, _layer_type(layer), encoding=self.encoding.value,
                chunk_size=self.chunk_size.value, block_size=self.block_size.value,
                jpeg_quality=self.jpeg_quality.value,
                levels=self.levels.value)
        except Exception as exc:  # noqa: BLE001 - shown in the panel, nothing started
            self.status.value = f"Cannot export: {exc}"
            return None
        # Cancelling sets this event: the export stops inside its dask graph
        # and the worker then returns normally, nothing left running.
        self._cancel = threading.Event()
        gzip = self.gzip.value and self.encoding.value in GZIP_ENCODINGS
        steps = iter_export(volume, path, info, method=self.method.value,
                            overwrite=self.overwrite.value, gzip=gzip,
                            encoder_options={"jpeg_quality": self.jpeg_quality.value,
                                             "jpeg_plane": self.jpeg_plane.value},
                            cancel=self._cancel)
        # _ignore_errors: errors are shown in the panel by _on_error; without
        # it they would also be raised again in the Qt event loop.
        worker = create_worker(_reported_steps, steps, _start_thread=False,
                               _ignore_errors=True)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(lambda _: self._on_returned(path))
        worker.errored.connect(lambda exc: self._on_error(exc, path))
        worker.finished.connect(self._on_worker_done)
        self._worker = worker
        self._steps = (0, 0)
        self._last_output = None
        self.progress.visible = True
        self.progress.value = 0
        self.cancel_button.enabled = True
        self.open_button.visible = False
        self.status.value = f"Exporting {layer.name} to {path}…"
        if _layer_type(layer) == "labels":
            from ._edit_pause import LabelsEditPause

            self._edit_pause = LabelsEditPause(layer)
            self.status.value += ("\nPainting, undo and redo of this layer are paused until "
                                  "the export ends.")
        self._update()
        # Not worker.start(): Qt's shared pool runs as many workers as there
        # are cores, and a plugin's long-running workers there would keep the
        # export waiting, painting paused, with no way to cancel it.
        _export_pool().start(worker)
        return worker

    def cancel_export(self):
        """Stop the running export after the chunks being written."""
        if self._worker is not None:
            self.status.value = "Cancelling…"
            self._cancel.set()

    def open_result(self):
        """Open the last exported dataset in the viewer."""
        if self._last_output:
            return self._viewer.open(self._last_output, plugin=PLUGIN)
        return []

    def _on_closed(self):
        # The worker's last signals must not reach the deleted Qt widgets.
        self._closed = True
        # When the panel is garbage-collected with its Qt widget, its
        # attributes may be cleared before this runs; nothing is exporting then.
        cancel = getattr(self, "_cancel", None)
        if cancel is not None:
            cancel.set()

    def _on_parent_changed(self, parent):
        if parent is None and self._worker is not None:
            self.cancel_export()

    def _on_progress(self, step):
        if self._closed:
            return
        done, total = self._steps = step
        self.progress.max = max(total, 1)
        self.progress.value = done

    def _on_returned(self, path):
        if self._closed:
            return
        done, total = self._steps
        if self._cancel.is_set() and done < total:
            self.status.value = ("Export cancelled. The chunks written are complete; "
                                 "export again with 'overwrite' to finish it.")
            return
        self._last_output = path
        self.status.value = f"Exported to {path}"
        self.open_button.visible = True

    def _on_error(self, exc, path):
        if self._closed:
            return
        status = f"Export failed: {exc}"
        if holds_dataset(path):
            status += (f"\nWhat was written to {path} is complete chunk files; tick "
                       "'overwrite' to export there again.")
        self.status.value = status

    def _on_worker_done(self):
        self._worker = None
        if self._edit_pause is not None:
            self._edit_pause.end()
            self._edit_pause = None
        if self._closed:
            return
        self.overwrite.value = False  # consent was for that export only
        self.cancel_button.enabled = False
        self._update()


class ExportFailedError(Exception):
    """A RuntimeError (or subclass) raised by the export, passed on as is."""


def _reported_steps(steps):
    """The export's steps, with its RuntimeErrors made reportable.

    superqt drops a worker's RuntimeError with only a warning, taking it for
    a deleted Qt object, and then emits neither errored nor finished: a dask
    block raising NotImplementedError left the panel exporting for ever.
    """
    try:
        yield from steps
    except RuntimeError as exc:
        raise ExportFailedError(str(exc) or type(exc).__name__) from exc


@functools.cache
def _export_pool():
    from qtpy.QtCore import QThreadPool

    return QThreadPool()


def _layer_type(layer):
    return type(layer).__name__.lower()


def _layer_dtype(layer):
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    return data.dtype


def _data_and_meta(layer):
    data, meta, _ = layer.as_layer_data_tuple()
    return data, meta


def _path(value):
    text = os.fspath(value) if value is not None else ""
    return "" if text in ("", ".") else os.path.abspath(os.path.expanduser(text))
