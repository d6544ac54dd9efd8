"""The correction queue in a real napari window (Xvfb): rank, correct, add and next, close,
reopen the project and find everything as it was."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from bad_inputs import untrained_model
from conftest import SHARED_FIELDS
from gui_helpers import RUN_TIMEOUT_MS, dock, errors

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("data_env")]


@pytest.fixture
def five_fields(tmp_path):
    folder = tmp_path / "fields"
    folder.mkdir()
    for path in sorted((SHARED_FIELDS / "JPEGImages").glob("*.jpg"))[:5]:
        shutil.copy(path, folder / path.name)
    return folder


def _rank(qtbot, widget) -> None:
    widget.queue.rank_button.native.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=RUN_TIMEOUT_MS)


def _wait_segmented(qtbot, widget) -> None:
    qtbot.waitUntil(lambda: not widget.running, timeout=RUN_TIMEOUT_MS)


def test_queue_ranks_corrects_and_survives_closing_the_viewer(
    make_napari_viewer, qtbot, tmp_path, five_fields, notes
):
    from napari_bloodcells._widgets.state import state_of

    project = tmp_path / "project"
    viewer = make_napari_viewer()
    widget = dock(viewer, "Segment")
    state = state_of(viewer)
    state.current.set(untrained_model(native=True), "a test model")
    panel = widget.queue
    panel.project_folder.value = project
    panel.images_folder.value = five_fields
    _rank(qtbot, widget)
    assert not errors(notes)
    shown = panel.entries()
    assert len(shown) == 5
    scores = [e.suggestion.score for e in shown]
    assert scores == sorted(scores, reverse=True)  # most useful first
    assert (project / "model.pt").is_file()  # the model the queue was ranked with

    # A click opens the first image with its prediction, ready to paint.
    first = shown[0].name
    panel.table.cellClicked.emit(0, 0)
    _wait_segmented(qtbot, widget)
    labels = widget.last_layer
    assert labels is not None and widget.image_layer.value.name in first
    painted = labels.data.copy()
    painted[: painted.shape[0] // 2] = 0  # the user erases the top half
    labels.data = painted

    panel.next_button.native.click()  # add to the training set and open the next
    _wait_segmented(qtbot, widget)
    assert len(state.training_set) == 1
    assert panel.current == shown[1].name
    assert [e.corrected for e in panel.entries()][:2] == [True, False]
    assert (project / "project.json").is_file()
    saved = sorted((project / "masks").glob("*.png"))
    assert len(saved) == 1
    viewer.close()

    # Napari is closed; a new window and the same project folder bring everything back.
    viewer = make_napari_viewer()
    widget = dock(viewer, "Segment")
    state = state_of(viewer)
    assert state.current.model is None and len(state.training_set) == 0
    widget.queue.project_folder.value = project
    assert len(state.training_set) == 1
    np.testing.assert_array_equal(state.training_set.data().masks[0], painted)
    assert state.current.model is not None  # the project's model is current again
    reopened = widget.queue.entries()
    assert [e.name for e in reopened] == [e.name for e in shown]
    assert [e.corrected for e in reopened] == [True, False, False, False, False]
    # A fine-tuned model becomes the project's model, and the queue asks to be ranked again.
    before = (project / "model.pt").stat().st_mtime_ns
    tuned = untrained_model(native=True)
    state.current.set(tuned, "fine-tuned")
    assert (project / "model.pt").stat().st_mtime_ns != before
    assert "rank again" in widget.queue.info.value
    assert not errors(notes)


def test_a_project_of_a_newer_version_is_one_notification(make_napari_viewer, tmp_path, notes):
    import json

    from gui_helpers import assert_plain_error

    folder = tmp_path / "project"
    folder.mkdir()
    record = {"format": "napari-bloodcells-project", "version": 99, "queue": [], "pairs": []}
    (folder / "project.json").write_text(json.dumps(record))
    widget = dock(make_napari_viewer(), "Segment")
    widget.queue.project_folder.value = folder
    assert_plain_error(notes, "newer napari-bloodcells")
    assert widget.queue.project is None
