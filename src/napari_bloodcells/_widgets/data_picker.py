"""Where the training pairs come from: layers, a folder, the sample, or the session set."""

from __future__ import annotations

from typing import TYPE_CHECKING

from magicgui.types import FileDialogMode
from magicgui.widgets import ComboBox, Container, FileEdit

from napari_bloodcells._widgets.controls import single_path, status_label
from napari_bloodcells._widgets.layer_picker import LayerPicker
from napari_bloodcells._widgets.layers import training_pairs
from napari_bloodcells._widgets.state import state_of, subscribe
from napari_bloodcells.errors import DataError

if TYPE_CHECKING:
    import napari

    from napari_bloodcells.core.jobs import TrainingData

FROM_LAYERS = "image and labels layers"
FROM_FOLDER = "folder (images/, masks/)"
FROM_SAMPLE = "blood-cell sample dataset"
FROM_SESSION = "session training set"
SOURCES = (FROM_LAYERS, FROM_FOLDER, FROM_SAMPLE, FROM_SESSION)


class DataPicker(Container):
    """Choose the training data.

    Attributes
    ----------
    source : ComboBox
        One of :data:`SOURCES`.
    image_layer, labels_layer : ComboBox
        An RGB image (or stack) and its class labels, for the layer source.
    folder : FileEdit
        A folder with ``images/`` and ``masks/`` subfolders.
    session_info : Label
        How many pairs the session training set holds.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self._training_set = state_of(viewer).training_set
        self.source = ComboBox(label="Training data", choices=list(SOURCES))
        self.image_layer = LayerPicker(viewer, "image", label="Image")
        self.labels_layer = LayerPicker(viewer, "labels", label="Labels")
        self.folder = FileEdit(
            label="Folder", mode=FileDialogMode.EXISTING_DIRECTORY, nullable=True
        )
        self.session_info = status_label()
        self.session_info.label = "Session set"
        super().__init__(
            widgets=[
                self.source,
                self.image_layer,
                self.labels_layer,
                self.folder,
                self.session_info,
            ],
            labels=True,
        )
        self.source.changed.connect(self._update_visible)
        subscribe(self._training_set.changed, self._show_session_size, self.native)
        self._show_session_size(len(self._training_set))
        self._update_visible()
        self.reset_choices()

    def training_data(self, continuing: bool = False) -> tuple[TrainingData, str]:
        """The chosen data, as :func:`~napari_bloodcells.core.jobs.training_job` takes it.

        Layer data are copied here, on the main thread, so the worker never
        reads a layer; folders and the sample are read by the job, in the
        worker. Also returns a description of the data.

        Raises
        ------
        DataError
            Nothing usable is chosen, in a plain sentence.
        """
        source = self.source.value
        if source == FROM_LAYERS:
            data = training_pairs(self.image_layer.value, self.labels_layer.value)
            data.check_learnable(continuing)
            return data, f"{len(data)} image(s) of '{self.image_layer.value.name}'"
        if source == FROM_FOLDER:
            folder = single_path(self.folder)
            if folder is None or not folder.is_dir():
                raise DataError(
                    "Choose a training folder that holds 'images' and 'masks' subfolders."
                )
            return folder, f"the pairs in {folder}"
        if source == FROM_SAMPLE:
            return None, "the blood-cell dataset"
        if not len(self._training_set):
            raise DataError(
                "The session training set is empty; segment an image, correct the labels and "
                "press 'Add to training set' in the Segment widget first."
            )
        data = self._training_set.data()
        return data, f"{len(data)} image(s) of the session training set"

    def _update_visible(self, *_: object) -> None:
        source = self.source.value
        self.image_layer.visible = self.labels_layer.visible = source == FROM_LAYERS
        self.folder.visible = source == FROM_FOLDER
        self.session_info.visible = source == FROM_SESSION

    def _show_session_size(self, size: int) -> None:
        self.session_info.value = f"{size} image(s)"
