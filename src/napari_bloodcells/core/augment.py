"""Batched, seeded augmentation on tensors: geometry, zoom, stain, colour, blur.

A model trained on one microscope meets other stains and magnifications. The
colour parts make it rely less on the exact stain (:func:`colour_jitter`, a
change of colour basis in optical density, hue, grayscale) and :func:`zoom`
less on the exact pixel size. Which parts help was measured
(``docs/benchmarks.md``, "Robustness to stain and magnification"); their
strengths are :class:`Augmentation`'s fields, recorded with every model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from napari_bloodcells.core.classes import IGNORE_INDEX


@dataclass(frozen=True)
class Augmentation:
    """How strongly each part perturbs a batch (0 turns a part off).

    Attributes
    ----------
    stain : float
        Spread of the random 3x3 mixing of the optical densities: another
        colour basis, as another stain or scanner gives.
    hue : float
        Largest hue rotation, in turns.
    grayscale : float
        Probability of an image losing its colour.
    blur : float
        Probability of a Gaussian blur (sigma up to 1.5 px): another focus or optics.
    zoom : float
        Largest zoom of a batch, as a factor (1.4: from 1/1.4 to 1.4 times).
    """

    stain: float = 0.0
    hue: float = 0.0
    grayscale: float = 0.0
    blur: float = 0.0
    zoom: float = 1.0


def augment_batch(
    images: torch.Tensor,
    masks: torch.Tensor,
    generator: torch.Generator,
    parts: Augmentation | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Randomly flip, rotate by multiples of 90 degrees, zoom and colour-jitter a batch.

    Parameters
    ----------
    images : Tensor
        ``(N, 3, H, W)`` float in 0..1, with ``H == W``.
    masks : Tensor
        ``(N, H, W)`` class indices.
    generator : torch.Generator
        Source of randomness, for reproducible runs.
    parts : Augmentation, optional
        Strengths of the stain, hue, grayscale, blur and zoom parts; by default
        only the brightness, contrast, saturation and channel-gain jitter.

    Returns
    -------
    tuple of Tensor
        Augmented images (still 0..1) and masks.
    """
    parts = parts or Augmentation()
    n = images.shape[0]
    # Draws come from the CPU generator whatever the device, so a seed means the same
    # run everywhere; the batch is then transformed as a whole, a few kernels per step.
    draws = torch.rand(n, 3, generator=generator).to(images.device)
    turns = torch.randint(0, 4, (n,), generator=generator).to(images.device)
    images, masks = _where(draws[:, 0] < 0.5, images.flip(-1), images, masks.flip(-1), masks)
    images, masks = _where(draws[:, 1] < 0.5, images.flip(-2), images, masks.flip(-2), masks)
    turned_images, turned_masks = images, masks
    for k in (1, 2, 3):
        turned_images, turned_masks = _where(
            turns == k,
            torch.rot90(images, k, dims=(-2, -1)),
            turned_images,
            torch.rot90(masks, k, dims=(-2, -1)),
            turned_masks,
        )
    images, masks = turned_images, turned_masks
    if parts.zoom > 1.0:
        images, masks = zoom(images, masks, generator, parts.zoom)
    images = colour_jitter(images, generator, stain_basis=parts.stain, hue=parts.hue)
    if parts.grayscale > 0:
        images = _grayscale(images, generator, parts.grayscale)
    if parts.blur > 0:
        images = _blur(images, generator, parts.blur)
    return images, masks


