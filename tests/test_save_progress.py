"""File > Save Layers in a shown viewer: a modal progress dialog with Cancel,
the viewer drawing meanwhile (real viewer under Xvfb)."""

import time

import numpy as np
import pytest
from conftest import label_volume

from napari_precomputed._writer import ExportRefusedError

PLUGIN = "napari-precomputed"


class DialogWatch:
    """A timer in the GUI thread noting the modal progress dialog while a save runs."""

    def __init__(self, on_dialog=None):
        from qtpy.QtCore import QTimer

        self.ticks = 0
        self.labels = set()
        self.values = []
        self._on_dialog = on_dialog
        self._timer = QTimer()
        self._timer.setInterval(5)
        self._timer.timeout.connect(self._tick)
        self._timer.start()

    def _tick(self):
        from qtpy.QtWidgets import QApplication, QProgressDialog

        self.ticks += 1
        dialog = QApplication.activeModalWidget()
        if isinstance(dialog, QProgressDialog) and dialog.isVisible():
            self.labels.add(dialog.labelText())
            self.values.append((dialog.value(), dialog.maximum()))
            if self._on_dialog is not None:
                self._on_dialog(dialog)

    def stop(self):
        self._timer.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def slow_labels(shape, chunks, delay):
    """A dask segmentation whose blocks each take ``delay`` seconds to compute."""
    da = pytest.importorskip("dask.array")
    values = label_volume((1, *shape), "uint32", seed=5)[0]

    def block(x):
        time.sleep(delay)
        return x

    return values, da.from_array(values, chunks=chunks).map_blocks(block, dtype=values.dtype)


