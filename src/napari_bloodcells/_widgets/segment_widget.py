"""The Segment dock widget: apply a model to an image layer, then collect corrections.

Segmentation runs in a worker; the result is written to a Labels layer named
``<image> segmentation`` in the fixed class colours. Re-running replaces that
layer only while the user has not painted on it. "Add to training set" copies
a corrected labels layer and its image into the session training set, which
the Train widget fine-tunes on.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.types import FileDialogMode
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    FileEdit,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
)

from napari_bloodcells._layers import labels_kwargs, type_colormap
from napari_bloodcells._widgets.cell_table import CellTable
from napari_bloodcells._widgets.controls import (
    button_row,
    collapsible,
    form,
    scroll_contents,
    single_path,
    status_label,
)
from napari_bloodcells._widgets.gallery import CellGallery
from napari_bloodcells._widgets.job_widget import JobWidget
from napari_bloodcells._widgets.layer_picker import LayerPicker
from napari_bloodcells._widgets.layers import (
    CELLS,
    META_KEY,
    SEGMENTATION,
    drop_unused_prediction,
    image_input,
    is_painted_prediction,
    is_unpainted_prediction,
    lazy_image,
    mask_input,
    prepare_prediction,
    remember_scale,
    remembered_scale,
    slice_index,
    training_pairs,
    write_confidence,
    write_prediction,
)
from napari_bloodcells._widgets.queue_panel import QueuePanel
from napari_bloodcells._widgets.state import subscribe
from napari_bloodcells._widgets.workers import show_error, show_info, show_warning
from napari_bloodcells.core.base.bounds import MAGNIFICATION_RANGE, range_of
from napari_bloodcells.core.base.cell_types import NOT_A_WHITE_CELL
from napari_bloodcells.core.base.classes import BLOODCELL_CLASSES
from napari_bloodcells.core.data.dataset import SegmentationData
from napari_bloodcells.core.events import (
    BlocksSegmented,
    BlockWritten,
    CellsMeasured,
    Ranked,
    ScaleChosen,
    ScaleEstimate,
    ScaleEstimated,
    Segmentation,
    SegmentationFinished,
    SegmentProgress,
)
from napari_bloodcells.core.inference.tiled import TileSettings
from napari_bloodcells.core.jobs import (
    ModelSource,
    blocks_job,
    cache_dir,
    cell_pair,
    describe_file,
    large_labels_store,
    load_model,
    measure_job,
    resolve_device,
    scale_job,
    segmentation_job,
    write_csv,
    write_differential,
)
from napari_bloodcells.core.model.checkpoint import SUFFIX
from napari_bloodcells.errors import BloodcellsError, ConfigError

if TYPE_CHECKING:
    import napari
    import numpy as np
    from magicgui.widgets import Widget
    from napari.layers import Image, Labels

    from napari_bloodcells.core.measure.cells import Measurements
    from napari_bloodcells.core.model.trained import TrainedModel


def _camera(viewer: napari.viewer.Viewer) -> Any:
    """The viewer's camera: ``viewer.scene.camera`` from napari 0.9, ``viewer.camera`` before."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


