"""Bring arbitrary 2D images to the RGB ``uint8`` form the models expect."""

from __future__ import annotations

import numpy as np

from napari_bloodcells.errors import DataError


def describe_conversion(image: np.ndarray) -> str | None:
    """Say how :func:`to_rgb_uint8` will change ``image``, or ``None`` if it is already RGB.

    Used to tell the user that a grayscale or RGBA image was converted.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        return "The grayscale image was converted to RGB by repeating its channel."
    if image.ndim == 3 and image.shape[-1] == 4:
        return "The RGBA image was converted to RGB by dropping its alpha channel."
    return None


def to_rgb_uint8(image: np.ndarray, name: str | None = None) -> np.ndarray:
    """Convert one 2D image to ``(H, W, 3) uint8``.

    Accepts grayscale ``(H, W)``, RGB ``(H, W, 3)`` or RGBA ``(H, W, 4)``, as
    ``uint8``, as floats in 0..1, or as integers within 0..255. Values outside
    those ranges are refused rather than clipped, so a 16-bit image is never
    silently turned into a saturated one.

    Parameters
    ----------
    image : ndarray
        The pixels.
    name : str, optional
        Names the image (e.g. its file) in error messages.

    Raises
    ------
    DataError
        If the shape or the value range cannot be read as an 8-bit colour image.
    """
    image = np.asarray(image)
    what = f"image {name}" if name else "image"
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    elif image.ndim == 3 and image.shape[-1] == 4:
        image = image[..., :3]
    if image.ndim != 3 or image.shape[-1] != 3:
        raise DataError(
            f"The {what} has shape {image.shape}; expected a 2D image, grayscale (H, W), "
            "RGB (H, W, 3) or RGBA (H, W, 4)."
        )
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    if image.dtype == np.bool_:
        return image.astype(np.uint8) * 255
    if np.issubdtype(image.dtype, np.floating):
        if image.size and not np.isfinite(image).any():
            raise DataError(
                f"The float {what} holds no finite values (all NaN or infinite); check how it "
                "was made or exported."
            )
        lo, hi = float(np.nanmin(image)), float(np.nanmax(image))
        if lo < 0.0 or hi > 1.0:
            raise DataError(
                f"The float {what} has values from {lo:.3g} to {hi:.3g}; rescale it to 0..1 "
                "(or convert it to 8-bit) first."
            )
        rounded: np.ndarray = np.round(np.nan_to_num(image) * 255)
        return rounded.astype(np.uint8)
    if np.issubdtype(image.dtype, np.integer):
        lo, hi = int(image.min()), int(image.max())
        if lo < 0 or hi > 255:
            raise DataError(
                f"The {image.dtype} {what} has values from {lo} to {hi}; convert it to 8-bit "
                "(0..255) first, e.g. with Image > Type > 8-bit in Fiji."
            )
        return image.astype(np.uint8)
    raise DataError(
        f"The {what} holds {image.dtype} values, which are not supported; use 8-bit RGB."
    )


def pad_to(image: np.ndarray, height: int, width: int, fill: int | None = None) -> np.ndarray:
    """Pad ``image`` at the bottom and right to at least ``height x width``.

    Image pixels are mirrored (``fill=None``), so the network sees plausible
    texture; masks are filled with a constant, usually :data:`IGNORE_INDEX`.
    """
    pad_h, pad_w = max(0, height - image.shape[0]), max(0, width - image.shape[1])
    if not pad_h and not pad_w:
        return image
    widths = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (image.ndim - 2)
    if fill is None:
        return np.pad(image, widths, mode="symmetric")
    return np.pad(image, widths, mode="constant", constant_values=fill)
