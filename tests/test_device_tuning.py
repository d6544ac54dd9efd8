"""The preset adjusted to the hardware: what each device gets, and what a user's choice keeps."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from napari_bloodcells.core.base import device as device_module
from napari_bloodcells.core.base.classes import BLOODCELL_CLASSES
from napari_bloodcells.core.events import TrainingStarted
from napari_bloodcells.core.exchange.export import _architecture
from napari_bloodcells.core.inference.tiled import TileSettings, segment_image
from napari_bloodcells.core.model.checkpoint import load_checkpoint, save_checkpoint
from napari_bloodcells.core.model.networks import build_model
from napari_bloodcells.core.model.trained import TrainedModel
from napari_bloodcells.core.training.config import (
    CPU_AVERAGE_SHARE,
    CPU_BATCH,
    CPU_EPOCHS,
    CPU_INTENSITY_JITTER,
    CPU_NETWORK,
    GPU_BATCH,
    preset,
)
from napari_bloodcells.core.training.loop import train
from napari_bloodcells.errors import ConfigError

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture
def no_fast_bf16(monkeypatch):
    monkeypatch.setattr(device_module, "fast_bf16", lambda device: False)


def test_a_gpu_trains_larger_batches_at_a_scaled_learning_rate():
    default = preset("default")
    config, said = default.for_device(CUDA, 240)
    assert config.batch_size == GPU_BATCH
    assert config.lr == pytest.approx(default.lr * (GPU_BATCH / default.batch_size) ** 0.5)
    assert (config.epochs, config.decoder_channels) == (default.epochs, ())
    assert config.intensity_jitter == default.intensity_jitter > 0
    assert config.average_share == default.average_share > 0
    assert f"batch {GPU_BATCH}" in said


def test_the_gpu_batch_never_exceeds_the_training_set():
    config, _ = preset("default").for_device(CUDA, 12)
    assert config.batch_size == 12


def test_a_cpu_without_fast_bf16_gets_the_lighter_network_for_its_epochs(no_fast_bf16):
    default = preset("default")
    config, said = default.for_device(CPU, 240)
    assert (config.encoder, config.decoder_channels) == CPU_NETWORK
    assert config.epochs == CPU_EPOCHS
    assert config.batch_size == CPU_BATCH
    assert config.lr == pytest.approx(default.lr * (CPU_BATCH / default.batch_size) ** 0.5)
    assert "lighter network" in said and f"{CPU_EPOCHS} epochs" in said
    assert f"batch {CPU_BATCH}" in said
    # The stain-intensity jitter cost this network precision on real fields and found no more
    # white cells: it is the resnet18 network's alone.
    assert config.intensity_jitter == CPU_INTENSITY_JITTER < default.intensity_jitter
    # Averaging the last epochs was measured on the resnet18 network only.
    assert config.average_share == CPU_AVERAGE_SHARE < default.average_share


def test_the_cpu_batch_never_exceeds_the_training_set(no_fast_bf16):
    default = preset("default")
    config, _ = default.for_device(CPU, 12)
    assert config.batch_size == 12
    assert config.lr == pytest.approx(default.lr * (12 / default.batch_size) ** 0.5)
    assert default.for_device(CPU, 5)[0].batch_size == default.batch_size


def test_pretrained_encoder_weights_keep_the_network_they_belong_to(no_fast_bf16):
    config = preset("default").with_changes(encoder_weights="imagenet")
    assert config.device_tuning
    assert config.for_device(CPU, 240) == (config, "")


def test_a_cpu_with_fast_bf16_trains_the_preset_as_it_is(monkeypatch):
    monkeypatch.setattr(device_module, "fast_bf16", lambda device: True)
    assert preset("default").for_device(CPU, 240) == (preset("default"), "")


@pytest.mark.parametrize(("value", "fast"), [("1", True), ("0", False)])
def test_the_environment_decides_what_auto_does_on_this_cpu(monkeypatch, value, fast):
    monkeypatch.setenv(device_module.FAST_BF16_ENV, value)
    assert device_module.fast_bf16(CPU) is fast
    assert device_module.autocast_dtype("auto", CPU) == (torch.bfloat16 if fast else None)
    assert device_module.autocast_dtype("fp32", CPU) is None  # a pinned precision stays
    tuned, said = preset("default").for_device(CPU, 240)
    assert (tuned == preset("default")) is fast and bool(said) is not fast


def test_a_wrong_bf16_override_is_one_sentence(monkeypatch):
    monkeypatch.setenv(device_module.FAST_BF16_ENV, "yes")
    with pytest.raises(ConfigError, match=r"^NAPARI_BLOODCELLS_FAST_BF16 is 'yes'; set it to 1"):
        device_module.fast_bf16(CPU)


CHOICES = [{"epochs": 3}, {"batch_size": 4}, {"lr": 1e-3}, {"arch": "FPN"}, {"encoder": "vgg11"}]


@pytest.mark.parametrize("change", CHOICES)
def test_a_setting_the_user_chose_is_not_adjusted(change, no_fast_bf16):
    config = preset("default").with_changes(**change)
    assert not config.device_tuning
    assert config.for_device(CPU, 240) == (config, "")
    assert config.for_device(CUDA, 240) == (config, "")


def test_the_notebook_recipe_and_fine_tuning_are_not_adjusted(no_fast_bf16):
    seed = preset("seed")
    assert seed.for_device(CUDA, 240) == (seed, "")
    finetune = preset("default").with_changes(schedule="finetune")
    assert finetune.for_device(CUDA, 240)[1] == ""
    assert finetune.for_device(CPU, 240)[1] == ""


def test_training_says_what_it_chose_and_the_model_records_it(few_cells, no_fast_bf16):
    # dataclasses.replace, not with_changes: a small run that keeps the device's say.
    config = dataclasses.replace(preset("default"), epochs=3, num_preview=0, size=64)
    events = list(train(config, few_cells))
    started = next(e for e in events if isinstance(e, TrainingStarted))
    assert started.epochs == round(3 * CPU_EPOCHS / preset("default").epochs)
    assert "lighter network" in started.chosen
    model = events[-1].result.model
    assert (model.spec.encoder, model.spec.decoder_channels) == CPU_NETWORK
    assert (model.config["encoder"], model.config["decoder_channels"]) == CPU_NETWORK
    assert len(events[-1].result.history) == started.epochs


def test_the_cpu_network_survives_a_checkpoint_and_an_export_record(tmp_path):
    encoder, decoder = CPU_NETWORK
    config = preset("default").with_changes(encoder=encoder, decoder_channels=decoder)
    spec = config.spec(3)
    network = build_model(spec)
    widths = [m.out_channels for m in network.decoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert widths[-1] == decoder[-1]
    model = TrainedModel(network, spec, BLOODCELL_CLASSES, config.preprocessing())
    path = save_checkpoint(model, tmp_path / "light.pt")
    loaded = load_checkpoint(path)
    assert (loaded.spec.encoder, loaded.spec.decoder_channels) == CPU_NETWORK
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    assert np.array_equal(segment_image(model, image)[0], segment_image(loaded, image)[0])
    kwargs = _architecture(model)[2]
    assert (kwargs["encoder_name"], kwargs["decoder_channels"]) == (encoder, list(decoder))


def test_tiles_are_sized_for_the_device():
    assert TileSettings.for_device("cpu") == TileSettings()
    gpu = TileSettings.for_device(CUDA)
    assert gpu.size > TileSettings().size and gpu.batch > TileSettings().batch
    gpu.check(32)