def _where(
    chosen: torch.Tensor,
    images_if: torch.Tensor,
    images_else: torch.Tensor,
    masks_if: torch.Tensor,
    masks_else: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per item of the batch, the first image and mask where ``chosen``, else the second."""
    return (
        torch.where(chosen.view(-1, 1, 1, 1), images_if, images_else),
        torch.where(chosen.view(-1, 1, 1), masks_if, masks_else),
    )


def zoom(
    images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator, largest: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zoom the whole batch by one log-uniform factor in ``[1/largest, largest]``.

    The result keeps the batch's size: a zoom in is centre-cropped, a zoom out
    is padded with mirrored pixels and unlabelled mask pixels.
    """
    size = images.shape[-1]
    factor = math.exp((float(torch.rand(1, generator=generator)) * 2 - 1) * math.log(largest))
    new = max(8, round(size * factor))
    if new == size:
        return images, masks
    images = F.interpolate(images, size=(new, new), mode="bilinear", align_corners=False)
    masks = F.interpolate(masks[:, None].float(), size=(new, new), mode="nearest")[:, 0]
    masks = masks.to(torch.uint8)
    if new > size:
        top = (new - size) // 2
        return (
            images[..., top : top + size, top : top + size],
            masks[..., top : top + size, top : top + size],
        )
    pad = size - new
    sides = (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2)
    images = F.pad(images, sides, mode="reflect" if new > pad else "replicate")
    masks = F.pad(masks, sides, value=IGNORE_INDEX)
    return images, masks


def colour_jitter(
    images: torch.Tensor,
    generator: torch.Generator,
    brightness: float = 0.15,
    contrast: float = 0.15,
    saturation: float = 0.2,
    stain: float = 0.08,
    stain_basis: float = 0.0,
    hue: float = 0.0,
) -> torch.Tensor:
    """Per-image brightness, contrast, saturation and channel gains; optionally basis and hue.

    Staining varies between slides and labs. Small per-channel gains mimic the
    same stain applied a little differently; ``stain_basis`` mixes the optical
    densities of the three channels, which is what a different stain or camera
    does to the colours; ``hue`` rotates colours around the grey axis.
    """
    n = images.shape[0]

    device = images.device

    def factor(amount: float, *shape: int) -> torch.Tensor:
        return (1.0 + (torch.rand(n, *shape, generator=generator) * 2 - 1) * amount).to(device)

    if stain_basis > 0:
        density = -torch.log(images.clamp(min=1 / 255))
        mixing = torch.eye(3) + (torch.rand(n, 3, 3, generator=generator) * 2 - 1) * stain_basis
        density = torch.einsum("nij,njhw->nihw", mixing.to(device), density).clamp(min=0)
        images = torch.exp(-density)
    b = factor(brightness, 1, 1, 1)
    c = factor(contrast, 1, 1, 1)
    s = factor(saturation, 1, 1, 1)
    g = factor(stain, 3, 1, 1)
    images = images * b * g
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    images = (images - mean) * c + mean
    grey = images.mean(dim=1, keepdim=True)
    images = (images - grey) * s + grey
    if hue > 0:
        angles = (torch.rand(n, generator=generator) * 2 - 1) * hue * 2 * math.pi
        images = torch.einsum("nij,njhw->nihw", _hue_rotations(angles).to(device), images)
    return images.clamp_(0.0, 1.0)


def _hue_rotations(angles: torch.Tensor) -> torch.Tensor:
    """``(N, 3, 3)`` rotations about the grey axis (1, 1, 1) by ``angles`` radians."""
    axis = torch.full((3,), 1 / math.sqrt(3))
    cross = torch.tensor(
        [[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]]
    )
    outer = torch.outer(axis, axis)
    cos, sin = angles.cos()[:, None, None], angles.sin()[:, None, None]
    return cos * torch.eye(3) + sin * cross + (1 - cos) * outer


def _grayscale(images: torch.Tensor, generator: torch.Generator, p: float) -> torch.Tensor:
    chosen = torch.rand(images.shape[0], generator=generator) < p
    if not chosen.any():  # asked of the CPU draws: no device round trip
        return images
    grey = images.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    return torch.where(chosen.to(images.device).view(-1, 1, 1, 1), grey, images)


def _blur(images: torch.Tensor, generator: torch.Generator, p: float) -> torch.Tensor:
    chosen = torch.rand(images.shape[0], generator=generator) < p
    if not chosen.any():
        return images
    chosen = chosen.to(images.device)
    sigma = 0.5 + float(torch.rand(1, generator=generator))
    radius = max(1, math.ceil(2 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    picked = images[chosen]
    c = picked.shape[1]
    picked = F.pad(picked, (radius, radius, radius, radius), mode="replicate")
    picked = F.conv2d(picked, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    picked = F.conv2d(picked, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    images = images.clone()
    images[chosen] = picked
    return images
