"""Live training curves: train and dev loss, and the dev Dice of each class.

The notebook's LivePlot as a Qt widget. matplotlib draws the figure with its
Agg renderer in a background thread and the widget only shows the finished
picture: a draw takes about 60 ms on a 2-core CPU without AVX-512, which on
the main thread stalled napari after every epoch (``benchmarks/gui_stall.py``).
The main thread keeps the plotted values and asks for a drawing; the thread
owns the figure, so no matplotlib object is touched from two threads. Asks
that arrive while a drawing is under way are merged into one more drawing.
"""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import QLabel, QSizePolicy

from napari_bloodcells.core.base.classes import BLOODCELL_CLASSES, ClassInfo

if TYPE_CHECKING:
    import napari
    from matplotlib.axes import Axes
    from matplotlib.lines import Line2D
    from qtpy.QtGui import QResizeEvent
    from qtpy.QtWidgets import QWidget

    from napari_bloodcells.core.events import EpochEnded

TRANSPARENT_STAND_IN = (0.62, 0.62, 0.62)
"""Plot colour for a class drawn transparent in layers (the background)."""
TRAIN_COLOR = "#1f77b4"
DEV_COLOR = "#ff7f0e"
_HEIGHT_PX = 190
_FONT_SIZE = 7


def _theme_text_color(theme: str) -> str:
    try:
        from napari.utils.theme import get_theme

        return str(get_theme(theme).text.as_hex())
    except Exception:  # an unknown or custom theme: fall back to a light grey
        return "#dddddd"


MIN_LUMINANCE_ON_DARK = 0.3
"""Curves darker than this are lightened on a dark theme (pure blue is 0.07)."""


def luminance(rgb: tuple[float, ...]) -> float:
    """Relative luminance (ITU-R BT.709 weights) of an RGB colour in 0..1."""
    return 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]


def class_color(rgba: tuple[float, ...], dark: bool = False) -> tuple[float, float, float]:
    """The class colour as RGB, with a grey stand-in for a transparent class.

    On a dark background (``dark``) a dark class colour, like the nucleus's
    pure blue, is mixed with white until it is readable; its hue is kept.
    """
    if len(rgba) > 3 and rgba[3] == 0:
        return TRANSPARENT_STAND_IN
    rgb = (float(rgba[0]), float(rgba[1]), float(rgba[2]))
    if dark and luminance(rgb) < MIN_LUMINANCE_ON_DARK:
        share = (MIN_LUMINANCE_ON_DARK - luminance(rgb)) / (1.0 - luminance(rgb))
        rgb = (
            rgb[0] + share * (1 - rgb[0]),
            rgb[1] + share * (1 - rgb[1]),
            rgb[2] + share * (1 - rgb[2]),
        )
    return rgb


def _hex_rgb(color: str) -> tuple[float, float, float]:
    from matplotlib.colors import to_rgb

    r, g, b = to_rgb(color)
    return (r, g, b)


@dataclass(frozen=True)
class _Curves:
    """What one drawing shows: copied on the main thread, drawn in the plot's thread."""

    epochs: tuple[int, ...]
    train_loss: tuple[float, ...]
    dev_loss: tuple[float, ...]
    dice: tuple[tuple[str, tuple[float, float, float], tuple[float, ...]], ...]
    text_color: str
    size: tuple[int, int]
    pixel_ratio: float


