"""Everything one training run holds, prepared before its first batch.

:func:`prepare_run` checks the settings and the data, splits or plans the run
(a new model's train/dev split, or a fine-tune's :class:`FineTunePlan`), builds
the network, the optimizer and, under ``torchrun``, the DDP wrapper. The loop
(:mod:`~napari_bloodcells.core.training.loop`) then only trains.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from napari_bloodcells.core.base.device import autocast, autocast_dtype, resolve_device
from napari_bloodcells.core.data.dataset import SegmentationData, split_indices
from napari_bloodcells.core.model.fold import forget as forget_folded
from napari_bloodcells.core.model.networks import build_model
from napari_bloodcells.core.model.trained import TrainedModel
from napari_bloodcells.core.training.batches import PatchSampler
from napari_bloodcells.core.training.dev_set import DevSet
from napari_bloodcells.core.training.finetune import plan_finetune
from napari_bloodcells.core.training.losses import Objective
from napari_bloodcells.errors import ConfigError, DataError

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractContextManager
    from pathlib import Path

    from napari_bloodcells.core.base.classes import ClassInfo
    from napari_bloodcells.core.base.metrics import ConfusionMatrix
    from napari_bloodcells.core.events import PreviewRow
    from napari_bloodcells.core.training.config import TrainConfig
    from napari_bloodcells.core.training.ddp import ProcessGroup
    from napari_bloodcells.core.training.finetune import Candidate, FineTunePlan


@dataclass
class Schedule:
    """What a run trains on and for how long."""

    config: TrainConfig
    train_data: SegmentationData
    dev_data: SegmentationData
    epochs: int
    steps_per_epoch: int
    lr: float
    n_train: int
    n_dev: int
    chosen: str = ""
    """What the preset chose for the device, for :class:`TrainingStarted`."""
    plan: FineTunePlan | None = None


@dataclass
class Run:
    """A prepared run: the model, its data, the optimizer and how it is scored."""

    schedule: Schedule
    model: TrainedModel
    trained: torch.nn.Module
    """The network, or its DDP wrapper under ``torchrun``."""
    device: torch.device
    dtype: torch.dtype | None
    generator: torch.Generator
    order_generator: torch.Generator
    sampler: PatchSampler
    dev: DevSet
    reference: DevSet | None
    objective: Objective
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    should_stop: Callable[[], bool]
    checkpoint_path: Path | None
    memory_format: torch.memory_format
    group: ProcessGroup | None = None
    sharded: bool = False
    notices: list[str] = field(default_factory=list)

    @property
    def config(self) -> TrainConfig:
        return self.schedule.config

    @property
    def plan(self) -> FineTunePlan | None:
        return self.schedule.plan

    @property
    def network(self) -> torch.nn.Module:
        return self.model.network

    def autocast(self) -> AbstractContextManager[object]:
        """The run's precision around a forward pass."""
        return autocast(self.device, self.dtype)

    def stop_asked(self) -> bool:
        """Whether to stop now; under ``torchrun`` every rank stops at the same batch."""
        asked = self.should_stop()
        return self.group.any(asked) if self.group is not None else asked

    def evaluate_dev(self) -> tuple[float, ConfusionMatrix, tuple[PreviewRow, ...]]:
        """Dev loss, confusion matrix and preview rows, summed over the ranks' shares."""
        loss, cm, preview = self.dev.evaluate(
            self.model, self.objective, self.autocast, self.device
        )
        if self.group is None or not self.sharded:
            return loss, cm, preview
        n = float(len(self.schedule.dev_data))
        totals = self.group.sum_(torch.tensor([loss * n, n], dtype=torch.float64))
        cm.matrix = self.group.sum_(cm.matrix)
        return float(totals[0] / max(float(totals[1]), 1.0)), cm, preview

    def reference_dice(self) -> float | None:
        """Mean foreground Dice on the replay's dev images (what forgetting is measured on)."""
        if self.reference is None:
            return None
        _, cm, _ = self.reference.evaluate(self.model, self.objective, self.autocast, self.device)
        return cm.scores().mean_foreground_dice()

    def batches(self, batch_size: int) -> list[list[int]]:
        """One epoch's batches of training indices."""
        plan = self.plan
        if plan is not None:
            return [plan.draw(self.generator) for _ in range(self.schedule.steps_per_epoch)]
        count = len(self.schedule.train_data)
        order = torch.randperm(count, generator=self.order_generator).tolist()
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@dataclass
class RunProgress:
    """What the epochs of a run have produced so far."""

    batch_size: int
    history: list[dict[str, Any]] = field(default_factory=list)
    rounds: dict[int, Candidate] = field(default_factory=dict)
    """A fine-tune's rounds, as candidates for the kept model."""
    start: Candidate | None = None
    """A fine-tune's starting model, as candidate 0."""
    reason: str = "Training finished."
    stopped: bool = False
    diverged: bool = False
    averaged: dict[str, Any] | None = None
    """``epochs`` (first, last) averaged into the kept model and its dev ``dice``."""


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


def _schedule(
    config: TrainConfig,
    data: SegmentationData,
    replay: SegmentationData | None,
    device: torch.device,
    group: ProcessGroup | None,
) -> Schedule:
    """A fine-tune's plan, or a new model's split with the preset adjusted to the device."""
    if config.schedule == "finetune":
        plan = plan_finetune(
            data,
            replay,
            steps=config.finetune_steps,
            batch_size=config.batch_size,
            share=config.correction_share,
            split_seed=config.split_seed,
        )
        return Schedule(
            config,
            plan.pool,
            plan.dev,
            plan.rounds,
            plan.steps_per_round,
            config.finetune_lr,
            plan.corrections,
            len(plan.dev),
            plan=plan,
        )
    train_idx, dev_idx = _split(data, config)
    chosen = ""
    if group is None:  # the ranks of a DDP job keep the batch they were given
        config, chosen = config.for_device(device, len(train_idx))
    return Schedule(
        config,
        data.subset(train_idx),
        data.subset(dev_idx),
        config.epochs,
        math.ceil(len(train_idx) / config.batch_size),
        config.lr,
        len(train_idx),
        len(dev_idx),
        chosen,
    )


