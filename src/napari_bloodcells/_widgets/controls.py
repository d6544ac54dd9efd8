"""Small widget helpers shared by the Train and Segment widgets."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from magicgui.widgets import Container, FileEdit, Label
from qtpy.QtCore import QSize, Qt
from qtpy.QtWidgets import (
    QFrame,
    QScrollArea,
    QSizePolicy,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

if TYPE_CHECKING:
    from magicgui.widgets import Widget
    from superqt import QCollapsible


def single_path(edit: FileEdit) -> Path | None:
    """The one path of a file field, or ``None`` when it is empty."""
    value = edit.value
    if value is None or isinstance(value, tuple) or value == Path():
        return None
    return Path(value)


def status_label(text: str = "", wrap: bool = True) -> Label:
    """A label for changing status text that never widens its dock widget.

    A wider dock shrinks napari's canvas, which then re-renders every layer on
    the main thread: a status line growing each batch would stall the viewer.
    A wrapping label reserves room for a second line; ``wrap=False`` keeps a
    short line (the batch counter) to one, cut at the dock's edge.
    """
    label = Label(value=text)
    label.native.setWordWrap(wrap)
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


class VerticalScrollArea(QScrollArea):
    """A scroll area that scrolls vertically only and is never narrower than its contents."""

    def __init__(self, inner: QWidget) -> None:
        super().__init__()
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setWidget(inner)

    def _width(self) -> int:
        # Asked again on every layout pass, so it follows style and content changes.
        inner, bar = self.widget(), self.verticalScrollBar()
        assert inner is not None and bar is not None  # set in __init__
        return inner.minimumSizeHint().width() + bar.sizeHint().width()

    def minimumSizeHint(self) -> QSize:
        return QSize(self._width(), super().minimumSizeHint().height())

    def sizeHint(self) -> QSize:
        inner = self.widget()
        assert inner is not None  # set in __init__
        return QSize(self._width(), inner.sizeHint().height())


def scroll_contents(container: Container) -> QScrollArea:
    """Move everything in ``container`` into a vertical scroll area inside it.

    A dock widget cannot be shorter than its contents, and napari's window
    cannot be shorter than its docks: the Train widget with its plot and
    preview is taller than many screens, which pushed the bottom of the
    window off the screen. Scrolling lets the docks share any height.
    (magicgui's ``scrollable=True`` does not help: napari docks ``.native``,
    the widget inside magicgui's scroll area, and leaves the area behind.)
    Call it once, after the container holds all its widgets.

    Returns
    -------
    QScrollArea
        The scroll area, now the only child of ``container.native``.
    """
    outer = container.native.layout()
    inner = QWidget()
    layout = QVBoxLayout(inner)
    layout.setContentsMargins(outer.contentsMargins())
    layout.setSpacing(outer.spacing())
    while outer.count():
        item = outer.takeAt(0)
        if item.widget() is not None:
            layout.addWidget(item.widget())
        else:
            layout.addItem(item)
    layout.addStretch(1)
    scroll = VerticalScrollArea(inner)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(scroll)
    return scroll


def collapsible(title: str, *widgets: Widget, expanded: bool = True) -> QCollapsible:
    """A titled section whose ``widgets`` fold away behind a click on the title.

    The Train form folds while a run goes so that, on a laptop-sized window,
    the progress, the curves and the preview fit the dock without scrolling.

    Returns
    -------
    superqt.QCollapsible
        The section (``expand``/``collapse``/``isExpanded``).
    """
    from superqt import QCollapsible

    section = QCollapsible(title, expandedIcon="▼", collapsedIcon="▶")
    section.setDuration(0)  # an animated fold relayouts the dock for every frame
    layout = section.layout()
    if layout is not None:
        layout.setContentsMargins(0, 0, 0, 0)
    for widget in widgets:
        section.addWidget(widget.native)
    if expanded:
        section.expand(animate=False)
    return section


class NumberItem(QTableWidgetItem):
    """A table item that sorts by its number, not its text."""

    def __init__(self, value: float, text: str) -> None:
        super().__init__(text)
        self.value = value

    def __lt__(self, other: QTableWidgetItem) -> bool:
        if isinstance(other, NumberItem):
            return self.value < other.value
        return super().__lt__(other)
