"""Class labels as files: palette PNGs that image viewers show in the class colours,
or 16-bit TIFFs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from napari_bloodcells.core.base.classes import BLOODCELL_CLASSES, UNLABELLED
from napari_bloodcells.core.base.files import atomic_write

if TYPE_CHECKING:
    from pathlib import Path


def write_labels(labels: np.ndarray, path: Path) -> Path:
    """Write class indices as a palette PNG in the class colours, atomically.

    The pixel values stay the class indices (0, 1, 2), so the file reads back
    as labels; the palette makes it open as a picture in any viewer instead of
    looking black.
    """
    from PIL import Image

    picture = Image.fromarray(np.asarray(labels, dtype=np.uint8), mode="P")
    picture.putpalette(_palette())
    atomic_write(path, lambda tmp: picture.save(tmp, format="PNG"))
    return path


def _palette() -> list[int]:
    palette = [0] * 768
    for index, rgba in enumerate(BLOODCELL_CLASSES.colors):
        rgb = (0.0, 0.0, 0.0) if rgba[3] == 0 else rgba[:3]
        palette[3 * index : 3 * index + 3] = [round(255 * c) for c in rgb]
    palette[3 * UNLABELLED : 3 * UNLABELLED + 3] = [128, 128, 128]
    return palette
