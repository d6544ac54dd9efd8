"""Fitting the size model at the end of training, on training images zoomed at random."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from napari_bloodcells.core.inference.magnification import styles, zoom
from napari_bloodcells.core.model.preprocessing import image_to_tensor
from napari_bloodcells.core.model.size_model import SizeModel
from napari_bloodcells.core.training.augment import colour_jitter

if TYPE_CHECKING:
    from napari_bloodcells.core.data.dataset import SegmentationData
    from napari_bloodcells.core.model.trained import TrainedModel


ZOOM_RANGE = (1 / 3, 3.0)
"""Zooms the size model is fitted on, so factors from 1/3 to 3 are estimated."""


_ZOOMS_PER_IMAGE = 3


_MAX_FIT_IMAGES = 96


_RIDGE = 10.0


def fit_size_model(
    model: TrainedModel, data: SegmentationData, generator: torch.Generator
) -> SizeModel:
    """Fit the regression from style to ``log(resize factor)`` on zoomed training images.

    Each image (at most 96 of them) is zoomed by 3 random factors in
    :data:`ZOOM_RANGE` and, every other time, colour-jittered, so the fit
    learns the magnification and not the stain. The target of an image zoomed
    by ``z`` is the factor ``1 / z`` that undoes it.
    """
    count = min(len(data), _MAX_FIT_IMAGES)
    chosen = torch.randperm(len(data), generator=generator)[:count].tolist()
    low, high = math.log(ZOOM_RANGE[0]), math.log(ZOOM_RANGE[1])
    zoomed: list[np.ndarray] = []
    targets: list[float] = []
    for n, i in enumerate(chosen):
        for k in range(_ZOOMS_PER_IMAGE):
            log_zoom = low + (high - low) * float(torch.rand(1, generator=generator))
            image = zoom(data.images[i], math.exp(log_zoom))
            if (n + k) % 2:
                jittered = colour_jitter(image_to_tensor(image)[None].float() / 255, generator)
                image = (jittered[0].permute(1, 2, 0) * 255).round().byte().numpy()
            zoomed.append(image)
            targets.append(-log_zoom)
    x, y = styles(model, zoomed), np.asarray(targets)
    mean, std = x.mean(0), x.std(0) + 1e-6
    a = np.c_[(x - mean) / std, np.ones(len(x))]
    weights = np.linalg.solve(a.T @ a + _RIDGE * np.eye(a.shape[1]), a.T @ y)
    return SizeModel(tuple(mean.tolist()), tuple(std.tolist()), tuple(weights.tolist()))
