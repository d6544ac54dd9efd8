"""From pixels to cells: cell instances from class labels, and per-cell measurements.

A white cell is a connected region of cytoplasm (1) and nucleus (2). Cells that
touch are split by a watershed on the distance to the background, seeded by
their nuclei; the lobes of one nucleus (neutrophils have 2 to 5) are first
joined by a closing sized to the cells, so that they seed one cell, not
several. Each cell then gets one row of measurements, the nucleus:cytoplasm
(N:C) ratio among them. scikit-image does the geometry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage as ndi
from skimage import measure, morphology, segmentation

from napari_bloodcells.core.base.cell_types import DEFAULT_THRESHOLD
from napari_bloodcells.core.measure.cell_typing import type_columns
from napari_bloodcells.errors import DataError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from napari_bloodcells.core.model.type_model import TypeModel

CYTOPLASM, NUCLEUS = 1, 2
COLUMNS = (
    "image",
    "cell",
    "area",
    "nucleus_area",
    "cytoplasm_area",
    "nc_ratio",
    "nucleus_lobes",
    "perimeter",
    "circularity",
    "touches_border",
    "nucleus_mean_r",
    "nucleus_mean_g",
    "nucleus_mean_b",
    "cytoplasm_mean_r",
    "cytoplasm_mean_g",
    "cytoplasm_mean_b",
    "centroid_row",
    "centroid_col",
    "bbox_min_row",
    "bbox_min_col",
    "bbox_max_row",
    "bbox_max_col",
)
"""The table's columns; with a pixel size, ``area_um2``, ``nucleus_area_um2`` and
``cytoplasm_area_um2`` follow ``cytoplasm_area``."""
_LOBE_OPENING = 0.04
"""Opening radius, as a share of the cell's equivalent diameter, that parts nuclear lobes."""
_LOBE_JOIN = 0.12
"""Closing radius, as a share of the typical cell diameter, that joins one nucleus's lobes."""


def check_class_labels(labels: np.ndarray, name: str = "the labels") -> np.ndarray:
    """``labels`` as a 2D array of classes 0, 1, 2, or a one-sentence :class:`DataError`."""
    labels = np.asarray(labels)
    if labels.ndim == 3 and labels.shape[-1] in (3, 4):
        raise DataError(
            f"{name} is an RGB image, not class labels; give a single-channel image of classes "
            "0 (background), 1 (cytoplasm) and 2 (nucleus)."
        )
    if labels.ndim != 2:
        raise DataError(f"{name} has shape {labels.shape}; give 2D class labels.")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{name} holds {labels.dtype} values; class labels are whole numbers.")
    bad = np.setdiff1d(np.unique(labels), (0, CYTOPLASM, NUCLEUS))
    if bad.size:
        shown = ", ".join(str(v) for v in bad[:5])
        raise DataError(
            f"{name} holds the value(s) {shown}; measuring needs classes 0 (background), "
            "1 (cytoplasm) and 2 (nucleus) only."
        )
    return labels


def cells_from_classes(labels: np.ndarray) -> np.ndarray:
    """Cell instances ``(H, W) int32`` (0 = no cell) from class labels 0/1/2.

    Raises
    ------
    DataError
        The labels are not 2D classes 0, 1 and 2.
    """
    labels = check_class_labels(labels)
    cell = labels > 0
    if not cell.any():
        return np.zeros(labels.shape, np.int32)
    parts = measure.label(cell)
    sizes = np.bincount(parts.ravel())[1:]
    diameter = 2 * math.sqrt(float(np.median(sizes)) / math.pi)
    join = max(1, round(_LOBE_JOIN * diameter))
    nuclei = morphology.closing(labels == NUCLEUS, morphology.disk(join)) & cell
    seeds = measure.label(nuclei)
    distance = ndi.distance_transform_edt(cell)
    cells: np.ndarray = segmentation.watershed(-distance, seeds, mask=cell).astype(np.int32)
    # Parts with no nucleus at all (a cell cut by the border, say) are cells of their own.
    orphans = parts * (cells == 0)
    next_id = int(cells.max())
    for part in np.unique(orphans[orphans > 0]):
        next_id += 1
        cells[orphans == part] = next_id
    return cells


@dataclass(frozen=True)
class Measurements:
    """One row per cell, as columns (``dict`` of name to list), ready for pandas or CSV."""

    columns: dict[str, list[Any]]

    def __len__(self) -> int:
        return len(self.columns["cell"])

    def rows(self) -> list[dict[str, Any]]:
        """The table as one dict per cell."""
        names = list(self.columns)
        rows = zip(*self.columns.values(), strict=True)
        return [dict(zip(names, values, strict=True)) for values in rows]


