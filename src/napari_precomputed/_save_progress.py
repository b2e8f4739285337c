"""File > Save Layers with a progress dialog and a Cancel button.

npe2 calls a writer and waits for the paths it returns, so the save cannot be
handed to a thread and forgotten. Run as a plain call, a large layer froze
napari, with nothing on screen, for as long as its chunks took (a minute for
8 GiB). Instead the export runs in a napari thread worker while a local event
loop keeps the viewer drawing, behind an application-modal progress dialog:
modal, so that nothing paints into the layer or closes the viewer while the
save reads it.
"""

import functools
import threading

import numpy as np

# Below this a layer in memory is written before a dialog could be read (about
# 0.1 s for compressed_segmentation): no dialog flashes by. A dask array always
# gets one, since its chunks may take any time to compute.
DIALOG_FROM_BYTES = 32 * 2**20


def run_export(start, data, label):
    """Run an export; returns False if the user cancelled it, True once it ended.

    :param start: ``start(cancel)`` returns the :func:`~.export.iter_export`
        generator, given the :class:`threading.Event` that cancels it
    :param data: the volume being written, to judge whether the save is long
    :param str label: what the dialog says is happening
    :raises: whatever the export raised, in the caller's thread
    """
    cancel = threading.Event()
    steps = start(cancel)
    if not _wants_dialog(data):
        for _ in steps:
            pass
        return True
    return _run_behind_dialog(steps, cancel, label)


def _wants_dialog(data):
    if not isinstance(data, np.ndarray) or data.nbytes >= DIALOG_FROM_BYTES:
        app = _gui_application()
        # A script holding a QApplication with no window shown has no one to
        # show a dialog to.
        return app is not None and any(w.isVisible() for w in app.topLevelWidgets())
    return False


def _gui_application():
    """The QApplication, if this thread runs it; None without Qt."""
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        from qtpy.QtWidgets import QApplication
    except Exception:  # noqa: BLE001 - no Qt binding: a script, no dialog
        return None
    return QApplication.instance()


def _run_behind_dialog(steps, cancel, label):
    from napari.qt.threading import create_worker
    from qtpy.QtCore import QEventLoop, Qt
    from qtpy.QtWidgets import QApplication

    state = {"step": (0, 0)}

    def on_cancel():
        if not cancel.is_set():
            dialog.setLabelText(label + "\nCancelling after the chunks being written…")
            cancel.set()

    dialog = _dialog_type()(label, QApplication.activeWindow(), on_cancel)
    dialog.setWindowTitle("Saving as precomputed")
    dialog.setWindowModality(Qt.WindowModality.ApplicationModal)
    # Reaching the maximum must not hide the dialog: the last chunks are still
    # being stored when the count says done.
    dialog.setAutoReset(False)
    dialog.setAutoClose(False)
    dialog.setMinimumDuration(0)
    dialog.setMinimumWidth(420)

    def on_step(step):
        state["step"] = step
        done, total = step
        dialog.setMaximum(max(total, 1))
        dialog.setValue(done)

    loop = QEventLoop()
    worker = create_worker(lambda: (yield from steps), _start_thread=False,
                           _ignore_errors=True)
    worker.yielded.connect(on_step)
    worker.errored.connect(lambda exc: state.setdefault("error", exc))
    # Signals from the worker's thread are queued: finished reaches loop.quit
    # only once the loop runs, however soon the export ends.
    worker.finished.connect(loop.quit)
    dialog.show()
    worker.start()
    loop.exec()
    dialog.hide()  # not close(): that would ask for a cancel
    dialog.deleteLater()
    if "error" in state:
        raise state["error"]
    done, total = state["step"]
    # A cancel that came after the last chunk cancelled nothing.
    return not (cancel.is_set() and done < total)


@functools.cache
def _dialog_type():
    from qtpy.QtWidgets import QProgressDialog

    class SaveDialog(QProgressDialog):
        """Stays up until the export has ended. Cancel, Escape and the
        window's close button ask for a cancel instead of hiding the dialog,
        which would free the viewer while chunks in flight are still read
        from the layer and written."""

        def __init__(self, label, parent, on_cancel):
            super().__init__(label, "Cancel", 0, 0, parent)
            self.canceled.disconnect(self.cancel)  # Qt's own: resets and hides
            self.canceled.connect(on_cancel)

        def reject(self):
            self.canceled.emit()

        def closeEvent(self, event):
            event.ignore()
            self.canceled.emit()

    return SaveDialog
