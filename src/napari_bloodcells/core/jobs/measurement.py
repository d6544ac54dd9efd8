"""The measurement jobs: cells and their measurements from class labels."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_bloodcells.core.base.imaging import to_rgb_uint8
from napari_bloodcells.core.data.dataset import read_mask
from napari_bloodcells.core.events import (
    CellsMeasured,
    FilesMeasured,
    Notice,
    SegmentProgress,
    Stopped,
)
from napari_bloodcells.core.measure.cells import (
    Measurements,
    check_class_labels,
    concatenate,
    measure_cells,
    write_csv,
)
from napari_bloodcells.errors import DataError

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Sequence


def _write_measurements(tables: list[Measurements], path: Path) -> Generator[Notice, None, None]:
    table = concatenate(tables)
    write_csv(table, path)
    if not len(table):
        yield Notice(f"No cell was found, so {path} holds only the header.")
    else:
        yield Notice(f"Measured {len(table)} cell(s) into {path}.")


def measure_job(
    labels: np.ndarray,
    image: np.ndarray | None = None,
    *,
    stack: bool = False,
    name: str = "",
    pixel_size: float | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Generator[SegmentProgress | Notice | CellsMeasured | Stopped, None, CellsMeasured | None]:
    """Measure the cells of class labels (one image, or every slice of a stack).

    The cell ids of a stack run on from slice to slice, so that every cell has
    one id; the table's ``image`` column names the slice.
    """
    should_stop = should_stop or (lambda: False)
    slices = list(labels) if stack else [labels]
    pictures = (list(image) if stack else [image]) if image is not None else [None] * len(slices)
    cells = np.zeros((len(slices), *np.asarray(slices[0]).shape), np.int32)
    tables = []
    for index, (classes, picture) in enumerate(zip(slices, pictures, strict=True)):
        if should_stop():
            yield Stopped()
            return None
        label = f"{name} [{index}]" if stack else name
        found, table = measure_cells(
            check_class_labels(np.asarray(classes), f"The labels {name}".strip()),
            None if picture is None else to_rgb_uint8(np.asarray(picture)),
            name=label,
            pixel_size=pixel_size,
        )
        offset = int(cells.max())
        cells[index] = np.where(found > 0, found + offset, 0)
        table.columns["cell"] = [c + offset for c in table.columns["cell"]]
        tables.append(table)
        yield SegmentProgress(index, len(slices), 1, 1)
    result = CellsMeasured(cells if stack else cells[0], concatenate(tables))
    if not len(result.table):
        yield Notice(f"No cell was found in {name or 'the labels'}; the table is empty.")
    yield result
    return result


def measure_files(
    labels: Sequence[Path], out: Path, *, pixel_size: float | None = None
) -> Generator[Notice | SegmentProgress | FilesMeasured, None, Measurements]:
    """Measure the cells of class-label image files (0/1/2) into one CSV at ``out``.

    Raises
    ------
    DataError
        A missing file, or labels that are not single-channel classes 0, 1 and 2.
    """
    missing = [str(p) for p in labels if not Path(p).is_file()]
    if missing:
        raise DataError(f"No such label file: {', '.join(missing[:3])}; check the paths.")
    tables = []
    for index, path in enumerate(labels):
        classes = check_class_labels(read_mask(Path(path)), f"The labels {path}")
        tables.append(measure_cells(classes, name=str(path), pixel_size=pixel_size)[1])
        yield SegmentProgress(index, len(labels), 1, 1)
    yield from _write_measurements(tables, out)
    table = concatenate(tables)
    yield FilesMeasured(table)
    return table
