"""The Train and Segment widgets, docked through the manifest and driven like a user.

Training runs are tiny (the notebook U-Net, a few 120 px images, one or two
epochs); every wait is on a condition or a signal, never a sleep.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest
from napari.layers import Image, Labels
from napari.utils.notifications import ErrorNotification

from bad_inputs import untrained_model
from conftest import SHARED_FIELDS
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
from napari_bloodcells._widgets.data_picker import (
    FROM_FOLDER,
    FROM_SAMPLE,
    FROM_SESSION,
)
from napari_bloodcells._widgets.options import FROM_CURRENT, FROM_FILE
from napari_bloodcells._widgets.segment_widget import MODEL_FILE, SegmentWidget
from napari_bloodcells._widgets.train_widget import TrainWidget
from napari_bloodcells.core.base.classes import BLOODCELL_CLASSES
from napari_bloodcells.core.data.bloodcell_dataset import DATASET_FOLDER
from napari_bloodcells.core.events import SegmentProgress
from napari_bloodcells.core.jobs import load_model, load_training_data
from napari_bloodcells.core.model.checkpoint import load_checkpoint, save_checkpoint
from napari_bloodcells.core.model.trained import TrainedModel
from napari_bloodcells.core.training.config import preset

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("data_env")]


@pytest.fixture
def train_widget(viewer) -> TrainWidget:
    return dock(viewer, "Train")


@pytest.fixture
def segment_widget(viewer) -> SegmentWidget:
    return dock(viewer, "Segment")


def test_widgets_dock_through_the_manifest(train_widget, segment_widget):
    assert isinstance(train_widget, TrainWidget)
    assert isinstance(segment_widget, SegmentWidget)
    assert train_widget.stop_button.enabled is False
    assert segment_widget.scale.value == 1.0
    assert "No model yet" in segment_widget.model_info.value


def test_layer_pickers_follow_new_layers_of_their_kind_until_the_user_picks(viewer, train_widget):
    picker = train_widget.data.labels_layer
    rgb = np.zeros((8, 8, 3), np.uint8)
    image = viewer.add_image(rgb, rgb=True, name="image")
    assert picker.value is image  # only an Image layer so far: offered, not preferred
    labels = viewer.add_labels(np.zeros((8, 8), np.uint8), name="labels")
    assert picker.value is labels
    assert train_widget.data.image_layer.value is image

    picker.value = image  # the user's choice (masks read from a file open as images) stays
    viewer.add_image(rgb, rgb=True, name="another image")
    assert picker.value is image
    more = viewer.add_labels(np.zeros((8, 8), np.uint8), name="more labels")
    assert picker.value is more  # newly opened labels: the ones to work on
    viewer.layers.remove(more)
    assert picker.value is labels


def test_image_picker_moves_to_a_newly_opened_image_but_not_to_plugin_layers(
    viewer, segment_widget
):
    picker = segment_widget.image_layer
    rgb = np.zeros((8, 8, 3), np.uint8)
    first = viewer.add_image(rgb, rgb=True, name="first")
    second = viewer.add_image(rgb, rgb=True, name="second")
    assert picker.value is second
    picker.value = first
    third = viewer.add_image(rgb, rgb=True, name="third")
    assert picker.value is third
    from napari_bloodcells._widgets.layers import write_confidence

    write_confidence(viewer, third, np.zeros((8, 8), np.float32))
    assert picker.value is third


def test_model_line_describes_a_checkpoint_file(segment_widget, tmp_path):
    from bad_inputs import untrained_model
    from napari_bloodcells._widgets.segment_widget import MODEL_FILE
    from napari_bloodcells.core.model.checkpoint import save_checkpoint

    path = save_checkpoint(untrained_model(), tmp_path / "mine.pt")
    segment_widget.model_source.value = MODEL_FILE
    assert "Pick a checkpoint" in segment_widget.model_info.value
    segment_widget.model_file.value = path
    assert segment_widget.model_info.value.startswith("Checkpoint mine.pt: notebook-unet")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    segment_widget.model_file.value = tmp_path / "junk.pt"
    assert "not a napari-bloodcells model" in segment_widget.model_info.value


def test_docking_into_a_running_viewer_does_not_crash():
    # napari imports the widgets after its OpenGL canvas exists; with Mesa's LLVM
    # drivers (Xvfb here) torch's lazy import of triton used to crash the process.
    script = (
        "import napari\n"
        "viewer = napari.Viewer(show=True)\n"
        "viewer.window.add_plugin_dock_widget('napari-bloodcells', 'Train')\n"
        "viewer.window.add_plugin_dock_widget('napari-bloodcells', 'Segment')\n"
        "print('docked')\n"
        "viewer.close()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=240,
        env=os.environ.copy(),
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "docked" in done.stdout


def test_presets_fill_the_options(train_widget):
    options = train_widget.settings
    options.preset.value = "seed"
    assert options.arch.value == "notebook-unet"
    assert options.lr.value == pytest.approx(1e-4)
    assert not options.encoder.enabled
    options.preset.value = "default"
    assert options.arch.value == preset("default").arch
    assert options.encoder.value == preset("default").encoder
    assert options.encoder.enabled
    config = options.config()
    assert config == preset("default").with_changes(device=options.device.value)


def test_data_and_model_sources_load_in_the_worker(train_widget, data_env, tmp_path):
    picker = train_widget.data
    picker.source.value = FROM_FOLDER
    picker.folder.value = data_env / DATASET_FOLDER
    source, _ = picker.training_data()
    assert source == data_env / DATASET_FOLDER, "a folder is read by the job, in the worker"
    assert len(load_training_data(source)) == 300
    picker.source.value = FROM_SAMPLE
    source, text = picker.training_data()
    assert "blood-cell" in text
    assert len(load_training_data(source)) == 300

    path = save_checkpoint(untrained_model(), tmp_path / "start.pt")
    train_widget.settings.continue_from.value = FROM_FILE
    train_widget.settings.init_file.value = path
    init, _ = train_widget.settings.starting_model()
    assert init == path
    assert load_model(init).spec == untrained_model().spec


def test_training_updates_progress_plot_preview_and_session(
    viewer, train_widget, segment_widget, cell_stack, notes, qtbot, tmp_path, state
):
    image, labels = add_cells(viewer, cell_stack)
    use_layers(train_widget, image, labels)
    tiny_run(train_widget, epochs=1)

    train_widget.start_button.native.click()
    assert train_widget.running
    assert not train_widget.start_button.enabled
    assert train_widget.stop_button.enabled
    with qtbot.waitSignal(train_widget.run_finished, timeout=RUN_TIMEOUT_MS):
        pass

    result = train_widget.result
    assert errors(notes) == []
    assert result is not None and result.best_epoch == 1
    # 8 pairs, 2 for dev, batches of 2: 3 batches in the one epoch.
    assert train_widget.progress.max == 3
    assert train_widget.progress.value == 3
    assert train_widget.progress_text.startswith("epoch 1/1, batch 3/3")
    plot = train_widget.plot
    assert plot.epochs == [1]
    assert np.isfinite(plot.train_loss[0]) and np.isfinite(plot.dev_loss[0])
    assert set(plot.dice) == set(BLOODCELL_CLASSES.names)
    assert all(len(values) == 1 for values in plot.dice.values())
    rows = train_widget.preview.rows
    assert len(rows) == 2  # both dev images (the preview shows up to 3)
    assert rows[0].image.shape == (128, 128, 3)  # the seed recipe resizes to 128 px
    assert rows[0].prediction.shape == rows[0].truth.shape == (128, 128)
    # The model is shared with the Segment widget, and recoverable from disk.
    assert state.current.model is result.model
    assert "Current model" in segment_widget.model_info.value
    assert train_widget.recovery_file is not None and train_widget.recovery_file.is_file()
    assert str(train_widget.recovery_file) in train_widget.recovery_label.value
    assert train_widget.start_button.enabled and not train_widget.stop_button.enabled

    target = tmp_path / "cells-model"
    train_widget.save_path.value = target
    train_widget.save_button.native.click()
    saved = load_checkpoint(target.with_suffix(".pt"))
    assert saved.spec == result.model.spec
    assert any("Saved the model" in m for m in infos(notes))


def test_stop_ends_between_batches_and_keeps_the_model(
    viewer, train_widget, cell_stack, notes, qtbot, state
):
    image, labels = add_cells(viewer, cell_stack)
    use_layers(train_widget, image, labels)
    tiny_run(train_widget, epochs=50)

    train_widget.start_button.native.click()
    qtbot.waitUntil(lambda: train_widget.progress.value >= 1, timeout=RUN_TIMEOUT_MS)

    # A second Start, even from another Train widget, is refused while this runs.
    other = TrainWidget(viewer)
    viewer.window.add_dock_widget(other, name="second Train")
    use_layers(other, image, labels)
    tiny_run(other, epochs=1)
    other.start_button.native.click()
    assert not other.running
    assert any("Another Train widget is training" in m for m in errors(notes))

    train_widget.stop_button.native.click()
    with qtbot.waitSignal(train_widget.run_finished, timeout=RUN_TIMEOUT_MS):
        pass
    result = train_widget.result
    assert result.stopped_early
    assert "Stopped by the user" in result.reason
    assert result.best_epoch == 1
    assert isinstance(result.model, TrainedModel)
    assert state.current.model is result.model
    assert train_widget.progress.value < train_widget.progress.max
    assert train_widget.progress_text.startswith("Stopped in epoch ")
    assert state.runs.training is None


def test_closing_the_dock_stops_training_and_keeps_the_model(
    viewer, cell_stack, notes, qtbot, state
):
    dock_widget, widget = viewer.window.add_plugin_dock_widget("napari-bloodcells", "Train")
    image, labels = add_cells(viewer, cell_stack)
    use_layers(widget, image, labels)
    tiny_run(widget, epochs=50)
    widget.start_button.native.click()
    qtbot.waitUntil(lambda: widget.progress.value >= 1, timeout=RUN_TIMEOUT_MS)

    viewer.window.remove_dock_widget(dock_widget)
    qtbot.waitUntil(lambda: state.runs.training is None, timeout=RUN_TIMEOUT_MS)
    assert errors(notes) == []
    assert widget.result.stopped_early
    assert state.current.model is widget.result.model


def test_segment_writes_class_labels_and_replaces_only_unpainted(
    viewer, segment_widget, notes, qtbot, state
):
    state.current.set(untrained_model(), "test model")
    viewer.open_sample("napari-bloodcells", "single_cell")
    image = viewer.layers["blood cell"]
    segment_widget.image_layer.value = image
    segment_widget.confidence.value = True

    layer = run_segment(qtbot, segment_widget)
    assert errors(notes) == []
    assert isinstance(layer, Labels)
    assert layer.name == "blood cell segmentation"
    assert layer.data.shape == image.data.shape[:2]
    assert layer.data.dtype == np.uint8
    assert set(np.unique(layer.data)) <= {0, 1, 2}
    colours = layer.colormap.map(np.array([0, 1, 2]))
    assert colours[0][3] == 0
    np.testing.assert_allclose(colours[1:], [(0, 1, 0, 1), (0, 0, 1, 1)])
    confidence = viewer.layers["blood cell confidence"]
    assert isinstance(confidence, Image)
    assert confidence.data.shape == layer.data.shape
    assert confidence.data.min() >= 0.3 and confidence.data.max() <= 1.0
    assert segment_widget.progress.value == segment_widget.progress.max
    assert (
        segment_widget.corrected_layer.value is layer
        or segment_widget.corrected_layer.value.name == layer.name
    )

    # Unpainted: a second run replaces the data in place.
    count = len(viewer.layers)
    assert run_segment(qtbot, segment_widget).name == "blood cell segmentation"
    assert len(viewer.layers) == count

    # Painted: a new run goes to a new layer and the painted one is kept as is.
    layer.data[10:30, 10:30] = 2
    layer.refresh()
    painted = layer.data.copy()
    new = run_segment(qtbot, segment_widget)
    assert new is not layer and new.name == "blood cell segmentation [1]"
    assert np.array_equal(viewer.layers["blood cell segmentation"].data, painted)


def test_the_result_layer_is_added_at_the_click_and_filled_at_the_end(
    viewer, segment_widget, notes, qtbot, state
):
    """napari's cost of a new Labels layer is paid while the user waits, not at the end."""
    state.current.set(untrained_model(native=True), "test model")
    image = viewer.add_image(np.full((256, 256, 3), 180, np.uint8), rgb=True, name="field")
    segment_widget.image_layer.value = image
    segment_widget.segment_button.native.click()
    assert segment_widget.running
    pending = viewer.layers["field segmentation"]  # there before the worker's first tile
    assert isinstance(pending, Labels) and pending.data.shape == (256, 256)
    qtbot.waitUntil(lambda: not segment_widget.running, timeout=RUN_TIMEOUT_MS)
    assert segment_widget.last_layer is pending, "the result went into that layer"
    assert [layer.name for layer in viewer.layers] == ["field", "field segmentation"]
    assert errors(notes) == []

    # Painted while a new run goes: the painting is kept, the result goes beside it.
    segment_widget.segment_button.native.click()
    pending.data[:8, :8] = 2
    pending.refresh()
    qtbot.waitUntil(lambda: not segment_widget.running, timeout=RUN_TIMEOUT_MS)
    assert (pending.data[:8, :8] == 2).all() and pending in viewer.layers
    assert segment_widget.last_layer is not pending

    # A run that fails leaves no empty layer behind.
    bad = viewer.add_image(np.full((64, 64, 3), np.nan, np.float32), rgb=True, name="bad")
    segment_widget.image_layer.value = bad
    assert run_segment(qtbot, segment_widget) is None
    assert "bad segmentation" not in [layer.name for layer in viewer.layers]


