"""Live training curves: train and dev loss, and the dev Dice of each class.

The notebook's LivePlot, as a Qt widget: one point per epoch, updated on the
main thread when the worker reports an epoch. The curves are drawn with a
few QPainter calls rather than a plotting library because every millisecond
of Python on the main thread competes with the training thread for the GIL:
a matplotlib redraw took 200-300 ms and a pyqtgraph one 40-80 ms on a 2-core
CPU, long enough to freeze napari once per epoch; this one takes a few
(see benchmarks/gui_stall.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QFont, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QVBoxLayout, QWidget

from napari_bloodcells.core.classes import BLOODCELL_CLASSES, ClassInfo

if TYPE_CHECKING:
    from qtpy.QtGui import QPaintEvent

    from napari_bloodcells.core.events import EpochEnded

_TRANSPARENT_STAND_IN = QColor(158, 158, 158)
"""Plot colour for a class drawn transparent in layers (the background)."""
_TRAIN_COLOR = QColor(31, 119, 180)
_DEV_COLOR = QColor(255, 127, 14)
_PANEL_HEIGHT = 130
_MARGIN = (44, 16, 8, 22)  # left, top, right, bottom, in pixels; legend in the top one


def class_color(rgba: tuple[float, ...]) -> QColor:
    """The class colour, with a grey stand-in for a transparent class."""
    if len(rgba) > 3 and rgba[3] == 0:
        return QColor(_TRANSPARENT_STAND_IN)
    return QColor.fromRgbF(*(float(c) for c in rgba[:3]))


@dataclass
class Series:
    """One curve: a name for the legend, a colour and one value per epoch."""

    name: str
    color: QColor
    values: list[float] = field(default_factory=list)


def _nice_range(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return 0.0, 1.0
    low, high = min(finite), max(finite)
    if high - low < 1e-9:
        return low - 0.5, high + 0.5
    pad = 0.05 * (high - low)
    return low - pad, high + pad


class CurvePanel(QWidget):
    """A small line chart: several series against the epoch, with a legend.

    Parameters
    ----------
    ylabel : str
        Shown at the top left.
    y_range : tuple of float, optional
        Fixed vertical range; the data's range when omitted.
    text_color : str
        Colour of the frame, ticks and labels.
    """

    def __init__(
        self,
        ylabel: str,
        y_range: tuple[float, float] | None = None,
        text_color: str = "#dddddd",
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.ylabel = ylabel
        self.y_range = y_range
        self.series: list[Series] = []
        self.epochs: list[int] = []
        self._text = QColor(text_color)
        self.setFixedHeight(_PANEL_HEIGHT)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.setMinimumWidth(120)

    def set_data(self, epochs: list[int], series: list[Series]) -> None:
        """Replace the curves and schedule one repaint."""
        self.epochs = list(epochs)
        self.series = series
        self.update()

    def _frame(self) -> QRectF:
        left, top, right, bottom = _MARGIN
        return QRectF(left, top, self.width() - left - right, self.height() - top - bottom)

    def paintEvent(self, event: QPaintEvent) -> None:
        """Draw frame, ticks, curves and legend."""
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        font = QFont(painter.font())
        font.setPointSizeF(7.5)
        painter.setFont(font)
        frame = self._frame()
        painter.setPen(QPen(self._text, 1))
        painter.drawRect(frame)
        y_low, y_high = self.y_range or _nice_range([v for s in self.series for v in s.values])
        last = max(self.epochs[-1] if self.epochs else 1, 2)
        x_low, x_high = 0.8, last + 0.2

        def point(epoch: float, value: float) -> QPointF:
            x = frame.left() + (epoch - x_low) / (x_high - x_low) * frame.width()
            y = frame.bottom() - (value - y_low) / (y_high - y_low) * frame.height()
            return QPointF(x, y)

        align_right = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
        for value in (y_low, (y_low + y_high) / 2, y_high):
            y = point(x_low, value).y()
            painter.drawText(QRectF(0, y - 7, frame.left() - 4, 14), align_right, f"{value:.2g}")
        for epoch in sorted({1, last}):
            x = point(epoch, y_low).x()
            painter.drawText(
                QRectF(x - 20, frame.bottom() + 2, 40, 14), Qt.AlignmentFlag.AlignCenter, str(epoch)
            )
        painter.drawText(
            QRectF(frame.left(), frame.bottom() + 2, frame.width(), 14),
            Qt.AlignmentFlag.AlignCenter,
            "epoch",
        )
        painter.drawText(
            QRectF(0, 0, frame.left() + 80, 14), Qt.AlignmentFlag.AlignLeft, self.ylabel
        )
        painter.setClipRect(frame.adjusted(-3, -3, 3, 3))
        for series in self.series:
            pen = QPen(series.color, 2)
            painter.setPen(pen)
            painter.setBrush(series.color)
            points = [
                point(epoch, value)
                for epoch, value in zip(self.epochs, series.values, strict=False)
                if math.isfinite(value)
            ]
            if len(points) > 1:
                painter.drawPolyline(QPolygonF(points))
            for p in points[-50:]:  # markers only where they stay readable
                painter.drawEllipse(p, 2.5, 2.5)
        painter.setClipping(False)
        # Legend: the series names in their colours, right-aligned above the frame.
        metrics = painter.fontMetrics()
        x = frame.right()
        for series in reversed(self.series):
            width = metrics.horizontalAdvance(series.name)
            painter.setPen(QPen(series.color, 1))
            painter.drawText(
                QRectF(x - width, 0, width, 14), Qt.AlignmentFlag.AlignRight, series.name
            )
            x -= width + 10
        painter.end()


class LossPlot(QWidget):
    """Train/dev loss (top) and per-class dev Dice (bottom) against the epoch.

    Parameters
    ----------
    text_color : str
        Colour of frames and labels, to match the napari theme.
    parent : QWidget, optional

    Attributes
    ----------
    epochs, train_loss, dev_loss : list
        The plotted values, one per finished epoch.
    dice : dict of str to list of float
        Dev Dice per class name, one value per finished epoch.
    loss_panel, dice_panel : CurvePanel
    """

    def __init__(self, text_color: str = "#dddddd", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.loss_panel = CurvePanel("loss", text_color=text_color)
        self.dice_panel = CurvePanel("dev Dice", y_range=(0.0, 1.0), text_color=text_color)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.loss_panel)
        layout.addWidget(self.dice_panel)
        self.epochs: list[int] = []
        self.train_loss: list[float] = []
        self.dev_loss: list[float] = []
        self.dice: dict[str, list[float]] = {}
        self._colors: dict[str, QColor] = {}
        self.reset(BLOODCELL_CLASSES)

    def reset(self, classes: ClassInfo) -> None:
        """Clear the curves and prepare one Dice curve per class of ``classes``."""
        self.epochs = []
        self.train_loss = []
        self.dev_loss = []
        self.dice = {name: [] for name in classes.names}
        self._colors = {
            name: class_color(rgba)
            for name, rgba in zip(classes.names, classes.colors, strict=True)
        }
        self._redraw()

    def add_epoch(self, event: EpochEnded) -> None:
        """Append one epoch's losses and Dice scores and repaint once."""
        self.epochs.append(event.epoch)
        self.train_loss.append(event.train_loss)
        self.dev_loss.append(event.dev_loss)
        for name, value in zip(self.dice, event.dice, strict=False):
            self.dice[name].append(value)
        self._redraw()

    def _redraw(self) -> None:
        self.loss_panel.set_data(
            self.epochs,
            [
                Series("train", _TRAIN_COLOR, self.train_loss),
                Series("dev", _DEV_COLOR, self.dev_loss),
            ],
        )
        self.dice_panel.set_data(
            self.epochs,
            [Series(name, self._colors[name], values) for name, values in self.dice.items()],
        )
