"""The correct-and-retrain loop in napari: scale kept, corrections told apart, fine-tune undone."""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity

from bad_inputs import untrained_model
from gui_helpers import RUN_TIMEOUT_MS, dock, errors, infos, run_segment, tiny_run

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("data_env")]


def warnings_of(notes) -> list[str]:
    return [n.message for n in notes if n.severity == NotificationSeverity.WARNING]


def test_scale_is_remembered_per_image_and_kept_through_add_to_training_set(
    viewer, cell_stack, notes, qtbot, state
):
    segment = dock(viewer, "Segment")
    state.current.set(untrained_model(native=True), "a model at its own pixel size")
    cell = viewer.add_image(cell_stack[0][0], rgb=True, name="cell")
    other = viewer.add_image(cell_stack[0][1], rgb=True, name="other")
    segment.image_layer.value = cell
    segment.scale.value = 0.5
    layer = run_segment(qtbot, segment)
    assert layer.data.shape == (120, 120), "labels come back at the image's own size"

    segment.image_layer.value = other
    segment.scale.value = 1.0
    segment.image_layer.value = cell
    assert segment.scale.value == pytest.approx(0.5), "the Scale used with this image"

    segment.image_layer.value = other
    other_result = run_segment(qtbot, segment)  # a newer result, not painted
    assert segment.corrected_layer.value.name == other_result.name
    layer.data[10:30, 10:30] = 2
    layer.refresh()
    segment.corrected_layer.value = layer
    painted = layer.data.copy()
    segment.image_layer.value = cell
    segment.add_button.native.click()
    [mask] = state.training_set.data().masks
    assert mask.shape == (60, 60), "stored at the scale it was segmented at"
    assert np.array_equal(layer.data, painted), "the painted layer is not altered"
    assert any("at scale 0.5, the scale it was segmented at" in m for m in infos(notes))
    assert warnings_of(notes) == []

    # A new result never pulls the picker away from the layer the user painted.
    segment.image_layer.value = other
    run_segment(qtbot, segment)
    assert segment.corrected_layer.value.name == layer.name


def test_adding_an_unpainted_prediction_warns(viewer, cell_stack, notes, qtbot, state):
    segment = dock(viewer, "Segment")
    state.current.set(untrained_model(), "a model")
    segment.image_layer.value = viewer.add_image(cell_stack[0][0], rgb=True, name="cell")
    layer = run_segment(qtbot, segment)
    segment.corrected_layer.value = layer
    segment.add_button.native.click()
    [warning] = warnings_of(notes)
    assert "is the model's own prediction, not corrected" in warning
    assert len(state.training_set) == 1


def test_estimate_puts_the_scale_in_the_field_or_says_why_not(
    viewer, cell_stack, notes, qtbot, state
):
    segment = dock(viewer, "Segment")
    state.current.set(untrained_model(native=True), "a model without a size model")
    segment.image_layer.value = viewer.add_image(cell_stack[0][0], rgb=True, name="cell")
    segment.scale.value = 0.7
    with qtbot.waitSignal(segment.run_finished, timeout=RUN_TIMEOUT_MS):
        segment.estimate_button.native.click()
    assert "cannot estimate the scale of 'cell'" in segment.status.value
    assert segment.scale.value == pytest.approx(0.7), "nothing estimated: the field is kept"
    assert errors(notes) == []


def test_fine_tune_can_be_undone(viewer, cell_stack, notes, qtbot, state):
    train, segment = dock(viewer, "Train"), dock(viewer, "Segment")
    before = untrained_model()
    state.current.set(before, "the model before")
    tiny_run(train)
    image = viewer.add_image(cell_stack[0][:2], rgb=True, name="cells")
    labels = viewer.add_labels(cell_stack[1][:2].copy(), name="corrected")
    segment.image_layer.value, segment.corrected_layer.value = image, labels
    segment.add_button.native.click()
    assert not train.undo_button.enabled

    with qtbot.waitSignal(train.run_finished, timeout=RUN_TIMEOUT_MS) as finished:
        train.fine_tune_button.native.click()
    result = finished.args[0]
    assert any(m.startswith("Fine-tune schedule: 80 steps") for m in infos(notes))
    if result.kept_start:  # nothing beat the start: nothing to undo
        assert state.current.model is before and not train.undo_button.enabled
        return
    assert state.current.model is result.model and train.undo_button.enabled
    train.undo_button.native.click()
    assert state.current.model is before
    assert state.current.description == "the model before"
    assert not train.undo_button.enabled
    assert errors(notes) == []


