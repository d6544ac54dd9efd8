"""The correct-and-retrain loop on real smear fields, in a real napari window (Xvfb)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gui_helpers import RUN_TIMEOUT_MS, dock, errors, infos, run_segment
from napari_bloodcells.core.config import preset
from napari_bloodcells.core.dataset import read_image
from napari_bloodcells.core.events import run_to_end
from napari_bloodcells.core.smear_fields import keep_inside, load_fields
from napari_bloodcells.core.train import train

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("data_env")]

BCCD = Path(__file__).resolve().parents[2] / "shared" / "data" / "BCCD-trainval"


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
        image = viewer.add_image(read_image(field.image_path), rgb=True, name=field.name)
        segment.image_layer.value = image
        segment.scale.value = 0.4
        labels = run_segment(qtbot, segment)
        # What a user does with the eraser: everything outside the white cell goes.
        labels.data = keep_inside(np.asarray(labels.data), field.white_cells)
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
