"""Image/mask pairs: reading image files and folders, splitting.

A :class:`SegmentationData` holds images as ``(H, W, 3) uint8`` arrays and
masks as ``(H, W) uint8`` class indices, each pair at its native size. It is
read from a folder (:func:`load_folder`) or built from napari layers by the
widgets; the blood-cell dataset's own layout lives in
:mod:`~napari_bloodcells.core.data.bloodcell_dataset`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from napari_bloodcells.core.base.classes import UNLABELLED
from napari_bloodcells.core.data.type_table import TYPES_FILE, read_type_table, types_for
from napari_bloodcells.errors import DataError

if TYPE_CHECKING:
    from collections.abc import Sequence

IMAGE_SUFFIXES = frozenset({".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff"})
NOTEBOOK_SEED = 909
"""Seed of the reference notebook's dev split."""
MIN_SIDE = 32
"""Smallest image side the networks take (their input multiple at most)."""


@dataclass
class SegmentationData:
    """In-memory image/mask pairs at native size.

    Attributes
    ----------
    images : list of ndarray
        ``(H, W, 3) uint8`` RGB images.
    masks : list of ndarray
        ``(H, W) uint8`` class indices, same height and width as the image.
    names : list of str
        One name per pair, used in messages and reports.
    notices : list of str
        Things the user should know about how the data was read (skipped files).
    types : list of (str or None)
        The type of each image's white cell (its largest cell), ``None`` where not known;
        empty when the data has no types at all.
    """

    images: list[np.ndarray]
    masks: list[np.ndarray]
    names: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    types: list[str | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.names:
            self.names = [f"image {i}" for i in range(len(self.images))]
        if not (len(self.images) == len(self.masks) == len(self.names)):
            raise DataError(
                f"Got {len(self.images)} images but {len(self.masks)} masks; "
                "give exactly one mask per image."
            )
        if self.types and len(self.types) != len(self.images):
            raise DataError(
                f"Got {len(self.images)} images but {len(self.types)} types; give one type "
                "(or none) per image."
            )

    @property
    def has_types(self) -> bool:
        """Whether any image's white cell has a known type."""
        return any(t is not None for t in self.types)

    def type_of(self, index: int) -> str | None:
        """The type of image ``index``'s white cell, if known."""
        return self.types[index] if self.types else None

    def digest(self) -> str:
        """A fingerprint of every pixel and label, in order (BLAKE2b, 16 hex digits)."""
        h = hashlib.blake2b(digest_size=8)
        for image, mask in zip(self.images, self.masks, strict=True):
            for array in (image, mask):
                h.update(str(array.shape).encode())
                h.update(np.ascontiguousarray(array).data)
        return h.hexdigest()

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: Sequence[int]) -> SegmentationData:
        """Pairs at ``indices``, in that order."""
        return SegmentationData(
            [self.images[i] for i in indices],
            [self.masks[i] for i in indices],
            [self.names[i] for i in indices],
            types=[self.types[i] for i in indices] if self.types else [],
        )

    def __add__(self, other: SegmentationData) -> SegmentationData:
        """The pairs of both, ``self`` first."""
        return SegmentationData(
            self.images + other.images,
            self.masks + other.masks,
            self.names + other.names,
            self.notices + other.notices,
            (
                [self.type_of(i) for i in range(len(self))]
                + [other.type_of(i) for i in range(len(other))]
                if self.types or other.types
                else []
            ),
        )

    def rescaled(self, scale: float, minimum: int = MIN_SIDE) -> SegmentationData:
        """Every pair resized by ``scale``: images bilinear, masks nearest (labels kept).

        Raises
        ------
        DataError
            An image would end up smaller than ``minimum`` pixels a side.
        """
        if scale == 1.0:
            return self
        images, masks = [], []
        for name, image, mask in zip(self.names, self.images, self.masks, strict=True):
            height, width = mask.shape
            size = (round(width * scale), round(height * scale))
            if min(size) < minimum:
                least = math.ceil(100 * minimum / min(height, width)) / 100
                raise DataError(
                    f"At scale {scale} the image {name} becomes {size[0]}x{size[1]} pixels, "
                    f"smaller than the {minimum}-pixel minimum the model needs; use a scale "
                    f"of at least {least:.2f}."
                )
            images.append(
                np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
            )
            masks.append(np.asarray(Image.fromarray(mask).resize(size, Image.Resampling.NEAREST)))
        return SegmentationData(
            images, masks, list(self.names), list(self.notices), list(self.types)
        )

    def check_learnable(self, continuing: bool = False) -> None:
        """Raise :class:`DataError` if the labels hold nothing to learn from.

        A fine-tune (``continuing``) learns from corrections that only erase
        (background where the model painted cells, the rest unlabelled); a new
        model needs some cytoplasm or nucleus as well.
        """
        if all(bool((m == UNLABELLED).all()) for m in self.masks):
            raise DataError(
                f"Every label is 'not labelled' ({UNLABELLED}); paint or erase what the model "
                "got wrong before training."
            )
        if not continuing and not any(((m > 0) & (m != UNLABELLED)).any() for m in self.masks):
            raise DataError(
                "The labels are all background (0); paint some cytoplasm (1) and nucleus (2) "
                "before training."
            )

    def check_classes(self, num_classes: int) -> None:
        """Raise :class:`DataError` if a mask holds a value outside ``0..num_classes-1``.

        :data:`~napari_bloodcells.core.base.classes.UNLABELLED` marks pixels left out of
        training (partial labels) and is allowed.
        """
        for name, mask in zip(self.names, self.masks, strict=False):
            values = np.unique(mask)
            bad = values[(values >= num_classes) & (values != UNLABELLED)]
            if bad.size:
                shown = ", ".join(str(v) for v in bad[:5])
                raise DataError(
                    f"The mask of {name} holds the value(s) {shown}, but the model has only "
                    f"classes 0 to {num_classes - 1}; relabel those pixels or use a model "
                    "with more classes."
                )


