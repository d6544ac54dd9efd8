"""Training settings and the named presets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from napari_bloodcells.core.dataset import NOTEBOOK_SEED
from napari_bloodcells.core.models import NOTEBOOK_UNET, ModelSpec, canonical_arch
from napari_bloodcells.core.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from napari_bloodcells.errors import ConfigError


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run.

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
    epochs: int = 30
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    schedule: str = "onecycle"
    loss: str = "ce+dice"
    augment: bool = True
    mode: str = "native"
    size: int = 128
    normalize: str = "imagenet"
    precision: str = "auto"
    channels_last: bool = True
    dev_fraction: float = 0.2
    split_seed: int = NOTEBOOK_SEED
    seed: int = 0
    device: str = "auto"
    num_preview: int = 3

    def spec(self, num_classes: int) -> ModelSpec:
        """The network this configuration builds."""
        return ModelSpec(canonical_arch(self.arch), self.encoder, num_classes)

    def preprocessing(self) -> Preprocessing:
        """Input geometry and normalisation this configuration trains with."""
        if self.normalize == "imagenet":
            return Preprocessing(self.mode, self.size, IMAGENET_MEAN, IMAGENET_STD)
        return Preprocessing(self.mode, self.size, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))

    def with_changes(self, **changes) -> TrainConfig:
        """A copy with some fields replaced; ``None`` values are ignored."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict:
        """Plain-type representation for JSON reports and checkpoints."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first setting that is out of range."""
        canonical_arch(self.arch)
        checks = [
            (
                1 <= self.epochs <= 10_000,
                f"The number of epochs ({self.epochs}) must be 1 to 10000.",
            ),
            (
                1 <= self.batch_size <= 1024,
                f"The batch size ({self.batch_size}) must be 1 to 1024.",
            ),
            (0 < self.lr <= 1, f"The learning rate ({self.lr}) must be above 0 and at most 1."),
            (self.weight_decay >= 0, "The weight decay must not be negative."),
            (
                0 < self.dev_fraction < 1,
                f"The dev fraction ({self.dev_fraction}) must be between 0 and 1, e.g. 0.2.",
            ),
            (self.optimizer in {"adam", "adamw"}, "The optimizer must be adam or adamw."),
            (
                self.schedule in {"constant", "onecycle"},
                "The schedule must be constant or onecycle.",
            ),
            (self.loss in {"ce", "ce+dice"}, "The loss must be ce or ce+dice."),
            (self.mode in {"native", "resize"}, "The mode must be native or resize."),
            (self.normalize in {"imagenet", "unit"}, "Normalisation must be imagenet or unit."),
            (self.precision in {"auto", "fp32", "bf16"}, "Precision must be auto, fp32 or bf16."),
            (
                32 <= self.size <= 2048 and self.size % 32 == 0,
                f"The patch size ({self.size}) must be a multiple of 32 between 32 and 2048.",
            ),
            (0 <= self.num_preview <= 16, "The preview must show 0 to 16 images."),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
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
