"""The training objective: cross-entropy, soft Dice, and a per-image class-area term.

Cross-entropy and Dice score the pixels of a whole batch together. A
nucleus:cytoplasm ratio is a quotient of two areas in one cell, so a boundary
drawn a pixel outside the annotator's around one cell costs them little and
the ratio several percent. The area term (``"ce+dice+area"``) asks each
image's predicted area of each foreground class, the sum of its probabilities,
to match the labelled area, relative to that area: a size constraint in the
sense of Kervadec et al., "Constrained-CNN losses for weakly supervised
segmentation" (Medical Image Analysis, 2019), here with full labels.

It is an option, not the default: on Dataset 1 it lowered the N:C error for one
training seed and not for another, and cost 0.002-0.005 dev Dice
(docs/benchmarks.md, "Per-cell measurements").
"""

from __future__ import annotations

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from napari_bloodcells.core.base.classes import IGNORE_INDEX

LOSSES = ("ce", "ce+dice", "ce+dice+area")
"""The objectives :attr:`~napari_bloodcells.core.training.config.TrainConfig.loss` may name."""

AREA_WEIGHT = 0.5
"""Weight of the area term beside cross-entropy and Dice: 1.0 cost about 0.005 dev Dice,
0.5 about 0.002-0.004 (docs/benchmarks.md, "Per-cell measurements")."""

AREA_FLOOR = 100.0
"""Pixels added to each labelled area before dividing: a class absent from a patch,
or an edge fragment of a few pixels, must not outweigh the whole cells."""


class Objective:
    """The loss named by ``kind`` (one of :data:`LOSSES`); unlabelled pixels are ignored.

    Parameters
    ----------
    kind : str
        ``"ce"``, ``"ce+dice"`` or ``"ce+dice+area"``.
    """

    def __init__(self, kind: str) -> None:
        if kind not in LOSSES:
            raise ValueError(f"unknown loss {kind!r}; expected one of {LOSSES}")
        self.dice = (
            smp.losses.DiceLoss("multiclass", ignore_index=IGNORE_INDEX) if kind != "ce" else None
        )
        self.area = kind == "ce+dice+area"

    def __call__(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """The loss of ``logits`` (N, K, H, W) against class ``masks`` (N, H, W, int64)."""
        loss = F.cross_entropy(logits, masks, ignore_index=IGNORE_INDEX)
        if self.dice is not None:
            loss = loss + self.dice(logits, masks)
        if self.area:
            loss = loss + AREA_WEIGHT * area_error(logits, masks)
        return loss


def area_error(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Mean relative error of each image's soft foreground-class areas.

    For every image and every class but the background (0), the absolute
    difference between the summed probabilities and the labelled pixel count,
    divided by that count plus :data:`AREA_FLOOR`. Unlabelled pixels
    (:data:`~napari_bloodcells.core.base.classes.IGNORE_INDEX`) count for neither.

    Parameters
    ----------
    logits : torch.Tensor
        (N, K, H, W) class scores.
    masks : torch.Tensor
        (N, H, W) class indices.

    Returns
    -------
    torch.Tensor
        A scalar, 0 when every soft area equals its label's.
    """
    k = logits.shape[1]
    labelled = masks != IGNORE_INDEX
    probs = logits.float().softmax(1) * labelled.unsqueeze(1)
    predicted = probs[:, 1:].sum((2, 3))
    classes = torch.arange(1, k, device=masks.device).view(1, -1, 1, 1)
    truth = (masks.unsqueeze(1) == classes).sum((2, 3)).to(predicted.dtype)
    return ((predicted - truth).abs() / (truth + AREA_FLOOR)).mean()
