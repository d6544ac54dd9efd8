"""Take the screenshots of the README and docs/correct-and-retrain.md.

Opens a real napari window (1400 x 900), docks Train and Segment through the
plugin manifest, opens the blood-cell sample and walks through the
correct-and-retrain loop like a user, saving one picture per step into
docs/images/:

    overview.png                    both widgets, the sample and its segmentation by a trained
                                    model (--model), or by the short run below without one
    1-sample.png                    the sample opened, widgets docked
    2-train.png                     a short training run: progress, curves, preview
    3-segment.png                   the prediction as a Labels layer
    4-correct.png                   a nucleus painted in with the label brush
    5-add-to-training-set.png       the corrected slice added to the session set
    6-fine-tune.png                 fine-tuned, segmented again: a new layer beside the painted one
    layout-1066x651.png             napari's opening window while training: the docks are tabs,
    layout-1066x651-segment.png     Train shows progress, curves and preview; the Segment tab
    layout-1600x1000.png            a large window: both docks at once, during training
    field-1-segment.png             with --field-model: a whole smear field (BCCD) segmented by a
                                    model that paints red cells as white cells
    field-2-erase.png               everything outside the white cell erased, added to the set
    field-3-next.png                two fields corrected, fine-tuned, and the next field segmented

To keep it quick the sample is cut to its first 24 images and the walkthrough's
training runs 2 epochs of the ``seed`` preset on the CPU. The overview shows what
a trained model does: pass the checkpoint of a full default-preset run
(``napari-bloodcells train --out default.pt``). Run it under a virtual display
large enough for the window:

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/screenshots.py --model default.pt

The dataset is read from ../shared when present (as the tests do), else
downloaded once into the cache.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "benchmarks"))  # the scripts' shared helpers

from _common import settle, wait_for  # noqa: E402

OUT = HERE / "images"
SHARED = HERE.parents[1] / "shared" / "data" / "segmentation_WBC"
SHARED_FIELDS = HERE.parents[1] / "shared" / "data" / "BCCD-trainval"
WINDOW = (1400, 900)
MAX_BYTES = 400_000
IMAGES = 24


def wait_for_result(signal, start):
    """Call ``start()`` and wait for ``signal``; stop the script if the run failed."""
    result = wait_for(signal, start)
    if result is None:
        raise SystemExit(f"{start.__qualname__} did not produce a result")
    return result


def dismiss_notifications(viewer) -> None:
    """Close the notification pop-ups so they do not cover the canvas."""
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    for popup in viewer.window._qt_window.findChildren(NapariQtNotification):
        popup.close()
    settle(100)


def save(viewer, name: str) -> Path:
    """Save the whole window as ``docs/images/<name>``, under :data:`MAX_BYTES`."""
    from PIL import Image

    settle(400)
    grab = viewer.window._qt_window.grab().toImage()
    buffer = io.BytesIO()
    from qtpy.QtCore import QBuffer, QIODevice

    qbuffer = QBuffer()
    qbuffer.open(QIODevice.OpenModeFlag.WriteOnly)
    grab.save(qbuffer, "PNG")
    buffer.write(bytes(qbuffer.data()))
    buffer.seek(0)
    picture = Image.open(buffer).convert("RGB")
    path = OUT / name
    scale = 1.0
    while True:
        size = (round(picture.width * scale), round(picture.height * scale))
        candidate = picture if scale == 1.0 else picture.resize(size, Image.Resampling.LANCZOS)
        data = io.BytesIO()
        # A 256-colour palette keeps the flat widget colours exact and halves the size.
        candidate.quantize(256, method=Image.Quantize.MEDIANCUT).save(data, "PNG", optimize=True)
        if data.tell() <= MAX_BYTES or scale < 0.5:
            break
        scale *= 0.85
    path.write_bytes(data.getvalue())
    print(f"{path.relative_to(HERE.parent)}  {size[0]}x{size[1]}  {data.tell() // 1024} KB")
    return path


def disc(shape: tuple[int, int], center: tuple[float, float], radius: float) -> np.ndarray:
    """A boolean disc, as a round label brush paints it."""
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2


def hover(viewer, point: tuple[float, float]) -> None:
    """Move the mouse over the canvas pixel showing data ``(row, col)``."""
    from qtpy.QtCore import QPoint
    from qtpy.QtTest import QTest

    canvas = viewer.window._qt_viewer.canvas.native
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    center, zoom = camera.center, camera.zoom
    x = (point[1] - center[-1]) * zoom + canvas.width() / 2
    y = (point[0] - center[-2]) * zoom + canvas.height() / 2
    QTest.mouseMove(canvas, QPoint(round(x), round(y)))
    settle(200)


def densest(mask: np.ndarray, radius: int) -> tuple[int, int]:
    """The pixel whose square neighbourhood of ``radius`` holds the most of ``mask``."""
    if not mask.any():
        return mask.shape[0] // 2, mask.shape[1] // 2
    padded = np.pad(mask.astype(np.int32), radius + 1)
    total = padded.cumsum(0).cumsum(1)
    side = 2 * radius + 1
    counts = (
        total[side:, side:] - total[:-side, side:] - total[side:, :-side] + total[:-side, :-side]
    )
    row, col = np.unravel_index(np.argmax(counts), counts.shape)
    return int(row), int(col)


LAYOUT_SIZES = ((1066, 651), (1600, 1000))


def layout_shots() -> None:
    """The docks as ``napari-bloodcells gui`` arranges them, mid-training, at two window sizes."""
    import time

    import napari

    from napari_bloodcells._launch import dock_widgets
    from napari_bloodcells._widgets.data_picker import FROM_LAYERS
    from napari_bloodcells._widgets.docking import TABS_BELOW_HEIGHT

    for size in LAYOUT_SIZES:
        viewer = napari.Viewer(title="napari-bloodcells", show=True)
        viewer.window._qt_window.resize(*size)
        settle()
        train, segment = dock_widgets(viewer)
        viewer.open_sample("napari-bloodcells", "bloodcells")
        image, truth = viewer.layers["blood cells"], viewer.layers["blood cells labels"]
        image.data, truth.data = image.data[:IMAGES], truth.data[:IMAGES]
        viewer.reset_view()
        train.data.source.value = FROM_LAYERS
        train.data.image_layer.value = image
        train.data.labels_layer.value = truth
        options = train.settings
        options.preset.value = "seed"
        options.epochs.value = 30
        options.dev_fraction.value = 0.15
        options.device.value = "cpu"
        train.start()
        deadline = time.monotonic() + 300
        while len(train.plot.epochs) < 2 and time.monotonic() < deadline:
            settle(100)
        dismiss_notifications(viewer)
        name = f"layout-{size[0]}x{size[1]}"
        save(viewer, f"{name}.png")
        if size[1] < TABS_BELOW_HEIGHT:
            segment.native.parentWidget().raise_()
            save(viewer, f"{name}-segment.png")
        train.stop()
        wait_for(train.run_finished, lambda: None, busy=lambda train=train: train.running)
        viewer.close()


def field_shots(model: Path) -> None:
    """The loop on whole smear fields of another microscope: segment, erase, add, fine-tune."""
    import napari

    from napari_bloodcells._widgets.data_picker import FROM_SESSION
    from napari_bloodcells._widgets.options import FROM_FILE
    from napari_bloodcells._widgets.segment_widget import MODEL_CURRENT, MODEL_FILE
    from napari_bloodcells.core.data.smear_fields import keep_inside, sample_fields

    viewer = napari.Viewer(title="napari-bloodcells", show=True)
    viewer.window._qt_window.resize(*WINDOW)
    _, train = viewer.window.add_plugin_dock_widget("napari-bloodcells", "Train")
    _, segment = viewer.window.add_plugin_dock_widget("napari-bloodcells", "Segment")
    settle()
    viewer.open_sample("napari-bloodcells", "smear_field")
    fields = sample_fields()
    stack, boxes = viewer.layers["smear fields"], viewer.layers["white cells (BCCD boxes)"]
    segment.model_source.value = MODEL_FILE
    segment.model_file.value = model
    for index in (0, 1):
        image = viewer.add_image(stack.data[index], rgb=True, name=fields[index].name)
        stack.visible = boxes.visible = False
        segment.image_layer.value = image
        segment.scale.value = 0.4
        labels = wait_for_result(segment.run_finished, segment.segment)
        dismiss_notifications(viewer)
        if index == 0:
            save(viewer, "field-1-segment.png")
        # The red cells erased: what the eraser and the fill bucket with label 0 do.
        labels.data = keep_inside(np.asarray(labels.data), fields[index].white_cells)
        segment.corrected_layer.value = labels
        segment.add_to_training_set()
        if index == 0:
            save(viewer, "field-2-erase.png")
        image.visible = labels.visible = False
    # Fine-tune the model file on the two corrected fields; the model kept becomes current.
    train.settings.continue_from.value = FROM_FILE
    train.settings.init_file.value = model
    train.data.source.value = FROM_SESSION
    wait_for_result(train.run_finished, train.start)
    segment.model_source.value = MODEL_CURRENT
    nxt = viewer.add_image(stack.data[2], rgb=True, name=fields[2].name)
    segment.image_layer.value = nxt
    again = wait_for_result(segment.run_finished, segment.segment)
    viewer.layers.selection.active = again
    dismiss_notifications(viewer)
    save(viewer, "field-3-next.png")
    viewer.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--model", type=Path, help="a trained checkpoint for overview.png")
    parser.add_argument("--layout-only", action="store_true", help="only the layout-*.png pictures")
    parser.add_argument(
        "--field-model",
        type=Path,
        help="a model that paints red cells as white cells, for the field-*.png walkthrough",
    )
    parser.add_argument("--fields-only", action="store_true", help="only the field-*.png pictures")
    args = parser.parse_args(argv)
    if SHARED.is_dir():
        os.environ.setdefault("NAPARI_BLOODCELLS_DATA_URL", str(SHARED))
    if SHARED_FIELDS.is_dir():
        os.environ.setdefault("NAPARI_BLOODCELLS_SMEAR_URL", str(SHARED_FIELDS))
    OUT.mkdir(exist_ok=True)
    if args.field_model is not None:
        field_shots(args.field_model)
    if args.fields_only:
        return
    layout_shots()
    if args.layout_only:
        return

    import napari
    from qtpy.QtCore import Qt

    from napari_bloodcells._widgets.data_picker import FROM_LAYERS
    from napari_bloodcells._widgets.segment_widget import MODEL_CURRENT, MODEL_FILE

    viewer = napari.Viewer(title="napari-bloodcells", show=True)
    viewer.window._qt_window.resize(*WINDOW)
    train_dock, train = viewer.window.add_plugin_dock_widget("napari-bloodcells", "Train")
    segment_dock, segment = viewer.window.add_plugin_dock_widget("napari-bloodcells", "Segment")
    settle()

    def split(train_height: int) -> None:
        # Share the right-hand column between the docks, as a user does by dragging
        # the splitter between them; both scroll.
        viewer.window._qt_window.resizeDocks(
            [train_dock, segment_dock],
            [train_height, WINDOW[1] - train_height],
            Qt.Orientation.Vertical,
        )
        settle()

    split(WINDOW[1] - 360)

    # 1. The sample: an RGB stack and its expert labels, cut to the first images.
    viewer.open_sample("napari-bloodcells", "bloodcells")
    image = viewer.layers["blood cells"]
    truth = viewer.layers["blood cells labels"]
    image.data = image.data[:IMAGES]
    truth.data = truth.data[:IMAGES]
    viewer.dims.set_current_step(0, 0)
    viewer.reset_view()
    viewer.layers.selection.active = image
    train.data.source.value = FROM_LAYERS
    train.data.image_layer.value = image
    train.data.labels_layer.value = truth
    segment.image_layer.value = image
    if args.model is not None:
        # The overview: the sample segmented by a fully trained model, read from its file,
        # with the Train form as a new user finds it (the default preset).
        shown = Path(tempfile.mkdtemp()) / "default.pt"
        shutil.copy(args.model, shown)
        segment.model_source.value = MODEL_FILE
        segment.model_file.value = shown
        truth.visible = False
        trained = wait_for_result(segment.run_finished, segment.segment)
        viewer.layers.selection.active = trained
        dismiss_notifications(viewer)
        save(viewer, "overview.png")
        viewer.layers.remove(trained)
        truth.visible = True
        segment.model_source.value = MODEL_CURRENT
    options = train.settings
    options.preset.value = "seed"
    options.epochs.value = 2
    options.batch_size.value = 4
    options.lr.value = 1e-3
    options.device.value = "cpu"
    segment.image_layer.value = image
    dismiss_notifications(viewer)
    save(viewer, "1-sample.png")

    # 2. Train briefly: progress, loss and Dice curves, preview of dev predictions.
    wait_for_result(train.run_finished, train.start)
    dismiss_notifications(viewer)
    split(WINDOW[1] - 90)
    train.scroll_area.ensureWidgetVisible(train.preview, 0, 0)
    save(viewer, "2-train.png")
    split(WINDOW[1] - 360)
    train.scroll_area.verticalScrollBar().setValue(0)

    # 3. Segment the stack with the model just trained; hide the expert labels.
    truth.visible = False
    predicted = wait_for_result(segment.run_finished, segment.segment)
    viewer.layers.selection.active = predicted
    dismiss_notifications(viewer)
    save(viewer, "3-segment.png")
    if args.model is None:
        train.scroll_area.ensureWidgetVisible(train.plot, 0, 60)
        save(viewer, "overview.png")
        train.scroll_area.verticalScrollBar().setValue(0)

    # 4. Correct: on the slice where most nucleus was missed, paint a disc of
    #    nucleus (class 2) with the label brush where the miss is densest.
    missed = (truth.data == 2) & (predicted.data != 2)
    index = int(np.argmax(missed.sum(axis=(1, 2))))
    viewer.dims.set_current_step(0, index)
    center = densest(missed[index], radius=10)
    predicted.mode = "paint"
    predicted.brush_size = 20
    predicted.selected_label = 2
    predicted.data[index][disc(predicted.data.shape[1:], center, 10)] = 2
    predicted.refresh()
    hover(viewer, center)  # napari draws the brush outline where the mouse is
    bottom = segment.scroll_area.verticalScrollBar()
    bottom.setValue(bottom.maximum())  # the "Correct and retrain" controls
    save(viewer, "4-correct.png")

    # 5. Add the corrected slice to the session training set.
    segment.corrected_layer.value = predicted
    segment.current_slice_only.value = True
    segment.add_to_training_set()
    save(viewer, "5-add-to-training-set.png")

    # 6. Fine-tune the current model on the session set, then segment again:
    #    the painted layer is kept and the new prediction gets a layer of its own.
    predicted.mode = "pan_zoom"
    wait_for_result(train.run_finished, train.fine_tune)
    again = wait_for_result(segment.run_finished, segment.segment)
    predicted.visible = False  # kept as painted; hidden to show the new prediction
    viewer.layers.selection.active = again
    train.scroll_area.ensureWidgetVisible(train.plot, 0, 60)
    dismiss_notifications(viewer)
    save(viewer, "6-fine-tune.png")

    viewer.close()


if __name__ == "__main__":
    sys.exit(main())