def test_long_save_shows_progress_and_the_viewer_keeps_drawing(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer(show=True)
    values, data = slow_labels((64, 96, 128), (32, 32, 32), delay=0.02)
    viewer.add_labels(data, name="cells")
    with DialogWatch() as watch:
        written = viewer.layers.save(str(tmp_path / "cells"), plugin=PLUGIN)

    assert written == [str(tmp_path / "cells")]
    assert watch.labels == {f"Saving cells to {tmp_path / 'cells'}…"}
    # The event loop ran during the save (a blocked one gives the timer no
    # tick), and the dialog counted the chunks written.
    assert len(set(watch.values)) > 3, watch.values
    assert all(0 <= done <= total for done, total in watch.values if total > 1)
    # 64^3 chunks: 4 at scale 0 and 1 at scale 1.
    assert {total for _, total in watch.values if total > 1} == {5}
    from qtpy.QtWidgets import QApplication

    assert QApplication.activeModalWidget() is None
    (layer,) = viewer.open(str(tmp_path / "cells"), plugin=PLUGIN)
    np.testing.assert_array_equal(np.asarray(layer.data[0]), values)


@pytest.mark.parametrize("how", ["button", "escape", "close"])
def test_cancelled_save_leaves_nothing_and_says_so(make_napari_viewer, qtbot, tmp_path, how):
    viewer = make_napari_viewer(show=True)
    _, data = slow_labels((64, 128, 128), (16, 32, 32), delay=0.05)
    layer = viewer.add_labels(data, name="cells")
    target = tmp_path / "new" / "cells"

    def cancel_once_started(dialog):
        from qtpy.QtWidgets import QPushButton

        if dialog.value() > 0 and not cancelled:
            cancelled.append(dialog.labelText())
            if how == "button":
                dialog.findChild(QPushButton).click()
            elif how == "escape":
                from qtpy.QtCore import Qt

                qtbot.keyClick(dialog, Qt.Key.Key_Escape)
            else:  # the window's close button
                dialog.close()

    cancelled = []

    with DialogWatch(cancel_once_started) as watch:
        with pytest.raises(ExportRefusedError, match="was cancelled.*nothing is left there"):
            layer.save(str(target), plugin=PLUGIN)
    assert any(0 < done < total for done, total in watch.values)
    # The dialog stayed up, saying so, until the chunks in flight were written.
    assert any("Cancelling" in text for text in watch.labels), watch.labels
    # The folders the save made are gone with its chunks.
    assert not (tmp_path / "new").exists()
    # Nothing is still writing there after the call returned.
    time.sleep(0.3)
    assert not (tmp_path / "new").exists()


def test_small_or_scripted_saves_show_no_dialog(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer(show=True)
    small = viewer.add_labels(label_volume((1, 32, 64, 64), "uint32")[0], name="small")
    with DialogWatch() as watch:
        assert small.save(str(tmp_path / "small"), plugin=PLUGIN)
    assert watch.labels == set()

    # No window shown: a script, even a lazy layer is written without one.
    hidden = make_napari_viewer()
    viewer.close()
    _, data = slow_labels((32, 32, 32), (32, 32, 32), delay=0)
    layer = hidden.add_labels(data)
    with DialogWatch() as watch:
        assert layer.save(str(tmp_path / "lazy"), plugin=PLUGIN)
    assert watch.labels == set()


def failing_labels(shape, chunks, bad_block, error):
    """A dask segmentation whose block ``bad_block`` raises ``error``."""
    da = pytest.importorskip("dask.array")

    def block(x, block_info=None):
        time.sleep(0.01)
        if block_info[0]["chunk-location"] == bad_block:
            raise error
        return x

    values = np.zeros(shape, np.uint32)
    return da.from_array(values, chunks=chunks).map_blocks(block, dtype=values.dtype)


@pytest.mark.parametrize("error", [NotImplementedError("no such block"), OSError("disk full")])
def test_failing_save_is_raised_and_taken_back(make_napari_viewer, tmp_path, error):
    # superqt drops a worker's RuntimeError (NotImplementedError is one) with a
    # warning only: run through a napari thread worker, this save never ended.
    viewer = make_napari_viewer(show=True)
    layer = viewer.add_labels(failing_labels((64, 128, 128), 32, (1, 1, 1), error))
    target = tmp_path / "new" / "cells"
    with pytest.raises(type(error), match=str(error)) as raised:
        layer.save(str(target), plugin=PLUGIN)
    assert f"{target}: nothing is left there" in raised.value.__notes__
    assert not (tmp_path / "new").exists()
    from qtpy.QtWidgets import QApplication

    assert QApplication.activeModalWidget() is None


def export_from_panel(viewer, qtbot, layer, output):
    """Export ``layer`` to ``output`` from the panel; the panel once it has ended."""
    from napari_precomputed._widget import ExportWidget

    widget = ExportWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.layer.value = layer
    widget.output.value = str(output)
    assert widget.start_export() is not None, widget.status.value
    qtbot.waitUntil(lambda: not widget.cancel_button.enabled, timeout=20_000)
    return widget


@pytest.fixture
def busy_thread_pool():
    """Qt's shared thread pool, every thread held by a long-running worker."""
    import threading

    from qtpy.QtCore import QRunnable, QThreadPool

    release = threading.Event()

    class Busy(QRunnable):
        def run(self):
            release.wait(60)

    pool = QThreadPool.globalInstance()
    for _ in range(pool.maxThreadCount()):
        pool.start(Busy())
    yield
    release.set()
    pool.waitForDone(10_000)


def test_saves_and_panel_exports_do_not_wait_for_qt_thread_pool(make_napari_viewer, qtbot,
                                                                tmp_path, busy_thread_pool):
    viewer = make_napari_viewer(show=True)
    values, data = slow_labels((32, 64, 64), (32, 32, 32), delay=0)
    layer = viewer.add_labels(data, name="cells")
    assert layer.save(str(tmp_path / "saved"), plugin=PLUGIN)

    widget = export_from_panel(viewer, qtbot, layer, tmp_path / "exported")
    assert widget.status.value.startswith("Exported to"), widget.status.value
    from qtpy.QtCore import QThreadPool

    pool = QThreadPool.globalInstance()
    assert pool.activeThreadCount() == pool.maxThreadCount()  # still held throughout
    for name in ("saved", "exported"):
        (opened,) = viewer.open(str(tmp_path / name), plugin=PLUGIN)
        assert not opened.multiscale  # one chunk: one scale
        np.testing.assert_array_equal(np.asarray(opened.data), values)


def test_panel_reports_a_runtime_error_and_gives_painting_back(make_napari_viewer, qtbot,
                                                               tmp_path):
    viewer = make_napari_viewer()
    layer = viewer.add_labels(
        failing_labels((64, 128, 128), 32, (1, 1, 1), NotImplementedError("no such block")))
    layer.mode = "paint"
    widget = export_from_panel(viewer, qtbot, layer, tmp_path / "out")
    assert widget.status.value.startswith("Export failed: no such block"), widget.status.value
    assert widget._edit_pause is None and layer.mode == "paint"


def test_save_interrupted_by_the_application_exiting_is_taken_back(make_napari_viewer,
                                                                    tmp_path):
    # QApplication.exit (napari's answer to Ctrl+C in the terminal) ends the
    # save's event loop too: the save must not look finished meanwhile.
    from qtpy.QtWidgets import QApplication

    viewer = make_napari_viewer(show=True)
    _, data = slow_labels((64, 128, 128), (16, 32, 32), delay=0.05)
    layer = viewer.add_labels(data, name="cells")

    def exit_once_started(dialog):
        if dialog.value() > 0 and not exited:
            exited.append(True)
            QApplication.exit(0)

    exited = []
    with DialogWatch(exit_once_started) as watch:
        with pytest.raises(ExportRefusedError, match="cancelled.*nothing is left"):
            layer.save(str(tmp_path / "cells"), plugin=PLUGIN)
    assert exited and not (tmp_path / "cells").exists()
