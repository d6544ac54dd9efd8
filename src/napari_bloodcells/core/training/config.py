"""Training settings and the named presets."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Annotated, Any

from napari_bloodcells.core.base import device as devices
from napari_bloodcells.core.base.bounds import MAGNIFICATION_RANGE, OneOf, Range, check_bounds
from napari_bloodcells.core.base.device import PRECISIONS
from napari_bloodcells.core.data.dataset import NOTEBOOK_SEED
from napari_bloodcells.core.model.networks import NOTEBOOK_UNET, ModelSpec, canonical_arch
from napari_bloodcells.core.model.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from napari_bloodcells.core.training.augment import Augmentation
from napari_bloodcells.core.training.losses import LOSSES
from napari_bloodcells.errors import ConfigError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run.

    The ranges and choices of the fields are declared on their types
    (:mod:`~napari_bloodcells.core.base.bounds`); the widgets and the CLI read them
    from there.

    Attributes
    ----------
    arch, encoder : str
        See :class:`~napari_bloodcells.core.model.networks.ModelSpec`.
    encoder_weights : str
        ``"none"``, ``"imagenet"`` or a path to an encoder ``state_dict``.
    epochs, batch_size : int
        Passes over the training set, and images per optimiser step.
    lr, weight_decay : float
        Peak learning rate and decoupled weight decay.
    optimizer : {"adam", "adamw"}
    schedule : {"constant", "onecycle"}
    loss : {"ce", "ce+dice", "ce+dice+area"}
        Cross-entropy, optionally plus soft Dice, and a per-image class-area term
        (:mod:`~napari_bloodcells.core.training.losses`).
    augment : bool
        Flips, 90-degree rotations and colour/stain jitter.
    stain_jitter, hue_jitter, grayscale, blur, zoom_jitter, smear, intensity_jitter : float
        The optional parts of :class:`~napari_bloodcells.core.training.augment.Augmentation`.
    average_share : float
        A new model keeps the average of the weights of this last share of its
        epochs (:mod:`~napari_bloodcells.core.training.averaging`); 0, or a share
        of fewer than two epochs, keeps the best epoch by dev score.
    mode : {"native", "resize"}
        Pad/crop patches at native resolution, or resize like the notebook.
    size : int
        Patch size (native) or resize target (resize).
    normalize : {"imagenet", "unit"}
        Per-channel ImageNet statistics, or plain 0..1 intensities.
    precision : {"auto", "fp32", "bf16"}
        Autocast precision; "auto" uses bf16 where the hardware runs it natively.
    channels_last : bool
        NHWC memory layout, faster for convolutions on CPU and tensor cores.
    dev_fraction : float
        Share of pairs held out for the dev split (``int(fraction * N)`` pairs).
    split_seed : int
        Seed of the dev split; 909 reproduces the notebook's split.
    seed : int
        Seed of initialisation, shuffling, dropout and augmentation.
    device : str
        ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    num_preview : int
        Dev images shown in the preview each epoch.
    scale : float
        Resize factor applied to the training pairs first, with the meaning of
        ``segment --scale``: 0.4 when the cells look 2.5 times larger than the
        model's pixel size.
    finetune_steps, finetune_lr : int, float
        The ``finetune`` schedule: optimiser steps, whatever the number of
        corrections, at a learning rate suited to a trained model.
    correction_share : float
        In the ``finetune`` schedule, the share of each batch drawn from the
        corrections; the rest replays the model's own training data.
    data_source : str
        Where the training pairs came from (``"bloodcells"``, a folder, or
        ``""``), recorded so that a later fine-tune can replay them.
    data_digest : str
        Fingerprint of the training pairs: two models with the same digest,
        dev fraction and split seed were scored on the same dev images.
    decoder_channels : tuple of int
        Widths of the decoder's stages; empty for the architecture's own.
    device_tuning : bool
        Let the hardware adjust the preset (:meth:`for_device`): on a GPU a
        larger batch, on a CPU without fast bf16 fewer epochs and a lighter
        decoder. Setting the epochs, batch size or learning rate yourself
        turns it off.
    """

    arch: str = "Unet"
    encoder: str = "resnet18"
    encoder_weights: str = "none"
    epochs: Annotated[int, Range(1, 10_000, "The number of epochs")] = 30
    batch_size: Annotated[int, Range(1, 1024, "The batch size")] = 8
    lr: Annotated[float, Range(0, 1, "The learning rate", low_open=True)] = 2e-3
    weight_decay: Annotated[float, Range(0, math.inf, "The weight decay")] = 1e-4
    optimizer: Annotated[str, OneOf(("adam", "adamw"), "The optimizer")] = "adamw"
    schedule: Annotated[str, OneOf(("constant", "onecycle", "finetune"), "The schedule")] = (
        "onecycle"
    )
    loss: Annotated[str, OneOf(LOSSES, "The loss")] = "ce+dice"
    augment: bool = True
    stain_jitter: Annotated[float, Range(0, 1, "The stain jitter")] = 0.0
    hue_jitter: Annotated[float, Range(0, 0.5, "The hue jitter")] = 0.0
    grayscale: Annotated[float, Range(0, 1, "The grayscale probability")] = 0.0
    blur: Annotated[float, Range(0, 1, "The blur probability")] = 0.0
    zoom_jitter: Annotated[float, Range(1, 4, "The zoom jitter")] = 1.0
    smear: Annotated[float, Range(0, 1, "The smear-paste probability")] = 0.0
    intensity_jitter: Annotated[float, Range(0, 0.9, "The stain-intensity jitter")] = 0.0
    average_share: Annotated[
        float, Range(0, 1, "The averaged share of the epochs", high_open=True)
    ] = 0.0
    mode: Annotated[str, OneOf(("native", "resize"), "The mode")] = "native"
    size: Annotated[int, Range(32, 2048, "The patch size", multiple=32)] = 128
    normalize: Annotated[str, OneOf(("imagenet", "unit"), "Normalisation")] = "imagenet"
    precision: Annotated[str, OneOf(PRECISIONS, "Precision")] = "auto"
    channels_last: bool = True
    dev_fraction: Annotated[
        float,
        Range(0, 1, "The dev fraction", low_open=True, high_open=True, hint=", e.g. 0.2"),
    ] = 0.2
    split_seed: Annotated[int, Range(0, 2**63 - 1, "The split seed")] = NOTEBOOK_SEED
    seed: Annotated[int, Range(0, 2**31 - 1, "The seed")] = 0
    device: str = "auto"
    num_preview: Annotated[int, Range(0, 16, "The number of preview images")] = 3
    scale: Annotated[float, MAGNIFICATION_RANGE] = 1.0
    finetune_steps: Annotated[int, Range(5, 100_000, "The fine-tune step budget")] = 80
    finetune_lr: Annotated[float, Range(0, 1, "The fine-tune learning rate", low_open=True)] = 3e-4
    correction_share: Annotated[
        float, Range(0, 1, "The corrections' share of each batch", low_open=True)
    ] = 0.75
    data_source: str = ""
    data_digest: str = ""
    decoder_channels: tuple[int, ...] = ()
    device_tuning: bool = True

    def augmentation(self) -> Augmentation:
        """The strengths of the optional augmentation parts."""
        return Augmentation(
            self.stain_jitter,
            self.hue_jitter,
            self.grayscale,
            self.blur,
            self.zoom_jitter,
            self.smear,
            self.intensity_jitter,
        )

    def spec(self, num_classes: int) -> ModelSpec:
        """The network this configuration builds."""
        return ModelSpec(
            canonical_arch(self.arch),
            self.encoder,
            num_classes,
            decoder_channels=self.decoder_channels,
        )

    def preprocessing(self) -> Preprocessing:
        """Input geometry and normalisation this configuration trains with."""
        if self.normalize == "imagenet":
            return Preprocessing(self.mode, self.size, IMAGENET_MEAN, IMAGENET_STD)
        return Preprocessing(self.mode, self.size, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))

    def with_changes(self, **changes: Any) -> TrainConfig:
        """A copy with some fields replaced; ``None`` values are ignored.

        Choosing any of :data:`TUNED_FIELDS` turns :attr:`device_tuning` off,
        unless the changes set it too: what a user sets is not adjusted.
        """
        given = {k: v for k, v in changes.items() if v is not None}
        if "device_tuning" not in given and TUNED_FIELDS & given.keys():
            given["device_tuning"] = False
        return replace(self, **given)

    def to_dict(self) -> dict[str, Any]:
        """Plain-type representation for JSON reports and checkpoints."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are ignored."""
        names = {f.name for f in fields(cls)}
        known = {k: v for k, v in d.items() if k in names}
        if "decoder_channels" in known:  # JSON has lists only
            known["decoder_channels"] = tuple(known["decoder_channels"])
        return cls(**known)

    def for_device(self, device: torch.device, train_images: int) -> tuple[TrainConfig, str]:
        """This configuration as ``device`` runs it, and a sentence saying what it chose.

        Only a run with :attr:`device_tuning` on, training a new model on the
        one-cycle schedule, changes:

        - On a GPU the batch grows to :data:`GPU_BATCH` (at most the training
          set) and the learning rate with the square root of the batch. A step
          is bound by kernel launches there, so four times the batch costs
          little more time per step and an epoch takes a quarter of the steps.
        - On a CPU without fast bf16 arithmetic (AVX2 and older AVX-512), the
          preset's network gives way to :data:`CPU_NETWORK`, a ``Unet`` on a
          small RegNet encoder with a narrow decoder, for :data:`CPU_EPOCHS`
          epochs at batch :data:`CPU_BATCH` (learning rate scaled as on a GPU).
          Its epochs take less than half as long as the resnet18 network's, so
          the run ends within the time of the reference notebook's loop, and it
          segments 4.5 times as fast (docs/benchmarks.md). It trains with
          :data:`CPU_INTENSITY_JITTER` and :data:`CPU_AVERAGE_SHARE`.
        """
        if not self.device_tuning or self.schedule != "onecycle":
            return self, ""
        if device.type == "cuda":
            batch, lr = self._larger_batch(GPU_BATCH, train_images)
            if batch == self.batch_size:
                return self, ""
            return replace(self, batch_size=batch, lr=lr), (
                f"batch {batch} and learning rate {lr:.3g} for the GPU"
            )
        if device.type == "cpu" and not devices.fast_bf16(device) and self._preset_network():
            encoder, decoder = CPU_NETWORK
            widths = "-".join(map(str, decoder))
            epochs = max(1, round(self.epochs * CPU_EPOCHS / PRESETS["default"].epochs))
            batch, lr = self._larger_batch(CPU_BATCH, train_images)
            tuned = replace(
                self,
                encoder=encoder,
                decoder_channels=decoder,
                epochs=epochs,
                batch_size=batch,
                lr=lr,
                intensity_jitter=min(self.intensity_jitter, CPU_INTENSITY_JITTER),
                average_share=min(self.average_share, CPU_AVERAGE_SHARE),
            )
            return tuned, (
                f"a lighter network ({encoder.removeprefix('tu-')} encoder, {widths} decoder "
                f"channels) at batch {batch} and learning rate {lr:.3g} for {epochs} epochs, "
                "because this CPU has no fast bf16 arithmetic"
            )
        return self, ""

    def _larger_batch(self, target: int, train_images: int) -> tuple[int, float]:
        """The batch grown towards ``target`` (at most the training set), and its learning
        rate, scaled with the square root of the batch."""
        batch = max(self.batch_size, min(target, train_images))
        return batch, self.lr * math.sqrt(batch / self.batch_size)

    def _preset_network(self) -> bool:
        default = PRESETS["default"]
        return (
            canonical_arch(self.arch) == default.arch
            and self.encoder == default.encoder
            and self.encoder_weights in {"", "none"}
            and not self.decoder_channels
        )

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first setting that is out of range."""
        canonical_arch(self.arch)
        check_bounds(self)
        if canonical_arch(self.arch) == NOTEBOOK_UNET and self.encoder_weights not in {"", "none"}:
            raise ConfigError(
                "The notebook U-Net has no pretrained encoder; set encoder weights to 'none'."
            )


TUNED_FIELDS = frozenset({"arch", "encoder", "epochs", "batch_size", "lr", "decoder_channels"})
"""The settings :meth:`TrainConfig.for_device` may adjust; a user who sets one decides."""

GPU_BATCH = 32
"""The batch a GPU trains with when :attr:`TrainConfig.device_tuning` is on."""

CPU_NETWORK: tuple[str, tuple[int, ...]] = ("tu-regnetx_002", (64, 32, 16, 16, 8))
"""Encoder and decoder widths of the Unet trained on a CPU without fast bf16.

