"""Small widget helpers shared by the Train and Segment widgets."""

from __future__ import annotations

from typing import TYPE_CHECKING

from magicgui.widgets import Container, Label
from qtpy.QtWidgets import QSizePolicy

if TYPE_CHECKING:
    from magicgui.widgets import Widget


def status_label(text: str = "") -> Label:
    """A label for changing status text that never widens its dock widget.

    A wider dock shrinks napari's canvas, which then re-renders every layer on
    the main thread: a status line growing each batch would stall the viewer.
    """
    label = Label(value=text)
    label.native.setWordWrap(True)
    label.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    return label


def button_row(*widgets: Widget) -> Container:
    """Widgets side by side, without the margins a nested container would add."""
    row = Container(widgets=list(widgets), layout="horizontal", labels=False)
    row.margins = (0, 0, 0, 0)
    return row


def form(*widgets: Widget) -> Container:
    """Widgets stacked with their labels, without extra margins."""
    box = Container(widgets=list(widgets), labels=True)
    box.margins = (0, 0, 0, 0)
    return box