def _safe_name(name: str) -> str:
    """``name`` with only characters every file system accepts."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "image"


MODEL_CURRENT = "current session model"
MODEL_FILE = "checkpoint file"
_PROGRESS_STEPS = 1000
LAYER_BLOCK = 1024
"""Block side for a large layer: half the command line's. napari already holds about 1.1 GiB,
and each thread that touches a block (the worker, dask's readers, zarr's) keeps its freed
memory in its own malloc arena; with 2048 px blocks napari peaked at 1.50 GiB on a
20000x20000 slide, with 1024 px blocks at 1.32 GiB (docs/benchmarks.md). The layer also
refreshes twice as often."""


class SegmentWidget(JobWidget):
    """Segment an image (or every slice of a stack) with the current model or a checkpoint.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer whose image layers are segmented.

    Attributes
    ----------
    image_layer : ComboBox
        The image to segment (and the image of the corrections).
    model_source : ComboBox
        :data:`MODEL_CURRENT` or :data:`MODEL_FILE`.
    model_file : FileEdit
        The checkpoint, when ``model_source`` is :data:`MODEL_FILE`.
    model_info, status, training_set_info : Label
    scale : FloatSpinBox
        Resize factor before prediction (1.0 = as is).
    tile_size : SpinBox
        Large images are predicted in tiles of this size.
    confidence : CheckBox
        Also add ``<image> confidence`` (probability of the winning class).
    segment_button, stop_button, add_button, clear_button : PushButton
    progress : ProgressBar
    corrected_layer : ComboBox
        The corrected labels that "Add to training set" copies.
    current_slice_only : CheckBox
        Add only the slice shown in the viewer.
    last_layer : Labels or None
        The layer the last run wrote.
    scroll_area : QScrollArea
        Holds all the controls, so the dock can be shorter than its contents.
    run_finished : psygnal.Signal
        Emitted with :attr:`last_layer` (``None`` on failure or stop) when a run ends.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.image_layer = LayerPicker(viewer, "image", label="Image")
        self.model_source = ComboBox(label="Model", choices=[MODEL_CURRENT, MODEL_FILE])
        self.model_file = FileEdit(
            label="Checkpoint",
            mode=FileDialogMode.EXISTING_FILE,
            filter=f"*{SUFFIX}",
            nullable=True,
        )
        self.model_info = status_label()
        self.scale = FloatSpinBox(
            label="Scale",
            value=1.0,
            min=MAGNIFICATION_RANGE.minimum,
            max=MAGNIFICATION_RANGE.maximum,
            step=0.05,
            tooltip="Resize factor applied before prediction: below 1 when cells look larger "
            "than in the training images, above 1 when smaller.",
        )
        tile_size = range_of(TileSettings, "size")
        # Models load onto the "auto" device: tiles and batches sized for it.
        self._tiles = TileSettings.for_device(resolve_device("auto"))
        self.estimate_button = PushButton(
            text="Estimate",
            tooltip="Estimate the scale at which the cells of the image match the size of the "
            "cells the model was trained on",
        )
        self.tile_size = SpinBox(
            label="Tile size",
            value=self._tiles.size,
            min=int(tile_size.minimum),
            max=int(tile_size.maximum),
            step=32,
            tooltip="Images larger than this are predicted tile by tile.",
        )
        self.confidence = CheckBox(text="Add a confidence layer", value=False)
        self.segment_button = PushButton(text="Segment")
        self.progress = ProgressBar(min=0, max=_PROGRESS_STEPS, value=0)
        self.corrected_layer = LayerPicker(viewer, "labels", label="Corrected labels")
        self.current_slice_only = CheckBox(text="Current slice only", value=False)
        self.add_button = PushButton(text="Add to training set")
        self.clear_button = PushButton(text="Clear training set")
        self.training_set_info = status_label()
        self.measure_button = PushButton(
            text="Measure cells",
            tooltip="Split the corrected labels into cells and measure each one "
            "(N:C ratio, lobes, ...)",
        )
        self.pixel_size = FloatSpinBox(
            label="Pixel size (µm)",
            value=0.0,
            min=0.0,
            max=100.0,
            step=0.01,
            tooltip="Micrometres per pixel, for areas in µm² (0: pixels only)",
        )
        self.export_button = PushButton(text="Export CSV…", enabled=False)
        self.cell_table = CellTable()
        self.gallery = CellGallery()
        self.add_types_button = PushButton(
            text="Add reclassified cells to training set",
            tooltip="Each reclassified cell, with its labels, becomes a training pair that "
            "carries its type; Fine-tune in the Train dock then learns it",
        )
        self.export_differential_button = PushButton(text="Export differential…")
        self.measurements: Measurements | None = None
        self.cells_layer: Labels | None = None
        self.last_layer: Labels | None = None
        self._placeholder: Labels | None = None
        self._target: Image | None = None
        self._scale = 1.0
        self._segmenting = False
        self._measured: Labels | None = None
        self._measured_arrays: tuple[np.ndarray, np.ndarray | None] | None = None
        self._measured_cells: np.ndarray | None = None
        super().__init__(viewer, "Segmentation")
        # Rarely changed, so folded below the Segment button: the button and its
        # progress stay in view in a short dock.
        self.more_options = collapsible(
            "More options", form(self.tile_size), self.confidence, expanded=False
        )
        self.queue = QueuePanel(self)
        self.queue_section = collapsible("Correction queue", self.queue, expanded=False)
        layout = self.native.layout()
        layout.insertWidget(layout.indexOf(self.status.native) + 1, self.more_options)
        layout.insertWidget(layout.indexOf(self.training_set_info.native) + 1, self.queue_section)
        layout.addWidget(self.cell_table)
        gallery_buttons = button_row(self.add_types_button, self.export_differential_button)
        from qtpy.QtWidgets import QVBoxLayout, QWidget

        gallery_box = QWidget()
        gallery_layout = QVBoxLayout(gallery_box)
        gallery_layout.setContentsMargins(0, 0, 0, 0)
        gallery_layout.addWidget(self.gallery)
        gallery_layout.addWidget(gallery_buttons.native)
        self.gallery_section = collapsible("Differential gallery", expanded=False)
        self.gallery_section.addWidget(gallery_box)
        layout.addWidget(self.gallery_section)
        self.scroll_area = scroll_contents(self)
        self.segment_button.changed.connect(self.segment)
        self.estimate_button.changed.connect(self.estimate_scale)
        self.image_layer.changed.connect(self._restore_scale)
        self.add_button.changed.connect(self.add_to_training_set)
        self.clear_button.changed.connect(self.clear_training_set)
        self.measure_button.changed.connect(self.measure)
        self.export_button.changed.connect(self.export_csv)
        self.cell_table.cell_clicked.connect(self.show_cell)
        self.gallery.cell_clicked.connect(self.show_cell)
        self.gallery.reclassified.connect(self._recolour_cell)
        self.add_types_button.changed.connect(self.add_reclassified)
        self.export_differential_button.changed.connect(self.export_differential)
        self.model_source.changed.connect(self._show_model)
        self.model_file.changed.connect(self._show_model)
        subscribe(self.state.current.events.model, self._show_model, self.native)
        subscribe(self.state.training_set.changed, self._show_training_set, self.native)
        subscribe(self.state.current.events.model, self.queue.save_model, self.native)
        self._show_model()
        self._show_training_set(len(self.state.training_set))

    def contents(self) -> list[Widget]:
        """Model and image, Segment/Stop with progress, then the correction controls."""
        # Forms hold the labelled inputs; status lines sit outside them so that
        # wrapped text gets the height it needs.
        return [
            form(self.image_layer, self.model_source, self.model_file),
            self.model_info,
            button_row(form(self.scale), self.estimate_button),
            button_row(self.segment_button, self.stop_button),
            self.progress,
            self.status,
            Label(value="<b>Correct and retrain</b>"),
            form(self.corrected_layer),
            self.current_slice_only,
            button_row(self.add_button, self.clear_button),
            self.training_set_info,
            Label(value="<b>Measure cells</b>"),
            form(self.pixel_size),
            button_row(self.measure_button, self.export_button),
        ]

    def segment(self, *_: object) -> None:
        """Check the inputs, then segment in a worker; problems become notifications."""
        if self.refuse_while_running():
            return
        try:
            model = self.chosen_model()  # before copying the pixels: cheaper to fail
            layer = self.image_layer.value
            tiles = self._tiles.for_size(int(self.tile_size.value))
            large = lazy_image(layer)
            if large is not None:
                self._segment_large(load_model(model), layer, large, tiles)
                return
            image = image_input(layer)
        except BloodcellsError as exc:
            show_error(str(exc))
            return
        self._target = layer
        self._scale = float(self.scale.value)
        remember_scale(layer, self._scale)
        self.last_layer = None
        self.progress.value = 0
        self.status.value = f"Segmenting '{layer.name}'…"
        note = self.state.runs.sharing_note("segmentation")
        if note:
            show_info(note)
        self.state.runs.segmenting += 1
        self._segmenting = True
        if not isinstance(model, Path):  # a loaded model: its classes colour the layer
            shape = image.array.shape[:3] if image.stack else image.array.shape[:2]
            self._placeholder = prepare_prediction(self._viewer, layer, shape, model.classes)
        self.run_job(
            segmentation_job,
            model,
            image.array,
            stack=image.stack,
            scale=self._scale,
            tiles=tiles,
            confidence=bool(self.confidence.value),
        )

    def _segment_large(
        self, model: TrainedModel, layer: Image, data: object, tiles: TileSettings
    ) -> None:
        """Segment a large layer block by block into a zarr store, shown as it fills.

        The labels go to a new zarr store in the cache (``segmentations/``),
        shown as a multiscale Labels layer that is refreshed after every block;
        only one block of pixels is in memory at a time.
        """
        scale = float(self.scale.value)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = cache_dir() / "segmentations" / f"{_safe_name(layer.name)}-{stamp}.zarr"
        store = large_labels_store(
            path,
            data.shape[:2],  # type: ignore[attr-defined]
            LAYER_BLOCK,
            attributes={"image": layer.name},
            classes=model.classes,
        )
        self._target = layer
        self._scale = scale
        remember_scale(layer, scale)
        levels = store.pyramid()
        self.last_layer = self._viewer.add_labels(
            levels if len(levels) > 1 else levels[0],
            multiscale=len(levels) > 1,
            **labels_kwargs(
                f"{layer.name} segmentation",
                model.classes,
                metadata={META_KEY: {"role": SEGMENTATION, "image": layer.name, "zarr": str(path)}},
                scale=layer.scale,
                translate=layer.translate,
            ),
        )
        self.progress.value = 0
        self.status.value = f"Segmenting '{layer.name}' block by block into {path.name}…"
        self.state.runs.segmenting += 1
        self._segmenting = True
        self.run_job(blocks_job, model, data, store, scale=scale, tiles=tiles)

    def estimate_scale(self, *_: object) -> None:
        """Estimate the Scale for the chosen image in a worker, and put it in the Scale field."""
        if self.refuse_while_running():
            return
        try:
            model = self.chosen_model()
            layer = self.image_layer.value
            image = image_input(layer)
        except BloodcellsError as exc:
            show_error(str(exc))
            return
        self._target = layer
        self.status.value = f"Estimating the scale of '{layer.name}'…"
        self.run_job(scale_job, model, image.array, stack=image.stack, name=f"'{layer.name}'")

    def add_to_training_set(self, *_: object) -> bool:
        """Copy the corrected labels and their image into the session training set.

        The whole stack, or only the slice on screen when "current slice only"
        is ticked. The layers themselves are never changed. With a project open
        (the correction queue), the pair is written into its folder too. Returns
        whether a pair was added.
        """
        labels_layer = self.corrected_layer.value
        try:
            index = self._chosen_slice(labels_layer)
            model = self.state.current.model
            classes = model.classes if model is not None else BLOODCELL_CLASSES
            image_layer = self.image_layer.value
            data = training_pairs(image_layer, labels_layer, index, classes)
            # The pair is stored at the model's pixel size: the scale it was segmented at.
            scale = remembered_scale(labels_layer) or remembered_scale(image_layer) or 1.0
            data = data.rescaled(scale)
        except BloodcellsError as exc:
            show_error(str(exc))
            return False
        if is_unpainted_prediction(labels_layer):
            show_warning(
                f"'{labels_layer.name}' is the model's own prediction, not corrected: adding it "
                "only confirms what the model does; paint the corrections first to teach it."
            )
        self.state.training_set.add(data)
        self.queue.keep_pair(data, image_layer.name, scale)
        at = f" at scale {scale:g}, the scale it was segmented at" if scale != 1.0 else ""
        show_info(
            f"Added {len(data)} image(s) from '{labels_layer.name}' to the session "
            f"training set{at} ({len(self.state.training_set)} in all); the layers are "
            "unchanged."
        )
        return True

    def measure(self, *_: object) -> None:
        """Measure the cells of the 'Corrected labels' layer in a worker."""
        if self.refuse_while_running():
            return
        labels_layer = self.corrected_layer.value
        try:
            index = self._chosen_slice(labels_layer)
            labels = mask_input(labels_layer, index)
            pixels = self._colours_for(labels, index)
        except BloodcellsError as exc:
            show_error(str(exc))
            return
        self._measured = labels_layer
        self._measured_arrays = (labels, pixels)
        size = float(self.pixel_size.value) or None
        self.status.value = f"Measuring the cells of '{labels_layer.name}'…"
        self.run_job(
            measure_job,
            labels,
            pixels,
            stack=labels.ndim == 3,
            name=labels_layer.name,
            pixel_size=size,
            model=self._typing_model(),
        )

    def refuse_while_running(self) -> bool:
        """Say so, and return True, if this widget's job (segment, estimate, measure) runs."""
        if self.running:
            show_error("A segmentation is already running; wait for it to finish.")
        return self.running

    def _chosen_slice(self, labels_layer: Labels | None) -> int | None:
        """The slice on screen when "Current slice only" applies to a stack, else None."""
        if self.current_slice_only.value and labels_layer is not None and labels_layer.ndim == 3:
            return slice_index(self._viewer, labels_layer)
        return None

    def _colours_for(self, labels: np.ndarray, index: int | None) -> np.ndarray | None:
        """The chosen image's pixels if they match ``labels``, for the mean colours; else None.

        An image that does not match is said in one sentence: the user probably
        chose the wrong layer, and the colour columns would silently stay empty.
        """
        image_layer = self.image_layer.value
        try:
            pixels = image_input(image_layer, index).array
        except BloodcellsError:
            return None  # no usable image: measure without colours
        if pixels.shape[: labels.ndim] == labels.shape:
            return pixels
        show_warning(
            f"The image '{image_layer.name}' has shape {tuple(pixels.shape[: labels.ndim])} but "
            f"the labels '{self.corrected_layer.value.name}' have shape {tuple(labels.shape)}, "
            "so the cells are measured without their colours; choose the image the labels "
            "belong to for the colour columns."
        )
        return None

    def export_csv(self, *_: object) -> None:
        """Write the last measurements to a CSV file chosen in a dialog."""
        if self.measurements is None:
            show_error("There are no measurements yet; press 'Measure cells' first.")
            return
        if (path := self._csv_to_write("Export measurements")) is not None:
            self.export_to(path)

    def _csv_to_write(self, title: str) -> Path | None:
        """A CSV file chosen in a save dialog, or ``None`` if cancelled."""
        from qtpy.QtWidgets import QFileDialog

        chosen, _filter = QFileDialog.getSaveFileName(self.native, title, "", "CSV (*.csv)")
        return Path(chosen) if chosen else None

    def export_to(self, path: Path) -> None:
        """Write the last measurements to ``path`` as CSV."""
        assert self.measurements is not None
        write_csv(self.measurements, path)
        show_info(f"Wrote {len(self.measurements)} cell(s) to {path}.")

    def _recolour_cell(self, cell: int, kind: str) -> None:
        """A reclassified cell takes its new type's colour; the features record it."""
        layer = self.cells_layer
        if layer is None or layer not in self._viewer.layers:
            return
        table = self.gallery.with_corrections()
        kinds = [
            c or t
            for c, t in zip(table.columns["corrected_type"], table.columns["type"], strict=True)
        ]
        layer.colormap = type_colormap(table.columns["cell"], kinds)
        features = layer.features
        features["corrected_type"] = table.columns["corrected_type"]
        layer.features = features

    def add_reclassified(self, *_: object) -> bool:
        """Add each reclassified cell, with its labels and type, to the training set."""
        if not self.gallery.corrections or self._measured_arrays is None:
            show_error("No cell was reclassified yet; click a cell in the gallery, then press 1-7.")
            return False
        labels, pixels = self._measured_arrays
        cells = self._measured_cells
        if pixels is None or cells is None or labels.ndim != 2:
            show_error(
                "Reclassified cells of a stack cannot be added yet; measure one slice ("
                "'Current slice only') and reclassify there."
            )
            return False
        images, masks, names, types = [], [], [], []
        source = self._measured.name if self._measured is not None else "cells"
        for cell, kind in self.gallery.corrections.items():
            image, mask = cell_pair(
                pixels, labels, cells, cell, not_a_cell=kind == NOT_A_WHITE_CELL
            )
            images.append(image)
            masks.append(mask)
            names.append(f"{source} cell {cell}")
            types.append(None if kind == NOT_A_WHITE_CELL else kind)
        scale = remembered_scale(self._measured) or 1.0
        data = SegmentationData(images, masks, names, types=types).rescaled(scale)
        self.state.training_set.add(data)
        image_layer = self.image_layer.value
        self.queue.keep_pair(data, image_layer.name if image_layer is not None else source, scale)
        show_info(
            f"Added {len(data)} reclassified cell(s) to the session training set; Fine-tune in "
            "the Train dock learns their types."
        )
        return True

    def export_differential(self, *_: object) -> None:
        """Write the gallery's differential to a CSV chosen in a dialog."""
        if self.gallery.table is None:
            show_error("There is no differential yet; measure cells with a typed model first.")
            return
        if (path := self._csv_to_write("Export differential")) is not None:
            self.write_differential(path)

    def write_differential(self, path: Path) -> None:
        """Write the gallery's differential (with the reclassifications) to ``path``."""
        rows = self.gallery.rows()
        write_differential(rows, path)
        write_csv(self.gallery.with_corrections(), path.with_name(f"{path.stem}_cells.csv"))
        show_info(f"Wrote the differential of {rows[-1].cells} white cell(s) to {path}.")

    def show_cell(self, cell: int) -> None:
        """Select cell ``cell`` in the cells layer and centre the view on it."""
        layer, table = self.cells_layer, self.measurements
        if layer is None or table is None or cell not in table.columns["cell"]:
            return
        row = table.columns["cell"].index(cell)
        layer.selected_label = cell
        layer.show_selected_label = True
        centre = (table.columns["centroid_row"][row], table.columns["centroid_col"][row])
        if layer.ndim == 3:
            image_name = table.columns["image"][row]
            index = int(image_name.rsplit("[", 1)[1].rstrip("]")) if "[" in image_name else 0
            self._viewer.dims.set_current_step(0, index)
            world = layer.data_to_world((index, *centre))
        else:
            world = layer.data_to_world(centre)
        camera = _camera(self._viewer)
        camera.center = (*tuple(camera.center)[:-2], *tuple(world)[-2:])

    def clear_training_set(self, *_: object) -> None:
        """Empty the session training set."""
        self.state.training_set.clear()

    def _typing_model(self) -> ModelSource | None:
        """The model whose cell types Measure uses: the chosen one, if there is one."""
        try:
            return self.chosen_model()
        except ConfigError:
            return None

    def chosen_model(self) -> ModelSource:
        if self.model_source.value == MODEL_CURRENT:
            model = self.state.current.model
            if model is None:
                raise ConfigError(
                    "There is no model yet; train one in the Train widget, or set 'Model' to "
                    "a checkpoint file."
                )
            return model
        path = single_path(self.model_file)
        if path is None or not path.is_file():
            raise ConfigError("Choose the checkpoint file (.pt) of the model to apply.")
        return path

    def set_running(self, running: bool) -> None:
        """Grey out Segment while a segmentation runs; offer Stop."""
        super().set_running(running)
        self.segment_button.enabled = not running

    def on_outcome(self, message: object) -> None:
        """Keep a ranking in the project even when the dock was closed meanwhile."""
        if isinstance(message, Ranked):
            self.queue.keep_ranking(message.result)

    def update_views(self, message: object) -> None:
        """Show tile progress; write the layers once the whole job has finished."""
        if isinstance(message, CellsMeasured):
            self._show_cells(message)
        elif isinstance(message, Ranked):
            self.queue.show_ranking(message.result)
        elif isinstance(message, ScaleChosen):
            self.status.value = (
                message.message or f"Estimated scale {message.scale:g} for {message.name}…"
            )
        elif isinstance(message, ScaleEstimated):
            self._show_estimate(message.result)
        elif isinstance(message, SegmentProgress):
            self.progress.value = round(message.fraction * _PROGRESS_STEPS)
            where = f"image {message.index + 1}/{message.images}, " if message.images > 1 else ""
            self.status.value = f"Segmenting: {where}tile {message.done}/{message.total}"
        elif isinstance(message, BlockWritten):
            self.progress.value = round(message.fraction * _PROGRESS_STEPS)
            self.status.value = f"Segmenting: block {message.done}/{message.total}"
            if self.last_layer is not None:
                self.last_layer.refresh()
        elif isinstance(message, BlocksSegmented) and self.last_layer is not None:
            if message.result == message.total:
                where = self.last_layer.metadata.get(META_KEY, {}).get("zarr", "")
                self.status.value = f"Segmented '{self.last_layer.name}' into {where}."
        elif isinstance(message, SegmentationFinished):
            if message.result.labels is None:  # stopped: nothing partial is shown
                self.progress.value = 0
                self.status.value = message.result.reason
            else:
                self._write(message.result)

    def _show_cells(self, measured: CellsMeasured) -> None:
        source = self._measured
        name = f"{source.name} cells" if source is not None else "cells"
        features = {"index": measured.table.columns["cell"], **measured.table.columns}
        if self.cells_layer is not None and self.cells_layer in self._viewer.layers:
            self._viewer.layers.remove(self.cells_layer)
        self.cells_layer = self._viewer.add_labels(
            measured.cells,
            name=name,
            features=features,
            opacity=0.4,
            scale=source.scale if source is not None else None,
            translate=source.translate if source is not None else None,
            metadata={META_KEY: {"role": CELLS, "image": name}},
        )
        self._measured_cells = measured.cells
        pixels = self._measured_arrays[1] if self._measured_arrays is not None else None
        if "type" in measured.table.columns and pixels is not None:
            columns = measured.table.columns
            self.cells_layer.colormap = type_colormap(columns["cell"], columns["type"])
            self.cells_layer.opacity = 0.6
            self.gallery.show_cells(measured.table, pixels, measured.cells)
            self.gallery_section.expand()
        self.measurements = measured.table
        self.cell_table.show_table(measured.table)
        self.export_button.enabled = True
        self.status.value = f"Measured {len(measured.table)} cell(s) of '{name}'."

    def _show_estimate(self, estimate: ScaleEstimate) -> None:
        if not estimate.found:
            self.status.value = estimate.message
            return
        self.scale.value = estimate.scale
        if self._target is not None:
            remember_scale(self._target, estimate.scale)
        name = self._target.name if self._target is not None else "the image"
        self.status.value = f"Estimated scale {estimate.scale:g} for {name}."

    def _restore_scale(self, layer: object) -> None:
        # The Scale last used with this image, if it was segmented or estimated before.
        remembered = remembered_scale(layer) if layer is not None else None
        if remembered is not None:
            self.scale.value = remembered

    def _write(self, result: Segmentation) -> None:
        target = self._target
        assert target is not None and result.labels is not None
        layer = write_prediction(
            self._viewer, target, result.labels, result.classes, scale=self._scale
        )
        if result.confidence is not None:
            write_confidence(self._viewer, target, result.confidence)
        self.last_layer = layer
        self.corrected_layer.reset_choices()
        picked = self.corrected_layer.value
        if picked is None or not is_painted_prediction(picked):
            # Follow the newest result (away from a sample's or a file's labels too, which
            # would invite adding the wrong layer), but never away from a result the user
            # is correcting.
            self.corrected_layer.value = layer
        self.progress.value = _PROGRESS_STEPS
        self.status.value = f"Wrote '{layer.name}'."

    def job_ended(self) -> None:
        """Forget the job's target layer; a segmentation counts as over."""
        drop_unused_prediction(self._viewer, self._placeholder)
        self._placeholder = None
        if self._segmenting:
            self.state.runs.segmenting -= 1
        self._segmenting = False
        self._target = None

    def outcome(self) -> Labels | None:
        """The layer the job wrote, or ``None``."""
        return self.last_layer

    def _show_model(self, *_: object) -> None:
        from_file = self.model_source.value == MODEL_FILE
        self.model_file.visible = from_file
        if from_file:
            path = single_path(self.model_file)
            if path is None:
                self.model_info.value = "Pick a checkpoint file (.pt)."
            else:
                try:
                    self.model_info.value = f"Checkpoint {describe_file(path)}"
                except BloodcellsError as exc:
                    self.model_info.value = str(exc)
        elif self.state.current.model is None:
            self.model_info.value = "No model yet: train one, or pick a checkpoint file."
        else:
            self.model_info.value = f"Current model: {self.state.current.description}"

    def _show_training_set(self, size: int) -> None:
        self.training_set_info.value = f"Session training set: {size} image(s)"
