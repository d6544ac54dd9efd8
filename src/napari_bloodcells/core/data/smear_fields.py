"""Whole smear fields with white-cell boxes (Pascal VOC, as BCCD has them), and how a
segmentation scores against the boxes.

Real smear fields hold many red cells, often in clumps, platelets and usually
one white cell. Datasets of them often come with boxes, not pixel masks; the
boxes still measure what matters for a white-cell segmenter:

- **recall**: the share of white-cell boxes in which at least
  :data:`FOUND_SHARE` of the pixels are predicted nucleus;
- **precision**: the share of all predicted nucleus pixels that lie inside a
  white-cell box grown by :data:`GROW` (each side moved out by half of it), so
  that nucleus painted on red cells and platelets counts against the model.

:func:`keep_inside` is the correction a user makes in napari on such a field:
everything predicted outside the white cells is erased to background.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_bloodcells.core.data.download import SMEAR_FIELDS, Progress, fetch_raw, registry
from napari_bloodcells.errors import DataError

if TYPE_CHECKING:
    from collections.abc import Iterable

CREDIT = (
    "Smear fields from the BCCD dataset (Shenggan/BCCD_Dataset, MIT licence, "
    "copyright (c) 2017 shenggan)"
)
"""Said wherever the sample fields are shown."""
FOUND_SHARE = 0.05
"""A white-cell box counts as found when this share of its pixels is predicted nucleus."""
GROW = 0.10
"""Boxes are grown by this share of their width and height before counting nucleus inside."""
WHITE_CELL = "WBC"
"""The Pascal VOC object name of a white cell (BCCD's)."""


@dataclass(frozen=True)
class Box:
    """A pixel box: rows ``y0:y1`` and columns ``x0:x1`` (end exclusive)."""

    x0: int
    y0: int
    x1: int
    y1: int

    def grown(self, share: float, shape: tuple[int, ...]) -> Box:
        """This box grown by ``share`` of its width and height, clipped to ``shape``."""
        dx = round((self.x1 - self.x0) * share / 2)
        dy = round((self.y1 - self.y0) * share / 2)
        return Box(
            max(0, self.x0 - dx),
            max(0, self.y0 - dy),
            min(shape[1], self.x1 + dx),
            min(shape[0], self.y1 + dy),
        )

    def slices(self) -> tuple[slice, slice]:
        """Index an array's rows and columns with this box."""
        return slice(self.y0, self.y1), slice(self.x0, self.x1)


@dataclass(frozen=True)
class Field:
    """One smear field: its image file and the white cells boxed in it."""

    name: str
    image_path: Path
    white_cells: tuple[Box, ...]


def read_white_cells(path: Path) -> tuple[Box, ...]:
    """The white-cell boxes of a Pascal VOC annotation file.

    VOC's corners are 1-based and inclusive; the boxes returned are 0-based,
    end exclusive.

    Raises
    ------
    DataError
        The file is not a readable VOC annotation.
    """
    try:
        root = ET.parse(path).getroot()
        boxes = []
        for obj in root.iter("object"):
            if (obj.findtext("name") or "").strip() != WHITE_CELL:
                continue
            corner = {k: round(float(obj.findtext(f"bndbox/{k}") or "nan")) for k in _CORNERS}
            boxes.append(
                Box(corner["xmin"] - 1, corner["ymin"] - 1, corner["xmax"], corner["ymax"])
            )
    except (ET.ParseError, OSError, ValueError) as exc:
        raise DataError(
            f"Cannot read the boxes in {path.name} ({exc}); replace it with a Pascal VOC "
            "annotation file."
        ) from exc
    return tuple(boxes)


_CORNERS = ("xmin", "ymin", "xmax", "ymax")


def load_fields(root: str | Path, split: str = "trainval") -> list[Field]:
    """The fields of a VOC-layout folder (``JPEGImages/``, ``Annotations/``, ``ImageSets/Main/``).

    Parameters
    ----------
    root : path
        The folder, e.g. BCCD's ``BCCD/``.
    split : str
        A list in ``ImageSets/Main`` (``train``, ``val``, ``trainval``), or ``all``
        for every annotated image.

    Raises
    ------
    DataError
        The folder, the split list or an image it names is missing.
    """
    root = Path(root)
    annotations = root / "Annotations"
    if not annotations.is_dir():
        raise DataError(
            f"{root} has no Annotations folder; choose a folder laid out as Pascal VOC "
            "(JPEGImages/, Annotations/, ImageSets/Main/)."
        )
    if split == "all":
        stems = sorted(p.stem for p in annotations.glob("*.xml"))
    else:
        listing = root / "ImageSets" / "Main" / f"{split}.txt"
        if not listing.is_file():
            raise DataError(f"{root} has no split list {split}.txt; choose train, val or trainval.")
        stems = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    fields = []
    for stem in stems:
        image = root / "JPEGImages" / f"{stem}.jpg"
        if not image.is_file():
            raise DataError(f"The field {stem} has boxes but no image {image}; restore it.")
        fields.append(Field(stem, image, read_white_cells(annotations / f"{stem}.xml")))
    return fields


@dataclass(frozen=True)
class NucleusScore:
    """Counts from which recall and precision follow; scores of fields add up."""

    boxes: int = 0
    boxes_found: int = 0
    nucleus: int = 0
    nucleus_inside: int = 0

    @property
    def recall(self) -> float:
        """The share of white-cell boxes found (1 when there are none)."""
        return self.boxes_found / self.boxes if self.boxes else 1.0

    @property
    def precision(self) -> float:
        """The share of predicted nucleus pixels inside a grown white-cell box (1 when none)."""
        return self.nucleus_inside / self.nucleus if self.nucleus else 1.0

    def __add__(self, other: NucleusScore) -> NucleusScore:
        return NucleusScore(
            self.boxes + other.boxes,
            self.boxes_found + other.boxes_found,
            self.nucleus + other.nucleus,
            self.nucleus_inside + other.nucleus_inside,
        )


def inside_mask(boxes: Iterable[Box], shape: tuple[int, ...], share: float = GROW) -> np.ndarray:
    """``(H, W)`` bool: the pixels inside any of ``boxes`` grown by ``share``."""
    inside = np.zeros(shape[:2], dtype=bool)
    for box in boxes:
        inside[box.grown(share, shape).slices()] = True
    return inside


def score_nucleus(labels: np.ndarray, boxes: Iterable[Box], nucleus: int = 2) -> NucleusScore:
    """Recall and precision counts of one field's class labels against its white-cell boxes."""
    boxes = tuple(boxes)
    predicted = labels == nucleus
    found = sum(
        bool(predicted[box.slices()].mean() >= FOUND_SHARE)
        for box in boxes
        if (box.x1 > box.x0 and box.y1 > box.y0)
    )
    inside = inside_mask(boxes, labels.shape)
    return NucleusScore(
        len(boxes), found, int(predicted.sum()), int(np.count_nonzero(predicted & inside))
    )


def keep_inside(labels: np.ndarray, boxes: Iterable[Box]) -> np.ndarray:
    """``labels`` with everything outside the grown white-cell boxes erased to background.

    This is the correction a microscopist makes on a field: red cells and
    platelets painted as cells are erased, the white cell is kept as predicted.
    """
    corrected = labels.copy()
    corrected[~inside_mask(boxes, labels.shape)] = 0
    return corrected


def sample_fields(progress: Progress | None = None) -> list[Field]:
    """The smear-field sample: a few BCCD fields with their white-cell boxes.

    Downloaded once from upstream at a pinned commit and checked file by file
    (:data:`~napari_bloodcells.core.data.download.SMEAR_FIELDS`;
    ``NAPARI_BLOODCELLS_SMEAR_URL`` points at a mirror or a local copy).

    Raises
    ------
    DownloadError
        The files cannot be fetched or do not match their checksums.
    """
    root = fetch_raw(progress=progress, remote=SMEAR_FIELDS)
    stems = sorted(Path(name).stem for name in registry(SMEAR_FIELDS) if name.endswith(".xml"))
    return [
        Field(
            stem,
            root / "JPEGImages" / f"{stem}.jpg",
            read_white_cells(root / "Annotations" / f"{stem}.xml"),
        )
        for stem in stems
    ]
