"""The white-cell types of a differential: names, colours, and reading a user's type value."""

from __future__ import annotations

from napari_bloodcells.errors import DataError

CELL_TYPES: tuple[str, ...] = ("neutrophil", "lymphocyte", "monocyte", "eosinophil", "basophil")
"""The five types, in the order of Dataset 1's numbers 1-5."""
OTHER = "other"
"""A white cell of no listed type (a blast, an atypical cell): a correction, never predicted."""
NOT_A_WHITE_CELL = "not a white cell"
"""A correction saying the segmentation's "cell" is no white cell (a red-cell clump, debris)."""
TO_VERIFY = "to verify"
"""A cell whose most probable type is below the probability threshold."""
CORRECTION_VALUES: tuple[str, ...] = (*CELL_TYPES, OTHER, NOT_A_WHITE_CELL)
"""What a user may call a cell, in the order of the gallery's keys 1-7."""
TYPE_COLOURS: dict[str, tuple[float, float, float, float]] = {
    # Tableau-like hues, far apart so that five types read at a glance on a smear.
    "neutrophil": (0.12, 0.47, 0.71, 1.0),
    "lymphocyte": (1.0, 0.50, 0.05, 1.0),
    "monocyte": (0.17, 0.63, 0.17, 1.0),
    "eosinophil": (0.84, 0.15, 0.16, 1.0),
    "basophil": (0.58, 0.40, 0.74, 1.0),
    OTHER: (0.55, 0.34, 0.29, 1.0),
    NOT_A_WHITE_CELL: (0.5, 0.5, 0.5, 1.0),
    TO_VERIFY: (1.0, 1.0, 1.0, 1.0),
}
DEFAULT_THRESHOLD = 0.7
"""Cells whose most probable type has a lower probability are counted as "to verify"."""
ADAPT_MIN_CELLS = 50
"""Cells of one run whose batch statistics are used alone: adapted to 20 of Dataset 1's
own held-out cells, the accuracy fell (0.953 to 0.923); to all of a fold's 60 it did not
(0.957), and on a restained proxy it rose (0.926 to 0.946, docs/benchmarks.md). Fewer
cells are weighed against the model's own statistics (:func:`adaptation_weight`)."""


def adaptation_weight(cells: int) -> float:
    """How far a run of ``cells`` cells moves the type network's statistics towards its own.

    ``cells / ADAPT_MIN_CELLS``, at most 1: a shrinkage of a few cells' noisy
    statistics towards the model's own. On another stain, runs of 10 and 20
    cells typed better than as trained or through their own statistics alone,
    and Dataset 1's own cells lost at most a cell in a hundred
    (docs/benchmarks.md, "The differential").
    """
    return min(1.0, cells / ADAPT_MIN_CELLS)


def parse_type(value: object, where: str) -> str:
    """A type name from what a table holds: a name in any case, or Dataset 1's 1-5.

    Parameters
    ----------
    value : object
        The cell of the table.
    where : str
        Where it was read, for the message (e.g. ``"types.csv, row 4"``).

    Raises
    ------
    DataError
        For a value that names no type, in one sentence listing the accepted ones.
    """
    text = str(value).strip().lower()
    if text.isdigit() and 1 <= int(text) <= len(CELL_TYPES):
        return CELL_TYPES[int(text) - 1]
    if text in CORRECTION_VALUES:
        return text
    if text.endswith("s") and text[:-1] in CELL_TYPES:  # "neutrophils"
        return text[:-1]
    raise DataError(
        f"{where} names the type {str(value)!r}, which is not one of "
        f"{', '.join(CORRECTION_VALUES)} (or 1-5); correct that cell of the table."
    )
