"""The cell-type model's value type: a small CNN that types one white cell from its crop.

Its input is a cell's crop (:mod:`~napari_bloodcells.core.measure.cell_crops`): the RGB
image around the cell plus the cell's own cytoplasm and nucleus masks, resized to a
square of ``side`` pixels. The crop is sized to the cell, so the type does not depend on
the microscope's magnification. Measured against a head on the segmentation encoder in
``benchmarks/differential.py`` (docs/benchmarks.md).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_bloodcells.core.base.cell_types import adaptation_weight

INPUT_CHANNELS = 5
"""Red, green, blue, the cell's cytoplasm, the cell's nucleus."""
SIDE = 64
"""Crop side in pixels."""
MARGIN = 1.3
"""Crop side as a multiple of the cell's larger bounding-box side: some surroundings."""
WIDTH = 32


def type_network(num_types: int, width: int = WIDTH) -> nn.Sequential:
    """Four convolution blocks, global average pooling and a linear layer (~0.3 M weights)."""

    def block(cin: int, cout: int, pool: bool) -> list[nn.Module]:
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, 3, padding=1),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
        ]
        return [*layers, nn.MaxPool2d(2)] if pool else layers

    return nn.Sequential(
        *block(INPUT_CHANNELS, width, True),
        *block(width, 2 * width, True),
        *block(2 * width, 4 * width, True),
        *block(4 * width, 4 * width, False),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(4 * width, num_types),
    )


@dataclass
class TypeModel:
    """A trained cell-type network and the types it tells apart.

    Attributes
    ----------
    network : torch.nn.Module
        :func:`type_network`, in evaluation mode.
    types : tuple of str
        The type of each output, in order.
    side, margin : int, float
        How crops are cut (:data:`SIDE`, :data:`MARGIN`).
    metrics : dict
        How it was trained and scored, as plain types.
    """

    network: nn.Module
    types: tuple[str, ...]
    side: int = SIDE
    margin: float = MARGIN
    metrics: dict[str, Any] = field(default_factory=dict)

    def probabilities(self, crops: np.ndarray, batch: int = 64) -> np.ndarray:
        """``(N, len(types))`` probabilities of ``(N, 5, side, side)`` crops.

        The four right-angle turns of each crop are averaged: a cell has no up.
        """
        network = self.network.eval()
        out = np.zeros((len(crops), len(self.types)), np.float32)
        with torch.inference_mode():
            for start in range(0, len(crops), batch):
                x = torch.from_numpy(np.ascontiguousarray(crops[start : start + batch]))
                p = sum(network(torch.rot90(x, k, (2, 3))).float().softmax(1) for k in range(4))
                out[start : start + batch] = (p / 4).numpy()
        return out

    @property
    def fine_tuned(self) -> bool:
        """Its types were fine-tuned on a user's corrections (and that was kept)."""
        return "finetune_accuracy" in self.metrics

    def for_cells(self, crops: np.ndarray) -> TypeModel:
        """The model that types ``crops``, all of one run, through their statistics.

        From :data:`ADAPT_MIN_CELLS` cells on, the batch-norm statistics are those
        of ``crops`` (:meth:`adapted`); with fewer, they move ``len(crops) /
        ADAPT_MIN_CELLS`` of the way there from the model's own, as Schneider et
        al. (NeurIPS 2020) weigh a few test images against the training
        statistics: a few cells are a noisy estimate, none is no estimate.

        A fine-tuned model is adapted too: its last layer learned the user's cells under
        their own microscope's statistics (``fit_types``), which the model carries and
        which more cells of that microscope estimate better.
        """
        if not len(crops):
            return self
        return self.adapted(crops, weight=adaptation_weight(len(crops)))

    def adapted(self, crops: np.ndarray, most: int = 256, weight: float = 1.0) -> TypeModel:
        """A copy whose batch-norm statistics are those of ``crops`` (AdaBN).

        Another microscope's stain shifts what the convolutions see; the statistics of
        its own cells, with no label needed, undo much of that shift. Of more than
        ``most`` crops, ``most`` evenly spaced ones are used (memory stays bounded).
        With ``weight`` below 1, the statistics are that share of the way from the
        model's own to those of ``crops``.
        """
        if len(crops) > most:
            crops = crops[np.linspace(0, len(crops) - 1, most).round().astype(int)]
        network = copy.deepcopy(self.network)
        norms = [m for m in network.modules() if isinstance(m, nn.BatchNorm2d)]
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # a plain mean over the batches
        network.train()
        x = torch.from_numpy(np.ascontiguousarray(crops))
        with torch.no_grad():  # one batch per turn: each weighs the same in the mean
            for turns in range(4):
                network(torch.rot90(x, turns, (2, 3)))
            own = [m for m in self.network.modules() if isinstance(m, nn.BatchNorm2d)]
            for norm, before in zip(norms, own, strict=True):
                for name in ("running_mean", "running_var"):
                    getattr(norm, name).lerp_(getattr(before, name), 1.0 - weight)
        network.eval()
        metrics = {**self.metrics, "adapted_to_cells": len(crops), "adapted_weight": weight}
        return TypeModel(network, self.types, self.side, self.margin, metrics)

    def to_dict(self) -> dict[str, Any]:
        """Everything but the weights, as plain types."""
        return {
            "types": list(self.types),
            "side": self.side,
            "margin": self.margin,
            "width": WIDTH,
            "metrics": self.metrics,
        }

    @classmethod
    def from_dict(
        cls, record: dict[str, Any], state_dict: dict[str, torch.Tensor] | None
    ) -> TypeModel:
        """Inverse of :meth:`to_dict`; loads ``state_dict`` into a new network if given."""
        types = tuple(str(t) for t in record["types"])
        network = type_network(len(types), int(record.get("width", WIDTH)))
        if state_dict is not None:
            network.load_state_dict(state_dict)
        return cls(
            network.eval(),
            types,
            int(record.get("side", SIDE)),
            float(record.get("margin", MARGIN)),
            dict(record.get("metrics") or {}),
        )
