"""The training generator: events, stopping, best-model keeping, reproducibility."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from napari_bloodcells.core.data.dataset import SegmentationData
from napari_bloodcells.core.events import (
    BatchEnded,
    EpochEnded,
    Notice,
    TrainingFinished,
    TrainingStarted,
    run_to_end,
)
from napari_bloodcells.core.model.checkpoint import load_checkpoint
from napari_bloodcells.core.training.config import preset
from napari_bloodcells.core.training.loop import train
from napari_bloodcells.core.training.losses import Objective
from napari_bloodcells.errors import ConfigError, DataError


def test_events_have_the_documented_shape_and_order(few_cells, tiny_config):
    config = tiny_config.with_changes(epochs=2, num_preview=2)
    events = list(train(config, few_cells))

    assert isinstance(events[0], TrainingStarted)
    assert events[0].device == "cpu"
    assert (events[0].n_train, events[0].n_dev) == (10, 2)
    assert isinstance(events[-1], TrainingFinished)
    batches = [e for e in events if isinstance(e, BatchEnded)]
    epochs = [e for e in events if isinstance(e, EpochEnded)]
    assert len(batches) == 2 * 5
    assert [b.batch for b in batches[:5]] == [1, 2, 3, 4, 5]
    assert all(math.isfinite(b.loss) for b in batches)
    assert [e.epoch for e in epochs] == [1, 2]
    for e in epochs:
        assert len(e.dice) == len(e.iou) == 3
        assert all(0.0 <= v <= 1.0 for v in e.dice + e.iou)
        assert e.seconds > 0
        assert len(e.preview) == 2
        row = e.preview[0]
        assert row.image.shape[:2] == row.truth.shape == row.prediction.shape
    result = events[-1].result
    assert result.best_epoch in (1, 2)
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert not result.stopped_early


def test_stop_between_batches_keeps_the_best_model(few_cells, tiny_config, tmp_path):
    config = tiny_config.with_changes(epochs=5)
    stop = {"now": False}
    gen = train(
        config, few_cells, should_stop=lambda: stop["now"], checkpoint_path=tmp_path / "best.pt"
    )
    seen_epochs, batches_after_stop = [], 0
    for event in gen:
        if isinstance(event, EpochEnded):
            seen_epochs.append(event)
        if isinstance(event, BatchEnded) and event.epoch == 2 and event.batch == 2:
            stop["now"] = True
        elif isinstance(event, BatchEnded) and stop["now"]:
            batches_after_stop += 1
        if isinstance(event, TrainingFinished):
            result = event.result
    assert batches_after_stop == 0, "no batch runs after stop is requested"
    assert result.stopped_early
    assert "Stopped by the user" in result.reason
    assert len(seen_epochs) == 2  # epoch 1, and the partial epoch 2
    best = max(seen_epochs, key=lambda e: sum(e.dice[1:]))
    assert result.best_epoch == best.epoch
    saved = load_checkpoint(tmp_path / "best.pt")
    for key, value in result.model.network.state_dict().items():
        assert torch.equal(saved.network.state_dict()[key], value)
    assert saved.metrics["best_epoch"] == result.best_epoch


def test_seeded_runs_are_reproducible_on_cpu(few_cells, tiny_config):
    config = tiny_config.with_changes(epochs=1, augment=True, seed=7)
    a = [e.loss for e in train(config, few_cells) if isinstance(e, BatchEnded)]
    b = [e.loss for e in train(config, few_cells) if isinstance(e, BatchEnded)]
    c = [e.loss for e in train(config.with_changes(seed=8), few_cells) if isinstance(e, BatchEnded)]
    assert a == b
    assert a != c


def test_fine_tuning_starts_from_the_given_model(few_cells, tiny_config):
    first = run_to_end(train(tiny_config, few_cells)).model
    config = tiny_config.with_changes(arch="Unet", encoder="resnet18", lr=1e-9, mode="native")
    tuned = run_to_end(train(config, few_cells, init=first)).model
    assert tuned.spec == first.spec, "fine-tuning keeps the model's architecture"
    assert tuned.preprocessing == first.preprocessing
    for key, value in first.network.state_dict().items():
        if value.is_floating_point():
            assert torch.allclose(tuned.network.state_dict()[key], value, atol=1e-5), key


def test_native_mode_trains_on_large_images_by_cropping(tiny_config):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (6, 150, 90, 3), dtype=np.uint8)
    masks = rng.integers(0, 3, (6, 150, 90), dtype=np.uint8)
    config = tiny_config.with_changes(mode="native", size=64, dev_fraction=0.34)
    result = run_to_end(train(config, SegmentationData(list(images), list(masks))))
    assert result.best_epoch == 1


def test_nan_loss_stops_and_keeps_the_last_good_model(few_cells, tiny_config, monkeypatch):
    calls = {"n": 0}
    real = Objective.__call__

    def sometimes_nan(self, logits, masks):
        calls["n"] += 1
        loss = real(self, logits, masks)
        return loss * float("nan") if calls["n"] > 7 else loss

    monkeypatch.setattr(Objective, "__call__", sometimes_nan)
    result = run_to_end(train(tiny_config.with_changes(epochs=3), few_cells))
    assert result.stopped_early
    assert "nan" in result.reason.lower()
    assert "learning rate" in result.reason
    assert result.best_epoch == 1
    assert all(
        torch.isfinite(v).all()
        for v in result.model.network.state_dict().values()
        if v.is_floating_point()
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lr": 0.0}, "learning rate"),
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 0}, "batch size"),
        ({"batch_size": 11}, "larger than the training set"),
        ({"dev_fraction": 0.05}, "leaves no dev images"),
        ({"dev_fraction": 1.0}, "dev fraction"),
    ],
)
def test_settings_out_of_range_are_clear_errors(few_cells, tiny_config, changes, message):
    with pytest.raises(ConfigError, match=message):
        next(train(tiny_config.with_changes(**changes), few_cells))


def test_labels_outside_the_classes_are_refused(few_cells, tiny_config):
    bad = few_cells.subset(range(len(few_cells)))
    bad.masks[3] = bad.masks[3].copy()
    bad.masks[3][0, 0] = 5
    with pytest.raises(DataError, match="5"):
        next(train(tiny_config, bad))


def test_presets_follow_the_notebook_and_the_measured_recipe():
    seed = preset("seed")
    assert (
        seed.arch,
        seed.mode,
        seed.size,
        seed.batch_size,
        seed.lr,
        seed.optimizer,
        seed.loss,
        seed.epochs,
        seed.augment,
    ) == ("notebook-unet", "resize", 128, 8, 1e-4, "adam", "ce", 20, False)
    default = preset("default")
    assert default.mode == "native"
    assert default.augment
    assert default.loss == "ce+dice"
    with pytest.raises(ConfigError, match="Unknown preset"):
        preset("fastest")


def test_a_single_corrected_image_can_be_trained_on(few_cells, tiny_config):
    one = few_cells.subset([0])
    events = list(train(tiny_config.with_changes(batch_size=1), one))
    notices = [e.message for e in events if isinstance(e, Notice)]
    assert any("Only one image" in n for n in notices)
    assert events[-1].result.best_epoch == 1


def test_data_notices_reach_the_event_stream(few_cells, tiny_config):
    noted = few_cells.subset(range(len(few_cells)))
    noted.notices.append("Skipped 1 file(s) in x that are not images: a.txt.")
    events = list(train(tiny_config, noted))
    assert Notice("Skipped 1 file(s) in x that are not images: a.txt.") in events


def test_a_checkpoint_that_cannot_be_written_is_told_once_and_training_goes_on(
    few_cells, tiny_config, tmp_path, monkeypatch
):
    from napari_bloodcells.core.model import checkpoint

    def full_disk(obj, f, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    events = list(
        train(tiny_config.with_changes(epochs=2), few_cells, checkpoint_path=tmp_path / "m.pt")
    )
    notices = [e.message for e in events if isinstance(e, Notice)]
    assert len(notices) == 1, notices
    assert "No space left on device" in notices[0]
    assert "keeps the best model in memory" in notices[0]
    result = events[-1].result
    assert result.best_epoch >= 1 and result.saved_to is None
    assert not list(tmp_path.iterdir()), "no partial file is left"


def test_the_result_says_where_the_model_was_saved(few_cells, tiny_config, tmp_path):
    result = run_to_end(train(tiny_config, few_cells, checkpoint_path=tmp_path / "m.pt"))
    assert result.saved_to == tmp_path / "m.pt"
    assert load_checkpoint(result.saved_to).metrics["best_epoch"] == result.best_epoch
