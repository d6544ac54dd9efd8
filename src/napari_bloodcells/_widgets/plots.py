"""Live training curves: train and dev loss, and the dev Dice of each class.

The notebook's LivePlot as a Qt widget, drawn with matplotlib's Qt backend:
one point per epoch, updated on the main thread when the worker reports an
epoch. The figure is laid out once (no constrained layout) and only the line
data change per epoch, so a redraw costs about 20 ms on a 2-core CPU; see
``benchmarks/gui_stall.py`` for the stall it causes while training runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtWidgets import QSizePolicy

from napari_bloodcells.core.classes import BLOODCELL_CLASSES, ClassInfo

if TYPE_CHECKING:
    import napari
    from matplotlib.axes import Axes
    from matplotlib.lines import Line2D
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


class LossPlot(FigureCanvasQTAgg):
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
    loss_axes, dice_axes : matplotlib.axes.Axes
    """

    def __init__(self, text_color: str = "#dddddd", parent: QWidget | None = None) -> None:
        figure = Figure(figsize=(3.4, _HEIGHT_PX / 100), dpi=100)
        figure.patch.set_alpha(0.0)  # the dock's own background shows through
        super().__init__(figure)
        if parent is not None:
            self.setParent(parent)
        self.setStyleSheet("background: transparent")
        self.setFixedHeight(_HEIGHT_PX)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.setMinimumWidth(160)
        self._text_color = text_color
        self.loss_axes, self.dice_axes = figure.subplots(2, 1, sharex=True)
        figure.subplots_adjust(left=0.14, right=0.98, top=0.9, bottom=0.19, hspace=0.5)
        self.loss_axes.set_ylabel("loss", fontsize=_FONT_SIZE)
        self.dice_axes.set_ylabel("dev Dice", fontsize=_FONT_SIZE)
        self.dice_axes.set_xlabel("epoch", fontsize=_FONT_SIZE)
        for axes in (self.loss_axes, self.dice_axes):
            axes.set_facecolor("none")
            axes.tick_params(labelsize=_FONT_SIZE, length=2)
        self.dice_axes.set_ylim(0.0, 1.03)
        # Whole epochs only, and few of them: the plot is narrow (the x axis is shared).
        self.dice_axes.xaxis.get_major_locator().set_params(integer=True, nbins=6)
        self.epochs: list[int] = []
        self.train_loss: list[float] = []
        self.dev_loss: list[float] = []
        self.dice: dict[str, list[float]] = {}
        self._loss_lines: list[Line2D] = []
        self._dice_lines: dict[str, Line2D] = {}
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

    def set_text_color(self, color: str) -> None:
        """Recolour axes, ticks, labels, legends and class curves (e.g. after a theme change)."""
        self._text_color = color
        for name, rgba in zip(self._classes.names, self._classes.colors, strict=True):
            if name in self._dice_lines:
                self._dice_lines[name].set_color(class_color(rgba, self.dark))
        if self._dice_lines:
            self._legend(self.dice_axes)  # legend handles copy the colours they were made with
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
        self.draw_idle()

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

    def reset(self, classes: ClassInfo) -> None:
        """Clear the curves and prepare one Dice curve per class of ``classes``."""
        self.epochs = []
        self.train_loss = []
        self.dev_loss = []
        self._classes = classes
        self.dice = {name: [] for name in classes.names}
        for line in [*self._loss_lines, *self._dice_lines.values()]:
            line.remove()
        style = {"marker": "o", "markersize": 3, "linewidth": 1.5}
        self._loss_lines = [
            self.loss_axes.plot([], [], color=TRAIN_COLOR, label="train", **style)[0],
            self.loss_axes.plot([], [], color=DEV_COLOR, label="dev", **style)[0],
        ]
        self._dice_lines = {
            name: self.dice_axes.plot(
                [], [], color=class_color(rgba, self.dark), label=name, **style
            )[0]
            for name, rgba in zip(classes.names, classes.colors, strict=True)
        }
        self._legend(self.loss_axes)
        self._legend(self.dice_axes)
        self.set_text_color(self._text_color)
        self._redraw()

    def add_epoch(self, event: EpochEnded) -> None:
        """Append one epoch's losses and Dice scores and redraw once."""
        self.epochs.append(event.epoch)
        self.train_loss.append(event.train_loss)
        self.dev_loss.append(event.dev_loss)
        for name, value in zip(self.dice, event.dice, strict=False):
            self.dice[name].append(value)
        self._redraw()

    def _redraw(self) -> None:
        train_line, dev_line = self._loss_lines
        train_line.set_data(self.epochs, self.train_loss)
        dev_line.set_data(self.epochs, self.dev_loss)
        for name, line in self._dice_lines.items():
            line.set_data(self.epochs, self.dice[name])
        last = max(self.epochs[-1] if self.epochs else 1, 2)
        self.dice_axes.set_xlim(0.8, last + 0.2)
        # matplotlib skips non-finite points (a dev loss that tiled evaluation leaves NaN).
        self.loss_axes.relim()
        self.loss_axes.autoscale_view(scalex=False)
        self.draw_idle()
