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
        labelled = tuple(int(n) for n in self.matrix.sum(1).tolist())
        return Scores(tuple(dice.tolist()), tuple(iou.tolist()), labelled)


@dataclass(frozen=True)
class Scores:
    """Per-class segmentation scores, index = class."""

    dice: tuple[float, ...]
    iou: tuple[float, ...]
    labelled: tuple[int, ...]
    """Labelled pixels of each class in the truth."""

    def mean_foreground_dice(self) -> float:
        """Mean Dice over all classes but background (class 0); the model-selection score."""
        fg = self.dice[1:] or self.dice
        return float(sum(fg) / len(fg))

    def scored_classes(self) -> tuple[int, ...]:
        """The classes :meth:`correction_score` averages.

        The foreground classes that the truth labels; background alone when it
        labels none, as corrections that only erase do (the cells the model
        painted on red cells erased, the white cell left unlabelled). A class
        the truth does not hold has a Dice of 0 or 1 whatever the model does
        elsewhere, so it would only add noise.
        """
        held = tuple(k for k in range(1, len(self.dice)) if self.labelled[k] > 0)
        return held or (0,)

    def correction_score(self) -> float:
        """Mean Dice over :meth:`scored_classes`: how well a model fits the user's corrections."""
        classes = self.scored_classes()
        return float(sum(self.dice[k] for k in classes) / len(classes))


def score_labels(preds: list[np.ndarray], targets: list[np.ndarray], num_classes: int) -> Scores:
    """Dice and IoU of pooled pixels over pairs of label images."""
    cm = ConfusionMatrix(num_classes)
    for pred, target in zip(preds, targets, strict=False):
        cm.update(pred, target)
    return cm.scores()
