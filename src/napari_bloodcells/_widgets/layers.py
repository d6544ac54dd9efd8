"""Reading napari layers into plain arrays, and writing predictions back.

Everything here runs on the main thread. Reads always copy, so a worker never
shares a buffer with a layer the user may be painting on; writes never change
a layer the user has painted on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_bloodcells._layers import labels_kwargs
from napari_bloodcells.core.base.classes import BLOODCELL_CLASSES, ClassInfo
from napari_bloodcells.core.base.imaging import to_rgb_uint8
from napari_bloodcells.core.data.dataset import SegmentationData
from napari_bloodcells.errors import DataError

if TYPE_CHECKING:
    import napari
    from napari.layers import Image, Labels, Layer

META_KEY = "napari_bloodcells"
"""Layer metadata key under which the widgets record what they wrote."""
SEGMENTATION = "segmentation"
CONFIDENCE = "confidence"
CELLS = "cells"
PENDING = "pending"
"""Record flag of a result layer added before its run's result arrived."""


def _kind(layer: Layer) -> str:
    return type(layer).__name__


@dataclass(frozen=True)
class ImageInput:
    """A copy of an image layer's pixels.

    Attributes
    ----------
    array : ndarray
        One 2D image ``(H, W[, C])``, or a stack ``(N, H, W[, C])`` when ``stack``.
    stack : bool
        Whether the first axis indexes slices.
    """

    array: np.ndarray
    stack: bool


def _image_data(layer: Layer | None) -> tuple[Any, bool]:
    """The layer's full-resolution data and whether it is a stack; raise if unusable."""
    from napari.layers import Image

    if layer is None:
        raise DataError("There is no image to use; open an RGB image and pick it as the image.")
    if not isinstance(layer, Image):
        raise DataError(
            f"The layer '{layer.name}' is a {_kind(layer)} layer; pick an Image layer holding "
            "the RGB image instead."
        )
    data = layer.data[0] if layer.multiscale else layer.data
    spatial = data.ndim - 1 if layer.rgb else data.ndim
    if spatial not in (2, 3):
        raise DataError(
            f"The image '{layer.name}' has shape {tuple(data.shape)}; use a 2D image or a stack "
            "of 2D images (N, H, W, 3)."
        )
    return data, spatial == 3


def lazy_image(layer: Layer | None) -> Any | None:
    """The full-resolution data of a large 2D image layer, uncopied, or ``None`` if it is small.

    Large means a multiscale layer, or more pixels than
    :data:`~napari_bloodcells.core.large.stores.LARGE_PIXELS`: such a layer is
    segmented block by block from its own (dask, zarr) data instead of copied.
    """
    from napari_bloodcells.core.large.stores import LARGE_PIXELS

    data, stack = _image_data(layer)
    height, width = data.shape[:2]
    if stack or not (getattr(layer, "multiscale", False) or height * width > LARGE_PIXELS):
        return None
    return data


def image_input(layer: Layer | None, index: int | None = None) -> ImageInput:
    """Copy an Image layer's pixels; only slice ``index`` of a stack if it is given.

    Accepts a 2D RGB(A) or grayscale image, or a stack of them.

    Raises
    ------
    DataError
        No layer, a layer of another type, or a shape that is not 2D or a stack.
    """
    data, stack = _image_data(layer)
    if stack and index is not None:
        data, stack = data[index], False
    array = np.array(data, copy=True)  # a private copy for the worker thread
    return ImageInput(array, stack)


def first_rgb_image(layer: Layer | None) -> np.ndarray:
    """The layer's image (a stack's first slice) as ``(H, W, 3) uint8``, e.g. for a test image.

    Raises
    ------
    DataError
        As :func:`image_input`, or for values that cannot be shown as RGB.
    """
    data, stack = _image_data(layer)
    return to_rgb_uint8(np.asarray(data[0] if stack else data))


def _mask_layer(layer: Layer | None) -> Layer:
    """``layer`` if it can hold class indices; raise otherwise."""
    from napari.layers import Image, Labels

    if layer is None:
        raise DataError("There are no labels to use; pick the Labels layer with the classes.")
    if isinstance(layer, Image) and layer.rgb:
        raise DataError(
            f"The layer '{layer.name}' is an RGB image; pick a Labels layer with class "
            "indices 0, 1, 2 as the labels."
        )
    if not isinstance(layer, (Labels, Image)) or not np.issubdtype(layer.data.dtype, np.integer):
        raise DataError(
            f"The layer '{layer.name}' is a {_kind(layer)} layer of {layer.data.dtype} values; "
            "pick a Labels layer with class indices 0, 1, 2 as the labels."
        )
    return layer


