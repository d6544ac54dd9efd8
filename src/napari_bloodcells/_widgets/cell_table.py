"""The measurements as a sortable table and an N:C histogram; a row click shows its cell."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from psygnal import Signal
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QSizePolicy, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

from napari_bloodcells._widgets.controls import NumberItem
from napari_bloodcells.core.measure.cells import COLUMNS

if TYPE_CHECKING:
    from napari_bloodcells.core.measure.cells import Measurements

SHOWN = (*COLUMNS[:7], "circularity", "touches_border")
"""Columns the table shows; the CSV export and the layer's features hold them all."""


def _text(value: Any) -> str:
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.3g}"
    return str(value)


class CellTable(QWidget):
    """A table of cells (click a row to select its cell) over a histogram of N:C ratios.

    Attributes
    ----------
    table : QTableWidget
        One row per cell, sortable by any column.
    cell_clicked : psygnal.Signal
        Emitted with the cell id of a clicked row.
    """

    cell_clicked = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.table = QTableWidget(0, len(SHOWN))
        self.table.setHorizontalHeaderLabels(list(SHOWN))
        self.table.setSortingEnabled(True)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setMinimumHeight(160)
        self.table.cellClicked.connect(self._on_click)
        figure = Figure(figsize=(3.4, 1.6), dpi=100)
        figure.patch.set_alpha(0.0)
        self.canvas = FigureCanvasQTAgg(figure)
        self.canvas.setFixedHeight(160)
        self.canvas.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.canvas.setStyleSheet("background: transparent")
        self.axes = figure.subplots()
        figure.subplots_adjust(left=0.14, right=0.98, top=0.9, bottom=0.25)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.table)
        layout.addWidget(self.canvas)

    def show_table(self, measurements: Measurements, text_color: str = "#dddddd") -> None:
        """Fill the table and draw the histogram of the finite N:C ratios."""
        rows = measurements.rows()
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, name in enumerate(SHOWN):
                value = row[name]
                number = isinstance(value, (int, float)) and not isinstance(value, bool)
                item = (
                    NumberItem(float(value), _text(value))
                    if number
                    else QTableWidgetItem(str(value))
                )
                item.setData(Qt.ItemDataRole.UserRole, int(row["cell"]))
                self.table.setItem(r, c, item)
        self.table.setSortingEnabled(True)
        ratios = [v for v in measurements.columns["nc_ratio"] if math.isfinite(v)]
        self.axes.clear()
        self.axes.set_facecolor("none")
        if ratios:
            self.axes.hist(ratios, bins=min(20, max(5, len(ratios) // 2)), color="#4a90d9")
        self.axes.set_xlabel("N:C ratio", fontsize=7, color=text_color)
        self.axes.set_ylabel("cells", fontsize=7, color=text_color)
        self.axes.tick_params(labelsize=7, colors=text_color)
        self.canvas.draw_idle()

    def _on_click(self, row: int, _column: int) -> None:
        item = self.table.item(row, 0)
        if item is not None:
            self.cell_clicked.emit(int(item.data(Qt.ItemDataRole.UserRole)))
