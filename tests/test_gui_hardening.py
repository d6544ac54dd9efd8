"""Hardening of the napari widgets: closing napari mid-run, concurrent runs, bad input.

Every test docks the real widgets through the manifest and drives them like a
user; training runs are tiny (the notebook U-Net, a few 120 px images) and every
wait is on a condition or a signal, bounded. Cases already covered by
``test_gui_widgets.py`` (labels of a stack with the wrong number of slices,
labels holding the value 3, grayscale images in Segment) are not repeated here.
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from qtpy.QtCore import QThreadPool

from bad_inputs import untrained_model
from gui_helpers import (
    RUN_TIMEOUT_MS,
    add_cells,
    assert_plain_error,
    dock,
    errors,
    infos,
    run_segment,
    tiny_run,
    use_layers,
)
from napari_bloodcells._widgets.data_picker import FROM_FOLDER
from napari_bloodcells._widgets.train_widget import TrainWidget
from napari_bloodcells.core.model.checkpoint import load_checkpoint

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("data_env")]


def no_active_workers() -> bool:
    return QThreadPool.globalInstance().activeThreadCount() == 0


def test_closing_napari_while_training_stops_the_worker_and_keeps_the_model(
    make_napari_viewer, cell_stack, notes, qtbot
):
    viewer = make_napari_viewer()
    widget = dock(viewer, "Train")
    state = widget.state
    image, labels = add_cells(viewer, cell_stack, count=6)
    use_layers(widget, image, labels)
    tiny_run(widget, epochs=100)

    widget.start_button.native.click()
    worker = widget.worker
    assert worker is not None
    ended = []
    worker.finished.connect(lambda: ended.append(True))
    finished_runs = []
    widget.run_finished.connect(finished_runs.append)
    qtbot.waitUntil(lambda: widget.progress.value >= 1, timeout=RUN_TIMEOUT_MS)  # a BatchEnded
    told_at_start = widget.recovery_label.value

    viewer.close()

    # The worker ends on its own (no zombie thread training 100 epochs in the background).
    qtbot.waitUntil(lambda: bool(ended) and no_active_workers(), timeout=RUN_TIMEOUT_MS)
    assert state.runs.training is None
    assert errors(notes) == []
    assert len(finished_runs) == 1
    result = finished_runs[0]
    assert result is not None and result.stopped_early
    assert result.best_epoch == 1  # the partly trained first epoch was scored and kept
    assert state.current.model is result.model

    # The best model is on disk, and the user was told where.
    path = widget.recovery_file
    assert path is not None
    saved = load_checkpoint(path)
    assert saved.spec == result.model.spec
    assert saved.metrics["best_epoch"] == 1
    for name, tensor in result.model.network.state_dict().items():
        assert np.array_equal(saved.network.state_dict()[name].numpy(), tensor.cpu().numpy())
    assert str(path) in told_at_start
    assert any(str(path) in message for message in infos(notes)), infos(notes)


def test_stopping_before_the_first_batch_keeps_the_current_model(
    viewer, cell_stack, notes, qtbot, state
):
    # Nothing has been trained yet, so there is nothing to keep: the session model
    # must not be replaced by the untrained network, and no file is claimed.
    widget = dock(viewer, "Train")
    use_layers(widget, *add_cells(viewer, cell_stack, count=6))
    tiny_run(widget, epochs=5)
    before = untrained_model()
    state.current.set(before, "an earlier model")

    with qtbot.waitSignal(widget.run_finished, timeout=RUN_TIMEOUT_MS) as finished:
        widget.start_button.native.click()
        widget.stop_button.native.click()  # before the worker reaches its first batch
    result = finished.args[0]
    assert result.stopped_early and result.best_epoch == 0
    assert state.current.model is before
    assert errors(notes) == []
    [message] = [m for m in infos(notes) if "Stopped by the user" in m]
    assert "no model was kept" in message
    assert "current model is unchanged" in message
    assert "A copy is in" not in message


def test_a_second_run_is_refused_and_the_first_one_finishes(
    viewer, cell_stack, notes, qtbot, state
):
    # Two Train widgets of one viewer share its run lock.
    first = dock(viewer, "Train")
    second = TrainWidget(viewer)
    layers = add_cells(viewer, cell_stack)
    use_layers(first, *layers)
    use_layers(second, *layers)
    tiny_run(first, epochs=2)
    tiny_run(second, epochs=1)
    finished = []
    first.run_finished.connect(finished.append)

    first.start_button.native.click()
    qtbot.waitUntil(lambda: first.progress.value >= 1, timeout=RUN_TIMEOUT_MS)
    assert first.running
    worker = first.worker

    second.start_button.native.click()
    assert_plain_error(notes, "Another Train widget is training")
    assert not second.running
    assert second.start_button.enabled and not second.stop_button.enabled
    # The first run is untouched: same worker, still running, not asked to stop.
    assert first.running and first.worker is worker
    assert first.stop_button.enabled and not first.stopping

    qtbot.waitUntil(lambda: bool(finished), timeout=RUN_TIMEOUT_MS)
    result = finished[0]
    assert errors(notes) == []
    assert result is not None and not result.stopped_early
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert first.progress.value == first.progress.max
    assert state.current.model is result.model
    assert second.result is None
    assert state.runs.training is None


def test_bad_training_layers_are_refused_with_one_sentence(viewer_with_train, notes, state):
    viewer, widget = viewer_with_train
    tiny_run(widget, epochs=1)
    rng = np.random.default_rng(0)
    masks = np.zeros((3, 20, 20), np.uint8)
    masks[:, 5:15, 5:15] = 1
    masks[:, 8:12, 8:12] = 2
    rgb = rng.integers(0, 256, (3, 20, 20, 3), dtype=np.uint8)

    cases = [
        # (image layer kwargs, labels data, fragment of the error)
        (  # a stack of grayscale float images with no finite value
            {"data": np.full((3, 20, 20), np.nan, np.float32), "rgb": False},
            masks,
            "no finite values",
        ),
        (  # 5D: not a stack of RGB images
            {"data": rng.integers(0, 256, (2, 3, 20, 20, 3), dtype=np.uint8), "rgb": True},
            np.zeros((2, 3, 20, 20), np.uint8),
            "use a 2D image or a stack",
        ),
        (  # 4D grayscale
            {"data": rng.integers(0, 256, (2, 3, 20, 20), dtype=np.uint8), "rgb": False},
            np.zeros((2, 3, 20, 20), np.uint8),
            "use a 2D image or a stack",
        ),
        (  # one image, labels of another height and width
            {"data": rgb[0], "rgb": True},
            np.ones((16, 20), np.uint8),
            "must match the image pixel for pixel",
        ),
        (  # nothing but background
            {"data": rgb, "rgb": True},
            np.zeros((3, 20, 20), np.uint8),
            "all background",
        ),
    ]
    for kwargs, label_data, fragment in cases:
        image = viewer.add_image(kwargs["data"], rgb=kwargs["rgb"], name="input")
        labels = viewer.add_labels(label_data, name="input labels")
        use_layers(widget, image, labels)
        widget.start_button.native.click()
        assert len(notes) == 1, [n.message for n in notes]
        assert_plain_error(notes, fragment)
        assert not widget.running and state.runs.training is None
        assert widget.start_button.enabled
        assert widget.progress_text == "Not started."
        viewer.layers.clear()


def test_two_viewers_share_no_state(make_napari_viewer, cell_stack, notes):
    first_viewer, second_viewer = make_napari_viewer(), make_napari_viewer()
    first_train, second_train = dock(first_viewer, "Train"), dock(second_viewer, "Train")
    first_segment = dock(first_viewer, "Segment")
    second_segment = dock(second_viewer, "Segment")
    assert first_train.state is first_segment.state
    assert first_train.state is not second_train.state

    first_train.state.current.set(untrained_model(), "a model of the first viewer")
    assert "first viewer" in first_segment.model_info.value
    assert second_train.state.current.model is None
    assert "No model yet" in second_segment.model_info.value

    image = first_viewer.add_image(cell_stack[0][0], rgb=True, name="cell")
    labels = first_viewer.add_labels(cell_stack[1][0], name="cell labels")
    first_segment.image_layer.value, first_segment.corrected_layer.value = image, labels
    first_segment.add_button.native.click()
    assert len(first_train.state.training_set) == 1
    assert len(second_train.state.training_set) == 0
    assert second_train.state.runs.claim_training(second_train), "the lock is per viewer"
    assert first_train.state.runs.claim_training(first_train)
    assert errors(notes) == []


@pytest.fixture
def viewer_with_train(viewer):
    return viewer, dock(viewer, "Train")


def test_12_and_16_bit_tiffs_segment_like_their_8_bit_version_with_a_notice(
    viewer, cell_stack, notes, qtbot, state, tmp_path
):
    widget = dock(viewer, "Segment")
    state.current.set(untrained_model(), "test model")
    cell = cell_stack[0][0]
    labels = {}
    for bits in (8, 12, 16):
        deep = np.round(cell.astype(np.float64) * (2**bits - 1) / 255)
        path = tmp_path / f"cell{bits}.tif"
        tifffile.imwrite(path, deep.astype(np.uint8 if bits == 8 else np.uint16), photometric="rgb")
        (image,) = viewer.open(path, plugin="napari")
        widget.image_layer.value = image
        layer = run_segment(qtbot, widget)
        assert errors(notes) == []
        assert layer is not None and layer.data.shape == cell.shape[:2]
        labels[bits] = np.asarray(layer.data).copy()
    assert len(np.unique(labels[8])) > 1, "the comparison needs more than one class"
    for bits in (12, 16):
        assert np.mean(labels[bits] == labels[8]) >= 0.99, bits
        assert any(f"{bits}-bit" in message for message in infos(notes)), infos(notes)


def test_segment_refuses_what_cannot_be_shown_as_rgb_and_converts_rgba(
    viewer, cell_stack, notes, qtbot, state
):
    widget = dock(viewer, "Segment")
    state.current.set(untrained_model(), "test model")
    cell = cell_stack[0][0]

    image = viewer.add_image(np.full(cell.shape, np.nan, np.float32), rgb=True, name="odd cell")
    widget.image_layer.value = image
    assert run_segment(qtbot, widget) is None
    assert_plain_error(notes, "no finite values")
    assert [layer.name for layer in viewer.layers] == ["odd cell"]  # no result layer
    assert widget.segment_button.enabled
    viewer.layers.clear()

    rgba = np.dstack([cell, np.full(cell.shape[:2], 255, np.uint8)])
    image = viewer.add_image(rgba, rgb=True, name="rgba cell")
    widget.image_layer.value = image
    layer = run_segment(qtbot, widget)
    assert errors(notes) == []
    assert any("RGBA" in message for message in infos(notes)), infos(notes)
    assert layer is not None and layer.name == "rgba cell segmentation"
    assert layer.data.shape == cell.shape[:2]
    assert set(np.unique(layer.data)) <= {0, 1, 2}


def test_a_folder_with_a_stray_file_trains_and_names_the_skipped_file(
    viewer, bloodcells, make_folder, notes, qtbot, tmp_path, state
):
    root = make_folder(bloodcells.subset(range(8)), tmp_path / "cells")
    stray = next((root / "images").rglob("*.png")).parent / "notes.txt"
    stray.write_text("not an image")
    widget = dock(viewer, "Train")
    widget.data.source.value = FROM_FOLDER
    widget.data.folder.value = root
    tiny_run(widget, epochs=1)

    with qtbot.waitSignal(widget.run_finished, timeout=RUN_TIMEOUT_MS) as finished:
        widget.start_button.native.click()
    result = finished.args[0]
    assert errors(notes) == []
    assert result is not None and result.best_epoch == 1
    skipped = [m for m in infos(notes) if "notes.txt" in m]
    assert len(skipped) == 1, infos(notes)
    assert "Skipped 1 file" in skipped[0]
    assert state.current.model is result.model


def test_both_docks_fit_a_laptop_sized_window(make_napari_viewer, qtbot):
    # The Train widget (options, plot, preview) is taller than many screens; its
    # contents scroll, so napari's window is not forced taller than the screen.
    viewer = make_napari_viewer(show=True)
    train, segment = dock(viewer, "Train"), dock(viewer, "Segment")
    window = viewer.window._qt_window
    window.resize(1280, 720)
    qtbot.waitUntil(lambda: window.height() <= 720, timeout=5000)
    assert window.minimumSizeHint().height() <= 720
    for widget, control in ((train, train.start_button), (segment, segment.segment_button)):
        assert widget.scroll_area.widget().isAncestorOf(control.native)
    assert train.scroll_area.verticalScrollBar().maximum() > 0  # it scrolls, rather than clip
    train.scroll_area.ensureWidgetVisible(train.preview)
    assert train.scroll_area.verticalScrollBar().value() > 0


def stop_after_first_epoch(widget: TrainWidget, qtbot) -> None:
    """Start a run and press Stop once its first epoch has been scored."""
    from napari_bloodcells.core.events import EpochEnded

    epochs: list[object] = []
    widget.start()
    assert widget.worker is not None
    widget.worker.yielded.connect(lambda m: epochs.append(m) if isinstance(m, EpochEnded) else None)
    qtbot.waitUntil(lambda: len(epochs) >= 1, timeout=RUN_TIMEOUT_MS)
    widget.stop()


def test_a_stopped_run_does_not_replace_a_better_model_scored_on_the_same_images(
    viewer, cell_stack, notes, qtbot, state
):
    widget = dock(viewer, "Train")
    use_layers(widget, *add_cells(viewer, cell_stack, count=6))
    tiny_run(widget, epochs=1)
    with qtbot.waitSignal(widget.run_finished, timeout=RUN_TIMEOUT_MS):
        widget.start()
    first = state.current.model
    first_copy = widget.recovery_file
    assert first is not None and first_copy is not None
    assert any(str(first_copy) in m for m in infos(notes)), "named as the first run's copy"
    first_bytes = first_copy.read_bytes()
    first.metrics["best_dev_score"] = 2.0  # no run can beat it (Dice is at most 1)

    tiny_run(widget, epochs=3)
    with qtbot.waitSignal(widget.run_finished, timeout=RUN_TIMEOUT_MS) as finished:
        stop_after_first_epoch(widget, qtbot)
    result = finished.args[0]
    assert result.stopped_early and result.best_epoch >= 1
    assert state.current.model is first
    [lost] = [m for m in infos(notes) if "beats this run's best" in m and "stays current" in m]
    assert widget.recovery_file != first_copy and str(widget.recovery_file) in lost
    assert first_copy.read_bytes() == first_bytes, "the better run's copy is not overwritten"

    # A stopped run that beats the current model replaces it, as before.
    first.metrics["best_dev_score"] = -1.0
    with qtbot.waitSignal(widget.run_finished, timeout=RUN_TIMEOUT_MS) as finished:
        stop_after_first_epoch(widget, qtbot)
    assert state.current.model is finished.args[0].model


def test_segmenting_while_training_runs_both_and_says_they_share_the_processor(
    viewer, cell_stack, notes, qtbot, state
):
    train = dock(viewer, "Train")
    segment = dock(viewer, "Segment")
    image, labels = add_cells(viewer, cell_stack, count=6)
    use_layers(train, image, labels)
    tiny_run(train, epochs=2)
    state.current.set(untrained_model(), "an untrained model")
    segment.image_layer.value = image
    with qtbot.waitSignal(train.run_finished, timeout=RUN_TIMEOUT_MS) as trained:
        train.start()
        written = run_segment(qtbot, segment)
    assert written is not None and written.data.shape == labels.data.shape
    assert trained.args[0] is not None and trained.args[0].best_epoch >= 1
    assert any(m.startswith("Training is running too") for m in infos(notes))
    assert errors(notes) == []
