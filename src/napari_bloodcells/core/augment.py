"""Batched, seeded augmentation on tensors: geometry and stain/colour jitter."""

from __future__ import annotations

import torch


def augment_batch(
    images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Randomly flip, rotate by multiples of 90 degrees and colour-jitter a batch.

    Parameters
    ----------
    images : Tensor
        ``(N, 3, H, W)`` float in 0..1, with ``H == W``.
    masks : Tensor
        ``(N, H, W)`` class indices.
    generator : torch.Generator
        Source of randomness, for reproducible runs.

    Returns
    -------
    tuple of Tensor
        Augmented images (still 0..1) and masks.
    """
    n = images.shape[0]
    draws = torch.rand(n, 3, generator=generator)
    turns = torch.randint(0, 4, (n,), generator=generator)
    out_images, out_masks = [], []
    for i in range(n):
        image, mask = images[i], masks[i]
        if draws[i, 0] < 0.5:
            image, mask = image.flip(-1), mask.flip(-1)
        if draws[i, 1] < 0.5:
            image, mask = image.flip(-2), mask.flip(-2)
        if turns[i]:
            image = torch.rot90(image, int(turns[i]), dims=(-2, -1))
            mask = torch.rot90(mask, int(turns[i]), dims=(-2, -1))
        out_images.append(image)
        out_masks.append(mask)
    images, masks = torch.stack(out_images), torch.stack(out_masks)
    return colour_jitter(images, generator), masks


def colour_jitter(
    images: torch.Tensor,
    generator: torch.Generator,
    brightness: float = 0.15,
    contrast: float = 0.15,
    saturation: float = 0.2,
    stain: float = 0.08,
) -> torch.Tensor:
    """Per-image brightness, contrast, saturation and per-channel gain ("stain") jitter.

    Staining varies between slides and labs; small per-channel gains mimic
    that better than hue rotation and cost one multiply.
    """
    n = images.shape[0]

    def factor(amount: float, *shape: int) -> torch.Tensor:
        return 1.0 + (torch.rand(n, *shape, generator=generator) * 2 - 1) * amount

    b = factor(brightness, 1, 1, 1)
    c = factor(contrast, 1, 1, 1)
    s = factor(saturation, 1, 1, 1)
    g = factor(stain, 3, 1, 1)
    images = images * b * g
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    images = (images - mean) * c + mean
    grey = images.mean(dim=1, keepdim=True)
    images = (images - grey) * s + grey
    return images.clamp_(0.0, 1.0)