def test_segment_stack_and_grayscale(viewer, segment_widget, cell_stack, notes, qtbot, state):
    state.current.set(untrained_model(), "test model")
    images, _ = cell_stack
    stack = viewer.add_image(images[:3], rgb=True, name="three cells")
    segment_widget.image_layer.value = stack
    layer = run_segment(qtbot, segment_widget)
    assert layer.name == "three cells segmentation"
    assert layer.data.shape == (3, 120, 120)
    assert set(np.unique(layer.data)) <= {0, 1, 2}

    grey = viewer.add_image(images[0].mean(axis=-1).astype(np.uint8), name="grey cell")
    segment_widget.image_layer.value = grey
    layer = run_segment(qtbot, segment_widget)
    assert layer.data.shape == (120, 120)
    assert any("grayscale" in m for m in infos(notes))
    assert errors(notes) == []


def test_correct_and_retrain_loop(
    viewer, train_widget, segment_widget, cell_stack, notes, qtbot, state
):
    images, truth = cell_stack
    state.current.set(untrained_model(), "untrained")
    image = viewer.add_image(images, rgb=True, name="cells")
    segment_widget.image_layer.value = image
    predicted = run_segment(qtbot, segment_widget)
    before = predicted.data.copy()

    # The user corrects the prediction (here: paints the expert labels in).
    predicted.data[...] = truth
    predicted.refresh()
    painted = predicted.data.copy()

    segment_widget.add_button.native.click()
    assert len(state.training_set) == len(images)
    assert np.array_equal(predicted.data, painted)  # adding copies, never modifies

    first_model = state.current.model
    tiny_run(train_widget, epochs=2, lr=1e-3)
    train_widget.fine_tune_button.native.click()
    assert train_widget.settings.continue_from.value == FROM_CURRENT
    assert train_widget.data.source.value == FROM_SESSION
    with qtbot.waitSignal(train_widget.run_finished, timeout=RUN_TIMEOUT_MS):
        pass
    assert errors(notes) == []
    assert state.current.model is not first_model

    again = run_segment(qtbot, segment_widget)
    assert again is not predicted
    assert again.name == "cells segmentation [1]"
    assert np.array_equal(predicted.data, painted)  # the correction survived re-segmenting
    agreement_before = np.mean(before == truth)
    agreement_after = np.mean(again.data == truth)
    assert agreement_after > agreement_before + 0.1


