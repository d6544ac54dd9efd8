"""Opening any model the plugin accepts: one in memory, a checkpoint or an exported package."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from napari_bloodcells.core.base.device import resolve_device
from napari_bloodcells.core.exchange.package import is_package, load_package
from napari_bloodcells.core.model.checkpoint import load_checkpoint
from napari_bloodcells.core.model.trained import TrainedModel

if TYPE_CHECKING:
    import torch


ModelSource = TrainedModel | Path
"""A model in memory, or a checkpoint file to read."""


def load_model(source: ModelSource, device: torch.device | str | None = None) -> TrainedModel:
    """``source`` as a model: as it is, or read from its checkpoint onto ``device``.

    ``device`` defaults to the best one here (``resolve_device("auto")``).

    Raises
    ------
    CheckpointError
        The file is missing, damaged or not a napari-bloodcells model (a ``.pt``
        file, or a bioimage.io package this plugin exported).
    """
    if isinstance(source, TrainedModel):
        return source
    if is_package(source):
        return load_package(source, device=device or resolve_device("auto"))
    return load_checkpoint(source, device=device or resolve_device("auto"))
