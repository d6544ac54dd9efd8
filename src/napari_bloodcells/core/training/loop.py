"""The training loop, written once as a generator of progress events.

The napari widget runs it in a ``thread_worker``, the CLI iterates it with a
progress bar and the tests drive it directly. It checks ``should_stop``
between batches, keeps the best model by mean foreground dev Dice
(:class:`~napari_bloodcells.core.training.keeper.BestModelKeeper`), and can
save that model atomically each time it improves, so a stopped, diverged or
crashed run never loses it. Preparing a run lives in
:mod:`~napari_bloodcells.core.training.run`, ending it in
:mod:`~napari_bloodcells.core.training.finish`.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from napari_bloodcells.core.base.classes import BLOODCELL_CLASSES, ClassInfo
from napari_bloodcells.core.base.device import is_memory_error, release_memory
from napari_bloodcells.core.events import (
    BatchEnded,
    EpochEnded,
    Notice,
    ScheduleChosen,
    TrainingEvent,
    TrainingFinished,
    TrainingResult,
    TrainingStarted,
)
from napari_bloodcells.core.training.augment import augment_batch
from napari_bloodcells.core.training.averaging import EpochAverage
from napari_bloodcells.core.training.finetune import (
    CORRECTION_AUGMENTATION,
    Candidate,
    hold_norm_statistics,
    selection_score,
)
from napari_bloodcells.core.training.finish import finish_run
from napari_bloodcells.core.training.keeper import BestModelKeeper
from napari_bloodcells.core.training.run import Run, RunProgress, prepare_run

if TYPE_CHECKING:
    from collections.abc import Callable, Generator

    from napari_bloodcells.core.data.dataset import SegmentationData
    from napari_bloodcells.core.model.trained import TrainedModel
    from napari_bloodcells.core.training.config import TrainConfig
    from napari_bloodcells.core.training.ddp import ProcessGroup


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def train(
    config: TrainConfig,
    data: SegmentationData,
    *,
    init: TrainedModel | None = None,
    replay: SegmentationData | None = None,
    classes: ClassInfo = BLOODCELL_CLASSES,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_path: str | Path | None = None,
    group: ProcessGroup | None = None,
) -> Generator[TrainingEvent, None, TrainingResult]:
    """Train a model, yielding progress events; the last event carries the result.

    Parameters
    ----------
    config : TrainConfig
        Settings; see :func:`~napari_bloodcells.core.training.config.preset`. With
        ``schedule="finetune"`` the run follows :mod:`~napari_bloodcells.core.training.finetune`.
    data : SegmentationData
        All pairs (resized by ``config.scale`` first); the dev split is drawn
        from them as the notebook does. Mask value 255 marks unlabelled pixels.
    init : TrainedModel, optional
        Continue from this model (fine-tuning). Its architecture, classes and
        preprocessing are kept; ``config.arch``/``encoder``/``mode`` are ignored.
    replay : SegmentationData, optional
        The starting model's own training pairs, mixed into every batch of a
        ``finetune`` schedule.
    classes : ClassInfo
        Class names and colours for a new model.
    should_stop : callable, optional
        Polled between batches; when it returns True the run ends cleanly.
    checkpoint_path : path, optional
        Where the best model is saved, atomically, every time it improves.
    group : ProcessGroup, optional
        This process's place in a ``torchrun`` job (:mod:`~napari_bloodcells.core.training.ddp`):
        batches and dev images are shared out, gradients averaged, and only
        rank 0 saves.

    Yields
    ------
    TrainingStarted, BatchEnded, EpochEnded, Notice, TrainingFinished

    Returns
    -------
    TrainingResult
        Also carried by the final :class:`TrainingFinished` event.
    """
    run = prepare_run(
        config,
        data,
        init,
        replay,
        classes,
        should_stop,
        Path(checkpoint_path) if checkpoint_path is not None else None,
        group,
    )
    keeper = BestModelKeeper(run.network, run.checkpoint_path)
    progress = RunProgress(run.config.batch_size)
    for message in run.notices:
        yield Notice(message)
    yield from _start(run, keeper, progress)
    average = EpochAverage(run)
    try:
        for epoch in range(1, run.schedule.epochs + 1):
            yield from _epoch(run, keeper, progress, epoch)
            if progress.stopped:
                break
            average.add(run.network, epoch)
        yield from average.keep(run, keeper, progress, lambda indices: _inputs(run, indices))
    except BaseException:
        keeper.save_after_crash(run.model, progress.history)
        raise
    finally:
        run.network.load_state_dict(keeper.state)
        run.network.to(memory_format=torch.contiguous_format).eval()
        release_memory(run.device)
    result = yield from finish_run(run, keeper, progress)
    yield TrainingFinished(result)
    return result


def _start(
    run: Run, keeper: BestModelKeeper, progress: RunProgress
) -> Generator[TrainingEvent, None, None]:
    """Announce the run; a fine-tune first scores its starting model as candidate 0."""
    plan, schedule = run.plan, run.schedule
    if plan is not None:
        yield ScheduleChosen(plan.describe(schedule.lr), plan.reference is not None)
        if plan.reference is None:
            yield Notice(
                "No replay: the starting model's training data are not known or not "
                "available, so only the corrections are trained on."
            )
        # A fine-tune never ends worse than it began.
        _, start_cm, _ = run.evaluate_dev()
        scores = start_cm.scores()
        keeper.score = scores.correction_score()
        progress.start = Candidate(
            "the starting model",
            scores.dice,
            run.reference_dice(),
            keeper.score,
            scores.scored_classes(),
        )
    yield TrainingStarted(
        _device_name(run.device),
        "bf16" if run.dtype else "fp32",
        schedule.n_train,
        schedule.n_dev,
        schedule.epochs,
        schedule.steps_per_epoch,
        run.config.batch_size if plan is None else plan.batch_size,
        schedule.lr,
        schedule.chosen,
    )


def _inputs(run: Run, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch on the device, augmented and normalised."""
    mine = run.group.share(indices) if run.group is not None else indices
    images, masks = run.sampler.batch(mine, run.generator)
    # uint8 travels (a quarter of float32) and augmentation runs where the network does.
    images = images.to(run.device, non_blocking=True).float().div_(255)
    masks = masks.to(run.device, non_blocking=True)
    if run.config.augment:
        images, masks = _augmented(run, mine, images, masks)
    images = run.model.preprocessing.normalize_unit(images)
    return images.contiguous(memory_format=run.memory_format), masks.long()