def test_add_current_slice_only_copies_one_slice(viewer, segment_widget, cell_stack, notes, state):
    image, labels = add_cells(viewer, cell_stack)
    segment_widget.image_layer.value = image
    segment_widget.corrected_layer.value = labels
    segment_widget.current_slice_only.value = True
    viewer.dims.set_current_step(0, 5)
    kept = labels.data.copy()

    segment_widget.add_button.native.click()
    assert errors(notes) == []
    data = state.training_set.data()
    assert len(data) == 1
    assert np.array_equal(data.images[0], cell_stack[0][5])
    assert np.array_equal(data.masks[0], cell_stack[1][5])
    assert "1 image(s)" in segment_widget.training_set_info.value

    labels.data[5] = 0  # later edits do not reach the training set
    assert np.array_equal(state.training_set.data().masks[0], kept[5])


def test_validation_errors_are_plain_notifications(
    viewer, train_widget, segment_widget, cell_stack, notes, state
):
    images, masks = cell_stack
    image, labels = add_cells(viewer, (images, masks))

    segment_widget.image_layer.value = image
    segment_widget.segment_button.native.click()
    assert_plain_error(notes, "There is no model yet")

    state.current.set(untrained_model(), "test model")
    segment_widget.image_layer.value = labels
    segment_widget.segment_button.native.click()
    assert_plain_error(notes, "is a Labels layer")
    assert not segment_widget.running

    short = viewer.add_labels(masks[:7], name="seven labels")
    use_layers(train_widget, image, short)
    train_widget.start_button.native.click()
    assert_plain_error(notes, "must match the image")

    use_layers(train_widget, image, image)
    train_widget.start_button.native.click()
    assert_plain_error(notes, "is an RGB image")

    bad = masks.copy()
    bad[2, :5, :5] = 3
    too_high = viewer.add_labels(bad, name="bad labels")
    use_layers(train_widget, image, too_high)
    train_widget.start_button.native.click()
    assert_plain_error(notes, "holds the value(s) 3")
    assert not train_widget.running and state.runs.training is None

    segment_widget.image_layer.value = image
    segment_widget.corrected_layer.value = too_high
    segment_widget.add_button.native.click()
    assert_plain_error(notes, "holds the value(s) 3")
    assert len(state.training_set) == 0

    train_widget.data.source.value = FROM_SESSION
    train_widget.start_button.native.click()
    assert_plain_error(notes, "session training set is empty")


