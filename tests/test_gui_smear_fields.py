"""The correct-and-retrain loop on real smear fields, in a real napari window (Xvfb)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gui_helpers import RUN_TIMEOUT_MS, dock, errors, infos, run_segment
from napari_bloodcells.core.data.dataset import read_image
from napari_bloodcells.core.data.smear_fields import Field, load_fields
from napari_bloodcells.core.events import run_to_end
from napari_bloodcells.core.training.config import preset
from napari_bloodcells.core.training.loop import train

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("data_env")]

BCCD = Path(__file__).resolve().parents[2] / "shared" / "data" / "BCCD-trainval"


def painted(field: Field, pixels: np.ndarray) -> np.ndarray:
    """What a user paints on a field: the white cell (its box's ellipse), its purple nucleus,
    and everything else erased to background."""
    from skimage.draw import ellipse

    (box,) = field.white_cells
    labels = np.zeros(pixels.shape[:2], np.uint8)
    centre = ((box.y0 + box.y1) / 2, (box.x0 + box.x1) / 2)
    rr, cc = ellipse(*centre, (box.y1 - box.y0) / 2, (box.x1 - box.x0) / 2, shape=labels.shape)
    labels[rr, cc] = 1
    purple = pixels[..., 2].astype(int) - pixels[..., 0].astype(int) > 25
    labels[(labels == 1) & purple] = 2
    return labels


@pytest.fixture
def dataset1_model(few_cells):
    """A model at its own pixel size, trained briefly on Dataset 1, which it replays."""
    config = preset("default").with_changes(
        arch="notebook-unet",
        encoder="",
        size=64,
        epochs=2,
        batch_size=4,
        device="cpu",
        num_preview=0,
        finetune_steps=20,
        data_source="bloodcells",
    )
    return run_to_end(train(config, few_cells)).model


def test_two_corrected_fields_are_kept_and_the_sentence_gives_both_numbers(
    viewer, notes, qtbot, state, dataset1_model
):
    train_dock, segment = dock(viewer, "Train"), dock(viewer, "Segment")
    state.current.set(dataset1_model, "a Dataset 1 model")
    fields = [f for f in load_fields(BCCD, "train") if len(f.white_cells) == 1][:2]
    for field in fields:
        pixels = read_image(field.image_path)
        image = viewer.add_image(pixels, rgb=True, name=field.name)
        segment.image_layer.value = image
        segment.scale.value = 0.4
        labels = run_segment(qtbot, segment)
        # The red cells erased, the white cell painted: what the brush, eraser and fill do.
        labels.data = painted(field, pixels)
        segment.corrected_layer.value = labels
        segment.add_button.native.click()
    assert len(state.training_set) == 2

    with qtbot.waitSignal(train_dock.run_finished, timeout=RUN_TIMEOUT_MS) as finished:
        train_dock.fine_tune_button.native.click()
    result = finished.args[0]
    [said] = [m for m in infos(notes) if "corrections (too few to hold any out" in m]
    assert "cytoplasm " in said and "nucleus " in said and "→" in said
    assert "the model's own data: " in said, "replayed, so forgetting is measured and said"
    assert not result.kept_start, said
    assert state.current.model is result.model and "It is now the current model." in said
    assert errors(notes) == []
