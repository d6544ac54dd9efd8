"""The one vocabulary of messages that the core's jobs yield, and how a job ends.

Training (:func:`~napari_bloodcells.core.training.loop.train`), segmentation
(:func:`~napari_bloodcells.core.inference.tiled.segment`) and the jobs built on
them (:mod:`~napari_bloodcells.core.jobs`) are generators of these. The widgets,
the CLI and the tests consume the same streams; every message is a small
frozen dataclass that is safe to hand from a worker thread to the GUI thread.

**One way a job ends**: its last event is a :class:`JobEnded` whose ``result`` is
what the job produced, also when it was stopped (a stopped segmentation's labels
are ``None``, a stopped export's path is ``None``). :func:`run_to_end` runs a job
and returns that result; the widgets read the same event in their workers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Generator
    from pathlib import Path

    import numpy as np

    from napari_bloodcells.core.base.classes import ClassInfo
    from napari_bloodcells.core.data.project import Suggestion
    from napari_bloodcells.core.model.trained import TrainedModel

R = TypeVar("R")


class JobEnded:
    """Marks the last event of a job; ``result`` is what the job produced."""

    result: Any


@dataclass(frozen=True)
class TrainingStarted:
    """Sent once, before the first batch."""

    device: str
    precision: str
    n_train: int
    n_dev: int
    epochs: int
    batches_per_epoch: int
    batch_size: int = 0
    lr: float = 0.0
    chosen: str = ""
    """What the device decided, e.g. "batch 32 and learning rate 0.004 for the GPU"."""


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
    reference_dice: float | None = None
    """Fine-tuning: mean foreground Dice on the replay's dev images (forgetting check)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain-type record for JSON reports and checkpoints (without the preview)."""
        return {
            "reference_dice": self.reference_dice,
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
    """Something the user should know that does not stop the job (e.g. a smaller batch)."""

    message: str


@dataclass(frozen=True)
class JobStep:
    """What a job does next, in a few words, for a status line (e.g. "Exporting ONNX…")."""

    text: str


@dataclass(frozen=True)
class ScheduleChosen:
    """How a fine-tune will run (step budget, replay, model selection), in one sentence."""

    description: str
    replay: bool


@dataclass(frozen=True)
class JobFailed:
    """A job ended with a :class:`~napari_bloodcells.errors.BloodcellsError`.

    ``message`` is its plain sentence; the widgets' workers yield it
    (``napari_bloodcells._widgets.workers.guarded``).
    """

    message: str


@dataclass(frozen=True)
class DataReady:
    """The training data and the starting model are loaded; training begins."""

    pairs: int
    classes: ClassInfo
    starting_point: str


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
    kept_start : bool
        A fine-tune whose rounds did not beat the starting model: ``model`` is it.
    outcome : str
        A fine-tune's outcome in one sentence, with the corrections' Dice before
        and after and the change on the model's own data (also in ``reason``).
    types_changed : bool
        The cell types were learned or fine-tuned (even when ``kept_start``: the
        starting segmentation with new types is then a new model).
    """

    model: TrainedModel
    history: tuple[dict[str, Any], ...] = field(default=())
    best_epoch: int = 0
    stopped_early: bool = False
    reason: str = "Training finished."
    saved_to: Path | None = None
    kept_start: bool = False
    outcome: str = ""
    types_changed: bool = False


@dataclass(frozen=True)
class TrainingFinished(JobEnded):
    """The last message; carries the result."""

    result: TrainingResult


TrainingEvent = (
    TrainingStarted | BatchEnded | EpochEnded | Notice | ScheduleChosen | TrainingFinished
)


@dataclass(frozen=True)
class SegmentProgress:
    """Tiles done in the current image. ``index`` counts images (slices, files) from 0."""

    index: int
    images: int
    done: int
    total: int

    @property
    def fraction(self) -> float:
        """Share of the whole job done, 0..1."""
        within = self.done / self.total if self.total else 1.0
        return (self.index + within) / self.images


@dataclass(frozen=True)
class Segmentation:
    """The outcome of segmenting an image or a stack.

    Attributes
    ----------
    labels : ndarray or None
        ``(H, W)`` or ``(N, H, W) uint8`` class indices; ``None`` when stopped,
        so that nothing partial is ever shown or written.
    confidence : ndarray or None
        The winning class's probability, same shape as ``labels``, when asked for.
    classes : ClassInfo
        The model's classes.
    stopped : bool
        True if ``should_stop`` ended the job before the last tile.
    reason : str
        How it ended, in one sentence.
    """

    labels: np.ndarray | None
    confidence: np.ndarray | None
    classes: ClassInfo
    stopped: bool = False
    reason: str = "Segmentation finished."


@dataclass(frozen=True)
class SegmentationFinished(JobEnded):
    """The last message of a segmentation; carries the result."""

    result: Segmentation


@dataclass(frozen=True)
class BlockWritten:
    """One block of a large image is segmented and written to its zarr store.

    ``done`` counts the blocks written so far in this run out of ``total``
    still to do when it started (blocks finished by an earlier run excluded).
    """

    done: int
    total: int
    row: int
    col: int

    @property
    def fraction(self) -> float:
        """Share of this run's blocks written, 0..1."""
        return self.done / self.total if self.total else 1.0


@dataclass(frozen=True)
class FileSegmented:
    """One input file of a folder job is done and its labels are written."""

    index: int
    files: int
    source: Path
    target: Path


@dataclass(frozen=True)
class ScaleChosen:
    """``scale="auto"``: the factor estimated for one image.

    See :mod:`~napari_bloodcells.core.inference.magnification`.

    ``message`` is one sentence when no cell was found and 1.0 is used, else "".
    """

    index: int
    name: str
    scale: float
    message: str = ""


@dataclass(frozen=True)
class Evaluation:
    """Per-class Dice and IoU of a model on a split of labelled pairs (pooled pixels).

    Attributes
    ----------
    split : str
        "dev", "train" or "all".
    split_rule : str
        Which split, in words (the reference split or the model's own).
    images : int
        How many pairs were scored.
    classes : tuple of str
        Class names, in the order of ``dice`` and ``iou``.
    dice, iou : tuple of float
        One score per class.
    """

    split: str
    split_rule: str
    images: int
    classes: tuple[str, ...]
    dice: tuple[float, ...]
    iou: tuple[float, ...]


@dataclass(frozen=True)
class Evaluated(JobEnded):
    """The last message of an evaluation: the scores."""

    result: Evaluation


@dataclass(frozen=True)
class ScaleEstimate:
    """The resize factor estimated for an image, or for a stack from some of its slices.

    Attributes
    ----------
    scale : float
        The factor to segment at; 1.0 when nothing could be estimated.
    found : bool
        Whether the model found cells in the image at that factor.
    message : str
        One sentence for the user when ``found`` is False, else "".
    """

    scale: float
    found: bool
    message: str = ""


@dataclass(frozen=True)
class ScaleEstimated(JobEnded):
    """The last message of an estimation job: the factor to use (the median of the slices)."""

    result: ScaleEstimate


@dataclass(frozen=True)
class FilesSegmented(JobEnded):
    """The last message of a file job: the outputs written or completed (fewer when stopped)."""

    result: tuple[Path, ...]


@dataclass(frozen=True)
class BlocksSegmented(JobEnded):
    """The last message of a block job: ``result`` blocks written out of ``total`` to do."""

    result: int
    total: int


@dataclass(frozen=True)
class PackageExported(JobEnded):
    """The last message of an export: the package written."""

    result: Path


@dataclass(frozen=True)
class Stopped(JobEnded):
    """The last message of a job stopped before it had a result to show: ``result`` is None.

    Jobs whose results can say they were stopped (training, segmentation, file jobs)
    end with their own event instead.
    """

    result: None = None


@dataclass(frozen=True)
class FilesMeasured(JobEnded):
    """The last message of measuring label files: the table written (a ``Measurements``)."""

    result: Any


@dataclass(frozen=True)
class DifferentialCounted(JobEnded):
    """The last message of a differential: one ``DifferentialRow`` per image, then the total."""

    result: Any


@dataclass(frozen=True)
class Ranked(JobEnded):
    """The last message of a ranking job: the images, most useful to correct first."""

    result: tuple[Suggestion, ...]


@dataclass(frozen=True)
class CellsMeasured(JobEnded):
    """Cell instances (same shape as the labels) and their measurements, one row per cell."""

    cells: np.ndarray
    table: Any

    @property
    def result(self) -> CellsMeasured:
        """The event itself: the cells and their table are the result."""
        return self


SegmentationEvent = SegmentProgress | Notice | SegmentationFinished


def run_to_end(
    job: Generator[Any, None, Any], on_event: Callable[[Any], object] | None = None
) -> Any:
    """Run a job to its end and return the result its last event carries.

    The CLI, scripts and tests consume every job this way; the widgets' workers
    read the same :class:`JobEnded` event.

    Parameters
    ----------
    job : generator
        A job or engine of the core (see :mod:`~napari_bloodcells.core.jobs`).
    on_event : callable, optional
        Called with every event, the last one included, as it comes.

    Returns
    -------
    object
        ``result`` of the last :class:`JobEnded` event.

    Raises
    ------
    RuntimeError
        The job ended without a :class:`JobEnded` event (a bug in the job).
    """
    ended: JobEnded | None = None
    for event in job:
        if on_event is not None:
            on_event(event)
        if isinstance(event, JobEnded):
            ended = event
    if ended is None:
        raise RuntimeError(f"{getattr(job, '__name__', job)!r} ended without its last event")
    return ended.result
