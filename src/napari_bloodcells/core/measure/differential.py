"""The differential: how many white cells of each type, per image and in total."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from napari_bloodcells.core.base.cell_types import CELL_TYPES, NOT_A_WHITE_CELL
from napari_bloodcells.core.base.files import atomic_write

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from napari_bloodcells.core.measure.cells import Measurements

TOTAL = "total"
FRAGMENT_SHARE = 0.25
"""A nucleated region smaller than this share of the table's median cell is a fragment
(debris, a cell's edge), not a white cell to count."""


def counted_cells(table: Measurements) -> list[bool]:
    """Which rows are white cells to count: with a nucleus and not a fragment.

    Tables without areas (a typed table from elsewhere) count every row.
    """
    columns = table.columns
    if "area" not in columns or "nucleus_area" not in columns:
        return [True] * len(table)
    areas = np.asarray(columns["area"], dtype=float)
    nucleated = np.asarray(columns["nucleus_area"], dtype=float) > 0
    if not nucleated.any():
        return [False] * len(table)
    least = FRAGMENT_SHARE * float(np.median(areas[nucleated]))
    return [bool(n and a >= least) for n, a in zip(nucleated, areas, strict=True)]


@dataclass(frozen=True)
class DifferentialRow:
    """The counts of one image (or of all, ``image == "total"``).

    Attributes
    ----------
    image : str
        The image, or ``"total"``.
    counts : dict of str to int
        White cells of each type; types no cell has are 0.
    to_verify : int
        Cells whose type probability is below the threshold (counted in ``counts`` too).
    """

    image: str
    counts: dict[str, int]
    to_verify: int

    @property
    def cells(self) -> int:
        """White cells counted."""
        return sum(self.counts.values())

    def percent(self, kind: str) -> float:
        """The share of ``kind`` among the white cells, in percent (0 without cells)."""
        return 100.0 * self.counts.get(kind, 0) / self.cells if self.cells else 0.0


def differential(table: Measurements, images: Sequence[str] = ()) -> list[DifferentialRow]:
    """One row per image, ``images`` first and then the table's others, then the total.

    An image of ``images`` without a cell in the table gets a row of zeros: a field
    without a white cell was looked at, and the report says so. Fragments
    (:func:`counted_cells`) and cells typed ``"not a white cell"`` are left out; a
    reclassified type in a ``corrected_type`` column wins over the predicted ``type``.
    """
    columns = table.columns
    kinds = columns.get("corrected_type") or [""] * len(table)
    counted = counted_cells(table)
    types = [
        k or (t if keep else NOT_A_WHITE_CELL)
        for k, t, keep in zip(kinds, columns["type"], counted, strict=True)
    ]
    verify = [bool(v) and not k for v, k in zip(columns["to_verify"], kinds, strict=True)]
    names: list[str] = list(dict.fromkeys([*images, *columns["image"]]))
    rows = [_row(name, types, verify, columns["image"]) for name in names]
    rows.append(_row(TOTAL, types, verify, None))
    return rows


def _row(
    name: str, types: Sequence[str], verify: Sequence[bool], images: Sequence[str] | None
) -> DifferentialRow:
    chosen = [i for i in range(len(types)) if images is None or images[i] == name]
    counts = {kind: 0 for kind in CELL_TYPES}
    for i in chosen:
        if types[i] != NOT_A_WHITE_CELL:
            counts[types[i]] = counts.get(types[i], 0) + 1
    flagged = sum(verify[i] for i in chosen if types[i] != NOT_A_WHITE_CELL)
    return DifferentialRow(name, counts, flagged)


def write_differential(rows: Sequence[DifferentialRow], path: Path) -> None:
    """Write the rows as CSV: image, cells, each type's count and percent, to_verify."""
    import csv

    kinds = list(dict.fromkeys(k for row in rows for k in row.counts))
    header = ["image", "cells", *kinds, *(f"{k}_percent" for k in kinds), "to_verify"]

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            for row in rows:
                counts = [row.counts.get(k, 0) for k in kinds]
                shares = [round(row.percent(k), 1) for k in kinds]
                writer.writerow([row.image, row.cells, *counts, *shares, row.to_verify])

    atomic_write(path, write)
