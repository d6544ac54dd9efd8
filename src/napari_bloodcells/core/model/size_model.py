"""The size model's value type: a ridge regression from an image's style to its
magnification (fitted in :mod:`~napari_bloodcells.core.training.size_fit`, used in
:mod:`~napari_bloodcells.core.inference.magnification`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SizeModel:
    """A ridge regression from an image's style vector to ``log(resize factor)``.

    Attributes
    ----------
    mean, std : tuple of float
        Standardisation of the style vector.
    weights : tuple of float
        One weight per style component, then the intercept.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    weights: tuple[float, ...]

    def predict(self, style: np.ndarray) -> float:
        """The resize factor for an image of this style."""
        z = self._standardised(style)
        w = np.asarray(self.weights)
        return math.exp(float(z @ w[:-1] + w[-1]))

    def distance(self, style: np.ndarray) -> float:
        """How far a style lies from the images the size model was fitted on.

        The root mean square of the standardised style components: the fit
        images themselves (training images at random zooms and colours) average
        1 by construction, whatever the network, so one threshold
        (:data:`UNFAMILIAR_DISTANCE`) serves every model.
        """
        z = self._standardised(style)
        return float(np.sqrt(np.mean(z * z)))

    def _standardised(self, style: np.ndarray) -> np.ndarray:
        z: np.ndarray = (np.asarray(style, dtype=np.float64) - np.asarray(self.mean)) / np.asarray(
            self.std
        )
        return z

    def to_dict(self) -> dict[str, Any]:
        """Plain-type representation for checkpoints."""
        return {"mean": list(self.mean), "std": list(self.std), "weights": list(self.weights)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SizeModel:
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(d["mean"]), tuple(d["std"]), tuple(d["weights"]))
