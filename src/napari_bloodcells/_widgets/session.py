"""State shared by the widgets of one napari session.

The Train widget publishes the model it trained here and the Segment widget
applies it; the Segment widget collects corrected predictions into a training
set that the Train widget can train on. Both stores are evented (psygnal), so
each widget updates its labels when the other changes them. The run lock keeps
two Train widgets from training at once in one process.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import numpy as np
from psygnal import Signal

from napari_bloodcells.core.dataset import SegmentationData

if TYPE_CHECKING:
    from collections.abc import Callable

    from psygnal import SignalInstance
    from qtpy.QtCore import QObject

    from napari_bloodcells.core.checkpoint import TrainedModel


class ModelStore:
    """The session's current model, with a ``changed`` signal.

    Attributes
    ----------
    changed : psygnal.Signal
        Emitted with the new model (or ``None``) after every change.
    """

    changed = Signal(object)

    def __init__(self) -> None:
        self._model: TrainedModel | None = None
        self._description = ""

    @property
    def model(self) -> TrainedModel | None:
        """The current model, or ``None`` before the first training run."""
        return self._model

    @property
    def description(self) -> str:
        """One line saying where the current model comes from."""
        return self._description

    def set(self, model: TrainedModel | None, description: str = "") -> None:
        """Make ``model`` the current model and notify listeners."""
        self._model = model
        self._description = description if model is not None else ""
        self.changed.emit(model)


class TrainingSet:
    """Image/mask pairs collected in this session (e.g. corrected predictions).

    Pairs are copied on the way in and on the way out, so neither the layers
    they came from nor a running training job can change them.

    Attributes
    ----------
    changed : psygnal.Signal
        Emitted with the new number of pairs after every change.
    """

    changed = Signal(int)

    def __init__(self) -> None:
        self._images: list[np.ndarray] = []
        self._masks: list[np.ndarray] = []
        self._names: list[str] = []

    def __len__(self) -> int:
        return len(self._images)

    def add(self, data: SegmentationData) -> None:
        """Append copies of every pair in ``data``."""
        self._images.extend(np.array(im, copy=True) for im in data.images)
        self._masks.extend(np.array(m, copy=True) for m in data.masks)
        self._names.extend(data.names)
        self.changed.emit(len(self))

    def data(self) -> SegmentationData:
        """A copy of all pairs, safe to hand to a worker thread."""
        return SegmentationData(
            [im.copy() for im in self._images],
            [m.copy() for m in self._masks],
            list(self._names),
        )

    def clear(self) -> None:
        """Remove every pair."""
        self._images.clear()
        self._masks.clear()
        self._names.clear()
        self.changed.emit(0)


class RunLock:
    """At most one training run per process, whichever widget starts it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: object | None = None

    @property
    def busy(self) -> bool:
        """Whether a run is going."""
        return self._owner is not None

    def acquire(self, owner: object) -> bool:
        """Claim the lock for ``owner``; False if another run holds it."""
        with self._lock:
            if self._owner is not None:
                return False
            self._owner = owner
            return True

    def release(self, owner: object) -> None:
        """Give the lock back; does nothing unless ``owner`` holds it."""
        with self._lock:
            if self._owner is owner:
                self._owner = None


models = ModelStore()
"""The current model, shared by the Train and Segment widgets."""

training_set = TrainingSet()
"""Corrected pairs added with "Add to training set"."""

run_lock = RunLock()
"""Held while a Train widget is training."""


def reset() -> None:
    """Forget the model and the training set (used between tests)."""
    models.set(None)
    training_set.clear()
    with run_lock._lock:
        run_lock._owner = None


def subscribe(signal: SignalInstance, slot: Callable[..., Any], owner: QObject) -> None:
    """Connect ``slot`` to a session signal until the Qt object ``owner`` is destroyed.

    The stores outlive every widget; without this a closed widget would still
    be called, and touch deleted Qt objects, the next time the session changes.
    """
    signal.connect(slot)
    owner.destroyed.connect(lambda *_: signal.disconnect(slot))