class _Figure:
    """The matplotlib figure of a :class:`LossPlot`; used by its drawing thread only."""

    def __init__(self) -> None:
        self.figure = Figure(figsize=(3.4, _HEIGHT_PX / 100), dpi=100)
        self.figure.patch.set_alpha(0.0)  # the dock's own background shows through
        self.canvas = FigureCanvasAgg(self.figure)
        self.loss_axes, self.dice_axes = self.figure.subplots(2, 1, sharex=True)
        self.figure.subplots_adjust(left=0.14, right=0.98, top=0.9, bottom=0.19, hspace=0.5)
        self.loss_axes.set_ylabel("loss", fontsize=_FONT_SIZE)
        self.dice_axes.set_ylabel("dev Dice", fontsize=_FONT_SIZE)
        self.dice_axes.set_xlabel("epoch", fontsize=_FONT_SIZE)
        for axes in (self.loss_axes, self.dice_axes):
            axes.set_facecolor("none")
            axes.tick_params(labelsize=_FONT_SIZE, length=2)
        self.dice_axes.set_ylim(0.0, 1.03)
        # Whole epochs only, and few of them: the plot is narrow (the x axis is shared).
        self.dice_axes.xaxis.get_major_locator().set_params(integer=True, nbins=6)
        style = {"marker": "o", "markersize": 3, "linewidth": 1.5}
        self.loss_lines: list[Line2D] = [
            self.loss_axes.plot([], [], color=TRAIN_COLOR, label="train", **style)[0],
            self.loss_axes.plot([], [], color=DEV_COLOR, label="dev", **style)[0],
        ]
        self.dice_lines: dict[str, Line2D] = {}
        self._style = style
        self._legend(self.loss_axes)
        self.thread_id: int | None = None

    def _legend(self, axes: Axes) -> None:
        axes.legend(
            fontsize=_FONT_SIZE,
            loc="upper left",
            bbox_to_anchor=(0.0, 1.22),
            ncols=4,
            frameon=False,
            handlelength=1.2,
            borderaxespad=0.0,
        )

    def draw(self, curves: _Curves) -> QImage:
        """Show ``curves`` and render them to an image of ``curves.size`` device pixels."""
        self.thread_id = threading.get_ident()
        names = [name for name, _, _ in curves.dice]
        if names != list(self.dice_lines):
            for line in self.dice_lines.values():
                line.remove()
            self.dice_lines = {
                name: self.dice_axes.plot([], [], color=color, label=name, **self._style)[0]
                for name, color, _ in curves.dice
            }
        for name, color, values in curves.dice:
            self.dice_lines[name].set_color(color)
            self.dice_lines[name].set_data(curves.epochs, values)
        self._legend(self.dice_axes)  # legend handles copy the colours they were made with
        train_line, dev_line = self.loss_lines
        train_line.set_data(curves.epochs, curves.train_loss)
        dev_line.set_data(curves.epochs, curves.dev_loss)
        last = max(curves.epochs[-1] if curves.epochs else 1, 2)
        self.dice_axes.set_xlim(0.8, last + 0.2)
        # matplotlib skips non-finite points (a dev loss that tiled evaluation leaves NaN).
        self.loss_axes.relim()
        self.loss_axes.autoscale_view(scalex=False)
        self._recolor(curves.text_color)
        width, height = curves.size
        self.figure.set_dpi(100 * curves.pixel_ratio)
        self.figure.set_size_inches(max(width, 1) / 100, max(height, 1) / 100, forward=False)
        self.canvas.draw()
        rgba = self.canvas.buffer_rgba()
        image = QImage(bytes(rgba), rgba.shape[1], rgba.shape[0], QImage.Format.Format_RGBA8888)
        image.setDevicePixelRatio(curves.pixel_ratio)
        return image

    def _recolor(self, color: str) -> None:
        for axes in (self.loss_axes, self.dice_axes):
            axes.yaxis.label.set_color(color)
            axes.xaxis.label.set_color(color)
            axes.tick_params(colors=color)
            for spine in axes.spines.values():
                spine.set_color(color)
            legend = axes.get_legend()
            if legend is not None:
                for text in legend.get_texts():
                    text.set_color(color)


