"""Class-area calibration: a biased boundary is found, folded into the network, and kept."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_bloodcells.core.base.classes import BLOODCELL_CLASSES, IGNORE_INDEX
from napari_bloodcells.core.data.dataset import SegmentationData
from napari_bloodcells.core.inference.tiled import segment_image
from napari_bloodcells.core.model.networks import ModelSpec
from napari_bloodcells.core.model.preprocessing import Preprocessing
from napari_bloodcells.core.model.trained import TrainedModel
from napari_bloodcells.core.training.calibrate import add_to_head, fit_class_offsets, output_layer


class Brightness(torch.nn.Module):
    """Dark pixels are class 0, bright ones class 2, those between class 1: by a 1x1 conv."""

    def __init__(self, class_1_bias: float) -> None:
        super().__init__()
        self.head = torch.nn.Conv2d(3, 3, kernel_size=1)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([-6.0, 0.0, 6.0])[:, None, None, None] / 3)
            self.head.bias.copy_(torch.tensor([2.0, class_1_bias, -4.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


def _model(class_1_bias: float) -> TrainedModel:
    prep = Preprocessing("native", 64, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    return TrainedModel(Brightness(class_1_bias), ModelSpec(), BLOODCELL_CLASSES, prep)


def _pairs(count: int = 6, side: int = 64) -> SegmentationData:
    rng = np.random.default_rng(0)
    images, masks = [], []
    for _ in range(count):
        value = rng.random((side, side))
        images.append(np.repeat((value * 255).astype(np.uint8)[..., None], 3, axis=2))
        level = images[-1][..., 0] / 255.0
        masks.append(np.where(level < 1 / 3, 0, np.where(level > 2 / 3, 2, 1)).astype(np.uint8))
    return SegmentationData(images, masks)


def _agreement(model: TrainedModel, data: SegmentationData) -> float:
    return float(
        np.mean(
            [
                (segment_image(model, im)[0] == m).mean()
                for im, m in zip(data.images, data.masks, strict=True)
            ]
        )
    )


def test_a_class_drawn_too_wide_is_narrowed_until_its_area_matches_the_labels():
    data = _pairs()
    model = _model(class_1_bias=1.0)  # class 1 spreads into both neighbours
    before = _agreement(model, data)
    offsets = fit_class_offsets(model, data, torch.Generator().manual_seed(0))
    assert offsets[0] == 0.0
    assert offsets[1] == pytest.approx(-1.0, abs=0.1)
    assert add_to_head(model.network, offsets)
    after = _agreement(model, data)
    assert before < 0.9 < 0.98 < after


def test_an_unbiased_model_is_left_almost_as_it_is():
    offsets = fit_class_offsets(_model(0.0), _pairs(), torch.Generator().manual_seed(0))
    assert max(abs(o) for o in offsets) < 0.1


def test_nothing_to_match_gives_zero_offsets():
    data = _pairs()
    only_background = SegmentationData(data.images, [np.zeros_like(m) for m in data.masks])
    assert fit_class_offsets(_model(1.0), only_background, torch.Generator()) == (0.0,) * 3


def test_unlabelled_pixels_are_not_counted():
    data = _pairs()
    # Hiding a random half of each mask changes no area ratio: the fit stays the same.
    rng = np.random.default_rng(1)
    hidden = [
        np.where(rng.random(m.shape) < 0.5, IGNORE_INDEX, m).astype(np.uint8) for m in data.masks
    ]
    offsets = fit_class_offsets(
        _model(1.0), SegmentationData(data.images, hidden), torch.Generator().manual_seed(0)
    )
    assert offsets[1] == pytest.approx(-1.0, abs=0.15)


def test_the_output_layer_of_an_smp_unet_is_its_segmentation_head():
    from napari_bloodcells.core.model.networks import build_model

    network = build_model(ModelSpec())
    layer = output_layer(network)
    assert layer is network.segmentation_head[0]
    before = layer.bias.detach().clone()
    assert add_to_head(network, (0.0, -0.5, 0.25))
    assert torch.allclose(layer.bias - before, torch.tensor([0.0, -0.5, 0.25]))
    assert not add_to_head(torch.nn.Linear(3, 3), (0.0, 1.0, 0.0))
