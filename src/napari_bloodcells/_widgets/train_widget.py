"""The Train dock widget: pick data and options, train in a worker, watch it learn.

The widget only collects inputs, starts the core's
:func:`~napari_bloodcells.core.jobs.training_job` in a napari thread worker
and turns the engine's events into views (progress bar, loss/Dice plot,
preview grid). When a run ends its best model becomes the viewer's current
model, which the Segment widget applies.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from magicgui.types import FileDialogMode
from magicgui.widgets import Container, FileEdit, ProgressBar, PushButton
from psygnal import Signal

from napari_bloodcells._widgets.controls import (
    button_row,
    collapsible,
    form,
    scroll_contents,
    single_path,
    status_label,
)
from napari_bloodcells._widgets.data_picker import FROM_SESSION, DataPicker
from napari_bloodcells._widgets.job_widget import JobWidget
from napari_bloodcells._widgets.layers import first_rgb_image
from napari_bloodcells._widgets.options import FROM_CURRENT, TrainOptions
from napari_bloodcells._widgets.plots import LossPlot
from napari_bloodcells._widgets.preview import PreviewGrid
from napari_bloodcells._widgets.state import subscribe
from napari_bloodcells._widgets.workers import show_error, show_info, start_job
from napari_bloodcells.core.events import (
    BatchEnded,
    DataReady,
    EpochEnded,
    JobFailed,
    JobStep,
    PackageExported,
    ScheduleChosen,
    TrainingFinished,
    TrainingResult,
    TrainingStarted,
)
from napari_bloodcells.core.jobs import (
    best_dev_dice,
    better_current,
    cache_dir,
    export_model,
    kept_epochs,
    save_checkpoint,
    training_job,
)
from napari_bloodcells.core.model.checkpoint import SUFFIX
from napari_bloodcells.errors import BloodcellsError

if TYPE_CHECKING:
    import napari
    import numpy as np
    from magicgui.widgets import Widget
    from napari.qt.threading import GeneratorWorker


RECOVERY_FOLDER = "recovery"
RUNS_KEPT = 5
"""Recovery files of the newest runs kept; older ones are removed when a run starts."""


def recovery_dir() -> Path:
    """Where each run keeps its best model while it trains (``<cache>/recovery``)."""
    return cache_dir() / RECOVERY_FOLDER


def new_recovery_path(kind: str = "training") -> Path:
    """A file of its own for one run's best model, named by when it started.

    One file per run: a stopped run that loses to the current model must not
    overwrite the copy of the better run that a notification already named.
    The oldest files beyond :data:`RUNS_KEPT` are removed.
    """
    folder = recovery_dir()
    folder.mkdir(parents=True, exist_ok=True)
    runs = sorted(folder.glob("*.pt"), key=lambda p: p.stat().st_mtime)
    for old in runs[: max(0, len(runs) - RUNS_KEPT + 1)]:
        old.unlink(missing_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = folder / f"{kind}-{stamp}.pt"
    n = 1
    while path.exists():
        n += 1
        path = folder / f"{kind}-{stamp}-{n}.pt"
    return path


class TrainWidget(JobWidget):
    """Train a segmentation model on layers, a folder, the sample or the session set.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer whose layers can be trained on.

    Attributes
    ----------
    data : DataPicker
        The training data (``data.source``, ``data.image_layer``, ``data.labels_layer``,
        ``data.folder``).
    settings : TrainOptions
        Preset, model and optimisation settings, and ``settings.continue_from``.
    start_button, stop_button, fine_tune_button, save_button : PushButton
    progress : ProgressBar
        Batches done out of epochs x batches per epoch.
    progress_text : str
        What the progress bar says besides its percentage ("epoch 2/30, batch 5/40").
    status, recovery_label : Label
    plot : LossPlot
        Train/dev loss and per-class dev Dice per epoch.
    preview : PreviewGrid
        Input / ground truth / prediction of fixed dev images, every epoch.
    scroll_area : QScrollArea
        Holds all of the above, so the dock can be shorter than its contents.
    save_path : FileEdit
        Where "Save model…" writes; asked for with a dialog when empty.
    result : TrainingResult or None
        The outcome of the last finished run.
    run_finished : psygnal.Signal
        Emitted with :attr:`result` (``None`` if the run failed) when a run ends.
    export_button : PushButton
        "Export to bioimage.io…": :meth:`export`.
    export_finished : psygnal.Signal
        Emitted with the package's path (``None`` if the export failed) when an export ends.
    """

    export_finished = Signal(object)

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.data = DataPicker(viewer)
        self.settings = TrainOptions(viewer)
        self.start_button = PushButton(text="Start training")
        self.fine_tune_button = PushButton(
            text="Fine-tune current model",
            tooltip="Continue training the session's current model, on the session training "
            "set if it holds any pairs",
        )
        self.undo_button = PushButton(
            text="Undo fine-tune",
            enabled=False,
            tooltip="Make the model from before the last fine-tune current again",
        )
        self.progress = ProgressBar(min=0, max=1, value=0)
        self.recovery_label = status_label()
        self._progress_text = ""
        self.save_path = FileEdit(
            label="Save to", mode=FileDialogMode.OPTIONAL_FILE, filter=f"*{SUFFIX}", nullable=True
        )
        self.save_button = PushButton(text="Save model…")
        self.export_button = PushButton(
            text="Export to bioimage.io…",
            tooltip="Write the current model as a bioimage.io package (PyTorch, TorchScript and "
            "ONNX weights) that deepImageJ, ilastik, QuPath and Icy can run",
        )
        self.export_worker: GeneratorWorker | None = None
        self.exported: Path | None = None
        self.plot = LossPlot.for_viewer(viewer)
        self.preview = PreviewGrid()
        self.result: TrainingResult | None = None
        self._batches_per_epoch = 1
        self._epochs = 1
        self._summary = ""
        self._finetune = False
        self._start_file: Path | None = None
        self._last_batch: BatchEnded | None = None
        self.recovery_file: Path | None = None
        """The file the last run started keeps its best model in."""
        self.fine_tune_row = button_row(self.fine_tune_button, self.undo_button)
        self.save_row = Container(
            widgets=[
                button_row(form(self.save_path), self.save_button),
                button_row(self.export_button),
            ],
            labels=False,
        )
        self.save_row.margins = (0, 0, 0, 0)
        super().__init__(viewer, "Training")
        self.progress_text = "Not started."
        # The form folds while a run goes (see :meth:`set_running`), so that the
        # progress, curves and preview fit a laptop-sized dock without scrolling.
        self.setup_section = collapsible("Data and options", self.data, self.settings)
        layout = self.native.layout()
        layout.insertWidget(0, self.setup_section)
        # The plot and preview are plain Qt widgets: put them under the progress.
        index = layout.indexOf(self.status.native) + 1
        layout.insertWidget(index, self.plot)
        layout.insertWidget(index + 1, self.preview)
        self.scroll_area = scroll_contents(self)
        self.native_parent_changed.connect(self._on_parent_changed)
        self.start_button.changed.connect(self.start)
        self.fine_tune_button.changed.connect(self.fine_tune)
        self.undo_button.changed.connect(self.undo_fine_tune)
        subscribe(self.state.current.events.previous, self._on_previous_changed, self.native)
        self.save_button.changed.connect(self.save)
        self.export_button.changed.connect(self.export)
        subscribe(self.state.current.events.model, self._on_model_changed, self.native)
        self._on_model_changed(self.state.current.model)

    def contents(self) -> list[Widget]:
        """Start/Stop, progress, status and Save; the folding form goes on top."""
        return [
            button_row(self.start_button, self.stop_button),
            self.fine_tune_row,
            self.progress,
            self.status,
            self.recovery_label,
            self.save_row,
        ]

    @property
    def progress_text(self) -> str:
        """The text inside the progress bar, before its percentage."""
        return self._progress_text

    @progress_text.setter
    def progress_text(self, text: str) -> None:
        # Inside the bar rather than on a line of its own: one line less between
        # the Stop button and the curves in a short dock.
        self._progress_text = text
        self.progress.native.setFormat(f"{text}  %p%")

    def reset_choices(self, *_: object) -> None:
        """Refresh every drop-down, the folding form's included."""
        super().reset_choices()
        self.data.reset_choices()
        self.settings.reset_choices()

    def start(self, *_: object) -> None:
        """Check the inputs, then train in a worker; problems become notifications.

        A run that continues a model follows the fine-tune schedule: a step
        budget, replay of the model's own training data, and the model kept that
        does best on the held-out corrections, less what it forgot
        (:mod:`napari_bloodcells.core.training.finetune`).
        """
        if self.running:
            show_error("Training is already running; press Stop first.")
            return
        finetune = self.settings.fine_tuning
        try:
            config = self.settings.config()
            if finetune:
                config = config.with_changes(schedule="finetune")
            init, init_text = self.settings.starting_model()
            data, data_text = self.data.training_data(continuing=init is not None)
        except BloodcellsError as exc:
            show_error(str(exc))
            return
        if not self.state.runs.claim_training(self):
            show_error(
                "Another Train widget is training; wait for it to finish or press its Stop "
                "button first."
            )
            return
        note = self.state.runs.sharing_note("training")
        if note:
            show_info(note)
        self.result = None
        self._finetune = finetune
        self._start_file = init if isinstance(init, Path) else None
        self._last_batch = None
        self.progress.value = 0
        self.progress_text = "Loading the data…"
        self.status.value = f"Training {init_text} on {data_text}."
        self.preview.clear()
        path = self.recovery_file = new_recovery_path("fine-tune" if finetune else "training")
        self.recovery_label.value = f"Best model so far is kept in {path}"
        try:
            self.run_job(training_job, config, data, init, checkpoint_path=path)
        except BaseException:
            self.state.runs.release_training(self)
            raise

    def fine_tune(self, *_: object) -> None:
        """Continue training the current model, on the session training set if it has pairs."""
        if self.state.current.model is None:
            show_error(
                "There is no model to fine-tune yet; train one first, or set 'Continue from' "
                "to a checkpoint file and press Start."
            )
            return
        self.settings.continue_from.value = FROM_CURRENT
        if len(self.state.training_set):
            self.data.source.value = FROM_SESSION
        self.start()

    def undo_fine_tune(self, *_: object) -> None:
        """Make the model from before the last fine-tune current again."""
        if self.state.current.undo():
            show_info(
                f"Restored the model from before the fine-tune ({self.state.current.description})."
            )

    def save(self, *_: object) -> None:
        """Save the session's current model to :attr:`save_path` (asked for if empty)."""
        model = self.state.current.model
        if model is None:
            show_error("There is no model to save yet; train one first.")
            return
        path = single_path(self.save_path)
        if path is None:
            path = self._ask_save_path()
            if path is None:
                return
        if not path.suffix:
            path = path.with_suffix(SUFFIX)
        self.save_path.value = path
        try:
            save_checkpoint(model, path)
        except BloodcellsError as exc:
            show_error(str(exc))
            return
        show_info(f"Saved the model to {path}.")

    def export(self, *_: object, path: Path | None = None) -> None:
        """Export the current model as a bioimage.io package, in a worker.

        ``path`` is asked for with a dialog when not given. The package's test
        image is the first slice of the training image layer, if one is picked,
        else the blood-cell sample's first image.
        """
        model = self.state.current.model
        if model is None:
            show_error("There is no model to export yet; train one first.")
            return
        if self.export_worker is not None:
            show_error("An export is already running; wait for it to finish.")
            return
        if path is None:
            path = self._ask_path("Export to bioimage.io", "bioimage.io package (*.zip)")
            if path is None:
                return
        if path.suffix.lower() != ".zip":
            path = path.with_suffix(".zip")
        sample = self._sample_image()
        self.exported = None
        self.export_button.enabled = False
        self.status.value = f"Exporting to {path.name}…"
        self.export_worker = start_job(
            export_model,
            model,
            path,
            sample,
            on_yielded=self._on_export_message,
            on_finished=self._on_export_finished,
        )

    def _sample_image(self) -> np.ndarray | None:
        try:
            return first_rgb_image(self.data.image_layer.value)
        except BloodcellsError:
            return None

    def _on_export_message(self, message: object) -> None:
        if isinstance(message, JobStep):
            self.status.value = message.text
        elif isinstance(message, JobFailed):
            show_error(message.message)
            self.status.value = "Export failed; see the notification."
        elif isinstance(message, PackageExported):
            path = message.result
            self.exported = path
            self.status.value = f"Exported the model to {path}."
            show_info(f"Exported the model to {path}; check it with: bioimageio test {path}")

    def _on_export_finished(self) -> None:
        self.export_worker = None
        failed = self.exported is None and not self.status.value.startswith("Export failed")
        if self.alive and failed:
            # A crash reaches napari's notifications, not _on_export_message: the last
            # step ("Exporting ONNX weights…") must not read as still running.
            self.status.value = "Export failed; no package was written (see the notification)."
        if self.alive:
            self.export_button.enabled = self.state.current.model is not None
        self.export_finished.emit(self.exported)

    def _ask_save_path(self) -> Path | None:
        return self._ask_path("Save model", f"napari-bloodcells model (*{SUFFIX})")

    def _ask_path(self, title: str, kind: str) -> Path | None:
        from qtpy.QtWidgets import QFileDialog

        name, _ = QFileDialog.getSaveFileName(self.native, title, "", kind)
        return Path(name) if name else None

    def set_running(self, running: bool) -> None:
        """Fold and grey out the form while a run goes; offer Stop.

        The form stays folded after the run, so the curves and preview it
        produced stay in view; a click on its title opens it again.
        """
        super().set_running(running)
        self.start_button.enabled = not running
        self.fine_tune_button.enabled = not running
        self.fine_tune_row.visible = not running
        self.save_row.visible = not running
        self.data.enabled = not running
        self.settings.enabled = not running
        if running:
            self.setup_section.collapse(animate=False)

    def on_outcome(self, message: object) -> None:
        """The run's best model becomes current, even if the dock was closed meanwhile."""
        if isinstance(message, TrainingFinished):
            self._finish(message.result)
        elif isinstance(message, ScheduleChosen):
            show_info(message.description)

    def update_views(self, message: object) -> None:
        """Progress, status, plot and preview for one message of the run."""
        event = message
        if isinstance(event, ScheduleChosen):
            self.status.value = event.description
        if isinstance(event, BatchEnded):
            self.progress.value = (event.epoch - 1) * self._batches_per_epoch + event.batch
            self._last_batch = event
            self.progress_text = (
                f"epoch {event.epoch}/{self._epochs}, batch "
                f"{event.batch}/{event.batches_per_epoch} (loss {event.loss:.3f})"
            )
        elif isinstance(event, EpochEnded):
            self.progress.value = event.epoch * self._batches_per_epoch
            self.plot.add_epoch(event)
            self.preview.set_rows(event.preview)
        elif isinstance(event, TrainingStarted):
            self._batches_per_epoch = event.batches_per_epoch
            self._epochs = event.epochs
            self.progress.max = event.epochs * event.batches_per_epoch
            self.progress_text = f"epoch 1/{event.epochs}, batch 0/{event.batches_per_epoch}"
            self.status.value = (
                f"On {event.device} ({event.precision}): {event.n_train} training, "
                f"{event.n_dev} dev images."
            )
            if event.chosen:  # the preset was adjusted to this machine: say how
                show_info(
                    f"Chosen for this device: {event.chosen}. Change the encoder, epochs, "
                    "learning rate or batch size to choose yourself."
                )
        elif isinstance(event, DataReady):
            self.plot.reset(event.classes)
            self.preview.set_classes(event.classes)
            self.progress_text = f"Loaded {event.pairs} image(s); building the model…"
        elif isinstance(event, TrainingFinished):
            self.status.value = self._summary
            last = self._last_batch
            if event.result.stopped_early and last is not None:
                # The stopped epoch is still scored, which moved the bar to its end.
                self.progress.value = (last.epoch - 1) * self._batches_per_epoch + last.batch
                self.progress_text = (
                    f"Stopped in epoch {last.epoch}/{self._epochs} after batch "
                    f"{last.batch}/{last.batches_per_epoch}"
                )

    def _finish(self, result: TrainingResult) -> None:
        self.result = result
        if result.kept_start:
            if self.recovery_file is not None:  # it holds the start, which is saved elsewhere
                self.recovery_file.unlink(missing_ok=True)
            self._summary = result.reason
            if result.types_changed:
                # The segmentation stays, but the cell types learned the corrections.
                self.state.current.set(
                    result.model, "the starting model with fine-tuned cell types", undoable=True
                )
                show_info(
                    f"{result.reason} The current model is the starting model with its cell "
                    "types fine-tuned."
                )
            elif self._start_file is not None:
                # The start was a file, not the current model: the model the user chose to
                # continue is the one to segment, save and export with now.
                self.state.current.set(
                    result.model,
                    f"{self._start_file.name}, kept by a fine-tune",
                    undoable=True,
                )
                show_info(f"{result.reason} The current model is now {self._start_file.name}.")
            else:
                show_info(f"{result.reason} The current model is unchanged.")
            return
        if not result.best_epoch:
            # Stopped (or diverged) before any epoch was scored: there is no trained
            # model to offer, so the current one stays.
            self._summary = f"{result.reason} No epoch finished, so no model was kept."
            show_info(
                f"{result.reason} No epoch finished, so no model was kept; the current "
                "model is unchanged."
            )
            return
        better = better_current(self.state.current.model, result.model)
        if result.stopped_early and not self._finetune and better is not None:
            # A stopped run must not throw away a better model scored on the same images.
            score = float(result.model.metrics.get("best_dev_score", 0.0))
            where = f" Its model is in {result.saved_to}." if result.saved_to else ""
            self._summary = (
                f"{result.reason} The current model (dev score {better:.3f}) beats this run's "
                f"best ({score:.3f}), so it stays current."
            )
            show_info(f"{self._summary}{where}")
            return
        scores = best_dev_dice(result.model)
        scores = f" (dev Dice {scores})" if scores else ""
        how = "fine-tuned" if self._finetune else "trained"
        self.state.current.set(
            result.model,
            f"{how} in this session, {kept_epochs(result.model.metrics)}{scores}",
            undoable=self._finetune,
        )
        kept = f" A copy is in {result.saved_to}." if result.saved_to else ""
        if self._finetune:  # the reason names the kept candidate with both numbers
            self._summary = result.reason
            show_info(f"{result.reason} It is now the current model.{kept}")
            return
        epochs = kept_epochs(result.model.metrics)
        self._summary = f"{result.reason} Kept {epochs}{scores}."
        show_info(f"{result.reason} The model of {epochs} is now the current model.{kept}")

    def job_ended(self) -> None:
        """Give the viewer's run lock back."""
        self.state.runs.release_training(self)

    def outcome(self) -> TrainingResult | None:
        """The last run's result, or ``None`` if it failed."""
        return self.result

    def _on_parent_changed(self, parent: object) -> None:
        # napari closes a dock by unparenting the widget, which stays alive but
        # unreachable: stop its run rather than leave an invisible one going.
        if parent is None and self.running and not self.stopping:
            self.stop()
            show_info(
                "The Train widget was closed; training stops after this batch and "
                "keeps the best model."
            )

    def _on_previous_changed(self, previous: object) -> None:
        self.undo_button.enabled = previous is not None

    def _on_model_changed(self, model: object) -> None:
        self.save_button.enabled = model is not None
        self.export_button.enabled = model is not None and self.export_worker is None
