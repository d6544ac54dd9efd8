"""The lifecycle both dock widgets share: run one core job at a time, stop it, report it.

A :class:`JobWidget` starts a generator from :mod:`napari_bloodcells.core.jobs`
in a napari thread worker, with a cooperative stop, and routes what the job
yields: a :class:`~napari_bloodcells.core.events.JobFailed` becomes an error
notification, a :class:`~napari_bloodcells.core.events.Notice` an information
one, and every message reaches the subclass's :meth:`JobWidget.on_outcome`
(always, even once the dock is closed) and :meth:`JobWidget.update_views`
(only while the dock is alive). It also keeps layer pickers in step with the
viewer's layers.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from magicgui.widgets import Container, PushButton
from psygnal import Signal

from napari_bloodcells._widgets import docking
from napari_bloodcells._widgets.controls import status_label
from napari_bloodcells._widgets.state import state_of
from napari_bloodcells._widgets.workers import show_error, show_info, start_job
from napari_bloodcells.core.events import JobFailed, Notice

if TYPE_CHECKING:
    from collections.abc import Callable, Generator

    import napari
    from magicgui.widgets import Widget
    from napari.qt.threading import GeneratorWorker


class JobWidget(Container):
    """A dock widget that runs one core job at a time in a worker.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer the widget belongs to; its :func:`~.state.state_of` is shared.
    job_name : str
        Names the job in status lines ("Training", "Segmentation").

    Subclasses make their own controls, then call ``super().__init__``, which
    adds :attr:`stop_button` and :attr:`status` and lays out :meth:`contents`.

    Attributes
    ----------
    state : ViewerState
        The viewer's shared state.
    stop_button : PushButton
        Asks the running job to stop at its next step.
    status : Label
        One line on how the last job went.
    run_finished : psygnal.Signal
        Emitted with :meth:`outcome` when a job ends, however it ends.
    """

    run_finished = Signal(object)

    def __init__(self, viewer: napari.viewer.Viewer, job_name: str) -> None:
        self._viewer = viewer
        self._job_name = job_name
        self.state = state_of(viewer)
        self.stop_button = PushButton(text="Stop", enabled=False)
        self.status = status_label()
        super().__init__(widgets=self.contents(), labels=False)
        docking.mark(self.native, type(self).__name__.removesuffix("Widget"))
        self._worker: GeneratorWorker | None = None
        self._stop = threading.Event()
        self._alive = True
        self.native.destroyed.connect(self._on_destroyed)
        self.stop_button.changed.connect(self.stop)
        for event in ("inserted", "removed", "reordered"):
            getattr(viewer.layers.events, event).connect(self.reset_choices)

    def contents(self) -> list[Widget]:
        """The widgets of the dock, top to bottom (the shared controls included)."""
        raise NotImplementedError

    @property
    def running(self) -> bool:
        """Whether this widget's job is going."""
        return self._worker is not None

    @property
    def worker(self) -> GeneratorWorker | None:
        """The running worker, if any."""
        return self._worker

    @property
    def alive(self) -> bool:
        """False once the dock was closed: its Qt objects must not be touched."""
        return self._alive

    @property
    def stopping(self) -> bool:
        """Whether a stop was asked for the current job."""
        return self._stop.is_set()

    @property
    def viewer(self) -> napari.viewer.Viewer:
        """The viewer this dock works in."""
        return self._viewer

    def run_job(
        self, job: Callable[..., Generator[object, None, Any]], *args: Any, **kwargs: Any
    ) -> None:
        """Start ``job(*args, should_stop=..., **kwargs)`` in a worker.

        napari quits workers when its window closes: that, too, only asks the
        job to stop at its next step, so it still ends cleanly and reports.
        """
        self._stop = threading.Event()
        self.set_running(True)
        try:
            self._worker = start_job(
                job,
                *args,
                should_stop=self._stop.is_set,
                on_yielded=self._on_yielded,
                on_finished=self._on_finished,
                on_errored=self._on_errored,
                on_quit=self._stop.set,
                **kwargs,
            )
        except BaseException:
            self.set_running(False)
            raise

    def stop(self, *_: object) -> None:
        """Ask the running job to end at its next step."""
        if self.running:
            self._stop.set()
            self.stop_button.enabled = False
            self.status.value = f"Stopping {self._job_name.lower()}…"

    def set_running(self, running: bool) -> None:
        """Enable the controls that fit a running (or an idle) job; extended by subclasses."""
        self.stop_button.enabled = running

    def on_outcome(self, message: object) -> None:
        """Handle a message whose effect must not depend on the dock (e.g. the new model)."""

    def update_views(self, message: object) -> None:
        """Show a message in the widget's own views; called only while the dock is alive."""

    def outcome(self) -> object:
        """What :attr:`run_finished` carries when a job ends."""
        return None

    def job_ended(self) -> None:
        """Release what the job held; called once per job, before :attr:`run_finished`."""

    def _on_yielded(self, message: object) -> None:
        if isinstance(message, JobFailed):
            show_error(message.message)
        elif isinstance(message, Notice):
            show_info(message.message)
        self.on_outcome(message)
        if not self._alive:
            return
        if isinstance(message, JobFailed):
            self.status.value = f"{self._job_name} failed; see the notification."
        self.update_views(message)

    def _on_errored(self, exc: BaseException) -> None:
        if self._alive:
            self.status.value = (
                f"{self._job_name} failed ({type(exc).__name__}); see the notification."
            )

    def _on_finished(self) -> None:
        self._worker = None
        self.job_ended()
        if self._alive:
            self.set_running(False)
        self.run_finished.emit(self.outcome())

    def _on_destroyed(self, *_: object) -> None:
        # The dock was closed: stop the job, and touch no Qt object from now on.
        self._alive = False
        self._stop.set()
