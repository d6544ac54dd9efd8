"""Property-based tests: the tiler and the mask/label conversions on arbitrary input."""

from __future__ import annotations

import itertools
import os
import warnings

import numpy as np
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays
from torch import nn

from napari_bloodcells._widgets.layers import training_pairs
from napari_bloodcells.core.base.classes import BLOODCELL_CLASSES
from napari_bloodcells.core.base.imaging import to_rgb_uint8
from napari_bloodcells.core.data.bloodcell_dataset import mask_from_grey
from napari_bloodcells.core.inference.tiled import TileSettings, predict_probabilities, tile_starts
from napari_bloodcells.core.model.networks import ModelSpec
from napari_bloodcells.core.model.preprocessing import Preprocessing
from napari_bloodcells.core.model.trained import TrainedModel
from napari_bloodcells.errors import BloodcellsError

# Fixed examples under CI, so that a landing never hangs on a new random draw; fresh ones locally.
FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=bool(os.environ.get("CI")),
)


def _outcome(convert, *args):
    """``(result, None)`` on success, ``(None, message)`` on a user-facing error."""
    try:
        return convert(*args), None
    except BloodcellsError as exc:
        return None, str(exc)


def _is_one_sentence(message: str) -> bool:
    return message.count("\n") == 0 and message.endswith(".")


def _pointwise_model() -> TrainedModel:
    # A 1x1 convolution has no spatial context, so any correct tiling must
    # reproduce the whole-image prediction exactly, seams included.
    torch.manual_seed(0)
    net = nn.Conv2d(3, 3, 1).eval()
    return TrainedModel(net, ModelSpec("Unet", "resnet18"), BLOODCELL_CLASSES, Preprocessing())


@FUZZ
@given(length=st.integers(1, 2000), tile=st.integers(1, 512), data=st.data())
def test_tile_starts_cover_every_pixel(length, tile, data):
    overlap = data.draw(st.integers(0, max(0, tile // 2 - 1)))
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0
    if length <= tile:
        assert starts == [0]
        return
    assert starts[-1] + tile == length
    assert all(0 < b - a <= tile - overlap for a, b in itertools.pairwise(starts))


@FUZZ
@given(
    height=st.integers(1, 160),
    width=st.integers(1, 160),
    tile=st.sampled_from([32, 64, 96]),
    overlap_share=st.floats(0, 0.49),
    batch=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_tiled_probabilities_equal_the_whole_image(height, width, tile, overlap_share, batch, seed):
    model = _pointwise_model()
    image = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    tiles = TileSettings(tile, int(overlap_share * tile), batch)
    tiled = predict_probabilities(model, image, tiles=tiles, precision="fp32")
    whole = predict_probabilities(model, image, tiles=TileSettings(192), precision="fp32")
    assert tiled.shape == (3, height, width)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)
    np.testing.assert_allclose(tiled.sum(0), 1.0, atol=1e-5)


@FUZZ
@given(
    arrays(
        np.uint8,
        array_shapes(min_dims=2, max_dims=2, max_side=20),
        elements=st.sampled_from([0, 128, 255]),
    )
)
def test_upstream_masks_map_to_classes(grey):
    classes = mask_from_grey(grey)
    assert classes.shape == grey.shape
    np.testing.assert_array_equal(classes, (grey == 128) * 1 + (grey == 255) * 2)


@FUZZ
@given(
    arrays(
        st.sampled_from([np.uint8, np.int16, np.int64, np.float32]),
        array_shapes(min_dims=1, max_dims=3, max_side=8),
    )
)
def test_any_mask_array_converts_or_names_the_problem(grey):
    classes, message = _outcome(mask_from_grey, grey)
    if message is not None:
        assert _is_one_sentence(message)
        assert "mask" in message
        return
    assert classes.shape == grey.shape and classes.max(initial=0) <= 2
    assert set(np.unique(grey).tolist()) <= {0, 128, 255}


@FUZZ
@given(
    image=arrays(
        st.sampled_from([np.uint8, np.uint16, np.float32, np.float64, np.int32]),
        array_shapes(min_dims=1, max_dims=4, max_side=6),
    ),
    labels=arrays(
        st.sampled_from([np.uint8, np.int32, np.int64]),
        array_shapes(min_dims=1, max_dims=3, max_side=6),
    ),
)
def test_layer_arrays_convert_or_say_what_is_wrong(image, labels):
    from napari.layers import Image, Labels

    try:  # arrays napari itself refuses never reach the plugin
        with warnings.catch_warnings():
            # napari's own contrast-limit arithmetic overflows on values like 1e36: not ours.
            warnings.simplefilter("ignore", RuntimeWarning)
            rgb = image.ndim > 2 and image.shape[-1] in (3, 4)
            layers = Image(image, rgb=rgb), Labels(labels)
    except (ValueError, TypeError, IndexError):
        assume(False)
    data, message = _outcome(training_pairs, *layers)
    if message is not None:
        assert _is_one_sentence(message)
        return
    for rgb, mask in zip(data.images, data.masks, strict=True):
        assert rgb.dtype == np.uint8 and rgb.shape[-1] == 3
        assert mask.dtype == np.uint8 and mask.shape == rgb.shape[:2]


@FUZZ
@given(
    arrays(
        st.sampled_from([np.uint8, np.uint16, np.float32, np.bool_]),
        array_shapes(min_dims=2, max_dims=3, max_side=6),
    )
)
def test_images_convert_to_rgb_or_fail_clearly(image):
    rgb, message = _outcome(to_rgb_uint8, image)
    if message is not None:
        assert _is_one_sentence(message)
        return
    assert rgb.dtype == np.uint8 and rgb.shape == (*image.shape[:2], 3)