def test_worker_errors_reach_notifications(
    viewer, segment_widget, cell_stack, notes, qtbot, tmp_path, monkeypatch, state
):
    image = viewer.add_image(cell_stack[0][:2], rgb=True, name="cells")
    segment_widget.image_layer.value = image

    # A user error inside the worker (a damaged model file): its sentence, no traceback.
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(b"not a model")
    segment_widget.model_source.value = MODEL_FILE
    segment_widget.model_file.value = damaged
    assert run_segment(qtbot, segment_widget) is None
    assert_plain_error(notes, "damaged or not a PyTorch file")

    # A bug inside the worker: shown by napari with its traceback, never swallowed.
    def broken(*args, **kwargs):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr("napari_bloodcells.core.jobs.segmentation.segment", broken)
    state.current.set(untrained_model(), "test model")
    segment_widget.model_source.value = "current session model"
    assert run_segment(qtbot, segment_widget) is None
    # superqt would drop a RuntimeError silently; the job re-raises it under another type.
    bugs = [n for n in notes if isinstance(n, ErrorNotification)]
    assert [n.message for n in bugs] == ["simulated bug"]
    assert isinstance(bugs[0].exception.__cause__, RuntimeError)
    assert "failed" in segment_widget.status.value


def test_stop_mid_stack_leaves_no_layer_behind(
    viewer, segment_widget, cell_stack, notes, qtbot, state
):
    model = untrained_model()
    forward = model.network.forward

    def slow(x):  # a tenth of a second per slice: the stop lands mid-stack
        time.sleep(0.1)
        return forward(x)

    model.network.forward = slow
    state.current.set(model, "a slow model")
    image = viewer.add_image(cell_stack[0], rgb=True, name="cells")
    segment_widget.image_layer.value = image
    seen = []

    def stop_at_first_progress(message):
        if isinstance(message, SegmentProgress) and not seen:
            seen.append(message)
            segment_widget.stop_button.native.click()

    with qtbot.waitSignal(segment_widget.run_finished, timeout=RUN_TIMEOUT_MS) as finished:
        segment_widget.segment_button.native.click()
        assert segment_widget.stop_button.enabled
        segment_widget.worker.yielded.connect(stop_at_first_progress)
    assert finished.args[0] is None
    assert seen and seen[0].images == len(cell_stack[0])
    assert [layer.name for layer in viewer.layers] == ["cells"], "nothing partial is written"
    assert "stopped" in segment_widget.status.value
    assert segment_widget.progress.value == 0
    assert segment_widget.segment_button.enabled and not segment_widget.stop_button.enabled
    assert state.runs.segmenting == 0
    assert errors(notes) == []


