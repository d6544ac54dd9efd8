"""Turn :class:`SegmentationData` into fixed-size tensors for training and evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from napari_bloodcells.core.base.classes import IGNORE_INDEX
from napari_bloodcells.core.base.imaging import pad_to
from napari_bloodcells.core.model.preprocessing import (
    Preprocessing,
    array_to_tensor,
    image_to_tensor,
)

if TYPE_CHECKING:
    from napari_bloodcells.core.data.dataset import SegmentationData


@dataclass
class TensorSet:
    """Images and masks as tensors of one size: ``(N, 3, S, S) uint8`` and ``(N, S, S) uint8``.

    ``valid`` gives each item's unpadded (height, width), for previews.
    """

    images: torch.Tensor
    masks: torch.Tensor
    valid: list[tuple[int, int]]

    def __len__(self) -> int:
        return self.images.shape[0]


def to_tensor_set(data: SegmentationData, prep: Preprocessing) -> TensorSet:
    """Resize (notebook) or pad/centre-crop (native) every pair to ``prep.size``.

    In native mode pairs larger than the patch are kept whole in
    :func:`native_items` for random cropping; this function is used for
    same-size data (the blood-cell images, dev sets).
    """
    size = prep.size
    if len(data) == 0:
        empty = torch.empty(0, 3, size, size, dtype=torch.uint8)
        return TensorSet(empty, torch.empty(0, size, size, dtype=torch.uint8), [])
    images, masks, valid = [], [], []
    for image, mask in zip(data.images, data.masks, strict=False):
        if prep.mode == "resize":
            image = np.asarray(
                Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR)
            )
            mask = np.asarray(Image.fromarray(mask).resize((size, size), Image.Resampling.NEAREST))
            valid.append((size, size))
        else:
            height, width = mask.shape
            valid.append((min(height, size), min(width, size)))
            image, mask = pad_to(image, size, size), pad_to(mask, size, size, IGNORE_INDEX)
            image, mask = image[:size, :size], mask[:size, :size]
        images.append(image_to_tensor(image))
        masks.append(array_to_tensor(mask))
    return TensorSet(torch.stack(images), torch.stack(masks), valid)


class PatchSampler:
    """Serves ``size x size`` training patches from pairs of any size.

    Pairs no larger than the patch are padded once up front; larger ones are
    cropped at a random position each time they are drawn, so big napari
    images contribute all of their area over the epochs.
    """

    def __init__(self, data: SegmentationData, prep: Preprocessing) -> None:
        self.size = prep.size
        self.resize = prep.mode == "resize"
        fits = [
            self.resize or (m.shape[0] <= self.size and m.shape[1] <= self.size) for m in data.masks
        ]
        self.small = to_tensor_set(data.subset([i for i, f in enumerate(fits) if f]), prep)
        self.large = [
            (image_to_tensor(data.images[i]), array_to_tensor(data.masks[i]))
            for i, f in enumerate(fits)
            if not f
        ]
        # Position of each item of `data` in `small` (>= 0) or `large` (-1 - k).
        self.where: list[int] = []
        s = la = 0
        for f in fits:
            self.where.append(s if f else -1 - la)
            s, la = (s + 1, la) if f else (s, la + 1)

    def __len__(self) -> int:
        return len(self.where)

    def batch(
        self, indices: list[int], generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Patches for ``indices``: ``(B, 3, S, S) uint8`` and ``(B, S, S) uint8``."""
        positions = [self.where[i] for i in indices]
        if all(p >= 0 for p in positions):
            return self.small.images[positions], self.small.masks[positions]
        images, masks = [], []
        for p in positions:
            if p >= 0:
                images.append(self.small.images[p])
                masks.append(self.small.masks[p])
                continue
            image, mask = self.large[-1 - p]
            image, mask = self._random_crop(image, mask, generator)
            images.append(image)
            masks.append(mask)
        return torch.stack(images), torch.stack(masks)

    def _random_crop(
        self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.size
        height, width = mask.shape
        if height < s or width < s:
            image = image_to_tensor(pad_to(image.permute(1, 2, 0).numpy(), s, s))
            mask = torch.from_numpy(pad_to(mask.numpy(), s, s, IGNORE_INDEX))
            height, width = mask.shape
        y = int(torch.randint(0, height - s + 1, (1,), generator=generator))
        x = int(torch.randint(0, width - s + 1, (1,), generator=generator))
        return image[:, y : y + s, x : x + s], mask[y : y + s, x : x + s]