def as_uint8(values: np.ndarray, subject_holds: str, fix: str) -> np.ndarray:
    """``values`` as uint8, refusing what a cast would change: fractions, NaN, out of 0..255.

    ``subject_holds`` starts the error sentence ("The mask x.png holds"); ``fix`` ends it.
    """
    if values.dtype == np.uint8:
        return values
    if not (np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)):
        raise DataError(f"{subject_holds} {values.dtype} values; {fix}.")
    fractional = np.issubdtype(values.dtype, np.floating) and (
        not np.isfinite(values).all() or (values != np.round(values)).any()
    )
    if fractional:
        raise DataError(f"{subject_holds} values that are not whole numbers; {fix}.")
    if values.size and (values.min() < 0 or values.max() > 255):
        raise DataError(f"{subject_holds} values outside 0..255; {fix}.")
    return values.astype(np.uint8)


_HIGH_DEPTH_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
"""PIL modes of 16-bit, 32-bit and float images, which ``convert("RGB")`` would clip."""


def read_image(path: Path) -> np.ndarray:
    """Read an image file as ``(H, W, 3) uint8`` RGB.

    Grayscale, palette and RGBA files are converted; 12-, 14- and 16-bit and
    float files are rescaled to 8 bits (see
    :func:`~napari_bloodcells.core.base.imaging.to_rgb_uint8`).

    Raises
    ------
    DataError
        If the file is not a readable image, or its values cannot be shown as RGB.
    """
    from napari_bloodcells.core.base.imaging import to_rgb_uint8

    return to_rgb_uint8(_read_pixels(Path(path)), str(path))


def read_image_noting(path: Path) -> tuple[np.ndarray, str | None]:
    """:func:`read_image`, and the sentence that says how the file was converted (or ``None``).

    Raises
    ------
    DataError
        If the file is not a readable image, or its values cannot be shown as RGB.
    """
    from napari_bloodcells.core.base.imaging import convert_to_rgb

    return convert_to_rgb(_read_pixels(Path(path)), str(path))


def _read_pixels(path: Path) -> np.ndarray:
    """The file's samples as stored, before any conversion to 8-bit RGB."""
    if path.suffix.lower() in {".tif", ".tiff"}:
        # PIL reads 16-bit RGB TIFFs as 8-bit by dropping the high bits (values 0..15):
        # tifffile keeps the samples for to_rgb_uint8 to rescale.
        return _read_tiff(path)
    try:
        with Image.open(path) as im:
            if im.mode in _HIGH_DEPTH_MODES or im.mode in {"L", "RGB", "RGBA"}:
                return np.asarray(im)
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(
            f"Cannot read the image {path} ({exc}); replace or remove the damaged file."
        ) from exc


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    try:
        pixels = np.asarray(tifffile.imread(path, key=0))
    except (OSError, ValueError, tifffile.TiffFileError) as exc:
        raise DataError(
            f"Cannot read the image {path} ({exc}); replace or remove the damaged file."
        ) from exc
    if pixels.ndim == 3 and pixels.shape[0] in (3, 4) and pixels.shape[-1] not in (3, 4):
        pixels = np.moveaxis(pixels, 0, -1)  # planar (samples first) to interleaved
    return pixels


