"""File > Save Layers with a progress dialog and a Cancel button.

npe2 calls a writer and waits for the paths it returns, so the save cannot be
handed to a thread and forgotten. Run as a plain call, a large layer froze
napari, with nothing on screen, for as long as its chunks took (a minute for
8 GiB). Instead the export runs on threads of its own while a local event
loop keeps the viewer drawing, behind an application-modal progress dialog:
modal, so that nothing paints into the layer or closes the viewer while the
save reads it.
"""

import contextlib
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
    from qtpy.QtCore import QEventLoop, Qt, QTimer
    from qtpy.QtWidgets import QApplication

    relay = _Relay(steps)

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
    loop = QEventLoop()

    def show_progress():
        if relay.ended.is_set():
            loop.quit()
        done, total = relay.step
        with contextlib.suppress(RuntimeError):  # the dialog went with its window
            dialog.setMaximum(max(total, 1))
            dialog.setValue(done)

    timer = QTimer()
    timer.setInterval(30)
    timer.timeout.connect(show_progress)
    relay.start()
    dialog.show()
    timer.start()
    loop.exec()
    timer.stop()
    interrupted = not relay.ended.is_set()
    if interrupted:
        # The loop was ended from outside (QApplication.exit, Ctrl+C in the
        # terminal): the application is going, and the save must not look
        # finished while chunks are still being written.
        cancel.set()
        relay.ended.wait()
    with contextlib.suppress(RuntimeError):
        dialog.hide()  # not close(): that would ask for a cancel
        dialog.deleteLater()
    if relay.error is not None:
        raise relay.error
    done, total = relay.step
    # A cancel that came after the last chunk cancelled nothing.
    return not (cancel.is_set() and done < total)


class _Relay:
    """Runs the export's steps on a thread of its own, keeping the last one.

    Not a napari thread worker: napari aborts its workers when a viewer
    closes (the save would then look finished), superqt drops a RuntimeError
    from a worker with only a warning (the save would never end), and Qt's
    shared thread pool, where workers wait for a free thread, may be held by
    a plugin's long-running workers (the save would never start). The GUI
    thread reads ``step`` on a timer.
    """

    def __init__(self, steps):
        self.step = (0, 0)
        self.error = None
        self.ended = threading.Event()
        self._steps = steps
        self._thread = threading.Thread(target=self._run, name="napari-precomputed-save",
                                        daemon=True)

    def start(self):
        self._thread.start()

    def _run(self):
        try:
            for self.step in self._steps:
                pass
        except BaseException as exc:  # noqa: BLE001 - raised again in the GUI thread
            self.error = exc
        finally:
            self.ended.set()


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
