"""Class-area calibration: per-class logit offsets that make predicted areas match the labels.

A network trained with cross-entropy and soft Dice can place a class boundary a
pixel or two away from where the annotator drew it, consistently: the blood-cell
model paints cytoplasm about 4 % beyond the drawn cell edge and nucleus 1.5 %
short of it. Dice barely notices; a nucleus:cytoplasm ratio is off by 6 to 8 %.
At the end of training :func:`fit_class_offsets` finds, on the dev images
(held out from training, like a classifier's validation set for temperature
scaling), the offsets to add to the logits so that each class covers as many pixels as
its labels do, and :func:`add_to_head` folds them into the output layer's bias:
the network itself then predicts calibrated probabilities, in the plugin, in
ONNX and in exported packages alike. This is the classic prior correction of a
classifier's decision rule, fitted like the size model of :mod:`.scale`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from napari_bloodcells.core.base.classes import IGNORE_INDEX
from napari_bloodcells.core.inference.tiled import predict_probabilities

if TYPE_CHECKING:
    from napari_bloodcells.core.data.dataset import SegmentationData
    from napari_bloodcells.core.model.trained import TrainedModel

_MAX_IMAGES = 64
_CROP = 512
_MAX_PIXELS = 2**17
_LIMIT = 2.0
_ROUNDS = 4
_BISECTIONS = 12


def fit_class_offsets(
    model: TrainedModel, data: SegmentationData, generator: torch.Generator
) -> tuple[float, ...]:
    """Logit offsets (background's is 0) that match predicted to labelled class areas.

    ``data`` should be held out from training: on its own training images a
    model's areas are closer to the labels than on new ones. Up to
    :data:`_MAX_IMAGES` pairs, large ones cropped at random to :data:`_CROP`
    pixels, are predicted once; the offsets, within ``[-2, 2]``,
    are then set so that the arg-max areas of (a sample of) the pooled pixels
    match the labelled ones. All zeros when a class has no labelled pixel: there is
    nothing to match.
    """
    k = model.spec.num_classes
    chosen = torch.randperm(len(data), generator=generator)[:_MAX_IMAGES].tolist()
    logs, truths = [], []
    for i in chosen:
        image, mask = _crop(data.images[i], data.masks[i], generator)
        probs = predict_probabilities(model, image)
        labelled = mask != IGNORE_INDEX
        logs.append(np.log(np.clip(probs[:, labelled], 1e-6, 1.0)))
        truths.append(mask[labelled].astype(np.int64))
    scores = torch.from_numpy(np.concatenate(logs, axis=1))
    truth = torch.from_numpy(np.concatenate(truths))
    if truth.numel() > _MAX_PIXELS:
        keep = torch.randperm(truth.numel(), generator=generator)[:_MAX_PIXELS]
        scores, truth = scores[:, keep], truth[keep]
    target = torch.bincount(truth, minlength=k)[:k].double()
    if bool((target[1:] == 0).any()):
        return (0.0,) * k
    # A class's area grows with its own offset: bisect each in turn, a few rounds, since
    # moving one class's boundary moves its neighbours' areas too.
    offsets = torch.zeros(k, dtype=scores.dtype)
    for _ in range(_ROUNDS):
        for c in range(1, k):
            offsets[c] = _matching_offset(scores, offsets, c, int(target[c]))
    return tuple(float(v) for v in offsets)


def _matching_offset(scores: torch.Tensor, offsets: torch.Tensor, c: int, area: int) -> float:
    """The offset of class ``c``, others fixed, at which ``c`` wins ``area`` pixels."""
    low, high = -_LIMIT, _LIMIT
    trial = offsets.clone()
    for _ in range(_BISECTIONS):
        trial[c] = (low + high) / 2
        won = int((scores + trial[:, None]).max(0).indices.eq(c).sum())  # argmax is slower
        low, high = (float(trial[c]), high) if won < area else (low, float(trial[c]))
    return (low + high) / 2


def _crop(
    image: np.ndarray, mask: np.ndarray, generator: torch.Generator
) -> tuple[np.ndarray, np.ndarray]:
    height, width = mask.shape
    if height <= _CROP and width <= _CROP:
        return image, mask
    y = int(torch.randint(0, max(1, height - _CROP + 1), (1,), generator=generator))
    x = int(torch.randint(0, max(1, width - _CROP + 1), (1,), generator=generator))
    return image[y : y + _CROP, x : x + _CROP], mask[y : y + _CROP, x : x + _CROP]


def output_layer(network: torch.nn.Module) -> torch.nn.Conv2d | None:
    """The convolution that produces the class logits, if the network has a known one."""
    head = getattr(network, "segmentation_head", None) or getattr(network, "head", None)
    if isinstance(head, torch.nn.Conv2d):
        return head
    if isinstance(head, torch.nn.Module):
        for module in head.modules():
            if isinstance(module, torch.nn.Conv2d):
                return module
    return None


def add_to_head(network: torch.nn.Module, offsets: tuple[float, ...]) -> bool:
    """Add ``offsets`` to the output layer's bias; False (and no change) if there is none."""
    layer = output_layer(network)
    if layer is None or layer.bias is None or layer.bias.numel() != len(offsets):
        return False
    with torch.no_grad():
        layer.bias += torch.tensor(offsets, dtype=layer.bias.dtype, device=layer.bias.device)
    return True
