"""A project folder: the corrected training pairs, the correction queue and the current model.

Everything a user corrects is written here as it is added, atomically, so that
closing napari (or a crash) loses nothing, and picking the folder again restores
the queue, the training set and the model. The folder is also a training folder:
``napari-bloodcells train --data PROJECT --init PROJECT/model.pt`` fine-tunes on it.

::

    PROJECT/
      project.json      format, version, the queue, and each pair's source and scale
      images/NAME.png   a corrected image, at the model's pixel size
      masks/NAME.png    its class labels (palette PNG; 255 = not labelled)
      model.pt          the current model, when one was saved with the project
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from napari_bloodcells.core.base.files import atomic_write
from napari_bloodcells.core.data.dataset import SegmentationData, read_image, read_mask
from napari_bloodcells.core.data.labels_io import write_labels
from napari_bloodcells.errors import DataError

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np

FORMAT_NAME = "napari-bloodcells-project"
FORMAT_VERSION = 1
PROJECT_FILE = "project.json"
MODEL_FILE = "model.pt"


@dataclass(frozen=True)
class Suggestion:
    """One image of the correction queue, scored by
    :func:`~napari_bloodcells.core.inference.suggest.suggestion`.

    Attributes
    ----------
    name : str
        The image: a file's path, or a layer's name (with ``[i]`` for a slice).
    score : float
        Higher means correcting the image is expected to teach more.
    painted : float
        Share of pixels the model paints as a cell.
    nucleus : float
        Share of pixels the model paints as a nucleus.
    uncertain : float
        Share of pixels whose winning class is less than 90 % sure.
    scale : float
        The magnification the image was segmented at.
    """

    name: str
    score: float
    painted: float
    nucleus: float
    uncertain: float
    scale: float


@dataclass(frozen=True)
class QueueEntry:
    """One image of the correction queue, and whether its correction was added."""

    suggestion: Suggestion
    corrected: bool = False

    @property
    def name(self) -> str:
        return self.suggestion.name


@dataclass(frozen=True)
class Pair:
    """Where one saved pair came from."""

    file: str
    source: str
    scale: float
    cell_type: str | None = None
    """The type of the pair's white cell (its largest cell), for a reclassified cell."""


@dataclass
class Project:
    """A project folder, open for reading and adding (see the module's docstring).

    Attributes
    ----------
    folder : Path
        The project folder.
    queue : list of QueueEntry
        The ranked images, most useful to correct first.
    pairs : list of Pair
        The saved training pairs, in the order they were added.
    """

    folder: Path
    queue: list[QueueEntry] = field(default_factory=list)
    pairs: list[Pair] = field(default_factory=list)

    @classmethod
    def open(cls, folder: str | Path) -> Project:
        """Open the project in ``folder``, or start one there if it holds none.

        Raises
        ------
        DataError
            The folder cannot be created, or its ``project.json`` is damaged, foreign,
            or from a newer version of the plugin.
        """
        folder = Path(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(
                f"Cannot use {folder} as a project folder ({exc.strerror or exc}); choose a "
                "folder you can write to."
            ) from exc
        path = folder / PROJECT_FILE
        if not path.is_file():
            return cls(folder)
        record = _read_record(path)
        queue = [
            QueueEntry(Suggestion(**entry["suggestion"]), bool(entry["corrected"]))
            for entry in record.get("queue", [])
        ]
        pairs = [Pair(**pair) for pair in record.get("pairs", [])]
        return cls(folder, queue, pairs)

    @property
    def model_file(self) -> Path:
        """Where the project keeps its current model."""
        return self.folder / MODEL_FILE

    def set_queue(self, suggestions: Sequence[Suggestion]) -> None:
        """Replace the queue by a new ranking; images already corrected stay marked."""
        done = {entry.name for entry in self.queue if entry.corrected}
        self.queue = [QueueEntry(s, s.name in done) for s in suggestions]
        self.save()

    def add_pair(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        source: str,
        scale: float = 1.0,
        cell_type: str | None = None,
    ) -> Pair:
        """Save one corrected pair and mark its queue entry corrected; atomic, file by file.

        Parameters
        ----------
        image : ndarray
            ``(H, W, 3) uint8`` at the model's pixel size.
        mask : ndarray
            ``(H, W)`` class indices; 255 marks unlabelled pixels.
        source : str
            Where the image came from (a path, a layer's name); names the queue entry.
        scale : float
            The magnification it was segmented and corrected at.
        cell_type : str, optional
            The type of its white cell (a cell reclassified in the gallery).
        """
        file = self._new_file_name(source)
        image_path = self.folder / "images" / f"{file}.png"
        atomic_write(image_path, lambda tmp: Image.fromarray(image).save(tmp, format="PNG"))
        write_labels(mask, self.folder / "masks" / f"{file}.png")
        pair = Pair(file, source, float(scale), cell_type)
        self.pairs.append(pair)
        self.queue = [
            replace(entry, corrected=True) if entry.name == source else entry
            for entry in self.queue
        ]
        self.save()
        return pair

    def training_data(self) -> SegmentationData:
        """The saved pairs, in the order they were added."""
        images, masks, names = [], [], []
        for pair in self.pairs:
            images.append(read_image(self.folder / "images" / f"{pair.file}.png"))
            masks.append(read_mask(self.folder / "masks" / f"{pair.file}.png"))
            names.append(pair.source)
        types = [pair.cell_type for pair in self.pairs]
        return SegmentationData(
            images, masks, names, types=types if any(t is not None for t in types) else []
        )

    def next_to_correct(self, after: str | None = None) -> QueueEntry | None:
        """The first uncorrected entry of the queue (see :func:`next_uncorrected`)."""
        return next_uncorrected(self.queue, after)

    def save(self) -> None:
        """Write ``project.json`` atomically."""
        record = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "queue": [
                {"suggestion": asdict(e.suggestion), "corrected": e.corrected} for e in self.queue
            ],
            "pairs": [asdict(pair) for pair in self.pairs],
        }
        text = json.dumps(record, indent=1)
        atomic_write(self.folder / PROJECT_FILE, lambda tmp: Path(tmp).write_text(text, "utf-8"))

    def _new_file_name(self, source: str) -> str:
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(source).stem or "image").strip("_.")
        return f"{len(self.pairs) + 1:04d}-{stem[:60] or 'image'}"


def next_uncorrected(entries: Sequence[QueueEntry], after: str | None = None) -> QueueEntry | None:
    """The first uncorrected entry, looking from the one after ``after`` and wrapping around;
    ``after`` itself is never the answer (it was just corrected, or is being corrected)."""
    order = list(entries)
    names = [entry.name for entry in order]
    if after in names:
        start = names.index(after) + 1
        order = order[start:] + order[:start]
    return next((e for e in order if not e.corrected and e.name != after), None)


def _read_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(
            f"The project file {path} cannot be read ({exc}); restore it from a backup or "
            "choose another folder."
        ) from exc
    if not isinstance(record, dict) or record.get("format") != FORMAT_NAME:
        raise DataError(
            f"{path} is not a napari-bloodcells project file; choose another project folder."
        )
    version = record.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise DataError(
            f"The project {path.parent} was written by a newer napari-bloodcells (project "
            f"format {version}, this version reads up to {FORMAT_VERSION}); update the plugin "
            "to open it."
        )
    return record