def test_measure_adds_cells_a_sortable_table_and_a_row_click_centres_its_cell(
    viewer, tmp_path, notes, qtbot
):
    from skimage.draw import disk

    segment = dock(viewer, "Segment")
    classes = np.zeros((100, 200), np.uint8)
    for centre in ((50, 50), (50, 100), (40, 170)):  # two touching cells and one apart
        rr, cc = disk(centre, 28 if centre[1] < 150 else 18, shape=classes.shape)
        classes[rr, cc] = 1
        rr, cc = disk(centre, 10, shape=classes.shape)
        classes[rr, cc] = 2
    labels = viewer.add_labels(classes, name="corrected")
    segment.corrected_layer.value = labels
    segment.pixel_size.value = 0.5
    with qtbot.waitSignal(segment.run_finished, timeout=RUN_TIMEOUT_MS):
        segment.measure_button.native.click()
    cells = viewer.layers["corrected cells"]
    assert cells.data.max() == 3
    assert list(cells.features["cell"]) == [1, 2, 3]
    assert "area_um2" in cells.features and "nc_ratio" in cells.features
    assert segment.cell_table.table.rowCount() == 3

    table = segment.cell_table.table
    area = list(table.horizontalHeaderItem(c).text() for c in range(table.columnCount())).index(
        "area"
    )
    table.sortItems(area)  # the smallest cell first
    segment.cell_table._on_click(0, 0)
    smallest = int(cells.features["cell"][int(np.argmin(cells.features["area"]))])
    assert cells.selected_label == smallest
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    centre = camera.center[-2:]
    assert abs(centre[0] - 40) < 5 and abs(centre[1] - 170) < 5

    out = tmp_path / "cells.csv"
    segment.export_to(out)
    assert out.read_text().count("\n") == 4  # the header and three cells
    assert errors(notes) == []


def test_measure_says_when_the_image_does_not_match_the_labels(viewer, notes, qtbot):
    from skimage.draw import disk

    segment = dock(viewer, "Segment")
    classes = np.zeros((100, 120), np.uint8)
    rr, cc = disk((50, 60), 25, shape=classes.shape)
    classes[rr, cc] = 1
    rr, cc = disk((50, 60), 10, shape=classes.shape)
    classes[rr, cc] = 2
    segment.image_layer.value = viewer.add_image(
        np.zeros((80, 80, 3), np.uint8), rgb=True, name="another image"
    )
    segment.corrected_layer.value = viewer.add_labels(classes, name="corrected")
    with qtbot.waitSignal(segment.run_finished, timeout=RUN_TIMEOUT_MS):
        segment.measure_button.native.click()
    [warning] = warnings_of(notes)
    assert warning.startswith("The image 'another image' has shape (80, 80) but the labels")
    assert "measured without their colours" in warning and "\n" not in warning
    cells = viewer.layers["corrected cells"]
    assert list(cells.features["cell"]) == [1], "the cells are still measured"
    assert errors(notes) == []


def test_the_corrected_labels_picker_moves_from_a_samples_labels_to_the_new_result(
    viewer, cell_stack, qtbot, state
):
    segment = dock(viewer, "Segment")
    state.current.set(untrained_model(), "a model")
    segment.image_layer.value = viewer.add_image(cell_stack[0][0], rgb=True, name="cell")
    sample_labels = viewer.add_labels(cell_stack[1][0].copy(), name="blood cells labels")
    segment.corrected_layer.value = sample_labels
    result = run_segment(qtbot, segment)
    assert segment.corrected_layer.value.name == result.name == "cell segmentation"
