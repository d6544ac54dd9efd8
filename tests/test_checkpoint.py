"""Checkpoints: round trip, weights_only loading, atomic writes and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_bloodcells.core.base.classes import BLOODCELL_CLASSES
from napari_bloodcells.core.inference.tiled import segment_image
from napari_bloodcells.core.model import checkpoint as ckpt
from napari_bloodcells.core.model.checkpoint import load_checkpoint, save_checkpoint
from napari_bloodcells.core.model.networks import ModelSpec, build_model
from napari_bloodcells.core.model.preprocessing import Preprocessing
from napari_bloodcells.core.model.trained import TrainedModel
from napari_bloodcells.errors import CheckpointError


@pytest.fixture
def model():
    torch.manual_seed(0)
    spec = ModelSpec("Unet", "resnet18")
    return TrainedModel(
        build_model(spec).eval(),
        spec,
        BLOODCELL_CLASSES,
        Preprocessing(),
        config={"epochs": 3},
        metrics={"best_epoch": 2},
    )


def test_round_trip_keeps_weights_and_metadata(model, tmp_path):
    path = save_checkpoint(model, tmp_path / "m.pt")
    raw = torch.load(path, weights_only=True)
    assert raw["format_version"] == ckpt.FORMAT_VERSION
    assert raw["versions"]["torch"] == torch.__version__
    assert raw["classes"]["names"] == ["background", "cytoplasm", "nucleus"]

    loaded = load_checkpoint(path)

    assert loaded.spec == model.spec
    assert loaded.preprocessing == model.preprocessing
    assert loaded.classes == model.classes
    assert loaded.config == {"epochs": 3}
    assert loaded.metrics == {"best_epoch": 2}
    image = np.random.default_rng(1).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    a, _ = segment_image(model, image, precision="fp32")
    b, _ = segment_image(loaded, image, precision="fp32")
    np.testing.assert_array_equal(a, b)


def test_truncated_file_is_a_clear_error(model, tmp_path):
    path = save_checkpoint(model, tmp_path / "m.pt")
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(path)


def test_foreign_file_is_a_clear_error(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="not a napari-bloodcells model"):
        load_checkpoint(path)
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "text.pt")


def test_newer_format_asks_for_an_upgrade(model, tmp_path, monkeypatch):
    monkeypatch.setattr(ckpt, "FORMAT_VERSION", ckpt.FORMAT_VERSION + 1)
    path = save_checkpoint(model, tmp_path / "m.pt")
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match="upgrade"):
        load_checkpoint(path)


def test_failed_save_leaves_the_previous_file_intact(model, tmp_path, monkeypatch):
    path = save_checkpoint(model, tmp_path / "m.pt")
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        with open(f, "wb") as fh:
            fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(CheckpointError, match=r"Could not write the model .*\(disk full\)"):
        save_checkpoint(model, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"], "no temporary file is left"


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
