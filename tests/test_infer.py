"""Inference: tiling, blending, scale and input conversion."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from napari_bloodcells.core.base.classes import BLOODCELL_CLASSES
from napari_bloodcells.core.events import (
    Notice,
    SegmentationFinished,
    SegmentProgress,
    run_to_end,
)
from napari_bloodcells.core.inference.tiled import (
    TileSettings,
    predict_probabilities,
    segment,
    segment_image,
    tile_starts,
)
from napari_bloodcells.core.model.networks import ModelSpec, build_model
from napari_bloodcells.core.model.preprocessing import Preprocessing
from napari_bloodcells.core.model.trained import TrainedModel
from napari_bloodcells.errors import ConfigError, DataError

RADIUS = 2  # receptive-field radius of the shallow model: two 3x3 convolutions


def _shallow_model() -> TrainedModel:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))
    spec = ModelSpec("Unet", "resnet18")  # only input_multiple (32) and num_classes are used
    return TrainedModel(net.eval(), spec, BLOODCELL_CLASSES, Preprocessing())


@pytest.fixture
def image():
    return np.random.default_rng(3).integers(0, 255, (200, 150, 3), dtype=np.uint8)


def test_tile_starts_cover_the_length_with_overlap():
    assert tile_starts(100, 128, 16) == [0]
    starts = tile_starts(300, 128, 32)
    assert starts[0] == 0
    assert starts[-1] == 300 - 128
    assert all(b - a <= 128 - 32 for a, b in itertools.pairwise(starts))


def test_tiled_prediction_equals_whole_image_away_from_seams(image):
    model = _shallow_model()
    tiles = TileSettings(size=64, overlap=16, batch=3)
    whole = predict_probabilities(model, image, tiles=TileSettings(size=256), precision="fp32")
    tiled = predict_probabilities(model, image, tiles=tiles, precision="fp32")
    assert tiled.shape == whole.shape == (3, 200, 150)

    near_seam = np.zeros(image.shape[:2], bool)
    for axis, length in ((0, 200), (1, 150)):
        for start in tile_starts(length, 64, 16):
            for edge in (start, start + 64):
                lo, hi = max(0, edge - RADIUS), min(length, edge + RADIUS)
                index = [slice(None), slice(None)]
                index[axis] = slice(lo, hi)
                near_seam[tuple(index)] = True
    np.testing.assert_allclose(tiled[:, ~near_seam], whole[:, ~near_seam], atol=1e-5)
    assert (~near_seam).mean() > 0.7


def test_tiling_a_unet_agrees_with_the_whole_image(image):
    torch.manual_seed(0)
    spec = ModelSpec("Unet", "resnet18")
    model = TrainedModel(build_model(spec).eval(), spec, BLOODCELL_CLASSES, Preprocessing())
    whole, _ = segment_image(model, image, tiles=TileSettings(size=256), precision="fp32")
    tiled, _ = segment_image(model, image, tiles=TileSettings(96, 32, 2), precision="fp32")
    assert (whole == tiled).mean() > 0.9


@pytest.mark.parametrize("shape", [(37, 53), (37, 53, 3), (37, 53, 4), (300, 70, 3)])
def test_any_2d_image_gives_labels_of_its_own_size(shape):
    model = _shallow_model()
    image = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    labels, conf = segment_image(model, image, tiles=TileSettings(64, 16, 2), confidence=True)
    assert labels.shape == conf.shape == shape[:2]
    assert labels.dtype == np.uint8
    assert labels.max() <= 2
    assert ((conf >= 1 / 3 - 1e-6) & (conf <= 1 + 1e-6)).all()


def test_scale_resizes_before_prediction_and_back(image):
    model = _shallow_model()
    seen = []
    original = model.network.forward
    model.network.forward = lambda x: (seen.append(tuple(x.shape[-2:])), original(x))[1]
    labels, _ = segment_image(model, image, scale=0.5, tiles=TileSettings(256))
    assert labels.shape == image.shape[:2]
    assert seen == [(128, 96)], "the network sees the image at half size, padded to 32"


def test_progress_counts_tiles_batch_by_batch(image):
    events = list(segment(_shallow_model(), image, tiles=TileSettings(64, 16, 4)))
    progress = [e for e in events if isinstance(e, SegmentProgress)]
    total = len(tile_starts(200, 64, 16)) * len(tile_starts(150, 64, 16))
    assert progress[-1].done == progress[-1].total == total
    assert all(0 < b.done - a.done <= 4 for a, b in itertools.pairwise(progress))
    assert isinstance(events[-1], SegmentationFinished)
    assert events[-1].result.labels.shape == image.shape[:2]


def test_a_stack_is_segmented_image_by_image(image):
    stack = np.stack([image, image[::-1]])
    result = run_to_end(segment(_shallow_model(), stack, stack=True, tiles=TileSettings(64, 16)))
    assert result.labels.shape == stack.shape[:3]
    single, _ = segment_image(_shallow_model(), image[::-1], tiles=TileSettings(64, 16))
    np.testing.assert_array_equal(result.labels[1], single)


def test_stop_between_tile_batches_keeps_nothing(image):
    polls = []

    def stop_after_two_batches() -> bool:
        polls.append(1)
        return len(polls) > 2

    events = list(
        segment(
            _shallow_model(),
            np.stack([image, image]),
            stack=True,
            tiles=TileSettings(64, 16, 2),
            should_stop=stop_after_two_batches,
        )
    )
    done = [e.done for e in events if isinstance(e, SegmentProgress)]
    assert done == [2, 3], "a row of 3 tiles ran as batches of 2 and 1, then the stop was seen"
    result = events[-1].result
    assert result.stopped and result.labels is None and result.confidence is None
    assert "stopped" in result.reason


def test_bad_inputs_are_clear_errors(image):
    model = _shallow_model()
    with pytest.raises(ConfigError, match="multiple of 32"):
        segment_image(model, image, tiles=TileSettings(size=50))
    with pytest.raises(ConfigError, match="scale"):
        segment_image(model, image, scale=0)
    with pytest.raises(DataError, match="no finite values"):
        segment_image(model, np.full(image.shape, np.nan, np.float32))
    with pytest.raises(DataError, match="cannot be shown as RGB"):
        segment_image(model, image.astype(np.complex64))
    with pytest.raises(DataError, match="shape"):
        segment_image(model, np.zeros((4, 5, 6, 3), np.uint8))


def test_memory_errors_halve_the_tile_batch(image):
    model = _shallow_model()
    original = model.network.forward

    def picky(x):
        if x.shape[0] > 1:
            raise RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate")
        return original(x)

    model.network.forward = picky
    events = list(segment(model, image, tiles=TileSettings(64, 16, 4)))
    notices = [e.message for e in events if isinstance(e, Notice)]
    assert events[-1].result.labels.shape == image.shape[:2]
    assert any("2 tile" in n for n in notices)
    assert any("1 tile" in n for n in notices)
