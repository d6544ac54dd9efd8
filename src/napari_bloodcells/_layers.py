"""Conversions between core arrays and napari layer keyword arguments.

Kept free of Qt so sample data and tests can use it; napari itself is
imported lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from napari_bloodcells.core.base.cell_types import OTHER, TYPE_COLOURS
from napari_bloodcells.core.base.classes import BLOODCELL_CLASSES, UNLABELLED, ClassInfo
from napari_bloodcells.core.data.bloodcell_dataset import CITATION

if TYPE_CHECKING:
    from napari.utils.colormaps import DirectLabelColormap

__all__ = ["CITATION", "class_colormap", "labels_kwargs", "type_colormap"]


def class_colormap(classes: ClassInfo = BLOODCELL_CLASSES) -> DirectLabelColormap:
    """A fixed colour per class; background and unknown values are transparent."""
    from napari.utils.colormaps import DirectLabelColormap

    colors: dict[int | None, tuple] = {i: c for i, c in enumerate(classes.colors)}
    colors[UNLABELLED] = (0.5, 0.5, 0.5, 0.35)  # "not labelled": seen, but faint
    colors[None] = (0.0, 0.0, 0.0, 0.0)
    return DirectLabelColormap(color_dict=colors)


def type_colormap(cells: list[int], types: list[str]) -> DirectLabelColormap:
    """Each cell in the colour of its type (``TYPE_COLOURS``); other values transparent."""
    from napari.utils.colormaps import DirectLabelColormap

    colors: dict[int | None, tuple] = {
        int(cell): TYPE_COLOURS.get(kind, TYPE_COLOURS[OTHER])
        for cell, kind in zip(cells, types, strict=True)
    }
    colors[0] = (0.0, 0.0, 0.0, 0.0)
    colors[None] = (0.0, 0.0, 0.0, 0.0)
    return DirectLabelColormap(color_dict=colors)


CLASSES_KEY = "napari_bloodcells_classes"
"""Layer metadata key holding the class names and colours of a class-label layer."""


def labels_kwargs(
    name: str,
    classes: ClassInfo = BLOODCELL_CLASSES,
    metadata: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Keyword arguments for a class-index Labels layer.

    The ``features`` table names each class, so napari's status bar shows
    e.g. "nucleus" under the cursor. ``metadata`` is added to the class
    record, never replaces it.
    """
    return {
        "name": name,
        "colormap": class_colormap(classes),
        "features": {"index": np.arange(classes.num_classes), "class": list(classes.names)},
        "opacity": 0.5,
        "metadata": {**(metadata or {}), CLASSES_KEY: classes.to_dict()},
        **extra,
    }