def measure_cells(
    labels: np.ndarray,
    image: np.ndarray | None = None,
    *,
    name: str = "",
    pixel_size: float | None = None,
    cells: np.ndarray | None = None,
    type_model: TypeModel | None = None,
    threshold: float = DEFAULT_THRESHOLD,
) -> tuple[np.ndarray, Measurements]:
    """Split class labels into cells and measure each one.

    Parameters
    ----------
    labels : ndarray
        ``(H, W)`` classes 0, 1, 2.
    image : ndarray, optional
        The ``(H, W, 3)`` RGB image, for the mean colours (NaN without it).
    name : str
        The ``image`` column.
    pixel_size : float, optional
        Micrometres per pixel; adds areas in µm².
    cells : ndarray, optional
        Instances from :func:`cells_from_classes`, if already computed.
    type_model : TypeModel, optional
        Adds each cell's type (:func:`~napari_bloodcells.core.measure.cell_typing.type_columns`);
        needs ``image``.
    threshold : float
        Type probability below which a cell is marked ``to_verify``.

    Returns
    -------
    cells : ndarray
        ``(H, W) int32`` instances.
    table : Measurements
        One row per cell; ``nc_ratio`` is 0 without nucleus and infinite without cytoplasm.
    """
    labels = check_class_labels(labels)
    cells = cells_from_classes(labels) if cells is None else cells
    columns: dict[str, list[Any]] = {c: [] for c in COLUMNS}
    if pixel_size is not None:
        for c in ("area_um2", "nucleus_area_um2", "cytoplasm_area_um2"):
            columns[c] = []
    for region in measure.regionprops(cells):
        row = _cell_row(region, labels, image, name, pixel_size)
        for column, value in row.items():
            columns[column].append(value)
    if pixel_size is not None:  # the µm² columns right after the pixel areas
        order = [*COLUMNS[:5], "area_um2", "nucleus_area_um2", "cytoplasm_area_um2", *COLUMNS[5:]]
        columns = {c: columns[c] for c in order}
    if type_model is not None:
        if image is None:
            raise DataError(
                f"Typing the cells of {name or 'the labels'} needs the image they were "
                "segmented from; give the image too."
            )
        ids = [int(c) for c in columns["cell"]]
        columns.update(type_columns(type_model, image, labels, cells, ids, threshold))
    return cells, Measurements(columns)


def _crop(array: np.ndarray, region: Any) -> np.ndarray:
    min_row, min_col, max_row, max_col = region.bbox
    return array[min_row:max_row, min_col:max_col]


def _lobes(nucleus: np.ndarray, cell_area: int) -> int:
    """Connected nucleus parts after an opening sized to the cell (thin bridges removed)."""
    if not nucleus.any():
        return 0
    diameter = 2 * math.sqrt(cell_area / math.pi)
    radius = max(1, round(_LOBE_OPENING * diameter))
    opened = morphology.opening(nucleus, morphology.disk(radius))
    count = int(measure.label(opened).max())
    return max(count, 1)  # an opening that removes everything leaves one small nucleus


def _mean_colour(
    image: np.ndarray | None, rows: np.ndarray, cols: np.ndarray
) -> tuple[float, float, float]:
    if image is None or rows.size == 0:
        return (math.nan, math.nan, math.nan)
    pixels = np.asarray(image)[rows, cols, :3].astype(np.float64)
    r, g, b = pixels.mean(axis=0)
    return (float(r), float(g), float(b))


def concatenate(tables: Sequence[Measurements]) -> Measurements:
    """The rows of several tables, in order (same columns)."""
    if not tables:
        return Measurements({c: [] for c in COLUMNS})
    names = list(tables[0].columns)
    return Measurements({c: [v for t in tables for v in t.columns[c]] for c in names})


def write_csv(table: Measurements, path: Any) -> None:
    """Write ``table`` as CSV (one header row), atomically."""
    import csv

    from napari_bloodcells.core.base.files import atomic_write

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(table.columns)
            for values in zip(*table.columns.values(), strict=True):
                writer.writerow(values)

    atomic_write(path, write)


def _cell_row(
    region: Any,
    labels: np.ndarray,
    image: np.ndarray | None,
    name: str,
    pixel_size: float | None,
) -> dict[str, Any]:
    """The measurements of one cell (a scikit-image region), by column."""
    height, width = labels.shape
    rows, cols = region.coords[:, 0], region.coords[:, 1]
    classes = labels[rows, cols]
    nucleus = int((classes == NUCLEUS).sum())
    cytoplasm = int((classes == CYTOPLASM).sum())
    min_row, min_col, max_row, max_col = region.bbox
    perimeter = float(region.perimeter)
    row: dict[str, Any] = {
        "image": name,
        "cell": int(region.label),
        "area": int(region.area),
        "nucleus_area": nucleus,
        "cytoplasm_area": cytoplasm,
        "nc_ratio": nucleus / cytoplasm if cytoplasm else (math.inf if nucleus else 0.0),
        "nucleus_lobes": _lobes(
            region.image & (_crop(labels, region) == NUCLEUS), int(region.area)
        ),
        "perimeter": perimeter,
        "circularity": float(4 * math.pi * region.area / perimeter**2) if perimeter else 0.0,
        "touches_border": bool(
            min_row == 0 or min_col == 0 or max_row == height or max_col == width
        ),
    }
    for part, value in (("nucleus", NUCLEUS), ("cytoplasm", CYTOPLASM)):
        means = _mean_colour(image, rows[classes == value], cols[classes == value])
        for channel, mean in zip("rgb", means, strict=True):
            row[f"{part}_mean_{channel}"] = mean
    row.update(
        centroid_row=float(region.centroid[0]),
        centroid_col=float(region.centroid[1]),
        bbox_min_row=min_row,
        bbox_min_col=min_col,
        bbox_max_row=max_row,
        bbox_max_col=max_col,
    )
    if pixel_size is not None:
        um2 = pixel_size**2
        row.update(
            area_um2=region.area * um2,
            nucleus_area_um2=nucleus * um2,
            cytoplasm_area_um2=cytoplasm * um2,
        )
    return row
