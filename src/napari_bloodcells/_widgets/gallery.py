"""The differential gallery: measured cells grouped by type, to verify and reclassify.

Cells whose type is less probable than the threshold come first ("to verify"), then
one group per type, each least certain first, under a line with the differential
(count and percentage of each type). A click on a cell shows it in the viewer; the
keys 1-7 (or the buttons) reclassify the selected cell. Counting is the core's
:func:`~napari_bloodcells.core.measure.differential.differential`, as in the CLI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from psygnal import Signal
from qtpy.QtCore import QSize, Qt
from qtpy.QtGui import QIcon, QImage, QKeyEvent, QPixmap
from qtpy.QtWidgets import (
    QGridLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from napari_bloodcells.core.base.cell_types import CORRECTION_VALUES, TO_VERIFY
from napari_bloodcells.core.jobs import counted_cells, differential
from napari_bloodcells.core.measure.cells import Measurements

if TYPE_CHECKING:
    from napari_bloodcells.core.jobs import DifferentialRow

THUMB = 56
PER_ROW = 5


def thumbnail(image: np.ndarray, box: tuple[int, int, int, int]) -> QPixmap:
    """A square RGB crop around ``box`` (min row, min col, max row, max col) as a pixmap."""
    top, left, bottom, right = box
    half = max(bottom - top, right - left) * 0.65
    row, col = (top + bottom) / 2, (left + right) / 2
    rows = slice(max(0, int(row - half)), min(image.shape[0], int(row + half) + 1))
    cols = slice(max(0, int(col - half)), min(image.shape[1], int(col + half) + 1))
    crop = np.ascontiguousarray(image[rows, cols, :3], dtype=np.uint8)
    height, width = crop.shape[:2]
    picture = QImage(crop.tobytes(), width, height, 3 * width, QImage.Format.Format_RGB888).copy()
    return QPixmap.fromImage(picture).scaled(
        THUMB, THUMB, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
    )


class CellGallery(QWidget):
    """The gallery of typed cells (see the module).

    Attributes
    ----------
    cell_clicked : psygnal.Signal
        Emitted with the id of a clicked cell.
    reclassified : psygnal.Signal
        Emitted with ``(cell, type)`` after each reclassification.
    corrections : dict of int to str
        The user's type of each reclassified cell.
    """

    cell_clicked = Signal(int)
    reclassified = Signal(int, str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.corrections: dict[int, str] = {}
        self.selected: int | None = None
        self.table: Measurements | None = None
        self._thumbs: dict[int, QPixmap] = {}
        self.buttons: dict[int, QToolButton] = {}
        self.summary = QLabel("Measure cells with a model that has cell types to see them here.")
        self.summary.setWordWrap(True)
        keys = QGridLayout()
        self.type_buttons: dict[str, QPushButton] = {}
        for index, kind in enumerate(CORRECTION_VALUES):
            button = QPushButton(f"{index + 1} {kind}")
            button.setToolTip(f"Call the selected cell {kind} (key {index + 1})")
            button.clicked.connect(lambda _=False, k=kind: self.reclassify_selected(k))
            keys.addWidget(button, index // 4, index % 4)
            self.type_buttons[kind] = button
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.groups = QWidget()
        self.groups_layout = QVBoxLayout(self.groups)
        self.groups_layout.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.groups)
        scroll.setMinimumHeight(220)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.summary)
        layout.addLayout(keys)
        layout.addWidget(scroll)

    # -- filling -----------------------------------------------------------------------

    def show_cells(self, table: Measurements, image: np.ndarray, cells: np.ndarray) -> None:
        """Show the typed cells of ``table`` (``image`` and ``cells``: 2D, or stacks)."""
        self.table = table
        self.corrections = {}
        self.selected = None
        self._thumbs = {}
        columns = table.columns
        counted = counted_cells(table)
        for row, cell in enumerate(columns["cell"]):
            if not counted[row]:
                continue
            top, left, bottom, right = (
                int(columns[f"bbox_{k}"][row]) for k in ("min_row", "min_col", "max_row", "max_col")
            )
            picture = image if image.ndim == 3 else image[_slice_of(cells, int(cell))]
            self._thumbs[int(cell)] = thumbnail(picture, (top, left, bottom, right))
        self._refill()

    def rows(self) -> list[DifferentialRow]:
        """The differential with the reclassifications, per image and in total."""
        if self.table is None:
            return []
        return differential(self.with_corrections())

    def with_corrections(self) -> Measurements:
        """The table with a ``corrected_type`` column ("" where not reclassified)."""
        assert self.table is not None
        columns: dict[str, list[Any]] = dict(self.table.columns)
        columns["corrected_type"] = [self.corrections.get(int(c), "") for c in columns["cell"]]
        return Measurements(columns)

    def group_of(self, cell: int) -> str:
        """The group a cell is shown in: its corrected type, "to verify", or its type."""
        assert self.table is not None
        if cell in self.corrections:
            return self.corrections[cell]
        row = self.table.columns["cell"].index(cell)
        return (
            TO_VERIFY if self.table.columns["to_verify"][row] else self.table.columns["type"][row]
        )

    # -- reclassifying -----------------------------------------------------------------

    def keyPressEvent(self, event: QKeyEvent | None) -> None:
        """Keys 1-7 reclassify the selected cell (a thumbnail's unused keys arrive here)."""
        text = event.text() if event is not None else ""
        if text.isdigit() and 1 <= int(text) <= len(CORRECTION_VALUES):
            self.reclassify_selected(CORRECTION_VALUES[int(text) - 1])
            return
        super().keyPressEvent(event)

    def select(self, cell: int) -> None:
        """Select ``cell`` and show it in the viewer."""
        if self.selected in self.buttons:
            self.buttons[self.selected].setChecked(False)
        self.selected = cell
        if cell in self.buttons:
            self.buttons[cell].setChecked(True)
        self.setFocus()
        self.cell_clicked.emit(cell)

    def reclassify_selected(self, kind: str) -> None:
        """Give the selected cell the type ``kind`` (nothing without a selection)."""
        if self.selected is not None:
            self.reclassify(self.selected, kind)

    def reclassify(self, cell: int, kind: str) -> None:
        """Record the user's type of ``cell``; the groups and counts follow."""
        self.corrections[cell] = kind
        self._refill()
        self.reclassified.emit(cell, kind)

    # -- drawing -----------------------------------------------------------------------

    def _refill(self) -> None:
        while self.groups_layout.count():
            item = self.groups_layout.takeAt(0)
            widget = item.widget() if item is not None else None
            if widget is not None:
                widget.deleteLater()
        self.buttons = {}
        if self.table is None:
            return
        total = self.rows()[-1]
        shares = ", ".join(
            f"{k} {n} ({total.percent(k):.0f} %)" for k, n in total.counts.items() if n
        )
        self.summary.setText(
            f"<b>{total.cells} white cells</b>: {shares or 'none'}; {total.to_verify} to verify, "
            f"{len(self.corrections)} reclassified. Click a cell, then press 1-7."
        )
        probability = dict(
            zip(self.table.columns["cell"], self.table.columns["type_probability"], strict=True)
        )
        members: dict[str, list[int]] = {}
        for cell in self._thumbs:
            members.setdefault(self.group_of(cell), []).append(cell)
        order = [TO_VERIFY, *CORRECTION_VALUES]
        for group in sorted(members, key=lambda g: order.index(g) if g in order else len(order)):
            cells = sorted(members[group], key=lambda c: probability[c])
            self.groups_layout.addWidget(QLabel(f"<b>{group}</b>: {len(cells)}"))
            grid = QWidget()
            layout = QGridLayout(grid)
            layout.setContentsMargins(0, 0, 0, 0)
            for index, cell in enumerate(cells):
                layout.addWidget(
                    self._button(cell, probability[cell]), index // PER_ROW, index % PER_ROW
                )
            self.groups_layout.addWidget(grid)
        self.groups_layout.addStretch(1)

    def _button(self, cell: int, probability: float) -> QToolButton:
        button = QToolButton()
        button.setIcon(QIcon(self._thumbs[cell]))
        button.setIconSize(QSize(THUMB, THUMB))
        button.setCheckable(True)
        button.setChecked(cell == self.selected)
        tip = f"cell {cell}, {probability:.0%} sure"
        if cell in self.corrections:
            tip += f", reclassified as {self.corrections[cell]}"
        button.setToolTip(tip)
        button.clicked.connect(lambda _=False, c=cell: self.select(c))
        self.buttons[cell] = button
        return button


def _slice_of(cells: np.ndarray, cell: int) -> int:
    """The slice of a stack that holds ``cell``."""
    return int(np.argwhere(cells == cell)[0][0])
