"""Cell types of a folder's images: ``types.csv`` beside ``images/`` and ``masks/``.

The table has the columns ``image`` (the file name, with or without its
extension or subfolder) and ``type`` (a name of
:data:`~napari_bloodcells.core.base.cell_types.CELL_TYPES`, or Dataset 1's numbers
1-5). Dataset 1's own ``Class Labels of Dataset 1.csv`` (``image ID``, ``class
label``) is read too. A type names the image's white cell: its largest cell.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

from napari_bloodcells.core.base.cell_types import parse_type
from napari_bloodcells.errors import DataError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

TYPES_FILE = "types.csv"
_COLUMN_PAIRS = (("image", "type"), ("image id", "class label"))


def image_key(name: str) -> str:
    """How a table's image and a folder's file are matched: the file name without its
    extension and folders, leading zeros of a number dropped (``all/007.png`` → ``7``)."""
    stem = Path(name.strip()).stem
    return str(int(stem)) if stem.isdigit() else stem.lower()


def read_type_table(path: str | Path) -> dict[str, str]:
    """The types of a ``types.csv`` (or Dataset 1's class-label CSV), by :func:`image_key`.

    Raises
    ------
    DataError
        An unreadable file, missing columns or an unknown type name, in one sentence.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
            header = [h.strip().lower() for h in (rows[0].keys() if rows else [])]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(
            f"Could not read the type table {path} ({type(exc).__name__}); save it as a CSV "
            "file with the columns image and type."
        ) from exc
    columns = next((pair for pair in _COLUMN_PAIRS if set(pair) <= set(header)), None)
    if columns is None:
        raise DataError(
            f"The type table {path} has the columns {', '.join(header) or 'none'}; it needs "
            "the columns image (the file name) and type (e.g. neutrophil)."
        )
    types: dict[str, str] = {}
    for number, row in enumerate(rows, start=2):
        lowered = {str(k).strip().lower(): v for k, v in row.items() if k is not None}
        image, value = lowered.get(columns[0]) or "", lowered.get(columns[1]) or ""
        if not image.strip() or not value.strip():
            continue  # a blank row or an untyped image
        types[image_key(image)] = parse_type(value, f"The type table {path}, row {number},")
    return types


def types_for(names: Sequence[str], table: Mapping[str, str]) -> list[str | None]:
    """Each name's type from ``table`` (``None`` where the table does not list it)."""
    return [table.get(image_key(name)) for name in names]
