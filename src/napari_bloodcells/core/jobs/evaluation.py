"""The evaluation job: per-class Dice and IoU of a model on a split of labelled pairs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from napari_bloodcells.core.base.device import resolve_device
from napari_bloodcells.core.base.metrics import score_labels
from napari_bloodcells.core.data.dataset import split_indices
from napari_bloodcells.core.events import Evaluated, Evaluation, Notice, SegmentProgress, Stopped
from napari_bloodcells.core.exchange.open_model import ModelSource, load_model
from napari_bloodcells.core.inference.tiled import segment_image
from napari_bloodcells.core.jobs.loading import TrainingData, load_training_data
from napari_bloodcells.core.training.config import TrainConfig
from napari_bloodcells.errors import DataError

if TYPE_CHECKING:
    from collections.abc import Callable, Generator

    from napari_bloodcells.core.data.download import Progress
    from napari_bloodcells.core.model.trained import TrainedModel

SPLITS = ("dev", "train", "all")


def _split_rule(model: TrainedModel, own_split: bool) -> tuple[float, int, str]:
    reference = TrainConfig()  # the notebook's split: 20 % of the pairs, seed 909
    if own_split:  # the split the model itself was trained with
        fraction = float(model.config.get("dev_fraction", reference.dev_fraction))
        seed = int(model.config.get("split_seed", reference.split_seed))
        return fraction, seed, f"the model's own split: {fraction:g} of the pairs, seed {seed}"
    # the same images for every model, so that scores compare
    fraction, seed = reference.dev_fraction, reference.split_seed
    return fraction, seed, f"the reference split: {fraction:g} of the pairs, seed {seed}"


def evaluation_job(
    source: ModelSource,
    data: TrainingData,
    *,
    split: str = "dev",
    own_split: bool = False,
    device: str = "auto",
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Generator[Notice | SegmentProgress | Evaluated | Stopped, None, Evaluation | None]:
    """Segment a split of labelled pairs and score the labels against the masks (pooled pixels).

    Parameters
    ----------
    source : TrainedModel or Path
        The model.
    data : SegmentationData, Path or None
        The labelled pairs (``None``: the blood-cell dataset).
    split : {"dev", "train", "all"}
        Which pairs.
    own_split : bool
        Split as the model was trained (its dev fraction and seed) instead of the
        reference split that makes models comparable.
    device : str
        Where to run.
    progress : callable, optional
        ``progress(done, total)`` while the dataset downloads.
    should_stop : callable, optional
        Polled between images; a stopped job ends with ``Stopped``.
    """
    should_stop = should_stop or (lambda: False)
    model = load_model(source, resolve_device(device))
    pairs = load_training_data(data, progress)
    for notice in pairs.notices:
        yield Notice(notice)
    pairs.check_classes(model.classes.num_classes)
    fraction, seed, rule = _split_rule(model, own_split)
    train_idx, dev_idx = split_indices(len(pairs), fraction, seed)
    indices = {"dev": dev_idx, "train": train_idx, "all": list(range(len(pairs)))}[split]
    if not indices:
        raise DataError(f"The {split} split is empty; choose another split or more data.")
    subset = pairs.subset(indices)
    predictions = []
    for index, image in enumerate(subset.images):
        if should_stop():
            yield Stopped()
            return None
        predictions.append(segment_image(model, image)[0])
        yield SegmentProgress(index, len(subset), 1, 1)
    scores = score_labels(predictions, subset.masks, model.classes.num_classes)
    result = Evaluation(
        split, rule, len(subset), model.classes.names, tuple(scores.dice), tuple(scores.iou)
    )
    yield Evaluated(result)
    return result
