"""Every bad input of the hardening table, through the napari widgets.

Each case must end with exactly one error notification: one plain sentence,
no traceback, and the widget ready for the next try. The same cases are
driven through the command line in ``test_cli_bad_input.py``; bad *layers*
are in ``test_gui_hardening.py``.
"""

from __future__ import annotations

import errno

import pytest

from bad_inputs import OFFLINE_URL, BadInputs, untrained_model
from gui_helpers import (
    add_cells,
    assert_plain_error,
    dock,
    errors,
    run_segment,
    run_training,
    tiny_run,
    use_layers,
)
from napari_bloodcells._widgets.data_picker import FROM_FOLDER, FROM_SAMPLE
from napari_bloodcells._widgets.options import FROM_FILE
from napari_bloodcells._widgets.segment_widget import MODEL_FILE
from napari_bloodcells.core.data import download
from napari_bloodcells.core.training.config import preset
from napari_bloodcells.errors import DownloadError

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("data_env")]


def assert_failed_cleanly(widget, result, notes, fragment: str) -> str:
    """The run ended without a result, with one plain error, and Start works again."""
    assert result is None
    message = assert_plain_error(notes, fragment)
    assert not widget.running and widget.state.runs.training is None
    assert widget.start_button.enabled and not widget.stop_button.enabled
    return message


def test_bad_training_folders(viewer, bad_inputs, notes, qtbot, state):
    widget = dock(viewer, "Train")
    tiny_run(widget)
    widget.data.source.value = FROM_FOLDER
    for case, fragment in BadInputs.FOLDERS.items():
        widget.data.folder.value = bad_inputs.folder(case)
        assert_failed_cleanly(widget, run_training(qtbot, widget), notes, fragment)
    assert state.current.model is None


def test_bad_checkpoints_in_segment_and_in_continue_from(
    viewer, bad_inputs, cell_stack, notes, qtbot
):
    segment, train = dock(viewer, "Segment"), dock(viewer, "Train")
    image, labels = add_cells(viewer, cell_stack)
    segment.image_layer.value = image
    segment.model_source.value = MODEL_FILE
    use_layers(train, image, labels)
    tiny_run(train)
    train.settings.continue_from.value = FROM_FILE
    for case, fragment in BadInputs.CHECKPOINTS.items():
        path = bad_inputs.checkpoint(case)
        segment.model_file.value = path
        assert run_segment(qtbot, segment) is None
        assert_plain_error(notes, fragment)
        assert segment.segment_button.enabled
        train.settings.init_file.value = path
        assert_failed_cleanly(train, run_training(qtbot, train), notes, fragment)
    assert [layer.name for layer in viewer.layers] == ["cells", "cells labels"]


def test_a_model_whose_classes_differ_from_the_labels(
    viewer, bad_inputs, cell_stack, notes, qtbot, state
):
    train, segment = dock(viewer, "Train"), dock(viewer, "Segment")
    image, labels = add_cells(viewer, cell_stack)
    use_layers(train, image, labels)
    tiny_run(train)
    train.settings.continue_from.value = FROM_FILE
    train.settings.init_file.value = bad_inputs.two_class_checkpoint()
    assert_failed_cleanly(train, run_training(qtbot, train), notes, BadInputs.TWO_CLASSES)

    # Corrections are checked against the current model's classes when they are added.
    state.current.set(untrained_model(("background", "cell")), "a two-class model")
    segment.image_layer.value = image
    segment.corrected_layer.value = labels
    segment.add_button.native.click()
    assert_plain_error(notes, BadInputs.TWO_CLASSES)
    assert len(state.training_set) == 0


def test_training_settings_out_of_range(viewer, cell_stack, notes, qtbot):
    widget = dock(viewer, "Train")
    use_layers(widget, *add_cells(viewer, cell_stack))  # 8 pairs
    tiny_run(widget)
    options = widget.settings

    # The fields cannot hold what the engine would refuse: Qt clamps typed values.
    for field, below, above in (
        (options.epochs, 0, 20_000),
        (options.batch_size, 0, 5000),
        (options.lr, 0.0, 2.0),
        (options.dev_fraction, 0.0, 1.0),
    ):
        for typed in (below, above):
            field.native.setValue(typed)
            assert field.min <= field.value <= field.max
            options.config()  # validates: the clamped value is one the engine accepts
        assert field.min > below and field.max < above
    options.apply(preset("seed"))
    tiny_run(widget)

    # What depends on the data is checked when the data are loaded, in the worker.
    options.batch_size.value = 7
    message = assert_failed_cleanly(
        widget, run_training(qtbot, widget), notes, "larger than the training set (6 images)"
    )
    assert "lower it to 6 or fewer" in message
    options.batch_size.value = 2
    options.dev_fraction.value = 0.1
    assert_failed_cleanly(
        widget, run_training(qtbot, widget), notes, "leaves no dev images out of 8"
    )


def test_sample_download_failures(
    viewer, monkeypatch, tmp_path, serve, tampered_mirror, shared_data, notes, qtbot
):
    widget = dock(viewer, "Train")
    tiny_run(widget)
    widget.data.source.value = FROM_SAMPLE

    monkeypatch.setenv("NAPARI_BLOODCELLS_CACHE", str(tmp_path / "offline-cache"))
    monkeypatch.setenv("NAPARI_BLOODCELLS_DATA_URL", OFFLINE_URL)
    message = assert_failed_cleanly(
        widget, run_training(qtbot, widget), notes, "Could not download"
    )
    assert "NAPARI_BLOODCELLS_DATA_URL" in message

    monkeypatch.setenv("NAPARI_BLOODCELLS_CACHE", str(tmp_path / "tampered-cache"))
    monkeypatch.setenv("NAPARI_BLOODCELLS_DATA_URL", serve(tampered_mirror))
    assert_failed_cleanly(widget, run_training(qtbot, widget), notes, "150.png' does not match")

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setenv("NAPARI_BLOODCELLS_CACHE", str(tmp_path / "full-cache"))
    monkeypatch.setenv("NAPARI_BLOODCELLS_DATA_URL", str(shared_data))
    monkeypatch.setattr(download.shutil, "copyfile", no_space)
    assert_failed_cleanly(widget, run_training(qtbot, widget), notes, "disk is full")

    # File > Open Sample: napari shows the error the loader raises; no layer is added.
    monkeypatch.setenv("NAPARI_BLOODCELLS_CACHE", str(tmp_path / "offline-cache"))
    monkeypatch.setenv("NAPARI_BLOODCELLS_DATA_URL", OFFLINE_URL)
    with pytest.raises(DownloadError, match="Could not download the blood-cell dataset"):
        viewer.open_sample("napari-bloodcells", "bloodcells")
    assert len(viewer.layers) == 0
    assert errors(notes) == []