def read_mask(path: Path) -> np.ndarray:
    """Read a class-index mask file as ``(H, W) uint8``.

    Raises
    ------
    DataError
        If the file is not a readable single-channel image.
    """
    try:
        with Image.open(path) as im:
            if im.mode not in {"L", "P", "I", "I;16", "1"}:
                raise DataError(
                    f"The mask {path} is a {im.mode} image; a mask must be single-channel "
                    "with one class index per pixel."
                )
            mask = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(
            f"Cannot read the mask {path} ({exc}); replace or remove the damaged file."
        ) from exc
    if mask.dtype != np.uint8:
        if mask.max() > 255:
            raise DataError(f"The mask {path} holds values above 255; store class indices.")
        mask = mask.astype(np.uint8)
    return mask


def _image_files(root: Path, notices: list[str]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    skipped: list[str] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.name.startswith("."):
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append(path.name)
            continue
        found[path.relative_to(root).with_suffix("").as_posix()] = path
    if skipped:
        notices.append(
            f"Skipped {len(skipped)} file(s) in {root} that are not images: {_first(skipped)}."
        )
    return found


def _first(keys: Sequence[str], n: int = 3) -> str:
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_folder(root: str | Path) -> SegmentationData:
    """Read pairs from ``root/images/**`` and ``root/masks/**`` (and ``root/types.csv``).

    Images and masks are matched by relative path without extension, so
    ``images/all/001.png`` pairs with ``masks/all/001.png``. Pairs are sorted
    by that key, which fixes the order the dev split is drawn from.

    Parameters
    ----------
    root : path
        Folder with ``images`` and ``masks`` subfolders.

    Returns
    -------
    SegmentationData

    Raises
    ------
    DataError
        If the folder is empty, files do not pair up, or sizes differ.
    """
    root = Path(root)
    image_dir, mask_dir = root / "images", root / "masks"
    if not image_dir.is_dir() or not mask_dir.is_dir():
        raise DataError(
            f"The folder {root} has no 'images' and 'masks' subfolders; put the images in "
            f"{image_dir} and the masks, with the same file names, in {mask_dir}."
        )
    notices: list[str] = []
    images, masks = _image_files(image_dir, notices), _image_files(mask_dir, notices)
    if not images:
        raise DataError(
            f"The folder {image_dir} holds no images; add image files (PNG, BMP, TIFF)."
        )
    unmatched_images = sorted(set(images) - set(masks))
    unmatched_masks = sorted(set(masks) - set(images))
    if unmatched_images:
        raise DataError(
            f"{len(unmatched_images)} image(s) have no mask ({_first(unmatched_images)}); "
            f"add masks with the same names to {mask_dir}."
        )
    if unmatched_masks:
        raise DataError(
            f"{len(unmatched_masks)} mask(s) have no image ({_first(unmatched_masks)}); "
            f"add the images to {image_dir} or remove those masks."
        )
    keys = sorted(images)
    data = SegmentationData([], [], [], notices)
    for key in keys:
        image, mask = read_image(images[key]), read_mask(masks[key])
        if image.shape[:2] != mask.shape:
            raise DataError(
                f"The mask of {key} is {mask.shape[1]}x{mask.shape[0]} but its image is "
                f"{image.shape[1]}x{image.shape[0]}; masks must match their images' size."
            )
        data.images.append(image)
        data.masks.append(mask)
        data.names.append(key)
    if (root / TYPES_FILE).is_file():
        data.types = types_for(data.names, read_type_table(root / TYPES_FILE))
    return data


def split_indices(
    n: int, dev_fraction: float = 0.2, seed: int = NOTEBOOK_SEED
) -> tuple[list[int], list[int]]:
    """Train and dev indices, drawn exactly as the reference notebook does.

    ``torch.utils.data.random_split`` with a generator seeded ``seed`` and
    ``int(dev_fraction * n)`` dev items.

    Returns
    -------
    tuple of (list of int, list of int)
        Train indices and dev indices.
    """
    n_dev = int(dev_fraction * n)
    # random_split only draws a permutation, so a range is as good as a Dataset.
    train: torch.utils.data.Subset[int]
    dev: torch.utils.data.Subset[int]
    train, dev = torch.utils.data.random_split(
        range(n),  # type: ignore[arg-type]
        [n - n_dev, n_dev],
        generator=torch.Generator().manual_seed(seed),
    )
    return list(train.indices), list(dev.indices)
