"""Helpers shared by the widget tests: docking, tiny runs, and reading notifications."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from napari.utils.notifications import ErrorNotification, NotificationSeverity

from napari_bloodcells._widgets.data_picker import FROM_LAYERS

if TYPE_CHECKING:
    from napari_bloodcells._widgets.segment_widget import SegmentWidget
    from napari_bloodcells._widgets.train_widget import TrainWidget

RUN_TIMEOUT_MS = 480_000
"""Upper bound on any wait for a worker; tests wait on conditions, never sleep. It catches a
hang, and stays under pytest's 600 s per test: a fine-tune's 80 steps take minutes where bf16
is emulated (the suite's forced-bf16 run on an AVX2 CPU)."""


def dock(viewer, name: str):
    """Dock the plugin's widget ``name`` through the manifest, as the Plugins menu does."""
    _, widget = viewer.window.add_plugin_dock_widget("napari-bloodcells", name)
    return widget


def errors(notes) -> list[str]:
    """Messages of the error notifications in ``notes``."""
    return [n.message for n in notes if n.severity == NotificationSeverity.ERROR]


def infos(notes) -> list[str]:
    """Messages of the information notifications in ``notes``."""
    return [n.message for n in notes if n.severity == NotificationSeverity.INFO]


def assert_plain_error(notes, fragment: str) -> str:
    """One error notification holding ``fragment``: one sentence, no traceback.

    Clears ``notes`` so the next case starts afresh; returns the message.
    """
    matching = [
        n for n in notes if n.severity == NotificationSeverity.ERROR and fragment in n.message
    ]
    assert len(matching) == 1, f"expected one error with {fragment!r}, got {errors(notes)}"
    note = matching[0]
    assert not isinstance(note, ErrorNotification), "shown with a traceback"
    message = note.message
    assert "\n" not in message and "Traceback" not in message
    assert message.endswith("."), message
    # One sentence: no full stop followed by a new capitalised sentence.
    assert not re.search(r"[.!?]\s+[A-Z]", message), f"more than one sentence: {message}"
    notes.clear()
    return message


def tiny_run(widget: TrainWidget, *, epochs: int = 1, lr: float | None = None) -> None:
    """The notebook recipe, shrunk: batches of 2, a quarter of the images for dev."""
    options = widget.settings
    options.preset.value = "seed"
    options.epochs.value = epochs
    options.batch_size.value = 2
    options.dev_fraction.value = 0.25
    options.device.value = "cpu"
    if lr is not None:
        options.lr.value = lr


def use_layers(widget: TrainWidget, image, labels) -> None:
    """Train on an image layer and its labels layer."""
    widget.data.source.value = FROM_LAYERS
    widget.data.image_layer.value = image
    widget.data.labels_layer.value = labels


def add_cells(viewer, cell_stack, count: int = 8, suffix: str = ""):
    """Add the first ``count`` blood cells as an RGB stack and a Labels stack."""
    images, masks = cell_stack
    image = viewer.add_image(images[:count], rgb=True, name=f"cells{suffix}")
    labels = viewer.add_labels(masks[:count], name=f"cells labels{suffix}")
    return image, labels


def run_segment(qtbot, widget: SegmentWidget):
    """Press Segment and wait for the run to end; returns the layer written, or None."""
    widget.segment_button.native.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=RUN_TIMEOUT_MS)
    return widget.last_layer


def run_training(qtbot, widget: TrainWidget):
    """Press Start and wait for the run to end; returns its result (None if it failed)."""
    with qtbot.waitSignal(widget.run_finished, timeout=RUN_TIMEOUT_MS) as finished:
        widget.start_button.native.click()
    return finished.args[0]
