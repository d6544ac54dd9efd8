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

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from napari_bloodcells.core.augment import augment_batch
from napari_bloodcells.core.batches import PatchSampler, TensorSet, to_tensor_set
from napari_bloodcells.core.checkpoint import TrainedModel, save_checkpoint
from napari_bloodcells.core.classes import BLOODCELL_CLASSES, IGNORE_INDEX, ClassInfo
from napari_bloodcells.core.dataset import SegmentationData, split_indices
from napari_bloodcells.core.device import autocast_dtype, release_memory, resolve_device
from napari_bloodcells.core.events import (
    BatchEnded,
    EpochEnded,
    Notice,
    PreviewRow,
    TrainingEvent,
    TrainingFinished,
    TrainingResult,
    TrainingStarted,
)
from napari_bloodcells.core.infer import _is_memory_error, segment_image
from napari_bloodcells.core.metrics import ConfusionMatrix
from napari_bloodcells.core.models import build_model
from napari_bloodcells.errors import CheckpointError, ConfigError, DataError

if TYPE_CHECKING:
    from collections.abc import Callable, Generator

    from napari_bloodcells.core.config import TrainConfig

_DEV_BATCH = 16


class _Objective:
    """Cross-entropy, optionally plus soft Dice, both ignoring padded pixels."""

    def __init__(self, kind: str) -> None:
        self.dice = (
            smp.losses.DiceLoss("multiclass", ignore_index=IGNORE_INDEX)
            if kind == "ce+dice"
            else None
        )

    def __call__(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(logits, masks, ignore_index=IGNORE_INDEX)
        if self.dice is not None:
            loss = loss + self.dice(logits, masks)
        return loss


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
        objective: _Objective,
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
            for start in range(0, len(t), _DEV_BATCH):
                images = t.images[start : start + _DEV_BATCH].to(device)
                masks = t.masks[start : start + _DEV_BATCH].to(device).long()
                x = model.preprocessing.normalize(images)
                with autocast():
                    logits = network(x)
                logits = logits.float()
                total += float(objective(logits, masks)) * len(images)
                count += len(images)
                pred = logits.argmax(1)
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


def train(
    config: TrainConfig,
    data: SegmentationData,
    *,
    init: TrainedModel | None = None,
    classes: ClassInfo = BLOODCELL_CLASSES,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_path: str | Path | None = None,
) -> Generator[TrainingEvent, None, TrainingResult]:
    """Train a model, yielding progress events; the last event carries the result.

    Parameters
    ----------
    config : TrainConfig
        Settings; see :func:`~napari_bloodcells.core.config.preset`.
    data : SegmentationData
        All pairs; the dev split is drawn from them as the notebook does.
    init : TrainedModel, optional
        Continue from this model (fine-tuning). Its architecture, classes and
        preprocessing are kept; ``config.arch``/``encoder``/``mode`` are ignored.
    classes : ClassInfo
        Class names and colours for a new model.
    should_stop : callable, optional
        Polled between batches; when it returns True the run ends cleanly.
    checkpoint_path : path, optional
        Where the best model is saved, atomically, every time it improves.

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
    if init is not None:
        classes = init.classes
        prep = init.preprocessing
        config = config.with_changes(
            arch=init.spec.arch, encoder=init.spec.encoder, mode=prep.mode, size=prep.size
        )
    data.check_classes(classes.num_classes)
    data.check_foreground()
    train_idx, dev_idx = _split(data, config)
    device = resolve_device(config.device)
    dtype = autocast_dtype(config.precision, device)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)

    if init is not None:
        network = copy.deepcopy(init.network).cpu()
        model = TrainedModel(network, init.spec, classes, init.preprocessing)
    else:
        spec = config.spec(classes.num_classes)
        network = build_model(spec, config.encoder_weights)
        model = TrainedModel(network, spec, classes, config.preprocessing())
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    network.to(device=device)
    network.to(memory_format=memory_format)
    model.config = config.to_dict()

    sampler = PatchSampler(data.subset(train_idx), model.preprocessing)
    dev = _DevSet(data.subset(dev_idx), config, config.num_preview)
    objective = _Objective(config.loss)
    optimizer_cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    optimizer = optimizer_cls(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    batch_size = config.batch_size
    steps_per_epoch = math.ceil(len(train_idx) / batch_size)
    scheduler = None
    if config.schedule == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=config.lr, epochs=config.epochs, steps_per_epoch=steps_per_epoch
        )

    def autocast() -> AbstractContextManager[object]:
        return (
            torch.autocast(device.type, dtype=dtype)
            if dtype is not None
            else contextlib.nullcontext()
        )

    for message in data.notices:
        yield Notice(message)
    if len(data) == 1:
        yield Notice(
            "Only one image: it is used for both training and scoring, so the dev "
            "scores say how well the model fits it, not how well it generalises."
        )
    yield TrainingStarted(
        str(device),
        "bf16" if dtype else "fp32",
        len(train_idx),
        len(dev_idx),
        config.epochs,
        steps_per_epoch,
    )

    best_state = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
    best_score, best_epoch = -math.inf, 0
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

    try:
        for epoch in range(1, config.epochs + 1):
            started = time.perf_counter()
            network.train()
            order = torch.randperm(len(train_idx), generator=generator).tolist()
            cursor, batch_no, loss_sum, seen = 0, 0, 0.0, 0
            while cursor < len(order):
                if should_stop():
                    stopped, reason = True, f"Stopped by the user during epoch {epoch}."
                    break
                indices = order[cursor : cursor + batch_size]
                images, masks = sampler.batch(indices, generator)
                images = images.float().div_(255)
                if config.augment:
                    images, masks = augment_batch(images, masks, generator)
                images = model.preprocessing.normalize_unit(images)
                images = images.to(device, memory_format=memory_format, non_blocking=True)
                masks = masks.to(device).long()
                try:
                    optimizer.zero_grad(set_to_none=True)
                    with autocast():
                        logits = network(images)
                    loss = objective(logits.float(), masks)
                    loss.backward()  # type: ignore[no-untyped-call]
                except (RuntimeError, torch.OutOfMemoryError) as exc:
                    if not _is_memory_error(exc) or batch_size == 1:
                        raise
                    optimizer.zero_grad(set_to_none=True)
                    batch_size //= 2
                    release_memory(device)
                    yield Notice(f"Ran out of memory; continuing with batch size {batch_size}.")
                    continue
                value = float(loss.detach())
                if not math.isfinite(value):
                    stopped = diverged = True
                    reason = (
                        f"The loss became {value} in epoch {epoch}; training stopped and "
                        f"kept the model of epoch {best_epoch}. Lower the learning rate."
                    )
                    break
                optimizer.step()
                if scheduler is not None and scheduler.last_epoch + 1 < scheduler.total_steps:
                    scheduler.step()
                cursor += len(indices)
                batch_no += 1
                loss_sum += value * len(indices)
                seen += len(indices)
                yield BatchEnded(epoch, batch_no, steps_per_epoch, value)
            if diverged or (stopped and seen == 0):
                break  # nothing new worth evaluating: keep the best model so far
            dev_loss, cm, preview = dev.evaluate(model, objective, autocast, device)
            scores = cm.scores()
            improved = keep_if_best(scores.mean_foreground_dice(), epoch)
            if improved and checkpoint_path is not None:
                snapshot = TrainedModel(
                    copy.deepcopy(network).cpu(),
                    model.spec,
                    classes,
                    model.preprocessing,
                    model.config,
                    {"best_epoch": epoch, "history": [*history]},
                )
                if notice := save(snapshot):
                    yield notice
            event = EpochEnded(
                epoch,
                config.epochs,
                loss_sum / max(seen, 1),
                dev_loss,
                scores.dice,
                scores.iou,
                time.perf_counter() - started,
                improved,
                preview,
            )
            history.append(event.to_dict())
            yield event
            if stopped:
                break
    finally:
        network.load_state_dict(best_state)
        network.to(memory_format=torch.contiguous_format).eval()
        release_memory(device)

    model.metrics = {
        "best_epoch": best_epoch,
        "best_dev_score": best_score,
        "history": history,
        "reason": reason,
    }
    if checkpoint_path is not None and best_epoch and (notice := save(model)):
        yield notice
    result = TrainingResult(
        model,
        tuple(history),
        best_epoch,
        stopped,
        reason,
        Path(checkpoint_path) if saved and checkpoint_path is not None else None,
    )
    yield TrainingFinished(result)
    return result
