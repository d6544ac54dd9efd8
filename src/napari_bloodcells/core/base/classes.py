"""The segmentation classes and how they are shown."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Colours follow the reference notebook (cytoplasm lime, nucleus blue); the
# background is transparent so corrections can be painted over the image.
CLASS_NAMES: tuple[str, ...] = ("background", "cytoplasm", "nucleus")
CLASS_COLORS: tuple[tuple[float, float, float, float], ...] = (
    (0.0, 0.0, 0.0, 0.0),
    (0.0, 1.0, 0.0, 1.0),
    (0.0, 0.0, 1.0, 1.0),
)
IGNORE_INDEX = 255
"""Mask value for pixels that carry no label (padding); never a class."""
UNLABELLED = IGNORE_INDEX
"""The label a user paints for "not labelled": the loss and the scores skip these pixels.

Partial labels use it: correct part of an image, or paint a few strokes of
background, cytoplasm and nucleus on a layer that is otherwise all 255.
"""


@dataclass(frozen=True)
class ClassInfo:
    """Names and RGBA colours of the classes a model predicts.

    Attributes
    ----------
    names : tuple of str
        Class names; the class index is the position in this tuple.
    colors : tuple of RGBA tuples
        One colour per class, components in 0..1.
    """

    names: tuple[str, ...] = CLASS_NAMES
    colors: tuple[tuple[float, float, float, float], ...] = CLASS_COLORS

    @property
    def num_classes(self) -> int:
        """Number of classes, background included."""
        return len(self.names)

    def to_dict(self) -> dict[str, Any]:
        """Plain-type representation, safe for ``torch.load(weights_only=True)``."""
        return {"names": list(self.names), "colors": [list(c) for c in self.colors]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClassInfo:
        """Inverse of :meth:`to_dict`."""
        colors = tuple(_rgba(c) for c in d["colors"])
        return cls(tuple(d["names"]), colors)


def _rgba(values: list[float]) -> tuple[float, float, float, float]:
    r, g, b, a = (float(v) for v in values)
    return (r, g, b, a)


BLOODCELL_CLASSES = ClassInfo()
