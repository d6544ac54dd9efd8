"""How much correcting an image is expected to teach: what ranks the correction queue.

A correction changes the pixels the model got wrong. On the fields of a new
microscope these are mostly cells painted where there are none (red cells,
clumps, platelets): the eraser's work. So an image is scored by what the model
paints on it: the share of pixels painted as a cell plus the share painted as a
nucleus (a nucleus painted on a red cell is the error that matters most, as it
makes a white cell). Measured on BCCD's train fields with the model of Dataset 1
(docs/benchmarks.md, "The correction queue"), the Spearman correlation of this
score with the pixels a correction erases was 0.57 for nuclei; the model's own
doubt ranked worse, as it is sure of its mistakes there: uncertain pixels 0.01,
pixels that change when the image is mirrored -0.38, style distance -0.26.

The share of uncertain pixels (the confidence layer's measure) is reported beside
the score, as a second column for the user to sort by.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from napari_bloodcells.core.data.project import Suggestion
from napari_bloodcells.core.events import run_to_end
from napari_bloodcells.core.inference.tiled import segment

if TYPE_CHECKING:
    from napari_bloodcells.core.inference.tiled import TileSettings
    from napari_bloodcells.core.model.trained import TrainedModel

SURE = 0.9
"""A pixel is uncertain when its winning class's probability is below this."""
NUCLEUS = 2


def suggestion(
    model: TrainedModel,
    image: np.ndarray,
    name: str,
    scale: float = 1.0,
    tiles: TileSettings | None = None,
) -> Suggestion:
    """Score ``image`` (``(H, W, 3) uint8``) for the correction queue at ``scale``.

    Parameters
    ----------
    model : TrainedModel
        The model whose mistakes the corrections will teach.
    image : ndarray
        The image.
    name : str
        Names the image in the queue (its path, or a layer's name).
    scale : float
        The magnification the image is segmented at.
    tiles : TileSettings, optional
        Tiling for large images.
    """
    result = run_to_end(segment(model, image, scale=scale, tiles=tiles, confidence=True))
    labels, confidence = result.labels, result.confidence
    assert labels is not None and confidence is not None  # no stop inside: segment is drained
    painted = float(np.mean(labels > 0))
    nucleus = float(np.mean(labels == NUCLEUS))
    return Suggestion(
        name, painted + nucleus, painted, nucleus, float(np.mean(confidence < SURE)), scale
    )
