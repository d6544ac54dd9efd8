"""Augmentation: the smear paste puts red cells and platelets into the background only."""

from __future__ import annotations

import torch

from napari_bloodcells.core.base.classes import IGNORE_INDEX
from napari_bloodcells.core.training.augment import (
    Augmentation,
    augment_batch,
    colour_jitter,
    paste_smear,
)


def batch(n: int = 6, size: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    """Pale-yellow patches with a white cell (cytoplasm ring, nucleus) in the middle."""
    images = torch.empty(n, 3, size, size)
    images[:] = torch.tensor([0.98, 0.95, 0.70]).view(1, 3, 1, 1)
    masks = torch.zeros(n, size, size, dtype=torch.uint8)
    c = size // 2
    masks[:, c - 20 : c + 20, c - 20 : c + 20] = 1
    masks[:, c - 8 : c + 8, c - 8 : c + 8] = 2
    masks[:, :, -6:] = IGNORE_INDEX  # padding
    return images, masks


def test_the_smear_paints_the_background_and_moves_some_white_cells_aside():
    images, masks = batch(n=48)
    painted, new_masks = paste_smear(images, masks, torch.Generator().manual_seed(0), chance=1.0)
    moved = new_masks.ne(masks).flatten(1).any(1)
    assert 0 < int(moved.sum()) < 24, "some white cells are moved aside, most stay"
    assert torch.equal(new_masks[~moved], masks[~moved])
    cell = (new_masks == 1) | (new_masks == 2)
    was_cell = (masks == 1) | (masks == 2)
    assert bool((cell.flatten(1).sum(1) <= was_cell.flatten(1).sum(1)).all()), "moved, maybe cut"
    assert int(cell[moved].sum()) < int(was_cell[moved].sum()), "some move past the edge"
    # Every white-cell pixel, moved or not, keeps its colour: nothing is painted over it.
    colour = images[0, :, 0, 0]
    assert torch.equal(painted.permute(0, 2, 3, 1)[cell], colour.expand(int(cell.sum()), 3))
    changed = (painted - images).abs().amax(1) > 0.05
    assert changed[new_masks == 0].float().mean() > 0.05, "red cells cover some background"
    # Red cells are redder than the background is: red stays, green and blue drop.
    drop = (images - painted).clamp(min=0)[:, 1:].sum() / (images - painted).abs().sum()
    assert drop > 0.6
    assert float(painted.min()) >= 0 and float(painted.max()) <= 1


def test_the_smear_is_seeded_and_off_at_chance_zero():
    images, masks = batch()
    a = paste_smear(images, masks, torch.Generator().manual_seed(3), chance=0.7)
    b = paste_smear(images, masks, torch.Generator().manual_seed(3), chance=0.7)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    off = paste_smear(images, masks, torch.Generator(), chance=0.0)
    assert torch.equal(off[0], images) and torch.equal(off[1], masks)


def test_augment_batch_pastes_when_asked():
    images, masks = batch()
    parts = Augmentation(smear=1.0)
    out, out_masks = augment_batch(images, masks, torch.Generator().manual_seed(1), parts)
    plain, _ = augment_batch(images, masks, torch.Generator().manual_seed(1))
    assert not torch.allclose(out, plain)
    assert set(out_masks.unique().tolist()) <= {0, 1, 2, IGNORE_INDEX}


def test_the_stain_intensity_pales_or_darkens_the_cells_and_keeps_white_white():
    images, masks = batch(n=32)
    images[:, :, masks[0] == 2] = torch.tensor([0.35, 0.2, 0.5]).view(1, 3, 1)  # a nucleus
    images[:, :, :4, :4] = 1.0  # empty glass
    still = {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "stain": 0.0}
    out = colour_jitter(images.clone(), torch.Generator().manual_seed(2), intensity=0.4, **still)
    # Every optical density of an image is scaled by one factor in [0.6, 1.4].
    density = -torch.log(images.clamp(min=1 / 255))
    scaled = -torch.log(out.clamp(min=1 / 255))
    nucleus = masks[0] == 2
    ratio = scaled[:, :, nucleus].mean((1, 2)) / density[:, :, nucleus].mean((1, 2))
    assert float(ratio.min()) < 0.8 and float(ratio.max()) > 1.2, "paler and darker stains"
    assert float(ratio.min()) >= 0.6 - 1e-4 and float(ratio.max()) <= 1.4 + 1e-4
    torch.testing.assert_close(scaled, density * ratio.view(-1, 1, 1, 1), atol=2e-3, rtol=1e-3)
    assert torch.equal(out[:, :, :4, :4], images[:, :, :4, :4])
    plain = colour_jitter(images.clone(), torch.Generator().manual_seed(2), **still)
    torch.testing.assert_close(plain, images)  # the other parts off: nothing moves
