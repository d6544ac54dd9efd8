"""The differential job: count the white cells of each type in images, labels or tables.

Images are segmented (:func:`~napari_bloodcells.core.jobs.segmentation.segment_files`)
into a folder beside the report, then their labels are measured and typed like labels
given directly (labels an earlier run wrote there are kept: the user may have
corrected them); measurement tables (CSV) that already have a ``type`` column, such as
the gallery's, are counted as they are. The report holds one row per image and the
total; the typed cells go to ``<report>_cells.csv``.
"""

from __future__ import annotations

import csv
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from napari_bloodcells.core.base.cell_types import DEFAULT_THRESHOLD, parse_type
from napari_bloodcells.core.events import DifferentialCounted, FileSegmented, Notice
from napari_bloodcells.core.exchange.open_model import load_model
from napari_bloodcells.core.jobs.inputs import expand_inputs, output_paths
from napari_bloodcells.core.jobs.measurement import image_beside, measure_pairs, type_model_of
from napari_bloodcells.core.jobs.segmentation import segment_files
from napari_bloodcells.core.measure.cells import Measurements, concatenate, write_csv
from napari_bloodcells.core.measure.differential import (
    DifferentialRow,
    differential,
    write_differential,
)
from napari_bloodcells.errors import ConfigError, DataError

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Sequence
    from pathlib import Path

    from napari_bloodcells.core.exchange.open_model import ModelSource

_LABEL_MODES = {"P", "1", "L", "I", "I;16"}


def is_label_file(path: Path) -> bool:
    """Whether ``path`` holds class labels (single channel, values 0-2) rather than an image."""
    try:
        with Image.open(path) as im:
            if im.mode not in _LABEL_MODES:
                return False
            return im.mode in {"P", "1"} or int(np.asarray(im).max()) <= 2
    except (UnidentifiedImageError, OSError):
        return False


def read_typed_table(path: Path) -> Measurements:
    """A measurement CSV with ``image`` and ``type`` columns (``corrected_type`` optional).

    Raises
    ------
    DataError
        No such columns, or a type that names no white-cell type, in one sentence.
    """
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or not {"image", "type"} <= set(rows[0]):
        raise DataError(
            f"The table {path} has no image and type columns; give a cells table written by "
            "measure --model, segment --measure or the gallery."
        )
    columns: dict[str, list[Any]] = {"image": [], "cell": [], "type": [], "to_verify": []}
    columns["corrected_type"] = []
    for number, row in enumerate(rows, start=2):
        where = f"The table {path}, row {number},"
        columns["image"].append(row["image"])
        columns["cell"].append(row.get("cell", number - 1))
        columns["type"].append(parse_type(row["type"], where))
        corrected = (row.get("corrected_type") or "").strip()
        columns["corrected_type"].append(parse_type(corrected, where) if corrected else "")
        columns["to_verify"].append(str(row.get("to_verify", "")).strip().lower() == "true")
    return Measurements(columns)


def differential_job(
    inputs: Sequence[Path],
    out: Path,
    *,
    model: ModelSource | None = None,
    images: Path | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    adapt: bool = True,
    scale: float | str = 1.0,
    should_stop: Callable[[], bool] | None = None,
) -> Generator[Any, None, list[DifferentialRow]]:
    """Count the white cells of each type (see the module) into the CSV ``out``.

    Raises
    ------
    ConfigError
        Images or labels without a model, or a model without cell types.
    DataError
        Missing inputs, labels without any cell or without their image, a table with
        unknown type names.
    """
    if not 0 < threshold < 1:
        raise ConfigError(f"The threshold {threshold} must lie between 0 and 1, e.g. 0.7.")
    paths = expand_inputs(inputs)
    tables = [read_typed_table(p) for p in paths if p.suffix.lower() == ".csv"]
    looked_at: list[str] = []  # every image, so that one without white cells has its row
    others = [p for p in paths if p.suffix.lower() != ".csv"]
    if others:
        if model is None:
            raise ConfigError(
                "Typing the cells of images or labels needs a model with cell types; give --model."
            )
        name = str(model)
        model = load_model(model)  # once, for the types and the segmentation alike
        type_model = type_model_of(model, name)
        pairs = yield from _label_pairs(others, out, model, images, scale, should_stop)
        found = yield from measure_pairs(pairs, None, type_model, threshold, adapt)
        for (labels, _), table in zip(pairs, found, strict=True):
            if labels in others and not len(table):
                raise DataError(
                    f"The labels {labels} hold no cell (only background); segment the image "
                    "again or leave the file out."
                )
        tables += found
        looked_at = [str(labels) for labels, _ in pairs]
        write_csv(concatenate(found), out.with_name(f"{out.stem}_cells.csv"))
    rows = differential(concatenate(tables), looked_at) if tables else []
    write_differential(rows, out)
    total = rows[-1] if rows else DifferentialRow("total", {}, 0)
    yield Notice(
        f"Counted {total.cells} white cell(s) in {len(rows) - 1} image(s) into {out}; "
        f"{total.to_verify} to verify."
    )
    yield DifferentialCounted(rows)
    return rows


def _label_pairs(
    paths: Sequence[Path],
    out: Path,
    model: ModelSource,
    images: Path | None,
    scale: float | str,
    should_stop: Callable[[], bool] | None,
) -> Generator[Any, None, list[tuple[Path, Path | None]]]:
    """Each labels file with its image: given labels with ``images``, images segmented."""
    labels = [p for p in paths if is_label_file(p)]
    pictures = [p for p in paths if p not in labels]
    if labels and images is None:
        raise ConfigError(
            f"Typing the cells of {labels[0]} needs the image it was segmented from; give the "
            "images' folder with --images."
        )
    pairs: list[tuple[Path, Path | None]] = [
        (p, image_beside(p, images)) for p in labels if images is not None
    ]
    if pictures:
        folder = out.with_name(f"{out.stem}_labels")
        # Labels an earlier run wrote may hold the user's corrections: they are kept.
        kept = sum(target.exists() for target in output_paths(pictures, folder))
        if kept:
            yield Notice(
                f"Counting the labels already in {folder} for {kept} image(s), corrections "
                "included; delete them there to segment those images again."
            )
        job = segment_files(
            model, pictures, folder, scale=scale, should_stop=should_stop, resume=True
        )
        for event in job:
            if isinstance(event, FileSegmented):
                pairs.append((event.target, event.source))
            if isinstance(event, (Notice, FileSegmented)):
                yield event
    return pairs
