"""The pixel size a model expects, and estimating the resize factor for a new image.

A user's microscope may show cells larger or smaller than the training images
did. :func:`estimate_scale` answers "by how much should this image be resized
so that its cells look like the ones the model learned?", the factor that
``segment --scale`` and the Segment widget's Scale take.

It works like cellpose's size model: the network's own encoder summarises an
image as a "style" vector (the mean and spread of its deepest feature maps),
and a ridge regression, fitted once at the end of training on the training
images zoomed at random (:func:`fit_size_model`), maps that vector to the log
of the resize factor. The style reflects the size of everything in the field
(red cells, nuclei, granules), not only of the one white cell, so it is a
steadier measure than the size of a segmented cell, which varies by 14 %
between cells of Dataset 1 alone.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from napari_bloodcells.core.base.bounds import MAGNIFICATION_RANGE
from napari_bloodcells.core.base.imaging import pad_to
from napari_bloodcells.core.events import ScaleEstimate
from napari_bloodcells.core.inference.tiled import segment_image
from napari_bloodcells.core.model.preprocessing import image_to_tensor

if TYPE_CHECKING:
    from napari_bloodcells.core.model.trained import TrainedModel

_BATCH_PIXELS = 2**22
"""Pixels per encoder pass when computing many styles: 4 MP, about 0.5 GB of features."""
_CROP = 384
"""Side of the crops a large image is summarised by (crops keep the pixel size)."""
_MAX_CROPS = 4
UNFAMILIAR_DISTANCE = 1.4
"""Style distance (:meth:`SizeModel.distance`) above which an image is called unlike the
training images. The size model's own fit images lie at 1 on average by construction;
with the default model, Dataset 1's dev images lie at 0.64-1.28 and BCCD smear fields at
1.42-1.68 (docs/benchmarks.md)."""


def encoder_features(network: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The encoder's feature maps of ``x``, shallow to deep, for any supported network."""
    encode = getattr(network, "encoder_features", None)
    if callable(encode):  # the notebook U-Net
        features: list[torch.Tensor] = encode(x)
        return features
    encoder = getattr(network, "encoder", None)
    if not isinstance(encoder, torch.nn.Module):
        raise TypeError(f"{type(network).__name__} has no encoder to describe images with")
    return list(encoder(x))


def styles(model: TrainedModel, images: list[np.ndarray]) -> np.ndarray:
    """The style vectors of many images, ``(N, D) float64``.

    Each image is mirror-padded to the network's input multiple on its own;
    images that pad to the same shape go through the encoder together (the
    encoder runs in eval mode, so a batch changes no image's vector), at most
    :data:`_BATCH_PIXELS` pixels at once.
    """
    multiple = model.spec.input_multiple
    network = model.network
    device = next(network.parameters()).device
    network.eval()
    padded = [
        pad_to(im, -(-im.shape[0] // multiple) * multiple, -(-im.shape[1] // multiple) * multiple)
        for im in images
    ]
    groups: dict[tuple[int, int], list[int]] = {}
    for i, im in enumerate(padded):
        groups.setdefault((im.shape[0], im.shape[1]), []).append(i)
    vectors: dict[int, torch.Tensor] = {}
    for (height, width), members in groups.items():
        step = max(1, _BATCH_PIXELS // (height * width))
        for start in range(0, len(members), step):
            chunk = members[start : start + step]
            batch = torch.stack([image_to_tensor(padded[i]) for i in chunk]).to(device)
            x = model.preprocessing.normalize(batch)
            with torch.inference_mode():
                deepest = encoder_features(network, x)[-3:]
            # correction=0: a 1x1 map (a small image's deepest) has spread 0, not NaN.
            parts = [f.float().mean((2, 3)) for f in deepest] + [
                f.float().std((2, 3), correction=0) for f in deepest
            ]
            for i, vector in zip(chunk, torch.cat(parts, dim=1), strict=True):
                vectors[i] = vector  # left on the device: one wait for all, at the end
    return torch.stack([vectors[i] for i in range(len(images))]).cpu().numpy().astype(np.float64)


def zoom(image: np.ndarray, factor: float) -> np.ndarray:
    """``image`` resized by ``factor`` (bilinear), at least 8 pixels a side."""
    height, width = image.shape[:2]
    size = (max(8, round(width * factor)), max(8, round(height * factor)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


def _crops(image: np.ndarray) -> list[np.ndarray]:
    """Up to 4 crops of 384 px spread over a large image; the image itself if small."""
    height, width = image.shape[:2]
    if height <= _CROP and width <= _CROP:
        return [image]
    ys = np.linspace(0, max(0, height - _CROP), 2).round().astype(int)
    xs = np.linspace(0, max(0, width - _CROP), 2).round().astype(int)
    corners = [(int(y), int(x)) for y in ys for x in xs][:_MAX_CROPS]
    return [image[y : y + _CROP, x : x + _CROP] for y, x in dict.fromkeys(corners)]


def style_distance(model: TrainedModel, image: np.ndarray) -> float | None:
    """The median :meth:`SizeModel.distance` of an image's crops; ``None`` without a size model."""
    if model.size_model is None:
        return None
    size_model = model.size_model
    return float(np.median([size_model.distance(v) for v in styles(model, _crops(image))]))


def unfamiliar_notice(model: TrainedModel, image: np.ndarray, name: str = "The image") -> str:
    """One sentence when ``image`` looks unlike the model's training images, else "".

    Parameters
    ----------
    model : TrainedModel
        A model with a size model; without one nothing is said.
    image : ndarray
        ``(H, W, 3) uint8``.
    name : str
        Names the image at the start of the sentence.
    """
    distance = style_distance(model, image)
    if distance is None or distance <= UNFAMILIAR_DISTANCE:
        return ""
    return (
        f"{name} looks unlike the images this model was trained on (style distance "
        f"{distance:.2f}, above {UNFAMILIAR_DISTANCE}), so the result may be wrong; correct a "
        "few such images, add them to the training set and fine-tune."
    )


def estimate_scale(
    model: TrainedModel, image: np.ndarray, name: str = "the image"
) -> ScaleEstimate:
    """The resize factor that makes the cells of ``image`` match the model's training cells.

    Parameters
    ----------
    model : TrainedModel
        A model with a size model (every model trained by this version).
    image : ndarray
        ``(H, W, 3) uint8``.
    name : str
        Names the image in the message.

    Returns
    -------
    ScaleEstimate
        ``found=False`` with a one-sentence message, and scale 1.0, when the
        model has no size model or finds no cell at the estimated factor.
    """
    if model.size_model is None:
        return ScaleEstimate(
            1.0,
            False,
            f"This model cannot estimate the scale of {name} (it was trained before size "
            "estimation, or resizes every image); set the scale by hand, using 1.0 for now.",
        )
    crops = _crops(image)
    logs = [math.log(model.size_model.predict(vector)) for vector in styles(model, crops)]
    estimate = math.exp(float(np.median(logs)))
    if not math.isfinite(estimate):
        return ScaleEstimate(
            1.0, False, f"The scale of {name} could not be estimated; using 1.0, so check it."
        )
    scale = float(np.clip(estimate, MAGNIFICATION_RANGE.low, MAGNIFICATION_RANGE.high))
    if not any(segment_image(model, crop, scale=scale)[0].any() for crop in crops):
        return ScaleEstimate(
            1.0, False, f"No cell was found in {name}; using scale 1.0, so check the result."
        )
    return ScaleEstimate(round(scale, 3), True)
