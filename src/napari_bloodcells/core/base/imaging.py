"""Bring arbitrary 2D images to the RGB ``uint8`` form the models expect."""

from __future__ import annotations

import numpy as np

from napari_bloodcells.errors import DataError

_BIT_DEPTHS = (10, 12, 14, 16, 32)
"""Bit depths that cameras and their containers use, smallest first."""

_FLOAT_PERCENTILES = (0.1, 99.9)
"""Percentiles of float data that become 0 and 255, so a few outliers do not set the range."""


def _rescaling(image: np.ndarray, what: str = "image") -> tuple[float, float, str] | None:
    """``(low, high, sentence)`` when ``image``'s values need mapping onto 0..255, else ``None``.

    Integers above 255 are read by the bit depth their values use (a 12-bit
    camera's 0..4095 in a 16-bit file maps by 4095, not 65535), so the same
    scene gives the same 8-bit picture whatever the container. Floats outside
    0..1 and signed integers below 0 have no bit depth, so their percentiles
    set the range.
    """
    if np.issubdtype(image.dtype, np.floating):
        if image.size and not np.isfinite(image).any():
            raise DataError(
                f"The float {what} holds no finite values (all NaN or infinite); check how it "
                "was made or exported."
            )
        finite = image[np.isfinite(image)]
        lo, hi = float(finite.min()), float(finite.max())
        if lo >= 0.0 and hi <= 1.0:
            return None
        return _by_percentiles(finite, f"The float {what} has values from {lo:.3g} to {hi:.3g}")
    if np.issubdtype(image.dtype, np.integer):
        lo, hi = int(image.min()), int(image.max())
        if lo >= 0 and hi <= 255:
            return None
        if lo < 0:
            return _by_percentiles(image, f"The {image.dtype} {what} has values from {lo} to {hi}")
        bits = next((b for b in _BIT_DEPTHS if hi < 2**b), 64)
        return (
            0.0,
            float(2**bits - 1),
            (
                f"The {image.dtype} {what} uses {bits}-bit values (up to {hi}); it was rescaled "
                f"to 8-bit by dividing by {(2**bits - 1) / 255:.4g}."
            ),
        )
    raise DataError(
        f"The {what} holds {image.dtype} values, which cannot be shown as RGB; save it as "
        "8- or 16-bit RGB."
    )


def _by_percentiles(values: np.ndarray, found: str) -> tuple[float, float, str]:
    """The percentile range of ``values`` and the sentence that starts with ``found``."""
    low, high = (float(v) for v in np.percentile(values, _FLOAT_PERCENTILES))
    first, last = _FLOAT_PERCENTILES
    return (
        low,
        high,
        f"{found}; it was rescaled to 8-bit from its {first}-{last} percentile range "
        f"({low:.3g}..{high:.3g}).",
    )


def to_rgb_uint8(image: np.ndarray, name: str | None = None) -> np.ndarray:
    """Convert one 2D image to ``(H, W, 3) uint8``, as :func:`convert_to_rgb` does.

    Raises
    ------
    DataError
        If the shape or the value type cannot be read as a colour image.
    """
    return convert_to_rgb(image, name)[0]


def convert_to_rgb(image: np.ndarray, name: str | None = None) -> tuple[np.ndarray, str | None]:
    """Convert one 2D image to ``(H, W, 3) uint8``, and say how (``None`` if used as it is).

    Accepts grayscale ``(H, W)``, RGB ``(H, W, 3)`` or RGBA ``(H, W, 4)``.
    ``uint8``, floats in 0..1 and integers within 0..255 are taken as they
    are; 10- to 16-bit integers are divided by their bit depth's maximum, and
    other floats or signed integers are stretched between two percentiles.
    The sentence names each change (channel repeated, alpha dropped, values
    rescaled), for a notice: nothing is clipped without it.

    Parameters
    ----------
    image : ndarray
        The pixels.
    name : str, optional
        Names the image (e.g. its file) in messages.

    Raises
    ------
    DataError
        If the shape or the value type cannot be read as a colour image.
    """
    image = np.asarray(image)
    what = f"image {name}" if name else "image"
    notes = []
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
        notes.append("The grayscale image was converted to RGB by repeating its channel.")
    elif image.ndim == 3 and image.shape[-1] == 4:
        image = image[..., :3]
        notes.append("The RGBA image was converted to RGB by dropping its alpha channel.")
    if image.ndim != 3 or image.shape[-1] != 3:
        raise DataError(
            f"The {what} has shape {image.shape}; expected a 2D image, grayscale (H, W), "
            "RGB (H, W, 3) or RGBA (H, W, 4)."
        )
    rgb, rescaled = _to_uint8(image, what)
    return rgb, " ".join([*notes, rescaled] if rescaled else notes) or None


def _to_uint8(image: np.ndarray, what: str) -> tuple[np.ndarray, str | None]:
    """``(H, W, 3)`` values of any type as ``uint8``, and the sentence if they were rescaled."""
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image), None
    if image.dtype == np.bool_:
        return image.astype(np.uint8) * 255, None
    rescale = _rescaling(image, what)
    if rescale is None:
        if np.issubdtype(image.dtype, np.floating):
            # Finite values lie in 0..1 here: infinities are its ends, NaN is black.
            unit: np.ndarray = np.round(np.nan_to_num(image, posinf=1.0, neginf=0.0) * 255)
            return unit.astype(np.uint8), None
        return image.astype(np.uint8), None
    low, high, sentence = rescale
    span = high - low if high > low else 1.0  # a flat image stays flat, at black
    with np.errstate(over="ignore", invalid="ignore"):  # extremes saturate, as the notice says
        finite = np.nan_to_num(image.astype(np.float64), posinf=high, neginf=low)
        scaled = (finite - low) * (255.0 / span)
    # A range wider than float64 (values near +-1e308) leaves NaN: black, like NaN pixels.
    return np.round(np.clip(np.nan_to_num(scaled, nan=0.0), 0, 255)).astype(np.uint8), sentence


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