def _augmented(
    run: Run, indices: list[int], images: torch.Tensor, masks: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch augmented; a fine-tune's corrections only flipped, turned and lightly jittered."""
    parts = run.config.augmentation()
    plan = run.plan
    if plan is None:
        return augment_batch(images, masks, run.generator, parts)
    own = torch.tensor(plan.are_corrections(indices), device=images.device)
    images, masks = images.clone(), masks.clone()
    for chosen, strengths in ((own, CORRECTION_AUGMENTATION), (~own, parts)):
        if bool(chosen.any()):
            images[chosen], masks[chosen] = augment_batch(
                images[chosen], masks[chosen], run.generator, strengths
            )
    return images, masks


def _backward(run: Run, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    run.optimizer.zero_grad(set_to_none=True)
    with run.autocast():
        logits = run.trained(images)
    loss = run.objective(logits.float(), masks)
    loss.backward()  # type: ignore[no-untyped-call]
    return loss


def _train_epoch(
    run: Run, keeper: BestModelKeeper, progress: RunProgress, epoch: int
) -> Generator[TrainingEvent, None, tuple[float, int]]:
    """The batches of one epoch; returns the summed loss and the images seen."""
    steps, total_steps = run.schedule.steps_per_epoch, run.schedule.epochs
    run.network.train()
    if run.plan is not None:
        hold_norm_statistics(run.network)
    queue = run.batches(progress.batch_size)
    batch_no, loss_sum, seen = 0, 0.0, 0
    while queue:
        if run.stop_asked():
            progress.stopped, progress.reason = True, f"Stopped by the user during epoch {epoch}."
            break
        indices = queue.pop(0)
        images, masks = _inputs(run, indices)
        try:
            loss = _backward(run, images, masks)
        except (RuntimeError, torch.OutOfMemoryError) as exc:
            # Ranks cannot shrink their batches in step: a DDP run stops instead.
            if not is_memory_error(exc) or len(indices) == 1 or run.group is not None:
                raise
            run.optimizer.zero_grad(set_to_none=True)
            progress.batch_size = size = max(1, len(indices) // 2)
            rest = indices + [i for later in queue for i in later]
            queue = [rest[i : i + size] for i in range(0, len(rest), size)]
            release_memory(run.device)
            yield Notice(f"Ran out of memory; continuing with batch size {size}.")
            continue
        value = float(loss.detach())
        if run.group is not None:  # the global batch's loss, the same on every rank
            value = run.group.mean(value)
        if not math.isfinite(value):
            progress.stopped = progress.diverged = True
            progress.reason = (
                f"The loss became {value} in epoch {epoch}; training stopped and "
                f"kept the model of epoch {keeper.epoch}. Lower the learning rate."
            )
            break
        run.optimizer.step()
        scheduler = run.scheduler
        if scheduler is not None and scheduler.last_epoch + 1 < total_steps * steps:
            scheduler.step()
        batch_no += 1
        loss_sum += value * len(indices)
        seen += len(indices)
        yield BatchEnded(epoch, batch_no, steps, value)
    return loss_sum, seen


def _epoch(
    run: Run, keeper: BestModelKeeper, progress: RunProgress, epoch: int
) -> Generator[TrainingEvent, None, None]:
    """Train one epoch, score it on the dev images, keep and save it if it is the best."""
    started = time.perf_counter()
    loss_sum, seen = yield from _train_epoch(run, keeper, progress, epoch)
    if progress.diverged or (progress.stopped and seen == 0):
        return  # nothing new worth evaluating: keep the best model so far
    dev_loss, cm, preview = run.evaluate_dev()
    scores = cm.scores()
    remembered = run.reference_dice()
    start = progress.start
    reference = start.reference if start is not None else None
    fit = scores.mean_foreground_dice() if start is None else scores.correction_score()
    score = selection_score(fit, remembered, reference)
    if start is not None:
        progress.rounds[epoch] = Candidate(f"round {epoch}", scores.dice, remembered, score)
    improved = keeper.keep_if_best(score, epoch)
    if improved and (notice := keeper.save_if_due(run.model, progress.history)):
        yield notice
    event = EpochEnded(
        epoch,
        run.schedule.epochs,
        loss_sum / max(seen, 1),
        dev_loss,
        scores.dice,
        scores.iou,
        time.perf_counter() - started,
        improved,
        preview,
        remembered,
    )
    progress.history.append(event.to_dict())
    yield event