class LossPlot(QLabel):
    """Train/dev loss (top) and per-class dev Dice (bottom) against the epoch.

    Parameters
    ----------
    text_color : str
        Colour of axes, ticks and labels, to match the napari theme.
    parent : QWidget, optional

    Attributes
    ----------
    epochs, train_loss, dev_loss : list
        The plotted values, one per finished epoch.
    dice : dict of str to list of float
        Dev Dice per class name, one value per finished epoch.
    drawn : Signal
        Emitted on the main thread each time a new picture is shown.
    """

    drawn = Signal()
    _rendered = Signal(object)

    def __init__(self, text_color: str = "#dddddd", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFixedHeight(_HEIGHT_PX)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.setMinimumWidth(160)
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._text_color = text_color
        self._figure = _Figure()
        self._executor: ThreadPoolExecutor | None = ThreadPoolExecutor(
            1, thread_name_prefix="loss-plot"
        )
        self._busy = False
        self._again = False
        self._rendered.connect(self._show)  # queued: emitted from the drawing thread
        self.destroyed.connect(self._close)
        self.epochs: list[int] = []
        self.train_loss: list[float] = []
        self.dev_loss: list[float] = []
        self.dice: dict[str, list[float]] = {}
        self._classes = BLOODCELL_CLASSES
        self.reset(BLOODCELL_CLASSES)

    @classmethod
    def for_viewer(cls, viewer: napari.viewer.Viewer) -> LossPlot:
        """A plot in the colours of ``viewer``'s theme, following later theme changes."""
        plot = cls(_theme_text_color(viewer.theme))

        def follow(event: object) -> None:
            plot.set_text_color(_theme_text_color(viewer.theme))

        viewer.events.theme.connect(follow)
        plot.destroyed.connect(lambda *_: viewer.events.theme.disconnect(follow))
        return plot

    @property
    def text_color(self) -> str:
        """The colour of axes, ticks, labels and legends."""
        return self._text_color

    @property
    def dark(self) -> bool:
        """Whether the theme is dark (light text), so dark class colours are lightened."""
        return luminance(_hex_rgb(self._text_color)) > 0.5

    @property
    def drawing_thread(self) -> int | None:
        """Identifier of the thread that drew the last picture (never the main thread)."""
        return self._figure.thread_id

    def curve_color(self, name: str) -> tuple[float, float, float]:
        """The colour of the Dice curve of class ``name`` in the current theme."""
        rgba = self._classes.colors[self._classes.names.index(name)]
        return class_color(rgba, self.dark)

    def set_text_color(self, color: str) -> None:
        """Recolour axes, ticks, labels, legends and class curves (e.g. after a theme change)."""
        self._text_color = color
        self._redraw()

    def reset(self, classes: ClassInfo) -> None:
        """Clear the curves and prepare one Dice curve per class of ``classes``."""
        self.epochs = []
        self.train_loss = []
        self.dev_loss = []
        self._classes = classes
        self.dice = {name: [] for name in classes.names}
        self._redraw()

    def add_epoch(self, event: EpochEnded) -> None:
        """Append one epoch's losses and Dice scores and redraw once."""
        self.epochs.append(event.epoch)
        self.train_loss.append(event.train_loss)
        self.dev_loss.append(event.dev_loss)
        for name, value in zip(self.dice, event.dice, strict=False):
            self.dice[name].append(value)
        self._redraw()

    def resizeEvent(self, event: QResizeEvent | None) -> None:
        super().resizeEvent(event)
        self._redraw()

    def _curves(self) -> _Curves:
        return _Curves(
            epochs=tuple(self.epochs),
            train_loss=tuple(self.train_loss),
            dev_loss=tuple(self.dev_loss),
            dice=tuple(
                (name, self.curve_color(name), tuple(values)) for name, values in self.dice.items()
            ),
            text_color=self._text_color,
            size=(self.width(), self.height()),
            pixel_ratio=float(self.devicePixelRatioF()),
        )

    def _redraw(self) -> None:
        if self._executor is None:
            return
        if self._busy:
            self._again = True
            return
        self._busy = True
        self._executor.submit(self._draw, self._curves())

    def _draw(self, curves: _Curves) -> None:
        # In the drawing thread. A widget closed meanwhile can no longer be told.
        try:
            image: QImage | Exception = self._figure.draw(curves)
        except Exception as exc:  # shown as text: a plot must never stop a run
            image = exc
        with contextlib.suppress(RuntimeError):
            self._rendered.emit(image)

    def _show(self, image: QImage | Exception) -> None:
        self._busy = False
        if isinstance(image, Exception):
            self.setText(f"The plot could not be drawn ({type(image).__name__}).")
        else:
            self.setPixmap(QPixmap.fromImage(image))
            self.drawn.emit()
        if self._again:
            self._again = False
            self._redraw()

    def _close(self, *_: object) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
