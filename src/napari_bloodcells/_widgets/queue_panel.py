"""The correction queue in the Segment dock: rank the user's images, correct them in order,
and keep every correction in a project folder.

The ranking is the core's ``suggest_job``, run by the Segment widget like its other
jobs; the project folder (:class:`~napari_bloodcells.core.jobs.Project`) is written on
every add, so closing napari loses nothing and picking the folder again restores the
queue, the training set and the model.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from magicgui.types import FileDialogMode
from magicgui.widgets import Container, FileEdit, PushButton
from psygnal import Signal
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QTableWidget, QTableWidgetItem

from napari_bloodcells._widgets.controls import (
    NumberItem,
    button_row,
    form,
    single_path,
    status_label,
)
from napari_bloodcells._widgets.layers import image_input
from napari_bloodcells._widgets.workers import show_error, show_info
from napari_bloodcells.core.jobs import (
    Project,
    QueueEntry,
    load_model,
    next_uncorrected,
    read_image,
    save_checkpoint,
    suggest_job,
)
from napari_bloodcells.errors import BloodcellsError, ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable, Generator

    import napari
    from magicgui.widgets import FloatSpinBox
    from napari.layers import Image

    from napari_bloodcells._widgets.layer_picker import LayerPicker
    from napari_bloodcells._widgets.state import ViewerState
    from napari_bloodcells.core.data.dataset import SegmentationData
    from napari_bloodcells.core.jobs import ModelSource, Suggestion
    from napari_bloodcells.core.model.trained import TrainedModel

HEADERS = ("image", "score", "corrected")


class QueueHost(Protocol):
    """What the queue needs of the dock it sits in (the Segment widget)."""

    state: ViewerState
    image_layer: LayerPicker
    scale: FloatSpinBox

    @property
    def viewer(self) -> napari.viewer.Viewer: ...

    @property
    def running(self) -> bool: ...

    def run_job(
        self, job: Callable[..., Generator[object, None, Any]], *args: Any, **kwargs: Any
    ) -> None: ...

    def segment(self, *_: object) -> None: ...

    def add_to_training_set(self, *_: object) -> bool: ...

    def refuse_while_running(self) -> bool: ...

    def chosen_model(self) -> ModelSource: ...


class QueuePanel(Container):
    """Rank a folder's images (or the open image layers) and correct them most useful first.

    Parameters
    ----------
    host : QueueHost
        Runs the ranking and the segmentations, and adds corrections to the training set.

    Attributes
    ----------
    project_folder : FileEdit
        Where the corrections, the queue and the model are kept.
    images_folder : FileEdit
        The images to rank.
    table : QTableWidget
        The queue: image, score, corrected; sortable.
    project : Project or None
        The open project.
    opened : psygnal.Signal
        Emitted with an entry's name once its image is open and being segmented.
    """

    opened = Signal(str)

    def __init__(self, host: QueueHost) -> None:
        self.host = host
        self.project_folder = FileEdit(
            label="Project folder", mode=FileDialogMode.EXISTING_DIRECTORY, nullable=True
        )
        self.images_folder = FileEdit(
            label="Images", mode=FileDialogMode.EXISTING_DIRECTORY, nullable=True
        )
        self.rank_button = PushButton(text="Rank folder")
        self.rank_layers_button = PushButton(text="Rank open images")
        self.next_button = PushButton(text="Add to training set and next")
        self.info = status_label()
        self.table = QTableWidget(0, len(HEADERS))
        self.table.setHorizontalHeaderLabels(list(HEADERS))
        self.table.setSortingEnabled(True)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setMinimumHeight(140)
        self.project: Project | None = None
        self.current: str | None = None
        self._layer_names: dict[str, str] = {}
        self._entries: dict[str, QueueEntry] = {}
        super().__init__(
            widgets=[
                form(self.project_folder, self.images_folder),
                button_row(self.rank_button, self.rank_layers_button),
                self.next_button,
                self.info,
            ],
            labels=False,
        )
        self.native.layout().addWidget(self.table)
        self.project_folder.changed.connect(self.open_project)
        self.rank_button.changed.connect(self.rank_folder)
        self.rank_layers_button.changed.connect(self.rank_layers)
        self.next_button.changed.connect(self.add_and_next)
        self.table.cellClicked.connect(self._row_clicked)
        self.info.value = "Pick a project folder to keep corrections, then rank your images."

    # -- the project -------------------------------------------------------------------

    def open_project(self, *_: object) -> None:
        """Open (or start) the project in the chosen folder and restore what it holds."""
        folder = single_path(self.project_folder)
        if folder is None:
            return
        try:
            project = Project.open(folder)
            pairs = project.training_data()
            model = load_model(project.model_file) if project.model_file.is_file() else None
        except BloodcellsError as exc:
            show_error(str(exc))
            return
        state = self.host.state
        if model is not None and state.current.model is None:
            # Before the project is open, so the model it holds is not written back to it.
            state.current.set(model, f"the model of the project {folder.name}")
        self.project = project
        if len(pairs):
            state.training_set.clear()
            state.training_set.add(pairs)
        self._fill_table(project.queue)
        done = sum(entry.corrected for entry in project.queue)
        self.info.value = (
            f"Project {folder.name}: {len(project.pairs)} correction(s), "
            f"{len(project.queue)} image(s) in the queue, {done} corrected."
        )

    def save_model(self, model: TrainedModel | None) -> None:
        """Keep ``model`` as the project's model (the state's current model changed)."""
        if model is not None and self._entries and not self.host.running:
            # A fine-tune changes which images the model gets wrong.
            self.info.value = (
                "The model changed: rank again to order the queue by the new model's mistakes."
            )
        if self.project is None or model is None:
            return
        try:
            save_checkpoint(model, self.project.model_file)
        except BloodcellsError as exc:
            show_error(str(exc))

    def keep_pair(self, pairs: SegmentationData, source: str, scale: float) -> None:
        """Mark the source corrected, and write the pairs into the project if one is open.

        Called for every add to the training set, from the queue or not, so that nothing
        painted while a project is open is lost when napari closes.
        """
        name = self._layer_names.get(source, source)
        if self.project is not None:
            try:
                for index, (image, mask) in enumerate(zip(pairs.images, pairs.masks, strict=True)):
                    self.project.add_pair(image, mask, name, scale, pairs.type_of(index))
            except BloodcellsError as exc:
                show_error(str(exc))
                return
            self._fill_table(self.project.queue)
        elif name in self._entries:
            entries = [replace(e, corrected=True) if e.name == name else e for e in self.entries()]
            self._fill_table(entries)

    # -- ranking -----------------------------------------------------------------------

    def rank_folder(self, *_: object) -> None:
        """Rank the images of the chosen folder in a worker."""
        folder = single_path(self.images_folder)
        if folder is None:
            show_error("Choose the folder of images to rank.")
            return
        self._rank([folder])

    def rank_layers(self, *_: object) -> None:
        """Rank the image layers open in the viewer (every slice of a stack)."""
        from napari.layers import Image

        named: list[tuple[str, object]] = []
        try:
            for layer in self.host.viewer.layers:
                if not isinstance(layer, Image):
                    continue
                image = image_input(layer)
                if image.stack:
                    named += [(f"{layer.name} [{i}]", s) for i, s in enumerate(image.array)]
                else:
                    named.append((layer.name, image.array))
        except BloodcellsError as exc:
            show_error(str(exc))
            return
        if not named:
            show_error("There are no image layers to rank; open some images first.")
            return
        self._rank(named)

    def _rank(self, images: list[Path] | list[tuple[str, object]]) -> None:
        if self.host.refuse_while_running():
            return
        try:
            model = self.host.chosen_model()
        except ConfigError as exc:
            show_error(str(exc))
            return
        self.info.value = "Ranking…"
        self.host.run_job(suggest_job, model, images, scale=float(self.host.scale.value))

    def keep_ranking(self, ranked: tuple[Suggestion, ...]) -> None:
        """Keep a new ranking, and the model it was made with, in the open project."""
        if self.project is None:
            return
        self.project.set_queue(ranked)
        self.save_model(self.host.state.current.model)

    def show_ranking(self, ranked: tuple[Suggestion, ...]) -> None:
        """Show a new ranking (the ranking job ended)."""
        if self.project is not None:
            entries = self.project.queue
        else:
            entries = [QueueEntry(s) for s in ranked]
        self._fill_table(entries)
        self.info.value = (
            f"Ranked {len(ranked)} image(s), most useful to correct first; click one to open it."
        )

    def _fill_table(self, entries: list[QueueEntry]) -> None:
        self._entries = {entry.name: entry for entry in entries}
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(entries))
        for row, entry in enumerate(entries):
            self.table.setItem(row, 0, QTableWidgetItem(entry.name))
            self.table.setItem(
                row, 1, NumberItem(entry.suggestion.score, f"{entry.suggestion.score:.3f}")
            )
            self.table.setItem(row, 2, QTableWidgetItem("yes" if entry.corrected else "no"))
        self.table.setSortingEnabled(True)
        # Most useful first; a click on a header sorts otherwise until the queue changes.
        self.table.sortItems(1, Qt.SortOrder.DescendingOrder)

    def entries(self) -> list[QueueEntry]:
        """The queue as shown, in the table's current order."""
        items = (self.table.item(row, 0) for row in range(self.table.rowCount()))
        names = [item.text() for item in items if item is not None]
        return [self._entries[name] for name in names if name in self._entries]

    # -- correcting --------------------------------------------------------------------

    def _row_clicked(self, row: int, _column: int) -> None:
        item = self.table.item(row, 0)
        if item is not None:
            self.open_entry(item.text())

    def open_entry(self, name: str) -> None:
        """Show the entry's image, selected in the Segment dock, and segment it."""
        entry = self._entries.get(name)
        if entry is None:
            return
        try:
            layer = self._layer_for(name)
        except BloodcellsError as exc:
            show_error(str(exc))
            return
        self.current = name
        self.host.image_layer.value = layer
        self.host.scale.value = entry.suggestion.scale
        self.host.viewer.layers.selection.active = layer
        self.host.segment()
        self.info.value = f"Correct '{layer.name}', then add it and go to the next image."
        self.opened.emit(name)

    def _layer_for(self, name: str) -> Image:
        viewer = self.host.viewer
        layer_name = name.split(" [")[0] if name not in viewer.layers else name
        if layer_name in viewer.layers:
            return viewer.layers[layer_name]
        path = Path(name)
        layer = viewer.add_image(read_image(path), name=path.stem, rgb=True)
        self._layer_names[layer.name] = name
        return layer

    def add_and_next(self, *_: object) -> None:
        """Add the corrected image to the training set (and the project), then open the next."""
        if self.current is None:
            show_error("Open an image of the queue first (click it), then correct it.")
            return
        if self.host.running:
            show_error("Wait for the segmentation to finish, then correct the image.")
            return
        if not self.host.add_to_training_set():
            return
        following = next_uncorrected(self.entries(), self.current)
        if following is None:
            self.current = None
            show_info("Every image of the queue is corrected; fine-tune in the Train dock.")
            self.info.value = "The queue is done."
            return
        self.open_entry(following.name)
