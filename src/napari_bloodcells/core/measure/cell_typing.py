"""The type of each measured cell, from the model's cell-type network."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from napari_bloodcells.core.base.cell_types import DEFAULT_THRESHOLD
from napari_bloodcells.core.measure.cell_crops import cell_crops

if TYPE_CHECKING:
    from napari_bloodcells.core.model.type_model import TypeModel


def probability_column(kind: str) -> str:
    """The table's column for the probability of ``kind`` (``p_neutrophil``)."""
    return "p_" + kind.replace(" ", "_")


def type_columns(
    model: TypeModel,
    image: np.ndarray,
    labels: np.ndarray,
    cells: np.ndarray,
    ids: list[int],
    threshold: float = DEFAULT_THRESHOLD,
) -> dict[str, list[Any]]:
    """The type columns of the cells ``ids``, in that order.

    Returns
    -------
    dict
        ``type`` (the most probable type), ``type_probability`` (its probability),
        ``to_verify`` (that probability is below ``threshold``) and one
        :func:`probability_column` per type.
    """
    crops, found = cell_crops(image, labels, cells, side=model.side, margin=model.margin, ids=ids)
    if found != list(ids):
        raise ValueError("every cell id must be present in the instance image")
    return crop_type_columns(model, crops, threshold)


def crop_type_columns(
    model: TypeModel, crops: np.ndarray, threshold: float = DEFAULT_THRESHOLD
) -> dict[str, list[Any]]:
    """The type columns (see :func:`type_columns`) of cells already cut as ``crops``."""
    probabilities = model.probabilities(crops) if len(crops) else np.zeros((0, len(model.types)))
    best = probabilities.argmax(1) if len(crops) else np.zeros(0, int)
    top = probabilities.max(1) if len(crops) else np.zeros(0)
    columns: dict[str, list[Any]] = {
        "type": [model.types[int(i)] for i in best],
        "type_probability": [round(float(p), 4) for p in top],
        "to_verify": [bool(p < threshold) for p in top],
    }
    for index, kind in enumerate(model.types):
        columns[probability_column(kind)] = [round(float(p), 4) for p in probabilities[:, index]]
    return columns