def mask_input(layer: Layer | None, index: int | None = None) -> np.ndarray:
    """Copy the class indices of a Labels layer (or an integer Image layer).

    Raises
    ------
    DataError
        No layer, a float or RGB layer, or values outside 0..255.
    """
    layer = _mask_layer(layer)
    data = layer.data if index is None else layer.data[index]
    masks = np.array(data, copy=True)
    if masks.size and (masks.min() < 0 or masks.max() > 255):
        raise DataError(
            f"The labels '{layer.name}' hold values outside 0..255; use class indices 0, 1, 2."
        )
    return masks.astype(np.uint8, copy=False)


def training_pairs(
    image_layer: Layer | None,
    labels_layer: Layer | None,
    index: int | None = None,
    classes: ClassInfo = BLOODCELL_CLASSES,
) -> SegmentationData:
    """Copy an image (or stack) and its labels into training pairs.

    Parameters
    ----------
    image_layer, labels_layer : Layer
        The image and its class labels, of matching shape.
    index : int, optional
        Only this slice, when the image is a stack.
    classes : ClassInfo
        Label values must lie in ``0..num_classes-1``.

    Raises
    ------
    DataError
        Wrong layer types, shapes that do not match, or label values above the classes.
    """
    _, stack = _image_data(image_layer)
    assert image_layer is not None  # _image_data refuses None
    index = index if stack else None
    labels_layer = _mask_layer(labels_layer)
    if index is not None and labels_layer.data.ndim != 3:
        raise DataError(
            f"The image '{image_layer.name}' is a stack but the labels '{labels_layer.name}' "
            f"have shape {tuple(labels_layer.data.shape)}; give labels (N, H, W) for a stack."
        )
    image = image_input(image_layer, index)
    masks = mask_input(labels_layer, index)
    images = image.array if image.stack else image.array[None]
    expected = images.shape[:3] if image.stack else images.shape[1:3]
    if masks.shape != expected:
        raise DataError(
            f"The image '{image_layer.name}' has shape {tuple(expected)} without its colour "
            f"axis but the labels '{labels_layer.name}' have shape {tuple(masks.shape)}; the "
            "labels must match the image pixel for pixel."
        )
    masks = masks if image.stack else masks[None]
    if image.stack:
        names = [f"{image_layer.name} [{i}]" for i in range(len(images))]
    else:
        names = [image_layer.name if index is None else f"{image_layer.name} [{index}]"]
    data = SegmentationData([to_rgb_uint8(im) for im in images], list(masks), names)
    data.check_classes(classes.num_classes)
    return data


def slice_index(viewer: napari.viewer.Viewer, layer: Layer) -> int:
    """Index of the slice of ``layer`` shown at the viewer's current position."""
    point = viewer.dims.point[-layer.ndim :]
    coords = layer.world_to_data(point)
    return int(np.clip(round(float(coords[0])), 0, layer.data.shape[0] - 1))


def digest(array: np.ndarray) -> str:
    """A fingerprint of ``array``'s shape, type and values."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{array.shape}{array.dtype}".encode())
    h.update(np.ascontiguousarray(array).view(np.uint8).reshape(-1).data)
    return h.hexdigest()


def is_painted(layer: Labels) -> bool:
    """Whether the layer's data differ from what a widget last wrote into it."""
    record = layer.metadata.get(META_KEY, {})
    return record.get("digest") != digest(np.asarray(layer.data))


def _latest(viewer: napari.viewer.Viewer, role: str, image_name: str) -> Layer | None:
    for layer in reversed(list(viewer.layers)):
        record = layer.metadata.get(META_KEY, {})
        if record.get("role") == role and record.get("image") == image_name:
            return layer
    return None


def remember_scale(image_layer: Layer, scale: float) -> None:
    """Record on the image layer the Scale it was segmented at, for the next time."""
    record = dict(image_layer.metadata.get(META_KEY, {}))
    record["scale"] = float(scale)
    image_layer.metadata[META_KEY] = record


def remembered_scale(layer: Layer | None) -> float | None:
    """The Scale recorded on an image layer, or on a prediction layer when it was written."""
    if layer is None:
        return None
    value = layer.metadata.get(META_KEY, {}).get("scale")
    return None if value is None else float(value)


