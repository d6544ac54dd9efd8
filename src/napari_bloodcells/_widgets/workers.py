"""Start core jobs in napari thread workers and report their outcome as notifications.

The jobs themselves are the Qt-free generators of
:mod:`napari_bloodcells.core.jobs`; this module only runs them. Errors follow
one rule. A :class:`~napari_bloodcells.errors.BloodcellsError`
is the user's to fix: it is shown as its plain sentence (``show_error``),
without a traceback, whether it is raised on the main thread (validation) or
in a worker (:class:`~napari_bloodcells.core.events.JobFailed`). Anything else is a bug: it goes to
napari's notification manager with its traceback, and to the log, so it is
never swallowed.
"""

from __future__ import annotations

import logging
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar

from napari.utils import notifications

from napari_bloodcells.core.events import JobFailed
from napari_bloodcells.errors import BloodcellsError

if TYPE_CHECKING:
    from collections.abc import Callable, Generator

    from napari.qt.threading import GeneratorWorker

R = TypeVar("R")

logger = logging.getLogger("napari_bloodcells")


def show_error(message: str) -> None:
    """Show a plain-sentence error notification."""
    notifications.show_error(message)


def show_warning(message: str) -> None:
    """Show a warning notification: the action went ahead, but the user should know."""
    notifications.show_warning(message)


def show_info(message: str) -> None:
    """Show an information notification."""
    notifications.show_info(message)


def report_unexpected(exc: BaseException) -> None:
    """Show an unexpected worker exception with its traceback, and log it.

    napari's workers are meant to relay errors to the notification manager
    themselves, but in napari 0.9 the relaying mixin is never initialised, so
    nothing would be shown. The exception is dispatched here unless napari has
    already done so (its relay, when it works, runs before this handler).
    """
    logger.error("napari-bloodcells job failed", exc_info=(type(exc), exc, exc.__traceback__))
    manager = notifications.notification_manager
    shown = any(
        isinstance(n, notifications.ErrorNotification) and n.exception is exc
        for n in manager.records[-10:]
    )
    if not shown:
        manager.receive_error(type(exc), exc, exc.__traceback__)


class JobCrashed(Exception):
    """An unexpected ``RuntimeError`` in a job, re-raised under another type.

    superqt's generator worker takes any ``RuntimeError`` for "the worker was
    deleted": it turns it into a warning and never emits ``errored`` or
    ``finished``. torch reports most failures as ``RuntimeError``, so the
    widget would wait forever; this wrapper keeps the message and the cause.
    """


def guarded(events: Generator[object, None, R]) -> Generator[object, None, R | None]:
    """Pass ``events`` through; turn a :class:`BloodcellsError` into a final :class:`JobFailed`.

    A user error is then reported as its plain sentence, without a traceback;
    any other exception propagates to the worker's ``errored`` signal, where
    napari shows it with its traceback (a ``RuntimeError`` as :class:`JobCrashed`).
    """
    try:
        return (yield from events)
    except BloodcellsError as exc:
        yield JobFailed(str(exc))
        return None
    except RuntimeError as exc:
        raise JobCrashed(str(exc) or type(exc).__name__) from exc


def _guarded_job(
    job: Callable[..., Generator[object, None, Any]], *args: Any, **kwargs: Any
) -> Generator[object, None, Any]:
    return (yield from guarded(job(*args, **kwargs)))


@cache
def _stopping_worker_class() -> type[GeneratorWorker]:
    from napari.qt.threading import GeneratorWorker

    class StoppingWorker(GeneratorWorker):
        """A generator worker whose ``quit()`` asks its job to stop instead of dropping it.

        napari quits every worker it knows of when its window closes, and superqt
        quits them all when the application exits. A plain ``quit`` abandons the
        generator at its next yield: a training run would skip its last
        evaluation and checkpoint, and the widget would never hear how it
        ended. Here ``quit`` calls :attr:`request_stop` (the job's cooperative
        stop) and the job ends on its own, between batches, keeping its model.
        """

        request_stop: Callable[[], None] | None = None

        def quit(self) -> None:
            if self.request_stop is None:
                super().quit()
            else:
                self.request_stop()

    return StoppingWorker


def start_job(
    job: Callable[..., Any],
    *args: Any,
    on_yielded: Callable[[object], None],
    on_finished: Callable[[], None],
    on_errored: Callable[[BaseException], None] | None = None,
    on_quit: Callable[[], None] | None = None,
    **kwargs: Any,
) -> GeneratorWorker:
    """Run the generator function ``job(*args, **kwargs)`` in a napari thread worker.

    Parameters
    ----------
    job : callable
        A generator function from :mod:`napari_bloodcells.core.jobs`; it must
        not touch widgets.
    on_yielded : callable
        Receives every yielded message, on the main thread.
    on_finished : callable
        Called on the main thread when the job ends, however it ends.
    on_errored : callable, optional
        Called with an unexpected exception, after it has been shown.
    on_quit : callable, optional
        The job's cooperative stop. When given, the worker's ``quit()`` (called by
        napari when the window closes, or when the application exits) calls it
        instead of abandoning the generator, so the job still ends normally.

    Returns
    -------
    GeneratorWorker
        Already started.
    """
    from napari.qt.threading import create_worker

    errored = [report_unexpected] + ([on_errored] if on_errored is not None else [])
    # Connecting "errored" ourselves also stops superqt from re-raising the error on
    # the main thread, which would show it a second time.
    worker = create_worker(
        _guarded_job,
        job,
        *args,
        _start_thread=False,
        _connect={"yielded": on_yielded, "errored": errored, "finished": on_finished},
        _worker_class=_stopping_worker_class() if on_quit is not None else None,
        **kwargs,
    )
    if on_quit is not None:
        worker.request_stop = on_quit
    worker.start()
    return worker
