"""The measurement jobs: cells and their measurements from class labels."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_bloodcells.core.base.cell_types import DEFAULT_THRESHOLD
from napari_bloodcells.core.base.imaging import to_rgb_uint8
from napari_bloodcells.core.data.dataset import IMAGE_SUFFIXES, read_image, read_mask
from napari_bloodcells.core.events import (
    CellsMeasured,
    FilesMeasured,
    Notice,
    SegmentProgress,
    Stopped,
)
from napari_bloodcells.core.exchange.open_model import ModelSource, load_model
from napari_bloodcells.core.measure.cell_crops import cell_crops
from napari_bloodcells.core.measure.cell_typing import crop_type_columns
from napari_bloodcells.core.measure.cells import (
    Measurements,
    check_class_labels,
    concatenate,
    measure_cells,
    write_csv,
)
from napari_bloodcells.errors import ConfigError, DataError

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Sequence

    from napari_bloodcells.core.model.type_model import TypeModel


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
    model: ModelSource | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    adapt: bool = True,
) -> Generator[SegmentProgress | Notice | CellsMeasured | Stopped, None, CellsMeasured | None]:
    """Measure the cells of class labels (one image, or every slice of a stack).

    The cell ids of a stack run on from slice to slice, so that every cell has
    one id; the table's ``image`` column names the slice. With a ``model`` that
    has cell types (and the image) each cell is typed too, as ``measure`` types
    files: with ``adapt``, through the batch statistics of all the cells measured
    (:func:`type_tables`).
    """
    should_stop = should_stop or (lambda: False)
    type_model = None if model is None or image is None else load_model(model).type_model
    slices = list(labels) if stack else [labels]
    pictures = (list(image) if stack else [image]) if image is not None else [None] * len(slices)
    cells = np.zeros((len(slices), *np.asarray(slices[0]).shape), np.int32)
    tables, crops = [], []
    for index, (classes, picture) in enumerate(zip(slices, pictures, strict=True)):
        if should_stop():
            yield Stopped()
            return None
        found, table, cut = measure_image(
            check_class_labels(np.asarray(classes), f"The labels {name}".strip()),
            None if picture is None else to_rgb_uint8(np.asarray(picture)),
            f"{name} [{index}]" if stack else name,
            pixel_size,
            type_model,
            threshold,
        )
        offset = int(cells.max())
        cells[index] = np.where(found > 0, found + offset, 0)
        table.columns["cell"] = [c + offset for c in table.columns["cell"]]
        tables.append(table)
        crops.append(cut)
        yield SegmentProgress(index, len(slices), 1, 1)
    yield from type_tables(tables, crops, type_model, threshold, adapt)
    result = CellsMeasured(cells if stack else cells[0], concatenate(tables))
    if not len(result.table):
        yield Notice(f"No cell was found in {name or 'the labels'}; the table is empty.")
    yield result
    return result


def type_model_of(source: ModelSource, name: str) -> TypeModel:
    """The cell-type model of ``source``, or a one-sentence :class:`ConfigError`."""
    model = load_model(source, "cpu")
    if model.type_model is None:
        raise ConfigError(
            f"The model {name} has no cell types; train one on images with a types.csv "
            "(napari-bloodcells train --data FOLDER), or leave --model out to measure without "
            "types."
        )
    return model.type_model


def image_beside(labels: Path, images: Path) -> Path:
    """The image in the folder ``images`` with the stem of ``labels``, or a :class:`DataError`."""
    found = sorted(p for p in images.glob(f"{labels.stem}.*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise DataError(
            f"No image named {labels.stem} (PNG, JPEG, TIFF, BMP) is in {images}, so the cells "
            f"of {labels} cannot be typed; give the folder that holds the segmented images."
        )
    return found[0]


def measure_pairs(
    pairs: Sequence[tuple[Path, Path | None]],
    pixel_size: float | None,
    type_model: TypeModel | None,
    threshold: float,
    adapt: bool = True,
) -> Generator[Notice | SegmentProgress, None, list[Measurements]]:
    """The tables of label files, each with its image (or ``None``), typed with ``type_model``.

    With ``adapt``, the types may use the batch statistics of all these cells
    (:func:`type_tables`): one microscope's cells type better with its own.
    """
    tables, crops = [], []
    for index, (path, image) in enumerate(pairs):
        classes, picture = _read_pair(path, image)
        _, table, cut = measure_image(
            classes, picture, str(path), pixel_size, type_model, threshold
        )
        tables.append(table)
        crops.append(cut)
        yield SegmentProgress(index, len(pairs), 1, 1)
    yield from type_tables(
        tables, crops, type_model, threshold, adapt, " (--no-adapt types them as trained)"
    )
    return tables


def measure_image(
    classes: np.ndarray,
    picture: np.ndarray | None,
    name: str,
    pixel_size: float | None,
    type_model: TypeModel | None,
    threshold: float,
) -> tuple[np.ndarray, Measurements, np.ndarray | None]:
    """One image's cells and table, and the crops its cells are typed from (``None``: untyped).

    The types are left to :func:`type_tables`, which sees every cell of the run: the
    Segment dock, ``measure``, ``segment --measure`` and ``differential`` type alike.

    Returns
    -------
    cells : ndarray
        ``(H, W) int32`` instances.
    table : Measurements
        One row per cell, without the type columns when ``crops`` is not ``None``.
    crops : ndarray or None
        The cells' crops for ``type_model``; ``None`` without a model or an image.
    """
    typed_later = type_model is not None and picture is not None
    cells, table = measure_cells(
        classes,
        picture,
        name=name,
        pixel_size=pixel_size,
        # Without its image, measure_cells says in one sentence that typing needs it.
        type_model=None if typed_later else type_model,
        threshold=threshold,
    )
    if not typed_later:
        return cells, table, None
    assert type_model is not None and picture is not None
    ids = [int(c) for c in table.columns["cell"]]
    side, margin = type_model.side, type_model.margin
    return cells, table, cell_crops(picture, classes, cells, side=side, margin=margin, ids=ids)[0]


def type_tables(
    tables: Sequence[Measurements],
    crops: Sequence[np.ndarray | None],
    type_model: TypeModel | None,
    threshold: float,
    adapt: bool,
    hint: str = "",
) -> Generator[Notice, None, None]:
    """Add the type columns to the tables that have ``crops``, all typed as one run.

    With ``adapt`` the run's cells type through their own batch statistics
    (:meth:`TypeModel.for_cells`, weighed against the model's own below 50 cells), and a
    notice says so; ``hint`` ends it (how to turn it off, where there is a way).
    """
    typed = [(table, cut) for table, cut in zip(tables, crops, strict=True) if cut is not None]
    if type_model is None or not typed:
        return
    # Typed after all are cut: adapting needs every cell of the run at once.
    chosen = (
        type_model.for_cells(np.concatenate([cut for _, cut in typed])) if adapt else type_model
    )
    if chosen is not type_model:
        count = sum(len(cut) for _, cut in typed)
        weight = float(chosen.metrics["adapted_weight"])
        how = "" if weight == 1 else f", weighed {weight:.0%} against the model's own"
        counted = f"{count} cell{'' if count == 1 else 's'}"
        yield Notice(
            f"Typing {counted} with the batch statistics of these images{how}, which adapts the "
            f"types to this microscope's staining{hint}."
        )
    for table, cut in typed:
        table.columns.update(crop_type_columns(chosen, cut, threshold))


def write_typed(
    measured: Sequence[tuple[Measurements, np.ndarray | None]],
    type_model: TypeModel | None,
    out: Path,
) -> Generator[Notice, None, None]:
    """Type the tables of :func:`measure_image` as one run (:func:`type_tables`), then write them.

    For ``segment --measure``, which has no ``--no-adapt`` of its own: the notice points to
    ``measure``'s.

    Parameters
    ----------
    measured : sequence of (Measurements, ndarray or None)
        Each image's table and the crops its cells are typed from.
    type_model : TypeModel or None
        The model's cell-type model; ``None`` writes the tables untyped.
    out : Path
        The CSV file, written atomically.
    """
    tables = [table for table, _ in measured]
    crops = [cut for _, cut in measured]
    hint = " (measure --no-adapt types them as trained)"
    yield from type_tables(tables, crops, type_model, DEFAULT_THRESHOLD, adapt=True, hint=hint)
    yield from _write_measurements(tables, out)


def _read_pair(path: Path, image: Path | None) -> tuple[np.ndarray, np.ndarray | None]:
    classes = check_class_labels(read_mask(path), f"The labels {path}")
    picture = None if image is None else read_image(image)
    if picture is not None and picture.shape[:2] != classes.shape:
        raise DataError(
            f"The labels {path} are {classes.shape[1]}x{classes.shape[0]} but their image "
            f"{image} is {picture.shape[1]}x{picture.shape[0]}; give the image they were "
            "made from."
        )
    return classes, picture


def measure_files(
    labels: Sequence[Path],
    out: Path,
    *,
    pixel_size: float | None = None,
    model: ModelSource | None = None,
    images: Path | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    adapt: bool = True,
) -> Generator[Notice | SegmentProgress | FilesMeasured, None, Measurements]:
    """Measure the cells of class-label image files (0/1/2) into one CSV at ``out``.

    With a ``model`` that has cell types, each cell is typed too; its image is the
    file of the same name in the folder ``images`` (mean colours come from it too).
    ``adapt`` types many cells with their own batch statistics (:func:`measure_pairs`).

    Raises
    ------
    DataError
        A missing file, an image not found, or labels that are not single-channel
        classes 0, 1 and 2.
    ConfigError
        A model without cell types, or typing without the images' folder.
    """
    missing = [str(p) for p in labels if not Path(p).is_file()]
    if missing:
        raise DataError(f"No such label file: {', '.join(missing[:3])}; check the paths.")
    type_model = None if model is None else type_model_of(model, str(model))
    if type_model is not None and images is None:
        raise ConfigError(
            "Typing cells needs the images the labels were segmented from; give their folder "
            "with --images."
        )
    if images is not None and not images.is_dir():
        raise DataError(f"The images folder {images} does not exist; check the path.")
    pairs = [(Path(p), None if images is None else image_beside(Path(p), images)) for p in labels]
    tables = yield from measure_pairs(pairs, pixel_size, type_model, threshold, adapt)
    yield from _write_measurements(tables, out)
    table = concatenate(tables)
    yield FilesMeasured(table)
    return table
