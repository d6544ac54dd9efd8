"""The training loop, written once as a generator of progress events.

The napari widget runs it in a ``thread_worker``, the CLI iterates it with a
progress bar and the tests drive it directly. It checks ``should_stop``
between batches, keeps the best model by mean foreground dev Dice, and can
save that model atomically each time it improves, so a stopped, diverged or
crashed run never loses it.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from napari_bloodcells.core.base.classes import BLOODCELL_CLASSES, ClassInfo
from napari_bloodcells.core.base.device import (
    autocast_dtype,
    is_memory_error,
    release_memory,
    resolve_device,
)
from napari_bloodcells.core.base.metrics import ConfusionMatrix
from napari_bloodcells.core.data.dataset import SegmentationData, split_indices
from napari_bloodcells.core.events import (
    BatchEnded,
    EpochEnded,
    Notice,
    PreviewRow,
    ScheduleChosen,
    TrainingEvent,
    TrainingFinished,
    TrainingResult,
    TrainingStarted,
)
from napari_bloodcells.core.inference.tiled import segment_image
from napari_bloodcells.core.model.checkpoint import save_checkpoint
from napari_bloodcells.core.model.networks import build_model
from napari_bloodcells.core.model.trained import TrainedModel
from napari_bloodcells.core.training.augment import augment_batch
from napari_bloodcells.core.training.batches import PatchSampler, TensorSet, to_tensor_set
from napari_bloodcells.core.training.calibrate import add_to_head, fit_class_offsets
from napari_bloodcells.core.training.finetune import (
    BLENDS,
    Candidate,
    blend,
    outcome_sentence,
    plan_finetune,
    selection_score,
)
from napari_bloodcells.core.training.losses import Objective
from napari_bloodcells.core.training.size_fit import fit_size_model
from napari_bloodcells.errors import CheckpointError, ConfigError, DataError

if TYPE_CHECKING:
    from collections.abc import Callable, Generator

    from napari_bloodcells.core.training.config import TrainConfig
    from napari_bloodcells.core.training.ddp import ProcessGroup

_DEV_BATCH = 16
_SAVE_EVERY_S = 10.0
"""Improvements are written at most this often while training; the end of a run,
a stop and a crash write the best model whatever the interval."""


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def _split(data: SegmentationData, config: TrainConfig) -> tuple[list[int], list[int]]:
    if len(data) == 1:
        # One corrected image cannot be split; scoring it on itself still picks the best epoch.
        return [0], [0]
    train_idx, dev_idx = split_indices(len(data), config.dev_fraction, config.split_seed)
    if not dev_idx:
        # Rounded up: int(fraction * N) must reach 1.
        enough = math.ceil(100 / len(data)) / 100
        raise ConfigError(
            f"A dev fraction of {config.dev_fraction} leaves no dev images out of {len(data)}; "
            f"raise it to at least {enough:.2f} or add images."
        )
    if not train_idx:
        raise ConfigError(
            f"A dev fraction of {config.dev_fraction} leaves no training images; lower it."
        )
    if config.batch_size > len(train_idx):
        raise ConfigError(
            f"The batch size ({config.batch_size}) is larger than the training set "
            f"({len(train_idx)} images); lower it to {len(train_idx)} or fewer."
        )
    return train_idx, dev_idx


def _fits_patch(data: SegmentationData, size: int, mode: str) -> bool:
    return mode == "resize" or all(m.shape[0] <= size and m.shape[1] <= size for m in data.masks)


class _DevSet:
    """Dev pairs, evaluated in batches when they fit one patch and tile by tile otherwise."""

    def __init__(self, data: SegmentationData, config: TrainConfig, num_preview: int) -> None:
        prep = config.preprocessing()
        self.data = data
        self.tensors: TensorSet | None = (
            to_tensor_set(data, prep) if _fits_patch(data, config.size, config.mode) else None
        )
        self.num_preview = min(num_preview, len(data))

    def evaluate(
        self,
        model: TrainedModel,
        objective: Objective,
        autocast: Callable[[], AbstractContextManager[object]],
        device: torch.device,
    ) -> tuple[float, ConfusionMatrix, tuple[PreviewRow, ...]]:
        """Return (mean loss, confusion matrix, preview rows)."""
        k = model.spec.num_classes
        cm = ConfusionMatrix(k)
        network = model.network
        network.eval()
        previews: list[PreviewRow] = []
        if self.tensors is None:
            for i, (image, mask) in enumerate(zip(self.data.images, self.data.masks, strict=False)):
                pred, _ = segment_image(model, image, device=device)
                cm.update(pred, mask)
                if i < self.num_preview:
                    previews.append(PreviewRow(image, mask, pred))
            return float("nan"), cm, tuple(previews)
        total, count = 0.0, 0
        t = self.tensors
        with torch.inference_mode():
            # A GPU takes the dev set in a few large passes; a CPU's memory wants small ones.
            step = _DEV_BATCH * 4 if device.type == "cuda" else _DEV_BATCH
            for start in range(0, len(t), step):
                images = t.images[start : start + step].to(device)
                masks = t.masks[start : start + step].to(device).long()
                x = model.preprocessing.normalize(images)
                with autocast():
                    logits = network(x)
                logits = logits.float()
                total += float(objective(logits, masks)) * len(images)
                count += len(images)
                # max's indices, not argmax: the same labels, but argmax over the class
                # dimension runs about 15 times slower on a CPU (torch 2.14).
                pred = logits.max(1).indices
                cm.update(pred, masks)
                for j in range(len(images)):
                    i = start + j
                    if i >= self.num_preview:
                        break
                    h, w = t.valid[i]
                    previews.append(
                        PreviewRow(
                            t.images[i, :, :h, :w].permute(1, 2, 0).numpy().copy(),
                            t.masks[i, :h, :w].numpy().copy(),
                            pred[j, :h, :w].to(torch.uint8).cpu().numpy(),
                        )
                    )
        return total / max(count, 1), cm, tuple(previews)


def _try_blends(
    kept: Candidate,
    start_state: dict[str, torch.Tensor],
    tuned_state: dict[str, torch.Tensor],
    network: torch.nn.Module,
    evaluate_dev: Callable[[], tuple[float, ConfusionMatrix, tuple[PreviewRow, ...]]],
    reference_dice: Callable[[], float | None],
    start: Candidate,
) -> tuple[Candidate, dict[str, torch.Tensor]]:
    """Score the best round blended with the starting weights; return the best and its weights."""
    best, best_state = kept, tuned_state
    for share in BLENDS:
        state = blend(start_state, tuned_state, share)
        network.load_state_dict(state)
        _, cm, _ = evaluate_dev()
        remembered = reference_dice()
        scores = cm.scores()
        score = selection_score(scores.mean_foreground_dice(), remembered, start.reference)
        if score > best.score:
            name = f"{kept.name} blended {share:.0%} with the starting model"
            best, best_state = Candidate(name, scores.dice, remembered, score), state
    return best, best_state


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
        Settings; see :func:`~napari_bloodcells.core.config.preset`. With
        ``schedule="finetune"`` the run follows :mod:`~napari_bloodcells.core.adapt`.
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
        This process's place in a ``torchrun`` job (:mod:`~napari_bloodcells.core.ddp`):
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
    config.validate()
    if len(data) == 0:
        raise DataError("There are no training images; add image/mask pairs first.")
    should_stop = should_stop or (lambda: False)
    finetune = config.schedule == "finetune"
    if finetune and init is None:
        raise ConfigError(
            "The finetune schedule continues a trained model; choose a model to start from, "
            "or the onecycle schedule for a new one."
        )
    if init is not None:
        classes = init.classes
        prep = init.preprocessing
        config = config.with_changes(
            arch=init.spec.arch, encoder=init.spec.encoder, mode=prep.mode, size=prep.size
        )
    data = data.rescaled(config.scale)
    data.check_classes(classes.num_classes)
    data.check_foreground()
    plan = None
    if finetune:
        if replay is not None:
            replay.check_classes(classes.num_classes)
        plan = plan_finetune(
            data,
            replay,
            steps=config.finetune_steps,
            batch_size=config.batch_size,
            share=config.correction_share,
            split_seed=config.split_seed,
        )
        train_data, dev_data = plan.pool, plan.dev
        epochs, steps_per_epoch, lr = plan.rounds, plan.steps_per_round, config.finetune_lr
        n_train, n_dev = plan.corrections, len(plan.dev)
    device = group.device if group is not None else resolve_device(config.device)
    chosen = ""
    if plan is None:
        train_idx, dev_idx = _split(data, config)
        if group is None:  # the ranks of a DDP job keep the batch they were given
            config, chosen = config.for_device(device, len(train_idx))
        train_data, dev_data = data.subset(train_idx), data.subset(dev_idx)
        epochs, lr = config.epochs, config.lr
        steps_per_epoch = math.ceil(len(train_idx) / config.batch_size)
        n_train, n_dev = len(train_idx), len(dev_idx)
    dtype = autocast_dtype(config.precision, device)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    # Every rank draws the same global batches; crops and augmentation differ per rank.
    order_generator = generator
    if group is not None:
        order_generator = torch.Generator().manual_seed(config.seed)
        generator = torch.Generator().manual_seed(config.seed + 7919 * group.rank)
        if not group.is_main:
            checkpoint_path = None

    if init is not None:
        network = copy.deepcopy(init.network).cpu()
        model = TrainedModel(
            network, init.spec, classes, init.preprocessing, size_model=init.size_model
        )
    else:
        spec = config.spec(classes.num_classes)
        network = build_model(spec, config.encoder_weights)
        model = TrainedModel(network, spec, classes, config.preprocessing())
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    network.to(device=device)
    network.to(memory_format=memory_format)
    model.config = config.to_dict()
    trained: torch.nn.Module = network
    sharded = False
    if group is not None:
        from torch.nn.parallel import DistributedDataParallel

        ids = [group.local_rank] if device.type == "cuda" else None
        trained = DistributedDataParallel(network, device_ids=ids)
        # Each rank scores its share of the dev images and the sums are reduced; with
        # fewer dev images than ranks every rank scores them all.
        if len(dev_data) >= group.world_size:
            sharded = True
            dev_data = dev_data.subset(list(range(len(dev_data)))[group.rank :: group.world_size])

    sampler = PatchSampler(train_data, model.preprocessing)
    dev = _DevSet(dev_data, config, config.num_preview)

    def evaluate_dev() -> tuple[float, ConfusionMatrix, tuple[PreviewRow, ...]]:
        loss, cm, preview = dev.evaluate(model, objective, autocast, device)
        if group is None or not sharded:
            return loss, cm, preview
        n = float(len(dev_data))
        totals = group.sum_(torch.tensor([loss * n, n], dtype=torch.float64))
        cm.matrix = group.sum_(cm.matrix)
        return float(totals[0] / max(float(totals[1]), 1.0)), cm, preview

    reference = _DevSet(plan.reference, config, 0) if plan is not None and plan.reference else None
    objective = Objective(config.loss)
    optimizer_cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    optimizer = optimizer_cls(
        network.parameters(),
        lr=lr,
        weight_decay=config.weight_decay,
        # One kernel for the whole update instead of several per tensor and step: on a
        # GPU the step is bound by launches, on a CPU it saves a few percent.
        fused=device.type in {"cuda", "cpu"},
    )
    batch_size = config.batch_size
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    if config.schedule == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=lr, epochs=epochs, steps_per_epoch=steps_per_epoch
        )
    elif finetune:  # a gentle decay: the model is trained already
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=epochs * steps_per_epoch, eta_min=lr / 10
        )

    def autocast() -> AbstractContextManager[object]:
        return (
            torch.autocast(device.type, dtype=dtype)
            if dtype is not None
            else contextlib.nullcontext()
        )

    def reference_dice() -> float | None:
        if reference is None:
            return None
        _, cm, _ = reference.evaluate(model, objective, autocast, device)
        return cm.scores().mean_foreground_dice()

    for message in data.notices:
        yield Notice(message)
    if len(data) == 1 and not finetune:
        yield Notice(
            "Only one image: it is used for both training and scoring, so the dev "
            "scores say how well the model fits it, not how well it generalises."
        )
    best_state = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
    start_state = best_state
    best_score, best_epoch = -math.inf, 0
    start_reference = None
    start: Candidate | None = None  # a fine-tune's starting model, as a candidate
    rounds: dict[int, Candidate] = {}
    if plan is not None:
        yield ScheduleChosen(plan.describe(lr), plan.reference is not None)
        if plan.reference is None:
            yield Notice(
                "No replay: the starting model's training data are not known or not "
                "available, so only the corrections are trained on."
            )
        # The starting model is candidate 0: a fine-tune never ends worse than it began.
        _, start_cm, _ = evaluate_dev()
        start_reference = reference_dice()
        best_score = start_cm.scores().mean_foreground_dice()
        start = Candidate("the starting model", start_cm.scores().dice, start_reference, best_score)
    yield TrainingStarted(
        _device_name(device),
        "bf16" if dtype else "fp32",
        n_train,
        n_dev,
        epochs,
        steps_per_epoch,
        config.batch_size if plan is None else plan.batch_size,
        lr,
        chosen,
    )

    history: list[dict[str, Any]] = []
    reason, stopped, diverged = "Training finished.", False, False

    def keep_if_best(score: float, epoch: int) -> bool:
        nonlocal best_state, best_score, best_epoch
        if not score > best_score:
            return False
        best_score, best_epoch = score, epoch
        best_state = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
        return True

    saved = False  # whether checkpoint_path holds the best model so far
    save_failed = False

    def save(candidate: TrainedModel) -> Notice | None:
        """Write ``candidate`` to ``checkpoint_path``; a failure is told once, not raised."""
        nonlocal saved, save_failed
        assert checkpoint_path is not None
        try:
            save_checkpoint(candidate, checkpoint_path)
        except CheckpointError as exc:
            # A full disk must not end the run: the best model is still in memory.
            saved = False
            if save_failed:
                return None
            save_failed = True
            return Notice(
                f"{str(exc).removesuffix('.')}; training goes on and keeps the best model "
                "in memory."
            )
        saved = True
        return None

    last_save, written_epoch = -math.inf, 0  # written_epoch: the model checkpoint_path holds

    def best_snapshot() -> TrainedModel:
        """A CPU copy of the best model so far, as a checkpoint records it."""
        network_copy = copy.deepcopy(network).cpu()
        network_copy.load_state_dict(best_state)
        return TrainedModel(
            network_copy,
            model.spec,
            classes,
            model.preprocessing,
            model.config,
            {"best_epoch": best_epoch, "history": [*history]},
            model.size_model,
        )

    def batches() -> list[list[int]]:
        if plan is not None:
            return [plan.draw(generator) for _ in range(steps_per_epoch)]
        order = torch.randperm(len(train_data), generator=order_generator).tolist()
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]

    try:
        for epoch in range(1, epochs + 1):
            started = time.perf_counter()
            network.train()
            queue = batches()
            batch_no, loss_sum, seen = 0, 0.0, 0
            while queue:
                asked = should_stop()
                if group is not None:  # every rank stops at the same batch
                    asked = group.any(asked)
                if asked:
                    stopped, reason = True, f"Stopped by the user during epoch {epoch}."
                    break
                indices = queue.pop(0)
                mine = group.share(indices) if group is not None else indices
                images, masks = sampler.batch(mine, generator)
                # uint8 travels (a quarter of float32) and augmentation runs where the
                # network does.
                images = images.to(device, non_blocking=True).float().div_(255)
                masks = masks.to(device, non_blocking=True)
                if config.augment:
                    images, masks = augment_batch(images, masks, generator, config.augmentation())
                images = model.preprocessing.normalize_unit(images)
                images = images.contiguous(memory_format=memory_format)
                masks = masks.long()
                try:
                    optimizer.zero_grad(set_to_none=True)
                    with autocast():
                        logits = trained(images)
                    loss = objective(logits.float(), masks)
                    loss.backward()  # type: ignore[no-untyped-call]
                except (RuntimeError, torch.OutOfMemoryError) as exc:
                    # Ranks cannot shrink their batches in step: a DDP run stops instead.
                    if not is_memory_error(exc) or len(indices) == 1 or group is not None:
                        raise
                    optimizer.zero_grad(set_to_none=True)
                    batch_size = max(1, len(indices) // 2)
                    rest = indices + [i for later in queue for i in later]
                    queue = [rest[i : i + batch_size] for i in range(0, len(rest), batch_size)]
                    release_memory(device)
                    yield Notice(f"Ran out of memory; continuing with batch size {batch_size}.")
                    continue
                value = float(loss.detach())
                if group is not None:  # the global batch's loss, the same on every rank
                    value = group.mean(value)
                if not math.isfinite(value):
                    stopped = diverged = True
                    reason = (
                        f"The loss became {value} in epoch {epoch}; training stopped and "
                        f"kept the model of epoch {best_epoch}. Lower the learning rate."
                    )
                    break
                optimizer.step()
                if scheduler is not None and scheduler.last_epoch + 1 < epochs * steps_per_epoch:
                    scheduler.step()
                batch_no += 1
                loss_sum += value * len(indices)
                seen += len(indices)
                yield BatchEnded(epoch, batch_no, steps_per_epoch, value)
            if diverged or (stopped and seen == 0):
                break  # nothing new worth evaluating: keep the best model so far
            dev_loss, cm, preview = evaluate_dev()
            scores = cm.scores()
            remembered = reference_dice()
            score = selection_score(scores.mean_foreground_dice(), remembered, start_reference)
            if start is not None:
                rounds[epoch] = Candidate(f"round {epoch}", scores.dice, remembered, score)
            improved = keep_if_best(score, epoch)
            # Epochs of a fraction of a second are not each written: the end of the run,
            # a stop or a crash writes the best model.
            due = time.perf_counter() - last_save >= _SAVE_EVERY_S
            if improved and checkpoint_path is not None and due:
                last_save = time.perf_counter()
                notice = save(best_snapshot())
                written_epoch = best_epoch if saved else written_epoch
                if notice:
                    yield notice
            event = EpochEnded(
                epoch,
                epochs,
                loss_sum / max(seen, 1),
                dev_loss,
                scores.dice,
                scores.iou,
                time.perf_counter() - started,
                improved,
                preview,
                remembered,
            )
            history.append(event.to_dict())
            yield event
            if stopped:
                break
    except BaseException:
        if checkpoint_path is not None and best_epoch != written_epoch:
            with contextlib.suppress(Exception):  # a crash keeps the best model, not an older one
                save(best_snapshot())
        raise
    finally:
        network.load_state_dict(best_state)
        network.to(memory_format=torch.contiguous_format).eval()
        release_memory(device)

    kept_start = plan is not None and best_epoch == 0 and bool(history)
    outcome = ""
    if start is not None and plan is not None and rounds:
        kept = start if kept_start else rounds[best_epoch]
        if best_epoch and not stopped:
            kept, best_state = _try_blends(
                kept, start_state, best_state, network, evaluate_dev, reference_dice, start
            )
            network.load_state_dict(best_state)
        tried = max(rounds.values(), key=lambda c: c.score)
        outcome = outcome_sentence(start, kept, classes.names, plan.dev_held_out, tried)
        reason = f"{reason} {outcome}"
    offsets: tuple[float, ...] = ()
    if not kept_start and best_epoch and not stopped and model.preprocessing.mode == "native":
        model.size_model = fit_size_model(model, train_data, generator)
        if plan is None:  # a fine-tune keeps the calibration it started from
            # Fitted where the best epoch was chosen: held out from training, where a
            # model's areas are biased the way they will be on new images.
            fitted = fit_class_offsets(model, dev_data, generator)
            offsets = fitted if add_to_head(network, fitted) else ()
    model.metrics = {
        "best_epoch": best_epoch,
        "best_dev_score": best_score,
        "history": history,
        "reason": reason,
        "world_size": group.world_size if group is not None else 1,
        "class_offsets": list(offsets),
        "finetune_outcome": outcome,
    }
    if checkpoint_path is not None and (best_epoch or kept_start) and (notice := save(model)):
        yield notice
    result = TrainingResult(
        model,
        tuple(history),
        best_epoch,
        stopped,
        reason,
        Path(checkpoint_path) if saved and checkpoint_path is not None else None,
        kept_start,
        outcome,
    )
    yield TrainingFinished(result)
    return result
