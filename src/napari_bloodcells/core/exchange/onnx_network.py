"""Running a package's ONNX weights with ONNX Runtime, through the plugin's own inference.

:class:`OnnxNetwork` stands in for the PyTorch network of a
:class:`~napari_bloodcells.core.model.trained.TrainedModel`: the same tiling,
blending, scaling and arg-max of :mod:`~napari_bloodcells.core.inference.tiled` then run
on ONNX Runtime. It checks that an exported package segments as the plugin
does, and lets a CPU without a fast PyTorch path try ONNX Runtime.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from napari_bloodcells.core.exchange.package import package_weights
from napari_bloodcells.core.model.checkpoint import model_from_record
from napari_bloodcells.errors import CheckpointError, ConfigError

if TYPE_CHECKING:
    from napari_bloodcells.core.model.trained import TrainedModel

RUNTIME_HINT = (
    "running ONNX weights needs the bioimageio extra; install it with "
    "pip install 'napari-bloodcells[bioimageio]'."
)


class OnnxNetwork(nn.Module):
    """A ``(N, 3, H, W)`` float batch to logits, computed by an ONNX Runtime session.

    Parameters
    ----------
    model_bytes : bytes
        The ONNX model.
    threads : int, optional
        Intra-op threads (ONNX Runtime's default: one per core).
    """

    def __init__(self, model_bytes: bytes, threads: int | None = None) -> None:
        super().__init__()
        try:
            import onnxruntime
        except ImportError as exc:
            raise ConfigError(f"The package onnxruntime is missing: {RUNTIME_HINT}") from exc
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(
            model_bytes, options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``x`` (any float dtype; computed in float32 on the CPU)."""
        batch = x.detach().to("cpu", torch.float32).contiguous().numpy()
        (logits,) = self.session.run(None, {self.input_name: batch})
        return torch.from_numpy(np.asarray(logits)).to(x.device)


def load_onnx_model(path: str | Path, threads: int | None = None) -> TrainedModel:
    """The package at ``path`` with its ONNX weights in place of the PyTorch network.

    Raises
    ------
    CheckpointError
        If the package is not one this plugin exported, or has no ONNX weights.
    """
    name = Path(path).name
    record, data = package_weights(
        path,
        "onnx",
        f"The package {name} has no ONNX weights; export it again with the onnx format.",
    )
    try:
        model = model_from_record(record)  # the PyTorch network is not needed
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"The package {name} is incomplete or damaged ({type(exc).__name__}); export the "
            "model again."
        ) from exc
    return replace(model, network=OnnxNetwork(data, threads))
