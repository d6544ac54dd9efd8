"""The dev images a run is scored on: in batches when they fit one patch, else tile by tile."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from napari_bloodcells.core.base.metrics import ConfusionMatrix
from napari_bloodcells.core.events import PreviewRow
from napari_bloodcells.core.inference.tiled import segment_image
from napari_bloodcells.core.training.batches import TensorSet, to_tensor_set

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractContextManager

    from napari_bloodcells.core.data.dataset import SegmentationData
    from napari_bloodcells.core.model.trained import TrainedModel
    from napari_bloodcells.core.training.config import TrainConfig
    from napari_bloodcells.core.training.losses import Objective

_DEV_BATCH = 16


def fits_patch(data: SegmentationData, size: int, mode: str) -> bool:
    """Whether every pair fits one training patch (always in resize mode)."""
    return mode == "resize" or all(m.shape[0] <= size and m.shape[1] <= size for m in data.masks)


class DevSet:
    """Dev pairs, evaluated in batches when they fit one patch and tile by tile otherwise."""

    def __init__(self, data: SegmentationData, config: TrainConfig, num_preview: int) -> None:
        prep = config.preprocessing()
        self.data = data
        self.tensors: TensorSet | None = (
            to_tensor_set(data, prep) if fits_patch(data, config.size, config.mode) else None
        )
        self.num_preview = min(num_preview, len(data))

    def evaluate(
        self,
        model: TrainedModel,
        objective: Objective,
        autocast: Callable[[], AbstractContextManager[object]],
        device: torch.device,
    ) -> tuple[float, ConfusionMatrix, tuple[PreviewRow, ...]]:
        """Return (mean loss, confusion matrix, preview rows)."""
        k = model.spec.num_classes
        cm = ConfusionMatrix(k)
        network = model.network
        network.eval()
        previews: list[PreviewRow] = []
        if self.tensors is None:
            for i, (image, mask) in enumerate(zip(self.data.images, self.data.masks, strict=False)):
                pred, _ = segment_image(model, image, device=device)
                cm.update(pred, mask)
                if i < self.num_preview:
                    previews.append(PreviewRow(image, mask, pred))
            return float("nan"), cm, tuple(previews)
        total, count = 0.0, 0
        t = self.tensors
        with torch.inference_mode():
            # A GPU takes the dev set in a few large passes; a CPU's memory wants small ones.
            step = _DEV_BATCH * 4 if device.type == "cuda" else _DEV_BATCH
            for start in range(0, len(t), step):
                images = t.images[start : start + step].to(device)
                masks = t.masks[start : start + step].to(device).long()
                x = model.preprocessing.normalize(images)
                with autocast():
                    logits = network(x)
                logits = logits.float()
                total += float(objective(logits, masks)) * len(images)
                count += len(images)
                # max's indices, not argmax: the same labels, but argmax over the class
                # dimension runs about 15 times slower on a CPU (torch 2.14).
                pred = logits.max(1).indices
                cm.update(pred, masks)
                for j in range(len(images)):
                    i = start + j
                    if i >= self.num_preview:
                        break
                    h, w = t.valid[i]
                    previews.append(
                        PreviewRow(
                            t.images[i, :, :h, :w].permute(1, 2, 0).numpy().copy(),
                            t.masks[i, :h, :w].numpy().copy(),
                            pred[j, :h, :w].to(torch.uint8).cpu().numpy(),
                        )
                    )
        return total / max(count, 1), cm, tuple(previews)
