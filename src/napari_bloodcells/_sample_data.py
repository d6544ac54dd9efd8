"""npe2 sample data: the blood-cell dataset as layers.

The dataset is downloaded (and verified) on first use; see
:mod:`napari_bloodcells.core.data.download`.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import numpy as np

from napari_bloodcells._layers import CITATION, labels_kwargs
from napari_bloodcells.core.base.imaging import pad_to
from napari_bloodcells.core.data.bloodcell_dataset import bloodcell_folder
from napari_bloodcells.core.data.dataset import load_folder, read_image
from napari_bloodcells.core.data.smear_fields import CREDIT, sample_fields

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from napari.types import LayerDataTuple

SINGLE_CELL_INDEX = 0


def pad_stack(arrays: list[np.ndarray], fill: int = 0) -> np.ndarray:
    """Stack arrays of different heights and widths, padding bottom/right with ``fill``.

    Pixels keep their physical size: nothing is resized.
    """
    height = max(a.shape[0] for a in arrays)
    width = max(a.shape[1] for a in arrays)
    return np.stack([pad_to(a, height, width, fill) for a in arrays])


@contextlib.contextmanager
def _download_progress(desc: str) -> Iterator[Callable[[int, int], None]]:
    """A ``progress(done, total)`` callback that shows napari's bar once a download starts."""
    from napari.utils import progress

    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = progress(total=total, desc=desc)
        bar.n = done
        bar.refresh()
        if done == total:
            bar.close()

    try:
        yield update
    finally:
        if bar is not None:
            bar.close()


def _dataset_with_progress():
    """The dataset, showing napari's progress bar while files download on first use."""
    with _download_progress("Downloading the blood-cell dataset") as update:
        return load_folder(bloodcell_folder(progress=update))


def load_bloodcells_sample() -> list[LayerDataTuple]:
    """All 300 images as an RGB stack, with their class labels."""
    data = _dataset_with_progress()
    images = pad_stack(data.images)
    labels = pad_stack(data.masks)
    meta = {"citation": CITATION, "names": data.names}
    return [
        (images, {"name": "blood cells", "rgb": True, "metadata": meta}, "image"),
        (labels, labels_kwargs("blood cells labels", metadata={"citation": CITATION}), "labels"),
    ]


def load_single_cell_sample() -> list[LayerDataTuple]:
    """One blood-cell RGB image, to try Segment on a plain 2D image."""
    data = _dataset_with_progress()
    image = data.images[SINGLE_CELL_INDEX]
    meta = {"citation": CITATION, "names": [data.names[SINGLE_CELL_INDEX]]}
    return [(image, {"name": "blood cell", "rgb": True, "metadata": meta}, "image")]


def load_smear_field_sample() -> list[LayerDataTuple]:
    """Whole smear fields of another microscope (BCCD), with their white cells boxed.

    Red cells in clumps, platelets and one white cell each: the images a
    microscopist corrects to adapt a model (docs/correct-and-retrain.md).
    """
    with _download_progress("Downloading the smear-field sample") as update:
        fields = sample_fields(progress=update)
    images = pad_stack([read_image(f.image_path) for f in fields])
    boxes = [
        np.array([[i, b.y0, b.x0], [i, b.y0, b.x1], [i, b.y1, b.x1], [i, b.y1, b.x0]])
        for i, f in enumerate(fields)
        for b in f.white_cells
    ]
    meta = {"citation": CREDIT, "names": [f.name for f in fields]}
    return [
        (images, {"name": "smear fields", "rgb": True, "metadata": meta}, "image"),
        (
            boxes,
            {
                "name": "white cells (BCCD boxes)",
                "shape_type": "rectangle",
                "edge_color": "yellow",
                "face_color": "transparent",
                "edge_width": 3,
                "metadata": {"citation": CREDIT},
            },
            "shapes",
        ),
    ]
