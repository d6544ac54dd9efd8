"""Typed progress messages yielded by the training generator.

The widget, the CLI and the tests consume the same stream; every message is a
small frozen dataclass that is safe to hand from a worker thread to the GUI
thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np

    from napari_bloodcells.core.checkpoint import TrainedModel


@dataclass(frozen=True)
class TrainingStarted:
    """Sent once, before the first batch."""

    device: str
    precision: str
    n_train: int
    n_dev: int
    epochs: int
    batches_per_epoch: int


@dataclass(frozen=True)
class BatchEnded:
    """Sent after every optimiser step. ``epoch`` and ``batch`` count from 1."""

    epoch: int
    batch: int
    batches_per_epoch: int
    loss: float


@dataclass(frozen=True)
class PreviewRow:
    """One dev image with its ground truth and the current prediction."""

    image: np.ndarray
    truth: np.ndarray
    prediction: np.ndarray


@dataclass(frozen=True)
class EpochEnded:
    """Sent after each epoch's dev evaluation. ``epoch`` counts from 1."""

    epoch: int
    epochs: int
    train_loss: float
    dev_loss: float
    dice: tuple[float, ...]
    iou: tuple[float, ...]
    seconds: float
    is_best: bool
    preview: tuple[PreviewRow, ...] = ()

    def to_dict(self) -> dict:
        """Plain-type record for JSON reports and checkpoints (without the preview)."""
        return {
            "epoch": self.epoch,
            "train_loss": self.train_loss,
            "dev_loss": self.dev_loss,
            "dice": list(self.dice),
            "iou": list(self.iou),
            "seconds": self.seconds,
            "is_best": self.is_best,
        }


@dataclass(frozen=True)
class Notice:
    """Something the user should know that does not stop training (e.g. a smaller batch)."""

    message: str


@dataclass(frozen=True)
class TrainingResult:
    """The outcome: the best model and how training went.

    Attributes
    ----------
    model : TrainedModel
        Weights of the epoch with the best dev score.
    history : tuple of dict
        One :meth:`EpochEnded.to_dict` record per finished epoch.
    best_epoch : int
        Epoch of ``model`` (0 if no epoch finished).
    stopped_early : bool
        True if the user stopped the run or it diverged.
    reason : str
        Why training ended, in one sentence.
    saved_to : Path or None
        The checkpoint file holding ``model``, if one was asked for and could
        be written.
    """

    model: TrainedModel
    history: tuple[dict, ...] = field(default=())
    best_epoch: int = 0
    stopped_early: bool = False
    reason: str = "Training finished."
    saved_to: Path | None = None


@dataclass(frozen=True)
class TrainingFinished:
    """The last message; carries the result."""

    result: TrainingResult


TrainingEvent = TrainingStarted | BatchEnded | EpochEnded | Notice | TrainingFinished
