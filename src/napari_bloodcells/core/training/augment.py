"""Batched, seeded augmentation on tensors: geometry, zoom, smear, stain, colour, blur.

A model trained on one microscope meets other stains and magnifications. The
colour parts make it rely less on the exact stain (:func:`colour_jitter`, a
change of colour basis in optical density, hue, grayscale) and :func:`zoom`
less on the exact pixel size. :func:`paste_smear` shows it what a whole smear
field holds besides white cells: red cells, in clumps, with pale centres, and
platelets, all labelled background. Which parts help was measured
(``docs/benchmarks.md``, "Robustness to stain and magnification"); their
strengths are :class:`Augmentation`'s fields, recorded with every model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from napari_bloodcells.core.base.classes import IGNORE_INDEX


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
    smear : float
        Probability of an image getting red cells and platelets pasted into
        its background (:func:`paste_smear`).
    intensity : float
        Largest change of the stain's strength: the optical densities are scaled by
        a factor in ``[1 - intensity, 1 + intensity]``, a paler or a darker stain.
    """

    stain: float = 0.0
    hue: float = 0.0
    grayscale: float = 0.0
    blur: float = 0.0
    zoom: float = 1.0
    smear: float = 0.0
    intensity: float = 0.0


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
    if parts.smear > 0:  # before the colour parts, which then restain the pasted cells too
        images, masks = paste_smear(images, masks, generator, parts.smear)
    images = colour_jitter(
        images, generator, stain_basis=parts.stain, hue=parts.hue, intensity=parts.intensity
    )
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


_RED_CELLS = 16
"""Red cells pasted into an image at most, in three clumps."""
_PLATELETS = 4
_SHIFTED_SHARE = 0.25
"""Share of the painted images whose white cell is moved aside (:func:`_shift_aside`)."""
_SHIFT = 0.75
"""Largest move of the white cell, as a share of the patch's side, along each axis."""
_RED_CELL_COLOURS = torch.tensor(
    [[0.87, 0.60, 0.62], [0.78, 0.52, 0.55], [0.70, 0.45, 0.52], [0.80, 0.47, 0.40]]
)
"""Pale pink to mauve and brownish red, as Wright-Giemsa, May-Grunwald and Leishman smears
show red cells (measured by eye on BCCD and Dataset 1 fields)."""
_PLATELET_COLOUR = torch.tensor([0.55, 0.40, 0.66])


