"""The training options form: preset, model, optimisation and starting point.

It turns its widgets into a validated :class:`TrainConfig` and a loader for
the starting model; choosing a preset fills the widgets from it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from magicgui.types import FileDialogMode
from magicgui.widgets import ComboBox, Container, FileEdit, FloatSpinBox, SpinBox

from napari_bloodcells._widgets.controls import single_path
from napari_bloodcells._widgets.state import state_of
from napari_bloodcells.core.base.bounds import range_of
from napari_bloodcells.core.jobs import architectures, encoders_for
from napari_bloodcells.core.model.checkpoint import SUFFIX
from napari_bloodcells.core.model.networks import NOTEBOOK_UNET
from napari_bloodcells.core.training.config import PRESETS, TrainConfig, preset
from napari_bloodcells.errors import ConfigError

if TYPE_CHECKING:
    import napari

    from napari_bloodcells.core.jobs import ModelSource

FROM_SCRATCH = "nothing (new model)"
FROM_CURRENT = "current session model"
FROM_FILE = "checkpoint file"
WEIGHTS = ("none", "imagenet")
_DEFAULT_ENCODER = "resnet18"


def _spin(
    kind: type[SpinBox] | type[FloatSpinBox], field: str, label: str, step: float = 1
) -> SpinBox | FloatSpinBox:
    """A spin box limited to the :class:`TrainConfig` field's declared range.

    An open end of the range is replaced by the nearest value one ``step``
    inside it, which the field can display and the engine accepts.
    """
    bound = range_of(TrainConfig, field)
    low = bound.low + step if bound.low_open else bound.low
    high = bound.high - step if bound.high_open else bound.high
    return kind(label=label, min=low, max=high, step=step)


def device_choices() -> list[str]:
    """Devices this machine offers, ``auto`` first."""
    found = ["auto", "cpu"]
    if torch.cuda.is_available():
        found.append("cuda")
        found += [
            f"cuda:{i}" for i in range(torch.cuda.device_count()) if torch.cuda.device_count() > 1
        ]
    if torch.backends.mps.is_available():
        found.append("mps")
    return found


class TrainOptions(Container):
    """Widgets for every training setting the user chooses.

    Attributes
    ----------
    preset : ComboBox
        ``default`` or ``seed``; choosing one fills the other widgets.
    arch, encoder, encoder_weights : ComboBox
        As offered by :func:`~napari_bloodcells.core.model.networks.architectures` and
        :func:`~napari_bloodcells.core.model.networks.encoders`.
    epochs, batch_size, seed : SpinBox
    lr, dev_fraction : FloatSpinBox
    device : ComboBox
    continue_from : ComboBox
        Start from scratch, from the session's current model, or from a file.
    init_file : FileEdit
        The checkpoint to continue from.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self._current = state_of(viewer).current
        self.preset = ComboBox(
            label="Preset",
            choices=list(PRESETS),
            value="default",
            tooltip="default: the tuned recipe; seed: the reference notebook",
        )
        self.arch = ComboBox(label="Architecture", choices=architectures())
        self.encoder = ComboBox(label="Encoder", choices=self._encoders)
        self.encoder_weights = ComboBox(label="Encoder weights", choices=list(WEIGHTS))
        self.epochs = _spin(SpinBox, "epochs", "Epochs")
        # Five decimals are shown, so 1e-5 is the smallest rate the field can hold exactly.
        self.lr = _spin(FloatSpinBox, "lr", "Learning rate", step=1e-5)
        self.batch_size = _spin(SpinBox, "batch_size", "Batch size")
        self.dev_fraction = _spin(FloatSpinBox, "dev_fraction", "Dev fraction", step=0.01)
        self.seed = _spin(SpinBox, "seed", "Seed")
        self.device = ComboBox(label="Device", choices=device_choices())
        self.continue_from = ComboBox(
            label="Continue from", choices=[FROM_SCRATCH, FROM_CURRENT, FROM_FILE]
        )
        self.init_file = FileEdit(
            label="Checkpoint",
            mode=FileDialogMode.EXISTING_FILE,
            filter=f"*{SUFFIX}",
            nullable=True,
        )
        super().__init__(
            widgets=[
                self.preset,
                self.arch,
                self.encoder,
                self.encoder_weights,
                self.epochs,
                self.lr,
                self.batch_size,
                self.dev_fraction,
                self.seed,
                self.device,
                self.continue_from,
                self.init_file,
            ],
            labels=True,
        )
        self.preset.changed.connect(self._on_preset)
        self.arch.changed.connect(self._on_arch)
        self.continue_from.changed.connect(self._update_enabled)
        self.apply(preset(self.preset.value))

    def _encoders(self, _widget: object = None) -> list[str]:
        # The encoders the chosen architecture builds with; the notebook U-Net has none.
        return encoders_for(self.arch.value) if self.arch.value != NOTEBOOK_UNET else [""]

    def _on_arch(self, *_: object) -> None:
        previous = self.encoder.value
        self.encoder.reset_choices()
        choices = self.encoder.choices
        if previous in choices:
            self.encoder.value = previous
        elif _DEFAULT_ENCODER in choices:
            self.encoder.value = _DEFAULT_ENCODER
        self._update_enabled()

    def apply(self, config: TrainConfig) -> None:
        """Fill the widgets from ``config``."""
        self.arch.value = config.arch if config.arch in self.arch.choices else "Unet"
        self._on_arch()
        if config.encoder in self.encoder.choices:
            self.encoder.value = config.encoder
        self.encoder_weights.value = (
            config.encoder_weights if config.encoder_weights in WEIGHTS else "none"
        )
        self.epochs.value = config.epochs
        self.lr.value = config.lr
        self.batch_size.value = config.batch_size
        self.dev_fraction.value = config.dev_fraction
        self.seed.value = config.seed
        if config.device in self.device.choices:
            self.device.value = config.device
        self._update_enabled()

    def config(self) -> TrainConfig:
        """The chosen preset with the widgets' values, validated.

        Raises
        ------
        ConfigError
            A value out of range, in a plain sentence.
        """
        notebook = self.arch.value == NOTEBOOK_UNET
        chosen = preset(self.preset.value)
        # Values left as the preset has them are the device's to adjust; changed ones are not.
        shown = (self.arch.value, self.encoder.value, self.epochs.value, self.lr.value)
        untouched = shown == (chosen.arch, chosen.encoder, chosen.epochs, chosen.lr) and (
            self.batch_size.value == chosen.batch_size
        )
        config = chosen.with_changes(
            device_tuning=chosen.device_tuning and untouched,
            arch=self.arch.value,
            encoder="" if notebook else self.encoder.value,
            encoder_weights="none" if notebook else self.encoder_weights.value,
            epochs=int(self.epochs.value),
            lr=float(self.lr.value),
            batch_size=int(self.batch_size.value),
            dev_fraction=float(self.dev_fraction.value),
            seed=int(self.seed.value),
            device=self.device.value,
        )
        config.validate()
        return config

    def starting_model(self) -> tuple[ModelSource | None, str]:
        """The model to start from, as the training job takes it, and a description of it.

        A checkpoint file is read by the job, in the worker.

        Raises
        ------
        ConfigError
            "Continue from" names a model that is not there.
        """
        choice = self.continue_from.value
        if choice == FROM_SCRATCH:
            return None, "a new model"
        if choice == FROM_CURRENT:
            model = self._current.model
            if model is None:
                raise ConfigError(
                    "There is no current model to continue from; train one first, or set "
                    "'Continue from' to a checkpoint file."
                )
            return model, "the current session model"
        path = single_path(self.init_file)
        if path is None or not path.is_file():
            raise ConfigError(
                f"Choose the checkpoint file ({SUFFIX}) to continue from, or set 'Continue "
                "from' to nothing."
            )
        return path, f"the model in {path.name}"

    def _on_preset(self, name: str) -> None:
        self.apply(preset(name))

    @property
    def fine_tuning(self) -> bool:
        """Whether a run continues a model, and so follows the fine-tune schedule."""
        return self.continue_from.value != FROM_SCRATCH

    def _update_enabled(self, *_: object) -> None:
        # Fine-tuning keeps the starting model's network and follows its own schedule
        # (a step budget at a learning rate for trained models), so the architecture,
        # epochs and learning rate would be ignored: grey them out rather than mislead.
        fresh = not self.fine_tuning
        notebook = self.arch.value == NOTEBOOK_UNET
        self.arch.enabled = fresh
        self.encoder.enabled = fresh and not notebook
        self.encoder_weights.enabled = fresh and not notebook
        self.epochs.enabled = fresh
        self.lr.enabled = fresh
        self.init_file.visible = self.continue_from.value == FROM_FILE