RegNetX-200MF (timm's, through smp's ``tu-`` prefix) and a decoder a quarter of
smp's width: on 2 AVX2 cores an epoch takes 8-9 s against 20-23 s for a resnet18 Unet
with a half-width decoder, and inference runs 4.5 times as fast as the preset's
network, with dev Dice within 0.005 of it (docs/benchmarks.md, "Speed on the
hardware people have")."""

CPU_EPOCHS = 48
"""Epochs of that network where the preset trains 30: it is cheap enough to train
longer than the preset within the notebook loop's time, and it needs to."""

CPU_INTENSITY_JITTER = 0.0
"""The stain-intensity jitter of that network. The preset's resnet18 network needs it to find
real smear fields' pale-nucleus white cells (recall over five seeds 0.880-0.990 without,
0.950-0.983 with it); this network finds them without it (0.977-0.997 over three seeds), and
with it paints more red cells as nucleus (precision 0.892 / 0.920 / 0.991 without, 0.806 /
0.889 / 0.898 with) and keeps less of Dataset 1's nucleus (docs/benchmarks.md)."""

CPU_AVERAGE_SHARE = 0.0
"""That network keeps its best epoch: the averaging that found more white cells for the
preset's resnet18 network was not measured on it, and it meets the real fields' targets
without (docs/benchmarks.md)."""

CPU_BATCH = 16
"""The batch that network trains with on such a CPU. On 2 AVX2 cores a sample costs
29 ms of a training step at batch 16 against 36 ms at batch 8, so 48 epochs take the
time of 40; the dev Dice is the same and the N:C error lower (docs/benchmarks.md)."""

PRESETS: dict[str, TrainConfig] = {
    # The reference notebook's recipe: its U-Net, 128 px resize, batch 8, Adam 1e-4,
    # cross-entropy, 20 epochs, no augmentation, intensities in 0..1. Arithmetic is bf16
    # autocast where the hardware runs it natively (1.7x faster than fp32 on the
    # development CPU, same accuracy; see docs/benchmarks.md); precision="fp32" keeps the
    # notebook's float32 throughout.
    "seed": TrainConfig(
        arch=NOTEBOOK_UNET,
        encoder="",
        epochs=20,
        batch_size=8,
        lr=1e-4,
        weight_decay=0.0,
        optimizer="adam",
        schedule="constant",
        loss="ce",
        augment=False,
        mode="resize",
        size=128,
        normalize="unit",
        precision="auto",
        device_tuning=False,
    ),
    # Measured in benchmarks/accuracy.py: see docs/benchmarks.md. The augmentation parts
    # kept are those that made a Dataset-1 model more robust to another stain without
    # costing accuracy on Dataset 1 (benchmarks/augmentation.py); blur and zoom did not.
    # The stain-intensity jitter found the pale-nucleus white cells of real smear fields
    # that the paste alone taught a model to call background, and averaging the last
    # third of the epochs found more of them (docs/benchmarks.md).
    "default": TrainConfig(
        stain_jitter=0.15,
        hue_jitter=0.04,
        grayscale=0.1,
        smear=0.5,
        intensity_jitter=0.4,
        average_share=1 / 3,
    ),
}


def preset(name: str) -> TrainConfig:
    """The named preset (``"default"`` or ``"seed"``)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(
            f"Unknown preset {name!r}; choose one of: {', '.join(PRESETS)}."
        ) from None