def test_export_button_writes_a_package_in_a_worker(viewer, train_widget, qtbot, tmp_path, state):
    import zipfile

    from bad_inputs import untrained_model

    assert not train_widget.export_button.enabled  # no model yet
    state.current.set(untrained_model(native=True), "a model")
    assert train_widget.export_button.enabled
    image = viewer.add_image(np.full((64, 64, 3), 200, np.uint8), rgb=True, name="mine")
    train_widget.data.image_layer.value = image
    with qtbot.waitSignal(train_widget.export_finished, timeout=RUN_TIMEOUT_MS) as done:
        train_widget.export(path=tmp_path / "exported")
        assert not train_widget.export_button.enabled
    assert done.args[0] == tmp_path / "exported.zip"
    with zipfile.ZipFile(done.args[0]) as archive:
        assert {"rdf.yaml", "weights.onnx", "cover.png"} <= set(archive.namelist())
        test_input = np.load(archive.open("test_input.npy"))
    assert test_input.shape == (1, 3, 64, 64) and (test_input == 200).all()  # the layer's pixels
    assert train_widget.export_button.enabled
    assert "Exported the model" in train_widget.status.value


def test_the_train_dock_exports_a_smear_field_model_after_it_segmented_the_field(
    viewer, train_widget, segment_widget, qtbot, tmp_path, state, notes, monkeypatch
):
    """Segmenting leaves the live network channels-last, which torch.export refused."""
    import zipfile

    from PIL import Image as PILImage

    from napari_bloodcells.core.exchange import export

    field = sorted((SHARED_FIELDS / "JPEGImages").glob("*.jpg"))[0]
    pixels = np.asarray(PILImage.open(field).convert("RGB"))
    assert pixels.shape == (480, 640, 3)
    image = viewer.add_image(pixels, rgb=True, name="field")
    state.current.set(untrained_model(native=True), "a model")  # tiles, as smear models do
    segment_widget.image_layer.value = image
    assert run_segment(qtbot, segment_widget) is not None
    train_widget.data.image_layer.value = image
    with qtbot.waitSignal(train_widget.export_finished, timeout=RUN_TIMEOUT_MS) as done:
        train_widget.export(path=tmp_path / "field")
    assert errors(notes) == []
    with zipfile.ZipFile(done.args[0]) as archive:
        assert "weights.onnx" in archive.namelist()
        assert np.load(archive.open("test_input.npy")).shape == (1, 3, 480, 640)

    def torch_refuses(*_):
        raise RuntimeError(
            "Failed to export the model with torch.export. \x1b[96mThis is step 1/3\x1b[0m\n"
            "## Exception summary\n<class 'torch._dynamo.exc.UserError'>: Invalid ranges [2:1]"
        )

    monkeypatch.setattr(export, "write_onnx", torch_refuses)
    with qtbot.waitSignal(train_widget.export_finished, timeout=RUN_TIMEOUT_MS) as done:
        train_widget.export(path=tmp_path / "refused")
    assert done.args[0] is None and not (tmp_path / "refused.zip").exists()
    message = assert_plain_error(notes, "Could not write onnx weights (Invalid ranges [2:1])")
    assert "\x1b" not in message and "--formats" in message
    assert train_widget.status.value.startswith("Export failed")
    assert train_widget.export_button.enabled


