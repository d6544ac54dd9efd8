"""The preview grid: input, ground truth and prediction for fixed dev images.

Like the notebook's prediction grid, refreshed every epoch. Masks are drawn
over the image in the class colours at the Labels layer's opacity, with the
background transparent, so the preview looks like the viewer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import QGridLayout, QLabel, QWidget

from napari_bloodcells.core.base.classes import BLOODCELL_CLASSES, ClassInfo

if TYPE_CHECKING:
    from collections.abc import Sequence

    from napari_bloodcells.core.events import PreviewRow

COLUMNS = ("Input", "Ground truth", "Prediction")
THUMBNAIL = 64
"""Displayed size of each tile, in screen pixels."""
RESERVED_ROWS = 3
"""Rows laid out from the start (the default preview size), so that the first
epoch's preview does not change the dock's layout: a relayout makes napari
re-render its canvas on the main thread."""
_MAX_SIDE = 256
"""Images are subsampled to about this size before colouring; previews are small."""
OPACITY = 0.5
"""Same as the Labels layers the widgets create."""


def overlay(
    image: np.ndarray, mask: np.ndarray, classes: ClassInfo, opacity: float = OPACITY
) -> np.ndarray:
    """Blend class colours over an RGB image; transparent classes and unknown values show through.

    Parameters
    ----------
    image : ndarray
        ``(H, W, 3) uint8``.
    mask : ndarray
        ``(H, W)`` class indices; values outside the classes (padding) are left clear.
    classes : ClassInfo
        Colours, RGBA in 0..1.

    Returns
    -------
    ndarray
        ``(H, W, 3) uint8``.
    """
    lut = np.zeros((256, 4), dtype=np.float32)
    lut[: classes.num_classes] = classes.colors
    rgba = lut[np.clip(mask, 0, 255).astype(np.uint8)]
    alpha = rgba[..., 3:] * opacity
    blended = image.astype(np.float32) * (1 - alpha) + rgba[..., :3] * 255 * alpha
    return blended.round().astype(np.uint8)


def _subsample(array: np.ndarray) -> np.ndarray:
    step = max(1, -(-max(array.shape[:2]) // _MAX_SIDE))
    return array[::step, ::step]


def _pixmap(rgb: np.ndarray) -> QPixmap:
    rgb = np.ascontiguousarray(rgb)
    height, width = rgb.shape[:2]
    qimage = QImage(rgb.tobytes(), width, height, 3 * width, QImage.Format.Format_RGB888)
    # QImage borrows rgb's buffer; copy() detaches it before rgb goes away.
    pixmap = QPixmap.fromImage(qimage.copy())
    return pixmap.scaled(
        THUMBNAIL,
        THUMBNAIL,
        Qt.AspectRatioMode.KeepAspectRatio,
        Qt.TransformationMode.FastTransformation,
    )


class PreviewGrid(QWidget):
    """Rows of input / ground truth / prediction thumbnails.

    Attributes
    ----------
    rows : tuple of PreviewRow
        The rows shown now.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._grid = QGridLayout(self)
        self._grid.setContentsMargins(0, 0, 0, 0)
        self._grid.setSpacing(2)
        for col, title in enumerate(COLUMNS):
            header = QLabel(title)
            header.setAlignment(Qt.AlignmentFlag.AlignCenter)
            self._grid.addWidget(header, 0, col)
        self._tiles: list[list[QLabel]] = []
        self.rows: tuple[PreviewRow, ...] = ()
        self.classes = BLOODCELL_CLASSES
        self._add_rows(RESERVED_ROWS)

    def set_classes(self, classes: ClassInfo) -> None:
        """Colours used from the next update on."""
        self.classes = classes

    def _add_rows(self, count: int) -> None:
        while len(self._tiles) < count:
            r = len(self._tiles) + 1
            tiles = [QLabel() for _ in COLUMNS]
            for col, tile in enumerate(tiles):
                # A fixed size: new pictures never change the layout.
                tile.setFixedSize(THUMBNAIL, THUMBNAIL)
                tile.setAlignment(Qt.AlignmentFlag.AlignCenter)
                self._grid.addWidget(tile, r, col)
            self._tiles.append(tiles)

    def set_rows(self, rows: Sequence[PreviewRow]) -> None:
        """Show ``rows``, reusing the thumbnail labels of the previous epoch."""
        self.rows = tuple(rows)
        self._add_rows(len(self.rows))
        for r, tiles in enumerate(self._tiles):
            if r >= len(self.rows):
                for tile in tiles:
                    tile.clear()
                continue
            row = self.rows[r]
            image = _subsample(row.image)
            tiles[0].setPixmap(_pixmap(image))
            tiles[1].setPixmap(_pixmap(overlay(image, _subsample(row.truth), self.classes)))
            tiles[2].setPixmap(_pixmap(overlay(image, _subsample(row.prediction), self.classes)))

    def clear(self) -> None:
        """Empty every row."""
        self.set_rows(())
