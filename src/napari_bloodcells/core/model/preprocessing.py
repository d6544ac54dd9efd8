"""How pixels are turned into network input, stored with each model."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """Input geometry and normalisation of a model.

    Attributes
    ----------
    mode : {"native", "resize"}
        ``"native"``: the model sees pixels at their own size; images are
        padded (and large ones tiled). ``"resize"``: every image is resized to
        ``size x size``, as the reference notebook does.
    size : int
        Training patch size (native) or the resize target (resize).
    mean, std : tuple of float
        Per-channel normalisation applied to intensities scaled to 0..1.
    """

    mode: str = "native"
    size: int = 128
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """Map a ``(N, 3, H, W) uint8`` batch to normalised float32."""
        return self.normalize_unit(batch.float() / 255.0)

    def normalize_unit(self, batch: torch.Tensor) -> torch.Tensor:
        """Normalise a ``(N, 3, H, W)`` float batch with intensities in 0..1."""
        mean = torch.tensor(self.mean, device=batch.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=batch.device).view(1, -1, 1, 1)
        return (batch - mean) / std

    def to_dict(self) -> dict[str, Any]:
        """Plain-type representation for checkpoints."""
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        """Inverse of :meth:`to_dict`."""
        return cls(d["mode"], int(d["size"]), tuple(d["mean"]), tuple(d["std"]))


def array_to_tensor(array: np.ndarray) -> torch.Tensor:
    """Share ``array`` with a tensor, copying only if it is not contiguous or read-only."""
    array = np.ascontiguousarray(array)
    if not array.flags.writeable:  # arrays read by PIL are read-only; torch warns on sharing
        array = array.copy()
    return torch.from_numpy(array)


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """``(H, W, 3) uint8`` array to a ``(3, H, W) uint8`` tensor (no copy where possible)."""
    return array_to_tensor(image).permute(2, 0, 1)
