"""The Train dock widget: pick data and options, train in a worker, watch it learn.

The widget only collects inputs, starts :func:`~.jobs.training_job` in a
napari thread worker and turns the engine's events into views (progress bar,
loss/Dice plot, preview grid). When a run ends its best model becomes the
session's current model, which the Segment widget applies.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from magicgui.widgets import Container, FileEdit, ProgressBar, PushButton
from psygnal import Signal

from napari_bloodcells._widgets import session
from napari_bloodcells._widgets.controls import button_row, scroll_contents, status_label
from napari_bloodcells._widgets.data_picker import FROM_SESSION, DataPicker
from napari_bloodcells._widgets.jobs import DataReady, JobFailed, training_job
from napari_bloodcells._widgets.options import FROM_CURRENT, TrainOptions
from napari_bloodcells._widgets.plots import LossPlot
from napari_bloodcells._widgets.preview import PreviewGrid
from napari_bloodcells._widgets.workers import show_error, show_info, start_job
from napari_bloodcells.core.checkpoint import SUFFIX, save_checkpoint
from napari_bloodcells.core.download import cache_dir
from napari_bloodcells.core.events import (
    BatchEnded,
    EpochEnded,
    Notice,
    TrainingFinished,
    TrainingResult,
    TrainingStarted,
)
from napari_bloodcells.errors import BloodcellsError

if TYPE_CHECKING:
    import napari
    from napari.qt.threading import GeneratorWorker

RECOVERY_NAME = "last-training.pt"


def recovery_path() -> Path:
    """Where a run keeps its best model while it trains (overwritten by the next run)."""
    return cache_dir() / "recovery" / RECOVERY_NAME


def _theme_text_color(viewer: napari.viewer.Viewer) -> str:
    try:
        from napari.utils.theme import get_theme

        return get_theme(viewer.theme).text.as_hex()
    except Exception:  # an unknown or custom theme: fall back to a light grey
        return "#dddddd"


class TrainWidget(Container):
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
    progress_label, status, recovery_label : Label
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
    """

    run_finished = Signal(object)

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self._viewer = viewer
        self.data = DataPicker(viewer)
        self.settings = TrainOptions()
        self.start_button = PushButton(text="Start training")
        self.stop_button = PushButton(text="Stop", enabled=False)
        self.fine_tune_button = PushButton(
            text="Fine-tune current model",
            tooltip="Continue training the session's current model, on the session training "
            "set if it holds any pairs",
        )
        self.progress = ProgressBar(min=0, max=1, value=0)
        self.progress_label = status_label("Not started.")
        self.status = status_label()
        self.recovery_label = status_label()
        self.save_path = FileEdit(label="Save to", mode="w", filter=f"*{SUFFIX}", nullable=True)
        self.save_button = PushButton(text="Save model…", enabled=session.models.model is not None)
        self.plot = LossPlot(_theme_text_color(viewer))
        self.preview = PreviewGrid()
        super().__init__(
            widgets=[
                self.data,
                self.settings,
                button_row(self.start_button, self.stop_button),
                self.fine_tune_button,
                self.progress,
                self.progress_label,
                self.status,
                self.recovery_label,
                button_row(self.save_path, self.save_button),
            ],
            labels=False,
        )
        # The plot and preview are plain Qt widgets: put them under the controls.
        self.native.layout().addWidget(self.plot)
        self.native.layout().addWidget(self.preview)
        self.scroll_area = scroll_contents(self)
        self.result: TrainingResult | None = None
        self._worker: GeneratorWorker | None = None
        self._stop = threading.Event()
        self._batches_per_epoch = 1
        self._epochs = 1
        self._summary = ""
        self._alive = True
        self.native.destroyed.connect(self._on_destroyed)
        self.native_parent_changed.connect(self._on_parent_changed)
        self.start_button.changed.connect(self.start)
        self.stop_button.changed.connect(self.stop)
        self.fine_tune_button.changed.connect(self.fine_tune)
        self.save_button.changed.connect(self.save)
        session.subscribe(session.models.changed, self._on_model_changed, self.native)
        for event in ("inserted", "removed", "reordered"):
            getattr(viewer.layers.events, event).connect(self.reset_choices)

    @property
    def running(self) -> bool:
        """Whether this widget's training run is going."""
        return self._worker is not None

    @property
    def worker(self) -> GeneratorWorker | None:
        """The running worker, if any."""
        return self._worker

    def start(self, *_: object) -> None:
        """Check the inputs, then train in a worker; problems become notifications."""
        if self.running:
            show_error("Training is already running; press Stop first.")
            return
        try:
            config = self.settings.config()
            load_init, init_text = self.settings.init_loader()
            load_data, data_text = self.data.loader()
        except BloodcellsError as exc:
            show_error(str(exc))
            return
        if not session.run_lock.acquire(self):
            show_error(
                "Another Train widget is training; wait for it to finish or press its Stop "
                "button first."
            )
            return
        self.result = None
        self._stop = threading.Event()
        self.progress.value = 0
        self.progress_label.value = "Loading the data…"
        self.status.value = f"Training {init_text} on {data_text}."
        self.preview.clear()
        path = recovery_path()
        self.recovery_label.value = f"Best model so far is kept in {path}"
        self._set_running(True)
        try:
            self._worker = start_job(
                training_job,
                config,
                load_data,
                load_init,
                should_stop=self._stop.is_set,
                checkpoint_path=path,
                on_yielded=self._on_event,
                on_finished=self._on_finished,
                on_errored=self._on_errored,
                # napari quits workers when its window closes: stop between batches
                # instead, so the run still scores, saves and reports its best model.
                on_quit=self._stop.set,
            )
        except BaseException:
            self._set_running(False)
            session.run_lock.release(self)
            raise

    def stop(self, *_: object) -> None:
        """Ask the run to end after the current batch; the best model is kept."""
        if self.running:
            self._stop.set()
            self.stop_button.enabled = False
            self.status.value = "Stopping after this batch…"

    def fine_tune(self, *_: object) -> None:
        """Continue training the current model, on the session training set if it has pairs."""
        if session.models.model is None:
            show_error(
                "There is no model to fine-tune yet; train one first, or set 'Continue from' "
                "to a checkpoint file and press Start."
            )
            return
        self.settings.continue_from.value = FROM_CURRENT
        if len(session.training_set):
            self.data.source.value = FROM_SESSION
        self.start()

    def save(self, *_: object) -> None:
        """Save the session's current model to :attr:`save_path` (asked for if empty)."""
        model = session.models.model
        if model is None:
            show_error("There is no model to save yet; train one first.")
            return
        path = self.save_path.value
        if path is None or path == Path():
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

    def _ask_save_path(self) -> Path | None:
        from qtpy.QtWidgets import QFileDialog

        name, _ = QFileDialog.getSaveFileName(
            self.native, "Save model", "", f"napari-bloodcells model (*{SUFFIX})"
        )
        return Path(name) if name else None

    def _set_running(self, running: bool) -> None:
        self.start_button.enabled = not running
        self.fine_tune_button.enabled = not running
        self.stop_button.enabled = running
        self.data.enabled = not running
        self.settings.enabled = not running

    def _on_event(self, event: object) -> None:
        # Runs on the main thread for every message the worker yields. The outcome
        # (session model, notifications) is handled even if the dock was closed.
        if isinstance(event, TrainingFinished):
            self._finish(event.result)
        elif isinstance(event, JobFailed):
            show_error(event.message)
        elif isinstance(event, Notice):
            show_info(event.message)
        if self._alive:
            self._update_views(event)

    def _update_views(self, event: object) -> None:
        if isinstance(event, BatchEnded):
            self.progress.value = (event.epoch - 1) * self._batches_per_epoch + event.batch
            self.progress_label.value = (
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
            self.progress_label.value = f"epoch 1/{event.epochs}, batch 0/{event.batches_per_epoch}"
            self.status.value = (
                f"Training on {event.device} ({event.precision}): "
                f"{event.n_train} training and {event.n_dev} dev images."
            )
        elif isinstance(event, DataReady):
            self.plot.reset(event.classes)
            self.preview.set_classes(event.classes)
            self.progress_label.value = f"Loaded {event.pairs} image(s); building the model…"
        elif isinstance(event, TrainingFinished):
            self.status.value = self._summary
        elif isinstance(event, JobFailed):
            self.status.value = "Training failed; see the notification."

    def _finish(self, result: TrainingResult) -> None:
        self.result = result
        if not result.best_epoch:
            # Stopped (or diverged) before any epoch was scored: there is no trained
            # model to offer, so the current one stays.
            self._summary = f"{result.reason} No epoch finished, so no model was kept."
            show_info(
                f"{result.reason} No epoch finished, so no model was kept; the current "
                "model is unchanged."
            )
            return
        best = next((h for h in result.history if h["epoch"] == result.best_epoch), None)
        scores = ""
        if best is not None:
            names = result.model.classes.names
            scores = ", ".join(
                f"{name} {dice:.2f}"
                for name, dice in zip(names[1:], best["dice"][1:], strict=False)
            )
            scores = f" (dev Dice {scores})"
        session.models.set(
            result.model, f"trained in this session, epoch {result.best_epoch}{scores}"
        )
        self._summary = f"{result.reason} Kept epoch {result.best_epoch}{scores}."
        kept = f" A copy is in {result.saved_to}." if result.saved_to else ""
        show_info(
            f"{result.reason} The model of epoch {result.best_epoch} is now the current "
            f"model.{kept}"
        )

    def _on_errored(self, exc: BaseException) -> None:
        if self._alive:
            self.status.value = f"Training failed ({type(exc).__name__}); see the notification."

    def _on_finished(self) -> None:
        self._worker = None
        session.run_lock.release(self)
        if self._alive:
            self._set_running(False)
        self.run_finished.emit(self.result)

    def _on_parent_changed(self, parent: object) -> None:
        # napari closes a dock by unparenting the widget, which stays alive but
        # unreachable: stop its run rather than leave an invisible one going.
        if parent is None and self.running and not self._stop.is_set():
            self.stop()
            show_info(
                "The Train widget was closed; training stops after this batch and "
                "keeps the best model."
            )

    def _on_destroyed(self, *_: object) -> None:
        # The dock was closed: stop training, and touch no Qt object from now on.
        self._alive = False
        self._stop.set()

    def _on_model_changed(self, model: object) -> None:
        self.save_button.enabled = model is not None
