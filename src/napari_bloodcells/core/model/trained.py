"""TrainedModel: a network with everything needed to apply it, the type every job passes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from napari_bloodcells.core.base.classes import ClassInfo
    from napari_bloodcells.core.model.networks import ModelSpec
    from napari_bloodcells.core.model.preprocessing import Preprocessing
    from napari_bloodcells.core.model.size_model import SizeModel
    from napari_bloodcells.core.model.type_model import TypeModel


@dataclass
class TrainedModel:
    """A network with what is needed to apply it.

    Attributes
    ----------
    network : torch.nn.Module
        The weights, on any device.
    spec : ModelSpec
        How to rebuild ``network``.
    classes : ClassInfo
        Class names and colours.
    preprocessing : Preprocessing
        Input geometry and normalisation.
    config : dict
        The training configuration, as plain types.
    metrics : dict
        Final scores and history, as plain types.
    size_model : SizeModel or None
        Estimates the resize factor of new images
        (:mod:`~napari_bloodcells.core.inference.magnification`).
    type_model : TypeModel or None
        Types each white cell (:mod:`~napari_bloodcells.core.model.type_model`); ``None``
        for a model trained without types.
    """

    network: nn.Module
    spec: ModelSpec
    classes: ClassInfo
    preprocessing: Preprocessing
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    size_model: SizeModel | None = None
    type_model: TypeModel | None = None
