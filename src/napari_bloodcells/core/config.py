"""Training settings and the named presets."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Annotated, Any

from napari_bloodcells.core.bounds import OneOf, Range, check_bounds
from napari_bloodcells.core.dataset import NOTEBOOK_SEED
from napari_bloodcells.core.device import PRECISIONS
from napari_bloodcells.core.models import NOTEBOOK_UNET, ModelSpec, canonical_arch
from napari_bloodcells.core.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from napari_bloodcells.errors import ConfigError


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run.

    The ranges and choices of the fields are declared on their types
    (:mod:`~napari_bloodcells.core.bounds`); the widgets and the CLI read them
    from there.

    Attributes
    ----------
    arch, encoder : str
        See :class:`~napari_bloodcells.core.models.ModelSpec`.
    encoder_weights : str
        ``"none"``, ``"imagenet"`` or a path to an encoder ``state_dict``.
    epochs, batch_size : int
        Passes over the training set, and images per optimiser step.
    lr, weight_decay : float
        Peak learning rate and decoupled weight decay.
    optimizer : {"adam", "adamw"}
    schedule : {"constant", "onecycle"}
    loss : {"ce", "ce+dice"}
        Cross-entropy, optionally plus soft Dice.
    augment : bool
        Flips, 90-degree rotations and colour/stain jitter.
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
    """

    arch: str = "Unet"
    encoder: str = "resnet18"
    encoder_weights: str = "none"
    epochs: Annotated[int, Range(1, 10_000, "The number of epochs")] = 30
    batch_size: Annotated[int, Range(1, 1024, "The batch size")] = 8
    lr: Annotated[float, Range(0, 1, "The learning rate", low_open=True)] = 2e-3
    weight_decay: Annotated[float, Range(0, math.inf, "The weight decay")] = 1e-4
    optimizer: Annotated[str, OneOf(("adam", "adamw"), "The optimizer")] = "adamw"
    schedule: Annotated[str, OneOf(("constant", "onecycle"), "The schedule")] = "onecycle"
    loss: Annotated[str, OneOf(("ce", "ce+dice"), "The loss")] = "ce+dice"
    augment: bool = True
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

    def spec(self, num_classes: int) -> ModelSpec:
        """The network this configuration builds."""
        return ModelSpec(canonical_arch(self.arch), self.encoder, num_classes)

    def preprocessing(self) -> Preprocessing:
        """Input geometry and normalisation this configuration trains with."""
        if self.normalize == "imagenet":
            return Preprocessing(self.mode, self.size, IMAGENET_MEAN, IMAGENET_STD)
        return Preprocessing(self.mode, self.size, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))

    def with_changes(self, **changes: Any) -> TrainConfig:
        """A copy with some fields replaced; ``None`` values are ignored."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        """Plain-type representation for JSON reports and checkpoints."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first setting that is out of range."""
        canonical_arch(self.arch)
        check_bounds(self)
        if canonical_arch(self.arch) == NOTEBOOK_UNET and self.encoder_weights not in {"", "none"}:
            raise ConfigError(
                "The notebook U-Net has no pretrained encoder; set encoder weights to 'none'."
            )


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
    ),
    # Measured in benchmarks/accuracy.py: see docs/benchmarks.md.
    "default": TrainConfig(),
}


def preset(name: str) -> TrainConfig:
    """The named preset (``"default"`` or ``"seed"``)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(
            f"Unknown preset {name!r}; choose one of: {', '.join(PRESETS)}."
        ) from None