def test_a_multiscale_dask_layer_is_segmented_block_by_block_into_a_zarr_backed_layer(
    viewer, segment_widget, qtbot, state, bloodcells, data_env
):
    import dask.array as da
    import zarr

    from bad_inputs import untrained_model

    cells = [image[:100, :100] for image in bloodcells.images[:25]]
    picture = np.concatenate([np.concatenate(cells[r * 5 : (r + 1) * 5], 1) for r in range(5)])
    full = da.from_array(np.tile(picture, (2, 3, 1)), chunks=(512, 512, 3))  # 1000 x 1500
    layer = viewer.add_image([full, full[::2, ::2]], rgb=True, multiscale=True, name="slide")
    state.current.set(untrained_model(native=True), "a model")
    segment_widget.image_layer.value = layer
    written = run_segment(qtbot, segment_widget)
    assert written is not None
    store = written.metadata["napari_bloodcells"]["zarr"]
    group = zarr.open_group(store, mode="r")
    assert group["0"].shape == (1000, 1500) and bool(np.all(group["blocks_done"][:]))
    assert set(np.unique(group["0"][::50, ::50])) <= {0, 1, 2}
    # The same OME-Zarr label image as the command line writes: readers see labels.
    assert [p["class"] for p in group.attrs["ome"]["image-label"]["properties"]] == [
        "background",
        "cytoplasm",
        "nucleus",
    ]
    assert "Segmented 'slide segmentation'" in segment_widget.status.value
