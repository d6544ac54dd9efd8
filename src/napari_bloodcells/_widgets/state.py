"""State that belongs to one napari viewer, shared by its Train and Segment widgets.

The Train widget publishes the model it trained in :attr:`ViewerState.current`
and the Segment widget applies it; the Segment widget collects corrected
predictions in :attr:`ViewerState.training_set`, which the Train widget trains
on; :attr:`ViewerState.runs` says what is running. All three are evented
(psygnal), so each widget follows changes the other makes. Every viewer has
its own state (:func:`state_of`): two viewers in one process share nothing.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from psygnal import Signal, SignalGroup, evented

from napari_bloodcells.core.data.dataset import SegmentationData

if TYPE_CHECKING:
    from collections.abc import Callable

    import napari
    from psygnal import SignalInstance
    from qtpy.QtCore import QObject

    from napari_bloodcells.core.model.trained import TrainedModel


@evented
@dataclass(eq=False)
class CurrentModel:
    """The viewer's current model; ``events.model`` fires after every change.

    Attributes
    ----------
    model : TrainedModel or None
        ``None`` until a model is trained or loaded.
    description : str
        One line saying where the model comes from.
    previous : tuple or None
        The model (and its description) that the last fine-tune replaced.
    """

    model: TrainedModel | None = None
    description: str = ""
    previous: tuple[TrainedModel, str] | None = None
    events: ClassVar[SignalGroup]  # added by psygnal's @evented

    def set(
        self, model: TrainedModel | None, description: str = "", *, undoable: bool = False
    ) -> None:
        """Make ``model`` current; the description is set first, so listeners see both.

        With ``undoable`` (a fine-tune) the model it replaces can be restored by :meth:`undo`.
        """
        replaced = self.model
        self.previous = (replaced, self.description) if undoable and replaced is not None else None
        self.description = description if model is not None else ""
        self.model = model

    def undo(self) -> bool:
        """Restore the model a fine-tune replaced; False if there is none."""
        if self.previous is None:
            return False
        model, description = self.previous
        self.set(model, description)
        return True


@evented
@dataclass(eq=False)
class RunStatus:
    """Which jobs run in this viewer (careamics-napari's ``TrainingStatus`` pattern).

    One training run at a time; segmentations may run beside it. Both are
    allowed at once because segmenting while a model trains is a common wish
    (look at one image while the next model learns), and each job holds its own
    model, so neither changes the other's result; :meth:`sharing_note` tells
    the user that they share the processor.

    Attributes
    ----------
    training : object or None
        The widget whose training run holds the viewer's run lock.
    segmenting : int
        Segmentations going on.
    """

    training: object | None = None
    segmenting: int = 0
    events: ClassVar[SignalGroup]  # added by psygnal's @evented

    def claim_training(self, owner: object) -> bool:
        """Take the run lock for ``owner``; False if another run holds it.

        Widgets call this on the main thread only, so no thread lock is needed.
        """
        if self.training is not None:
            return False
        self.training = owner
        return True

    def sharing_note(self, starting: str) -> str | None:
        """What to tell the user when ``starting`` ("training" or "segmentation") joins a job."""
        other = "A segmentation" if starting == "training" else "Training"
        busy = self.segmenting > 0 if starting == "training" else self.training is not None
        if not busy:
            return None
        return (
            f"{other} is running too; both go on at once and share the processor, so each is "
            "slower until one ends."
        )

    def release_training(self, owner: object) -> None:
        """Give the run lock back; does nothing unless ``owner`` holds it."""
        if self.training is owner:
            self.training = None


class TrainingSet:
    """Image/mask pairs collected in this viewer (e.g. corrected predictions).

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
        self._types: list[str | None] = []

    def __len__(self) -> int:
        return len(self._images)

    def add(self, data: SegmentationData) -> None:
        """Append copies of every pair in ``data``."""
        self._images.extend(np.array(im, copy=True) for im in data.images)
        self._masks.extend(np.array(m, copy=True) for m in data.masks)
        self._names.extend(data.names)
        self._types.extend(data.type_of(i) for i in range(len(data)))
        self.changed.emit(len(self))

    def data(self) -> SegmentationData:
        """A copy of all pairs, safe to hand to a worker thread."""
        return SegmentationData(
            [im.copy() for im in self._images],
            [m.copy() for m in self._masks],
            list(self._names),
            types=list(self._types) if any(t is not None for t in self._types) else [],
        )

    def clear(self) -> None:
        """Remove every pair."""
        self._images.clear()
        self._masks.clear()
        self._names.clear()
        self._types.clear()
        self.changed.emit(0)


@dataclass(eq=False)
class ViewerState:
    """Everything the plugin's widgets share within one viewer."""

    current: CurrentModel
    training_set: TrainingSet
    runs: RunStatus


_STATES: weakref.WeakKeyDictionary[Any, ViewerState] = weakref.WeakKeyDictionary()


def state_of(viewer: napari.viewer.Viewer) -> ViewerState:
    """The plugin's state for ``viewer``, made on first use and dropped with the viewer.

    The dictionary is keyed weakly by the viewer, so it holds no viewer alive
    and each viewer, not the process, owns its state.
    """
    state = _STATES.get(viewer)
    if state is None:
        state = ViewerState(CurrentModel(), TrainingSet(), RunStatus())
        _STATES[viewer] = state
    return state


def subscribe(signal: SignalInstance, slot: Callable[..., Any], owner: QObject) -> None:
    """Connect ``slot`` to a state signal until the Qt object ``owner`` is destroyed.

    The state outlives a closed dock widget; without this a closed widget
    would still be called, and touch deleted Qt objects, on the next change.
    """
    signal.connect(slot)
    owner.destroyed.connect(lambda *_: signal.disconnect(slot))
