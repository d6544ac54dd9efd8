"""What the widgets' worker threads run: generators over the Qt-free core.

Nothing here touches a widget or a layer. Every input arrives as plain data
(numpy copies, paths, a model) or as a zero-argument loader that runs in the
worker thread, so slow reads and downloads never block the GUI; every output
leaves as a yielded message that the widget handles on the main thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from napari_bloodcells.core.checkpoint import TrainedModel, load_checkpoint
from napari_bloodcells.core.classes import BLOODCELL_CLASSES, ClassInfo
from napari_bloodcells.core.dataset import SegmentationData
from napari_bloodcells.core.device import resolve_device
from napari_bloodcells.core.events import Notice, TrainingEvent, TrainingResult
from napari_bloodcells.core.infer import TileSettings, segment_image
from napari_bloodcells.core.train import train
from napari_bloodcells.errors import BloodcellsError

if TYPE_CHECKING:
    from pathlib import Path

    from napari_bloodcells.core.config import TrainConfig

R = TypeVar("R")

DataLoader = Callable[[], SegmentationData]
ModelLoader = Callable[[], "TrainedModel | None"]


@dataclass(frozen=True)
class JobFailed:
    """A job ended with a :class:`BloodcellsError`; ``message`` is its plain sentence."""

    message: str


@dataclass(frozen=True)
class DataReady:
    """The training data and the starting model are loaded; training begins."""

    pairs: int
    classes: ClassInfo


@dataclass(frozen=True)
class SegmentProgress:
    """Tiles done in the current slice. ``index`` counts slices from 0."""

    index: int
    slices: int
    done: int
    total: int

    @property
    def fraction(self) -> float:
        """Share of the whole job done, 0..1."""
        within = self.done / self.total if self.total else 1.0
        return (self.index + within) / self.slices


@dataclass(frozen=True)
class SegmentationFinished:
    """Labels ``(H, W)`` or ``(N, H, W)`` and, if asked for, the confidence map."""

    labels: np.ndarray
    confidence: np.ndarray | None
    classes: ClassInfo


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


def given(data: SegmentationData) -> SegmentationData:
    """Loader for data already in memory (copied from layers on the main thread)."""
    return data


def no_model() -> None:
    """Loader for "start from scratch"."""
    return None


def training_job(
    config: TrainConfig,
    load_data: DataLoader,
    load_init: ModelLoader,
    *,
    should_stop: Callable[[], bool],
    checkpoint_path: Path | None,
) -> Generator[TrainingEvent | DataReady, None, TrainingResult]:
    """Load the data and the starting model, then train, yielding the engine's events.

    Parameters
    ----------
    config : TrainConfig
        Validated settings.
    load_data, load_init : callable
        Run here, in the worker thread: reading a folder or downloading the
        dataset can take a while.
    should_stop : callable
        Polled between batches (a ``threading.Event.is_set``).
    checkpoint_path : Path, optional
        Where the engine keeps the best model while training.
    """
    data = load_data()
    init = load_init()
    yield DataReady(len(data), init.classes if init is not None else BLOODCELL_CLASSES)
    return (
        yield from train(
            config, data, init=init, should_stop=should_stop, checkpoint_path=checkpoint_path
        )
    )


def reports_of(func: Callable[[Callable[[object], None]], R]) -> Generator[object, None, R]:
    """Run ``func(report)`` in a helper thread; yield what it reports, then return its result.

    ``segment_image`` reports tile progress through a callback, which cannot
    yield; running it beside a queue turns those callbacks into yields, so the
    worker's progress stays a plain generator.
    """
    messages: queue.SimpleQueue = queue.SimpleQueue()
    end = object()
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["value"] = func(messages.put)
        except BaseException as exc:  # handed to the generator, which re-raises it
            outcome["error"] = exc
        finally:
            messages.put(end)

    thread = threading.Thread(target=run, name="napari-bloodcells-segment", daemon=True)
    thread.start()
    while (message := messages.get()) is not end:
        yield message
    thread.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


def load_model(source: TrainedModel | Path) -> TrainedModel:
    """The session model as is, or a checkpoint read onto the best device."""
    if isinstance(source, TrainedModel):
        return source
    return load_checkpoint(source, device=resolve_device("auto"))


def segmentation_job(
    source: TrainedModel | Path,
    images: np.ndarray,
    *,
    stack: bool,
    scale: float = 1.0,
    tiles: TileSettings | None = None,
    confidence: bool = False,
) -> Generator[SegmentProgress | Notice | SegmentationFinished, None, SegmentationFinished]:
    """Segment one 2D image or every slice of a stack.

    Parameters
    ----------
    source : TrainedModel or Path
        The model, or a checkpoint file to read in this thread.
    images : ndarray
        One image (``stack=False``) or a stack whose first axis is the slice.
    stack : bool
        Whether ``images`` is a stack.
    scale, tiles, confidence
        Passed to :func:`~napari_bloodcells.core.infer.segment_image`.
    """
    model = load_model(source)
    slices = images if stack else images[None]
    height, width = slices.shape[1:3]
    labels = np.zeros((len(slices), height, width), dtype=np.uint8)
    conf = np.zeros((len(slices), height, width), dtype=np.float32) if confidence else None
    for index, image in enumerate(slices):

        def one(
            report: Callable[[object], None], index: int = index, image: np.ndarray = image
        ) -> tuple[np.ndarray, np.ndarray | None]:
            return segment_image(
                model,
                image,
                scale=scale,
                tiles=tiles,
                confidence=confidence,
                progress=lambda done, total: report(
                    SegmentProgress(index, len(slices), done, total)
                ),
                on_notice=lambda message: report(Notice(message)),
            )

        labels[index], slice_conf = yield from reports_of(one)
        if conf is not None:
            conf[index] = slice_conf
    result = SegmentationFinished(
        labels if stack else labels[0],
        None if conf is None else (conf if stack else conf[0]),
        model.classes,
    )
    yield result
    return result
