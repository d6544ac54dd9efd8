"""The training objective's per-image class-area term."""

from __future__ import annotations

import pytest
import torch

from napari_bloodcells.core.base.classes import IGNORE_INDEX
from napari_bloodcells.core.training.losses import LOSSES, Objective, area_error


def _cell(radius_cell: int, radius_nucleus: int, size: int = 64, shift: int = 0) -> torch.Tensor:
    """A (1, size, size) mask: a round cell of cytoplasm around a round nucleus."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    r = ((yy - size // 2) ** 2 + (xx - size // 2 - shift) ** 2).float().sqrt()
    mask = torch.zeros(size, size, dtype=torch.long)
    mask[r <= radius_cell] = 1
    mask[r <= radius_nucleus] = 2
    return mask.unsqueeze(0)


def _confident(mask: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Logits that predict ``mask`` with probability 1 (to float precision)."""
    return torch.nn.functional.one_hot(mask.clamp(max=k - 1), k).permute(0, 3, 1, 2).float() * 60


def test_a_prediction_with_the_labelled_areas_has_no_area_error():
    truth = _cell(20, 10)
    assert float(area_error(_confident(truth), truth)) == pytest.approx(0.0, abs=1e-6)
    # The same areas one pixel further right: the overlap losses see it, the area term not.
    moved = _confident(_cell(20, 10, shift=1))
    assert float(area_error(moved, truth)) == pytest.approx(0.0, abs=1e-6)
    assert float(torch.nn.functional.cross_entropy(moved, truth)) > 0.1


def test_a_nucleus_drawn_one_pixel_too_wide_costs_its_relative_area():
    truth = _cell(20, 10)
    wider = _cell(20, 11)
    nucleus, cytoplasm = float((truth == 2).sum()), float((truth == 1).sum())
    grown = float((wider == 2).sum()) - nucleus
    expected = (grown / (nucleus + 100) + grown / (cytoplasm + 100)) / 2
    assert float(area_error(_confident(wider), truth)) == pytest.approx(expected, rel=1e-4)
    # The ratio a haematologist reads moves by far more than the Dice of either class.
    assert float(area_error(_confident(wider), truth)) > 0.1


def test_unlabelled_pixels_count_for_neither_area():
    truth = _cell(20, 10)
    partial = truth.clone()
    partial[:, :, 40:] = IGNORE_INDEX
    prediction = _confident(truth)
    noise = prediction.clone()
    noise[:, :, :, 40:] = torch.randn_like(noise[:, :, :, 40:]) * 10
    assert torch.allclose(area_error(prediction, partial), area_error(noise, partial))


def test_the_area_term_has_a_gradient_that_shrinks_an_overgrown_class():
    truth = _cell(20, 10)
    logits = _confident(_cell(20, 13)).mul(0.05).requires_grad_()
    area_error(logits, truth).backward()
    # Raising the nucleus score where it was painted too wide would grow the error further.
    ring = (_cell(20, 13) == 2) & (truth != 2)
    assert float(logits.grad[0, 2][ring[0]].mean()) > 0


def test_every_named_loss_builds_and_an_unknown_one_is_refused():
    truth = _cell(20, 10)
    logits = torch.randn(1, 3, 64, 64)
    values = {kind: float(Objective(kind)(logits, truth)) for kind in LOSSES}
    assert values["ce"] < values["ce+dice"] < values["ce+dice+area"]
    with pytest.raises(ValueError, match="unknown loss"):
        Objective("dice")
