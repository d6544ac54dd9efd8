"""The Segment dock widget: apply a model to an image layer, then collect corrections.

Segmentation runs in a worker; the result is written to a Labels layer named
``<image> segmentation`` in the fixed class colours. Re-running replaces that
layer only while the user has not painted on it. "Add to training set" copies
a corrected labels layer and its image into the session training set, which
the Train widget fine-tunes on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
)
from psygnal import Signal

from napari_bloodcells._widgets import session
from napari_bloodcells._widgets.controls import button_row, form, scroll_contents, status_label
from napari_bloodcells._widgets.jobs import (
    JobFailed,
    SegmentationFinished,
    SegmentProgress,
    segmentation_job,
)
from napari_bloodcells._widgets.layer_picker import LayerPicker
from napari_bloodcells._widgets.layers import (
    image_input,
    slice_index,
    training_pairs,
    write_confidence,
    write_prediction,
)
from napari_bloodcells._widgets.workers import show_error, show_info, start_job
from napari_bloodcells.core.checkpoint import SUFFIX, TrainedModel
from napari_bloodcells.core.classes import BLOODCELL_CLASSES
from napari_bloodcells.core.events import Notice
from napari_bloodcells.core.infer import TileSettings
from napari_bloodcells.errors import BloodcellsError, ConfigError

if TYPE_CHECKING:
    from pathlib import Path

    import napari
    from napari.layers import Image, Labels
    from napari.qt.threading import GeneratorWorker

MODEL_CURRENT = "current session model"
MODEL_FILE = "checkpoint file"
_PROGRESS_STEPS = 1000


class SegmentWidget(Container):
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
    segment_button, add_button, clear_button : PushButton
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
        Emitted with :attr:`last_layer` (``None`` on failure) when a run ends.
    """

    run_finished = Signal(object)

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self._viewer = viewer
        self.image_layer = LayerPicker(viewer, "image", label="Image")
        self.model_source = ComboBox(label="Model", choices=[MODEL_CURRENT, MODEL_FILE])
        self.model_file = FileEdit(label="Checkpoint", mode="r", filter=f"*{SUFFIX}", nullable=True)
        self.model_info = status_label()
        self.scale = FloatSpinBox(
            label="Scale",
            value=1.0,
            min=0.05,
            max=20.0,
            step=0.05,
            tooltip="Resize factor applied before prediction: below 1 when cells look larger "
            "than in the training images, above 1 when smaller.",
        )
        self.tile_size = SpinBox(
            label="Tile size",
            value=TileSettings().size,
            min=128,
            max=4096,
            step=32,
            tooltip="Images larger than this are predicted tile by tile.",
        )
        self.confidence = CheckBox(text="Add a confidence layer", value=False)
        self.segment_button = PushButton(text="Segment")
        self.progress = ProgressBar(min=0, max=_PROGRESS_STEPS, value=0)
        self.status = status_label()
        self.corrected_layer = LayerPicker(viewer, "labels", label="Corrected labels")
        self.current_slice_only = CheckBox(text="Current slice only", value=False)
        self.add_button = PushButton(text="Add to training set")
        self.clear_button = PushButton(text="Clear training set")
        self.training_set_info = status_label()
        # Forms hold the labelled inputs; status lines sit outside them so that
        # wrapped text gets the height it needs.
        super().__init__(
            widgets=[
                form(self.image_layer, self.model_source, self.model_file),
                self.model_info,
                form(self.scale, self.tile_size),
                self.confidence,
                self.segment_button,
                self.progress,
                self.status,
                Label(value="<b>Correct and retrain</b>"),
                form(self.corrected_layer),
                self.current_slice_only,
                button_row(self.add_button, self.clear_button),
                self.training_set_info,
            ],
            labels=False,
        )
        self.scroll_area = scroll_contents(self)
        self.last_layer: Labels | None = None
        self._worker: GeneratorWorker | None = None
        self._target: Image | None = None
        self._alive = True
        self.native.destroyed.connect(self._on_destroyed)
        self.segment_button.changed.connect(self.segment)
        self.add_button.changed.connect(self.add_to_training_set)
        self.clear_button.changed.connect(self.clear_training_set)
        self.model_source.changed.connect(self._show_model)
        session.subscribe(session.models.changed, self._show_model, self.native)
        session.subscribe(session.training_set.changed, self._show_training_set, self.native)
        for event in ("inserted", "removed", "reordered"):
            getattr(viewer.layers.events, event).connect(self.reset_choices)
        self._show_model()
        self._show_training_set(len(session.training_set))

    @property
    def running(self) -> bool:
        """Whether a segmentation is going."""
        return self._worker is not None

    @property
    def worker(self) -> GeneratorWorker | None:
        """The running worker, if any."""
        return self._worker

    def segment(self, *_: object) -> None:
        """Check the inputs, then segment in a worker; problems become notifications."""
        if self.running:
            show_error("A segmentation is already running; wait for it to finish.")
            return
        try:
            model = self._model()  # before copying the pixels: cheaper to fail
            layer = self.image_layer.value
            image = image_input(layer)
            size = int(self.tile_size.value)
            tiles = TileSettings(size=size, overlap=min(TileSettings().overlap, size // 4))
        except BloodcellsError as exc:
            show_error(str(exc))
            return
        if image.notice:
            show_info(image.notice)
        self._target = layer
        self.last_layer = None
        self.progress.value = 0
        self.status.value = f"Segmenting '{layer.name}'…"
        self.segment_button.enabled = False
        self._worker = start_job(
            segmentation_job,
            model,
            image.array,
            stack=image.stack,
            scale=float(self.scale.value),
            tiles=tiles,
            confidence=bool(self.confidence.value),
            on_yielded=self._on_event,
            on_finished=self._on_finished,
            on_errored=self._on_errored,
        )

    def add_to_training_set(self, *_: object) -> None:
        """Copy the corrected labels and their image into the session training set.

        The whole stack, or only the slice on screen when "current slice only"
        is ticked. The layers themselves are never changed.
        """
        labels_layer = self.corrected_layer.value
        try:
            index = None
            if (
                self.current_slice_only.value
                and labels_layer is not None
                and labels_layer.ndim == 3
            ):
                index = slice_index(self._viewer, labels_layer)
            model = session.models.model
            classes = model.classes if model is not None else BLOODCELL_CLASSES
            data = training_pairs(self.image_layer.value, labels_layer, index, classes)
        except BloodcellsError as exc:
            show_error(str(exc))
            return
        session.training_set.add(data)
        show_info(
            f"Added {len(data)} image(s) from '{labels_layer.name}' to the session "
            f"training set ({len(session.training_set)} in all)."
        )

    def clear_training_set(self, *_: object) -> None:
        """Empty the session training set."""
        session.training_set.clear()

    def _model(self) -> TrainedModel | Path:
        if self.model_source.value == MODEL_CURRENT:
            model = session.models.model
            if model is None:
                raise ConfigError(
                    "There is no model yet; train one in the Train widget, or set 'Model' to "
                    "a checkpoint file."
                )
            return model
        path = self.model_file.value
        if path is None or not path.is_file():
            raise ConfigError("Choose the checkpoint file (.pt) of the model to apply.")
        return path

    def _on_event(self, event: object) -> None:
        # Runs on the main thread for every message the worker yields.
        if isinstance(event, JobFailed):
            show_error(event.message)
        elif isinstance(event, Notice):
            show_info(event.message)
        if not self._alive:
            return  # the dock was closed: its result has nowhere to go
        if isinstance(event, SegmentProgress):
            self.progress.value = round(event.fraction * _PROGRESS_STEPS)
            where = f"slice {event.index + 1}/{event.slices}, " if event.slices > 1 else ""
            self.status.value = f"Segmenting: {where}tile {event.done}/{event.total}"
        elif isinstance(event, SegmentationFinished):
            self._write(event)
        elif isinstance(event, JobFailed):
            self.status.value = "Segmentation failed; see the notification."

    def _write(self, result: SegmentationFinished) -> None:
        target = self._target
        layer = write_prediction(self._viewer, target, result.labels, result.classes)
        if result.confidence is not None:
            write_confidence(self._viewer, target, result.confidence)
        self.last_layer = layer
        self.corrected_layer.reset_choices()
        self.corrected_layer.value = layer
        self.progress.value = _PROGRESS_STEPS
        self.status.value = f"Wrote '{layer.name}'."

    def _on_errored(self, exc: BaseException) -> None:
        if self._alive:
            self.status.value = f"Segmentation failed ({type(exc).__name__}); see the notification."

    def _on_finished(self) -> None:
        self._worker = None
        self._target = None
        if self._alive:
            self.segment_button.enabled = True
        self.run_finished.emit(self.last_layer)

    def _on_destroyed(self, *_: object) -> None:
        self._alive = False

    def _show_model(self, *_: object) -> None:
        from_file = self.model_source.value == MODEL_FILE
        self.model_file.visible = from_file
        if from_file:
            self.model_info.value = ""
        elif session.models.model is None:
            self.model_info.value = "No model yet: train one, or pick a checkpoint file."
        else:
            self.model_info.value = f"Current model: {session.models.description}"

    def _show_training_set(self, size: int) -> None:
        self.training_set_info.value = f"Session training set: {size} image(s)"
