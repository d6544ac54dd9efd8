"""What a job reads before it starts: the training pairs, the model's replay data and a
sample image.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from napari_bloodcells.core.data.bloodcell_dataset import SOURCE_NAME, bloodcell_folder
from napari_bloodcells.core.data.dataset import SegmentationData, load_folder, read_image
from napari_bloodcells.core.jobs.inputs import IMAGE_SUFFIXES
from napari_bloodcells.errors import DataError, DownloadError

if TYPE_CHECKING:
    import numpy as np

    from napari_bloodcells.core.data.download import Progress
    from napari_bloodcells.core.model.trained import TrainedModel


TrainingData = SegmentationData | Path | None
"""Pairs already in memory, a folder with ``images/`` and ``masks/``, or ``None``
for the blood-cell dataset (downloaded on first use)."""


def load_training_data(source: TrainingData, progress: Progress | None = None) -> SegmentationData:
    """The training pairs of ``source`` (see :data:`TrainingData`).

    Parameters
    ----------
    source : SegmentationData, Path or None
        What to train on.
    progress : callable, optional
        ``progress(done, total)`` in files while the dataset downloads.

    Raises
    ------
    DataError, DownloadError
        The folder cannot be read, or the dataset cannot be fetched.
    """
    if isinstance(source, SegmentationData):
        return source
    if source is None:
        return load_folder(bloodcell_folder(progress=progress))
    return load_folder(source)


BLOODCELL_SOURCE = SOURCE_NAME


def sample_image(
    path: Path | None = None,
    progress: Progress | None = None,
    model: TrainedModel | None = None,
) -> np.ndarray:
    """An RGB image to show what a model does.

    In order: ``path``; the first image of the folder ``model`` records it was
    trained on, when that folder is still there; the blood-cell sample's first
    image, read from the cache or downloaded once.

    Raises
    ------
    DataError
        If the image cannot be read.
    DownloadError
        If the dataset is needed and cannot be fetched; the sentence says to
        pass a sample image.
    """
    if path is not None:
        return read_image(path)
    recorded = str(model.config.get("data_source", "")) if model is not None else ""
    if recorded and recorded != BLOODCELL_SOURCE:
        images = Path(recorded) / "images"
        files = sorted(p for p in images.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            return read_image(files[0])
    try:
        folder = bloodcell_folder(progress=progress) / "images" / "all"
    except DownloadError as exc:
        raise DownloadError(
            f"{str(exc).removesuffix('.')}; or give the package's test image yourself "
            "(export --sample IMAGE)."
        ) from exc
    first = min(folder.iterdir(), key=lambda p: p.name)
    return read_image(first)


REPLAY_AUTO = "auto"
"""Replay what the starting model records it was trained on."""


def data_source_of(data: TrainingData) -> str:
    """What ``TrainConfig.data_source`` records for ``data``: a later fine-tune replays it."""
    if data is None:
        return BLOODCELL_SOURCE
    if isinstance(data, Path):
        return str(data.resolve())
    return ""  # pairs copied from layers: nothing on disk to replay


def load_replay(
    start: TrainedModel, choice: str | Path | None, progress: Progress | None = None
) -> SegmentationData | None:
    """The starting model's own training pairs, replayed while fine-tuning.

    Parameters
    ----------
    start : TrainedModel
        The model being fine-tuned.
    choice : "auto", a folder, or None
        ``"auto"`` replays what ``start`` records (the blood-cell dataset or
        its training folder); a folder replays that folder; ``None`` replays
        nothing.

    Raises
    ------
    DataError
        The recorded or given folder no longer exists.
    """
    if choice is None:
        return None
    if choice != REPLAY_AUTO:
        return load_folder(Path(choice))
    source = str(start.config.get("data_source", ""))
    if source == BLOODCELL_SOURCE:
        return load_training_data(None, progress)
    if not source:
        return None
    folder = Path(source)
    if not folder.is_dir():
        raise DataError(
            f"The model was trained on {folder}, which no longer exists, so it cannot be "
            "replayed while fine-tuning; restore the folder, point --replay at a copy, or "
            "use --replay none to fine-tune on the corrections alone."
        )
    return load_folder(folder)