def is_painted_prediction(layer: Layer) -> bool:
    """Whether ``layer`` is a prediction this plugin wrote that the user has painted on since."""
    record = layer.metadata.get(META_KEY, {})
    return record.get("role") == SEGMENTATION and is_painted(layer)


def is_unpainted_prediction(layer: Layer) -> bool:
    """Whether ``layer`` is a prediction this plugin wrote and nobody has painted on since."""
    record = layer.metadata.get(META_KEY, {})
    return record.get("role") == SEGMENTATION and not is_painted(layer)


def prepare_prediction(
    viewer: napari.viewer.Viewer,
    image_layer: Image,
    shape: tuple[int, ...],
    classes: ClassInfo = BLOODCELL_CLASSES,
) -> Labels | None:
    """Add now the empty layer that :func:`write_prediction` will fill, unless one can be reused.

    napari spends 200-400 ms of its main thread creating a Labels layer. Paid
    at the Segment click, while the user waits anyway, it leaves only the cheap
    data write for the end of the run. The layer is marked pending until then:
    :func:`drop_unused_prediction` removes it if the run ends without a result.

    Returns
    -------
    Labels or None
        The new empty layer, or ``None`` when an unpainted earlier result of
        the same shape will be written into instead.
    """
    previous = _latest(viewer, SEGMENTATION, image_layer.name)
    if previous is not None and previous.data.shape == shape and not is_painted(previous):
        return None
    empty = np.zeros(shape, np.uint8)
    record = {"role": SEGMENTATION, "image": image_layer.name, "digest": digest(empty)}
    layer: Labels = viewer.add_labels(
        empty,
        **labels_kwargs(
            f"{image_layer.name} segmentation",
            classes,
            metadata={META_KEY: {**record, PENDING: True}},
            scale=image_layer.scale,
            translate=image_layer.translate,
        ),
    )
    return layer


def drop_unused_prediction(viewer: napari.viewer.Viewer, layer: Labels | None) -> None:
    """Remove a layer from :func:`prepare_prediction` that no result filled and nobody painted."""
    if layer is None or layer not in viewer.layers:
        return
    if layer.metadata.get(META_KEY, {}).get(PENDING) and not is_painted(layer):
        viewer.layers.remove(layer)


def write_prediction(
    viewer: napari.viewer.Viewer,
    image_layer: Image,
    labels: np.ndarray,
    classes: ClassInfo = BLOODCELL_CLASSES,
    scale: float = 1.0,
) -> Labels:
    """Show ``labels`` as ``<image> segmentation``, replacing only an unpainted earlier one.

    The last prediction made for the same image is reused if its data are
    exactly what was written (the user has not painted on it) and the shape
    still fits; otherwise a new layer is added, which napari names
    ``<image> segmentation [1]`` and so on. A painted layer is never changed.

    Returns
    -------
    Labels
        The layer now holding ``labels``.
    """
    previous = _latest(viewer, SEGMENTATION, image_layer.name)
    record = {
        "role": SEGMENTATION,
        "image": image_layer.name,
        "digest": digest(labels),
        "scale": float(scale),
    }
    if previous is not None and previous.data.shape == labels.shape and not is_painted(previous):
        previous.data = labels
        previous.metadata[META_KEY] = record
        return previous
    # The record goes in at creation: layer pickers read it when the layer arrives.
    return viewer.add_labels(
        labels,
        **labels_kwargs(
            f"{image_layer.name} segmentation",
            classes,
            metadata={META_KEY: record},
            scale=image_layer.scale,
            translate=image_layer.translate,
        ),
    )


def write_confidence(
    viewer: napari.viewer.Viewer, image_layer: Image, confidence: np.ndarray
) -> Image:
    """Show the winning class's probability as ``<image> confidence`` (replaced on re-runs)."""
    previous = _latest(viewer, CONFIDENCE, image_layer.name)
    if previous is not None and previous.data.shape == confidence.shape:
        previous.data = confidence
        return previous
    return viewer.add_image(
        confidence,
        name=f"{image_layer.name} confidence",
        colormap="magma",
        contrast_limits=(0.0, 1.0),
        blending="additive",
        visible=True,
        scale=image_layer.scale,
        translate=image_layer.translate,
        metadata={META_KEY: {"role": CONFIDENCE, "image": image_layer.name}},
    )