def _paint_smear(
    images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Paint red cells and platelets into every image's background (see :func:`paste_smear`)."""
    n, _, h, w = images.shape
    side = float(min(h, w))
    k, m = _RED_CELLS, _PLATELETS

    def draw(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator)

    clumps = draw(n, 3, 2) * torch.tensor([h, w])
    radius = side * (0.11 + 0.11 * draw(n, k))
    which = torch.randint(0, 3, (n, k), generator=generator)
    offset = torch.randn(n, k, 2, generator=generator) * radius[..., None] * 1.2
    centres = clumps[torch.arange(n)[:, None], which] + offset
    crowded = 0.3 + 0.7 * draw(n, 1)  # from a few red cells to a packed field
    present = draw(n, k) < crowded
    opacity = (0.65 + 0.35 * draw(n, k)) * present
    pallor = 0.6 * draw(n, k) * (draw(n, k) < 0.5)  # half of them solid
    stretch = 1 + 0.45 * draw(n, k)  # ovals, up to 1.45 times as long as wide
    angle = math.pi * draw(n, k)
    dots = draw(n, m, 2) * torch.tensor([h, w])
    dot_radius = side * (0.015 + 0.02 * draw(n, m))
    dot_opacity = (0.5 + 0.4 * draw(n, m)) * (draw(n, m) < 0.5)
    mix = draw(n, len(_RED_CELL_COLOURS)) ** 3  # mostly one colour per field
    colour = (mix / mix.sum(1, keepdim=True)) @ _RED_CELL_COLOURS
    colour = colour * (0.85 + 0.2 * draw(n, 1))

    device, dtype = images.device, images.dtype
    # Coverage is smooth, so it is computed on a grid of half the resolution and
    # interpolated: a quarter of the work.
    gh, gw = max(1, h // 2), max(1, w // 2)
    yy = torch.linspace(0, h - 1, gh, device=device, dtype=dtype).view(1, 1, gh, 1)
    xx = torch.linspace(0, w - 1, gw, device=device, dtype=dtype).view(1, 1, 1, gw)

    def on(t: torch.Tensor) -> torch.Tensor:
        return t.to(device, dtype)[..., None, None]

    def distance(
        centre: torch.Tensor, r: torch.Tensor, long: torch.Tensor, turn: torch.Tensor
    ) -> torch.Tensor:
        """Distance from each centre in radii, along an oval ``long`` times longer one way."""
        dy, dx = yy - on(centre[..., 0]), xx - on(centre[..., 1])
        cos, sin = on(torch.cos(turn)), on(torch.sin(turn))
        along, across = dx * cos + dy * sin, dy * cos - dx * sin
        return torch.sqrt((along / on(long)) ** 2 + across**2) / on(r)

    d = distance(centres, radius, stretch, angle)  # (n, k, gh, gw)
    body = torch.sigmoid((1 - d) * 12)
    rim = 1 + 0.35 * torch.exp(-(((d - 0.85) / 0.15) ** 2))  # denser at the edge
    centre_pale = 1 - on(pallor) * torch.exp(-((d / 0.5) ** 2))
    alpha = (on(opacity) * body * rim * centre_pale).clamp(max=1)
    cover = [1 - torch.prod(1 - alpha, dim=1)]  # overlapping cells darken, as clumps do
    d = distance(dots, dot_radius, torch.ones(n, m), torch.zeros(n, m))
    cover.append(1 - torch.prod(1 - on(dot_opacity) * torch.sigmoid((1 - d) * 6), dim=1))
    both = F.interpolate(torch.stack(cover, 1), size=(h, w), mode="bilinear", align_corners=True)
    cells, platelets = both[:, 0], both[:, 1]
    # Unlabelled pixels (padding) are painted too: the loss ignores them, and a cell cut
    # straight at the padding's edge would teach an artefact.
    background = ((masks == 0) | (masks == IGNORE_INDEX)).to(dtype)
    cells, platelets = (cells * background)[:, None], (platelets * background)[:, None]
    painted = images * (1 - cells) + colour.to(device, dtype)[..., None, None] * cells
    purple = _PLATELET_COLOUR.to(device, dtype).view(1, 3, 1, 1)
    return painted * (1 - platelets) + purple * platelets


def paste_smear(
    images: torch.Tensor,
    masks: torch.Tensor,
    generator: torch.Generator,
    chance: float,
    *,
    move_aside: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paint red cells and platelets into the background of a share of the images.

    A whole smear field has many red cells, often overlapping in clumps, and
    platelets: small purple dots. Red cells are discs or ovals, denser at the
    rim, some with a pale centre and some solid. A model that only saw white
    cells on a clear background paints them as cells. Each image is chosen with
    probability ``chance``; it gets up to :data:`_RED_CELLS` ovals around three
    clump centres (radius 11-22 % of the patch, as red cells are about 0.6 of a
    white cell's diameter), and up to :data:`_PLATELETS` dots. They are painted
    only where the mask says background (or not labelled), so the white cell
    stays on top and the labels do not change: everything pasted is background.
    A quarter of the chosen images first have their white cell moved aside
    (:func:`_shift_aside`), so red cells also lie far from it and sometimes
    fill the whole patch, as in most crops of a real field. Without that every
    patch holds a white cell in its middle, and a lone clump of red cells is
    taken for one. Whole patches emptied of their white cell instead (a tenth
    of them) taught a resnet18 network to call a whole field of another
    microscope background, white cells included (docs/benchmarks.md).

    Parameters
    ----------
    images : Tensor
        ``(N, 3, H, W)`` float in 0..1.
    masks : Tensor
        ``(N, H, W)`` class indices (0 is background).
    generator : torch.Generator
        Source of randomness, for reproducible runs.
    chance : float
        Probability of an image being painted.
    move_aside : bool
        Whether a quarter of the painted images have their white cell moved aside
        (not for a crop that is the cell's own).

    Returns
    -------
    tuple of Tensor
        The images, painted where chosen, and the masks (moved with the
        images whose white cell was moved aside).
    """
    draws = torch.rand(images.shape[0], 2, generator=generator)
    chosen = (draws[:, 0] < chance).nonzero()[:, 0]
    if len(chosen) == 0:
        return images, masks
    # Only the chosen images are drawn on: the per-pixel work is a few ms per image.
    on_device = chosen.to(images.device)
    part, part_masks = images[on_device], masks[on_device]
    moved = (draws[chosen, 1] < _SHIFTED_SHARE * move_aside).nonzero()[:, 0].to(images.device)
    if len(moved):
        part[moved], part_masks[moved] = _shift_aside(part[moved], part_masks[moved], generator)
    painted = _paint_smear(part, part_masks, generator)
    return (
        images.index_copy(0, on_device, painted),
        masks.index_copy(0, on_device, part_masks),
    )


def _shift_aside(
    images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each image by up to :data:`_SHIFT` of its side, filling with its background.

    What comes into view is the image's own background colour, labelled
    background, which the red cells painted afterwards then cover: a crop of
    a real field, where red cells lie beside a white cell that may be cut by
    the edge. The same patch then holds a white cell and red cells far from
    it, so whether a blob is a cell has to be decided where it is, not from
    the patch as a whole.
    """
    n, _, h, w = images.shape
    background = (masks == 0)[:, None].to(images.dtype)
    seen = background.sum((2, 3)).clamp(min=1)
    plain = (images * background).sum((2, 3)) / seen  # each image's own background colour
    # An image that shows no background at all gives its overall mean instead.
    plain = torch.where(seen > 1, plain, images.mean((2, 3)))
    grain = 0.02 * torch.randn(images.shape, generator=generator).to(images.device, images.dtype)
    out = (plain[..., None, None] + grain).clamp(0, 1)
    out_masks = torch.zeros_like(masks)
    moves = (torch.rand(n, 2, generator=generator) * 2 - 1) * _SHIFT * torch.tensor([h, w])
    for i, (dy, dx) in enumerate(moves.round().long().tolist()):
        into = (slice(max(dy, 0), h + min(dy, 0)), slice(max(dx, 0), w + min(dx, 0)))
        take = (slice(max(-dy, 0), h - max(dy, 0)), slice(max(-dx, 0), w - max(dx, 0)))
        out[i, :, into[0], into[1]] = images[i, :, take[0], take[1]]
        out_masks[i, into[0], into[1]] = masks[i, take[0], take[1]]
    return out, out_masks


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
    intensity: float = 0.0,
) -> torch.Tensor:
    """Per-image brightness, contrast, saturation and channel gains; optionally basis and hue.

    Staining varies between slides and labs. Small per-channel gains mimic the
    same stain applied a little differently; ``intensity`` scales all optical
    densities at once, a paler or darker stain (the background, near white,
    barely changes); ``stain_basis`` mixes the optical densities of the three
    channels, which is what a different stain or camera does to the colours;
    ``hue`` rotates colours around the grey axis.
    """
    n = images.shape[0]

    device = images.device

    def factor(amount: float, *shape: int) -> torch.Tensor:
        return (1.0 + (torch.rand(n, *shape, generator=generator) * 2 - 1) * amount).to(device)

    if intensity > 0:
        images = torch.exp(torch.log(images.clamp(min=1 / 255)) * factor(intensity, 1, 1, 1))
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
