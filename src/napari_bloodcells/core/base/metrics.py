"""Per-class Dice and IoU over pooled pixels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from napari_bloodcells.core.base.classes import IGNORE_INDEX


def _as_tensor(values: torch.Tensor | np.ndarray) -> torch.Tensor:
    # Arrays read with PIL are read-only; torch warns about sharing them, so copy.
    return values if isinstance(values, torch.Tensor) else torch.from_numpy(np.array(values))


class ConfusionMatrix:
    """Accumulates a ``K x K`` pixel confusion matrix (rows: truth, columns: prediction).

    Parameters
    ----------
    num_classes : int
        Number of classes ``K``.
    """

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> None:
        """Add a batch of predicted and true class indices; :data:`IGNORE_INDEX` is skipped."""
        pred, target = _as_tensor(pred).flatten(), _as_tensor(target).flatten()
        keep = target != IGNORE_INDEX
        k = self.num_classes
        index = target[keep].long().cpu() * k + pred[keep].long().cpu()
        self.matrix += torch.bincount(index, minlength=k * k).reshape(k, k)

    def scores(self) -> Scores:
        """Dice and IoU for each class."""
        m = self.matrix.double()
        tp = m.diag()
        fp = m.sum(0) - tp
        fn = m.sum(1) - tp
        dice_den, iou_den = 2 * tp + fp + fn, tp + fp + fn
        # A class absent from both truth and prediction was segmented perfectly.
        dice = torch.where(dice_den > 0, 2 * tp / dice_den.clamp(min=1), torch.ones_like(tp))
        iou = torch.where(iou_den > 0, tp / iou_den.clamp(min=1), torch.ones_like(tp))
        return Scores(tuple(dice.tolist()), tuple(iou.tolist()))


@dataclass(frozen=True)
class Scores:
    """Per-class segmentation scores, index = class."""

    dice: tuple[float, ...]
    iou: tuple[float, ...]

    def mean_foreground_dice(self) -> float:
        """Mean Dice over all classes but background (class 0); the model-selection score."""
        fg = self.dice[1:] or self.dice
        return float(sum(fg) / len(fg))


def score_labels(preds: list[np.ndarray], targets: list[np.ndarray], num_classes: int) -> Scores:
    """Dice and IoU of pooled pixels over pairs of label images."""
    cm = ConfusionMatrix(num_classes)
    for pred, target in zip(preds, targets, strict=False):
        cm.update(pred, target)
    return cm.scores()
