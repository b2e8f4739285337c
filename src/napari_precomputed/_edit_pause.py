"""Hold a Labels layer still while an export reads it.

An export reads the layer's array chunk by chunk for seconds or minutes; a
brush stroke, fill or undo meanwhile would give scales that disagree with
each other. Only public layer API is used:

- the layer is put in pan/zoom mode and sent back there if a painting tool
  is chosen. Not ``editable = False``: napari clears a layer's undo history
  when it stops being editable, which would cost the user their strokes.
- key bindings on the layer itself shadow napari's class-wide undo and redo
  keys for the time of the export.
"""

from app_model.types import KeyCode, KeyMod

# The keys napari binds to Labels.undo and Labels.redo.
HISTORY_KEYS = (KeyMod.CtrlCmd | KeyCode.KeyZ, KeyMod.CtrlCmd | KeyMod.Shift | KeyCode.KeyZ)
# Modes that change the data; pan_zoom, transform and pick do not.
EDITING_MODES = frozenset({"paint", "erase", "fill", "polygon"})


class LabelsEditPause:
    """Pause painting, filling, undo and redo of ``layer`` until :meth:`end`.

    Pauses of one layer nest (two export panels on one layer): the first
    records the tool and key bindings, the last gives them back.
    """

    def __init__(self, layer):
        self.layer = layer
        self._ended = False
        hold = _holds.get(layer)
        if hold is None:
            hold = _holds[layer] = _Hold(layer)
        hold.count += 1

    def end(self):
        """Give the layer back its keys and the tool it had, unless another
        non-painting tool was chosen meanwhile (once every pause has ended)."""
        if self._ended:
            return
        self._ended = True
        hold = _holds[self.layer]
        hold.count -= 1
        if not hold.count:
            del _holds[self.layer]
            hold.release()


class _Hold:
    """What one layer's pauses changed, to give back when the last ends."""

    def __init__(self, layer):
        self.layer = layer
        self.count = 0
        self.mode = str(layer.mode)
        if self.mode in EDITING_MODES:
            layer.mode = "pan_zoom"
        # Last, so that the layer controls have shown the tool that was
        # chosen before it is taken back.
        layer.events.mode.connect(self._on_mode, position="last")
        # bind_key returns what the layer itself bound to the key before, so
        # that a binding of the user's own comes back afterwards.
        self.shadowed = [(key, layer.bind_key(key, _history_paused, overwrite=True))
                         for key in HISTORY_KEYS]

    def release(self):
        layer = self.layer
        layer.events.mode.disconnect(self._on_mode)
        for key, previous in self.shadowed:
            layer.bind_key(key, previous, overwrite=True)  # None unbinds
        if self.mode in EDITING_MODES and str(layer.mode) == "pan_zoom" and layer.editable:
            layer.mode = self.mode

    def _on_mode(self, event=None):
        if str(self.layer.mode) in EDITING_MODES:
            self.layer.mode = "pan_zoom"
            _tell(f"Painting {self.layer.name!r} is paused until its export ends.")


# Layer -> the hold of its pauses, while one is running.
_holds = {}


def _history_paused(layer):
    _tell(f"Undo and redo of {layer.name!r} are paused until its export ends.")


def _tell(message):
    from napari.utils.notifications import show_info

    show_info(message)