def _checked(
    config: TrainConfig,
    data: SegmentationData,
    init: TrainedModel | None,
    replay: SegmentationData | None,
    classes: ClassInfo,
) -> tuple[TrainConfig, SegmentationData, ClassInfo]:
    """The settings and data a run uses, after the checks that need neither model nor device."""
    config.validate()
    if len(data) == 0:
        raise DataError("There are no training images; add image/mask pairs first.")
    if config.schedule == "finetune" and init is None:
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
    # Corrections may only erase: the start already knows what cells look like.
    data.check_learnable(continuing=init is not None)
    if config.schedule == "finetune" and replay is not None:
        replay.check_classes(classes.num_classes)
    return config, data, classes


def _new_model(config: TrainConfig, init: TrainedModel | None, classes: ClassInfo) -> TrainedModel:
    if init is not None:
        network = copy.deepcopy(init.network).cpu()
        return TrainedModel(
            network,
            init.spec,
            classes,
            init.preprocessing,
            size_model=init.size_model,
            type_model=copy.deepcopy(init.type_model),
        )
    spec = config.spec(classes.num_classes)
    return TrainedModel(
        build_model(spec, config.encoder_weights), spec, classes, config.preprocessing()
    )


def _optimizer(
    schedule: Schedule, network: torch.nn.Module, device: torch.device
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
    config, lr = schedule.config, schedule.lr
    optimizer_cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    fused = device.type in {"cuda", "cpu"}
    optimizer = optimizer_cls(
        network.parameters(),
        lr=lr,
        weight_decay=config.weight_decay,
        # One kernel for the whole update instead of several per tensor and step: on a
        # GPU the step is bound by launches, on a CPU it saves a few percent.
        fused=fused,
    )
    if fused:  # its writes do not bump the weights' versions, which the folded copy watches
        optimizer.register_step_post_hook(lambda *_: forget_folded(network))
    total = schedule.epochs * schedule.steps_per_epoch
    if config.schedule == "onecycle":
        return optimizer, torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=lr, epochs=schedule.epochs, steps_per_epoch=schedule.steps_per_epoch
        )
    if config.schedule == "finetune":  # a gentle decay: the model is trained already
        return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=total, eta_min=lr / 10
        )
    return optimizer, None


def _distribute(
    network: torch.nn.Module, schedule: Schedule, group: ProcessGroup, device: torch.device
) -> tuple[torch.nn.Module, bool]:
    """The DDP wrapper, and whether each rank scores only its share of the dev images."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [group.local_rank] if device.type == "cuda" else None
    trained = DistributedDataParallel(network, device_ids=ids)
    # Each rank scores its share of the dev images and the sums are reduced; with
    # fewer dev images than ranks every rank scores them all.
    dev_data = schedule.dev_data
    if len(dev_data) < group.world_size:
        return trained, False
    share = list(range(len(dev_data)))[group.rank :: group.world_size]
    schedule.dev_data = dev_data.subset(share)
    return trained, True


def prepare_run(
    config: TrainConfig,
    data: SegmentationData,
    init: TrainedModel | None,
    replay: SegmentationData | None,
    classes: ClassInfo,
    should_stop: Callable[[], bool] | None,
    checkpoint_path: Path | None,
    group: ProcessGroup | None,
) -> Run:
    """Check, split or plan, and build everything a run needs (see :func:`train`)."""
    config, data, classes = _checked(config, data, init, replay, classes)
    device = group.device if group is not None else resolve_device(config.device)
    schedule = _schedule(config, data, replay, device, group)
    config = schedule.config
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    # Every rank draws the same global batches; crops and augmentation differ per rank.
    order_generator = generator
    if group is not None:
        order_generator = torch.Generator().manual_seed(config.seed)
        generator = torch.Generator().manual_seed(config.seed + 7919 * group.rank)
        if not group.is_main:
            checkpoint_path = None
    model = _new_model(config, init, classes)
    network = model.network
    network.to(device=device)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    network.to(memory_format=memory_format)
    model.config = config.to_dict()
    trained, sharded = network, False
    if group is not None:
        trained, sharded = _distribute(network, schedule, group, device)
    plan = schedule.plan
    optimizer, scheduler = _optimizer(schedule, network, device)
    return Run(
        schedule,
        model,
        trained,
        device,
        autocast_dtype(config.precision, device),
        generator,
        order_generator,
        PatchSampler(schedule.train_data, model.preprocessing),
        DevSet(schedule.dev_data, config, config.num_preview),
        DevSet(plan.reference, config, 0) if plan is not None and plan.reference else None,
        Objective(config.loss),
        optimizer,
        scheduler,
        should_stop or (lambda: False),
        checkpoint_path,
        memory_format,
        group,
        sharded,
        _notices(data, config),
    )


def _notices(data: SegmentationData, config: TrainConfig) -> list[str]:
    notices = list(data.notices)
    if len(data) == 1 and config.schedule != "finetune":
        notices.append(
            "Only one image: it is used for both training and scoring, so the dev "
            "scores say how well the model fits it, not how well it generalises."
        )
    return notices
