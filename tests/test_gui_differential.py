"""The differential gallery in a real napari window: segment, measure, reclassify, fine-tune."""

from __future__ import annotations

import numpy as np
import pytest

from bad_inputs import untrained_model
from gui_helpers import RUN_TIMEOUT_MS, dock, errors, infos, run_segment, tiny_run
from napari_bloodcells.core.training.type_fit import fit_types, typed_cells

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("data_env")]


def _mosaic(data, indices):
    """Dataset 1 images side by side, two rows: one field with several white cells."""
    side = max(max(data.images[i].shape[:2]) for i in indices)

    def padded(array, mode):
        rows, cols = side - array.shape[0], side - array.shape[1]
        extra = ((0, rows), (0, cols)) + ((0, 0),) * (array.ndim - 2)
        return np.pad(array, extra, mode=mode)

    images = [padded(data.images[i], "edge") for i in indices]
    masks = [padded(data.masks[i], "constant") for i in indices]
    half = len(indices) // 2
    image = np.concatenate([np.concatenate(images[:half], 1), np.concatenate(images[half:], 1)])
    labels = np.concatenate([np.concatenate(masks[:half], 1), np.concatenate(masks[half:], 1)])
    return image, labels


def _typed_model(data):
    """The untrained segmentation network with a type model learned from 24 cells."""
    picked = [i for i, k in enumerate(data.types) if k == "neutrophil"][:12]
    picked += [i for i, k in enumerate(data.types) if k == "lymphocyte"][:12]
    model = untrained_model(native=True)
    cells = typed_cells(data.subset(picked))
    model.type_model = fit_types(cells, ("neutrophil", "lymphocyte"), epochs=15)
    return model


def test_the_gallery_counts_reclassifications_and_a_fine_tune_learns_them(
    viewer, typed_bloodcells, notes, qtbot, state, tmp_path
):
    segment, train = dock(viewer, "Segment"), dock(viewer, "Train")
    state.current.set(_typed_model(typed_bloodcells), "a model with cell types")
    field, truth = _mosaic(typed_bloodcells, [100, 101, 102, 103, 104, 105])
    segment.image_layer.value = viewer.add_image(field, rgb=True, name="field")
    # 1. Segment, then correct the result (here: paint the true labels over it).
    result = run_segment(qtbot, segment)
    result.data = truth.copy()
    segment.corrected_layer.value = result
    # 2. Measure: the cells are typed, coloured by type and shown in the gallery.
    with qtbot.waitSignal(segment.run_finished, timeout=RUN_TIMEOUT_MS):
        segment.measure_button.native.click()
    gallery = segment.gallery
    table = gallery.table
    assert table is not None and {"type", "type_probability", "p_lymphocyte"} <= set(table.columns)
    assert "type" in segment.cells_layer.features.columns
    cells = sorted(gallery.buttons)
    assert len(cells) >= 6 and segment.gallery_section.isExpanded()
    before = gallery.rows()[-1]
    assert before.cells == len(cells)
    # 3. Reclassify two cells: one with a click and a key, one with a button.
    first, second = cells[0], cells[1]
    row = table.columns["cell"].index(first)
    wanted = {"neutrophil": "lymphocyte", "lymphocyte": "neutrophil"}
    new_first = wanted[table.columns["type"][row]]
    new_second = wanted[table.columns["type"][table.columns["cell"].index(second)]]
    gallery.buttons[first].click()
    assert segment.cells_layer.selected_label == first  # the click showed the cell
    key = "1" if new_first == "neutrophil" else "2"
    qtbot.keyClick(gallery, key)
    gallery.buttons[second].click()
    gallery.type_buttons[new_second].click()
    assert gallery.corrections == {first: new_first, second: new_second}
    # 4. The counts change.
    after = gallery.rows()[-1]
    assert after.counts != before.counts or after.to_verify != before.to_verify
    assert after.cells == before.cells
    assert "2 reclassified" in gallery.summary.text()
    report = tmp_path / "differential.csv"
    segment.write_differential(report)
    assert report.read_text().splitlines()[-1].startswith("total,")
    # 5. Add them to the training set and fine-tune from the Train dock.
    segment.add_types_button.native.click()
    assert len(state.training_set) == 2
    assert state.training_set.data().types == [new_first, new_second]
    tiny_run(train)
    with qtbot.waitSignal(train.run_finished, timeout=RUN_TIMEOUT_MS):
        train.fine_tune_button.native.click()
    assert any("Cell types on your corrections" in m for m in infos(notes)), infos(notes)
    assert state.current.model.type_model is not None
    # 6. Measured again, the reclassified cells are predicted as the user typed them.
    with qtbot.waitSignal(segment.run_finished, timeout=RUN_TIMEOUT_MS):
        segment.measure_button.native.click()
    again = segment.gallery.table.columns
    types = dict(zip(again["cell"], again["type"], strict=True))
    assert types[first] == new_first and types[second] == new_second
    assert errors(notes) == []
