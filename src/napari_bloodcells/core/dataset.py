"""Image/mask pairs: reading folders, converting masks, splitting.

A :class:`SegmentationData` holds images as ``(H, W, 3) uint8`` arrays and
masks as ``(H, W) uint8`` class indices, each pair at its native size. It is
built from a folder (:func:`load_folder`), from napari layer data
(:func:`from_arrays`), or from the blood-cell dataset (:func:`bloodcell_folder`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from napari_bloodcells.core.download import Progress, cache_dir, fetch_raw
from napari_bloodcells.errors import DataError

if TYPE_CHECKING:
    from collections.abc import Sequence

IMAGE_SUFFIXES = frozenset({".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff"})
UPSTREAM_MASK_VALUES = (0, 128, 255)
"""Grey levels of background, cytoplasm and nucleus in the upstream masks."""
NOTEBOOK_SEED = 909
DATASET_FOLDER = "bloodcells_seg"


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
    """

    images: list[np.ndarray]
    masks: list[np.ndarray]
    names: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.names:
            self.names = [f"image {i}" for i in range(len(self.images))]
        if not (len(self.images) == len(self.masks) == len(self.names)):
            raise DataError(
                f"Got {len(self.images)} images but {len(self.masks)} masks; "
                "give exactly one mask per image."
            )

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: Sequence[int]) -> SegmentationData:
        """Pairs at ``indices``, in that order."""
        return SegmentationData(
            [self.images[i] for i in indices],
            [self.masks[i] for i in indices],
            [self.names[i] for i in indices],
        )

    def check_foreground(self) -> None:
        """Raise :class:`DataError` if every mask is background only: nothing to learn from."""
        if not any(m.any() for m in self.masks):
            raise DataError(
                "The labels are all background (0); paint some cytoplasm (1) and nucleus (2) "
                "before training."
            )

    def check_classes(self, num_classes: int) -> None:
        """Raise :class:`DataError` if a mask holds a value outside ``0..num_classes-1``."""
        for name, mask in zip(self.names, self.masks, strict=False):
            values = np.unique(mask)
            bad = values[values >= num_classes]
            if bad.size:
                shown = ", ".join(str(v) for v in bad[:5])
                raise DataError(
                    f"The mask of {name} holds the value(s) {shown}, but the model has only "
                    f"classes 0 to {num_classes - 1}; relabel those pixels or use a model "
                    "with more classes."
                )


def mask_from_grey(grey: np.ndarray, name: str = "mask") -> np.ndarray:
    """Convert an upstream 0/128/255 mask to class indices 0/1/2.

    Parameters
    ----------
    grey : ndarray
        ``(H, W)`` integer mask with values in {0, 128, 255}.
    name : str
        Used in the error message.

    Returns
    -------
    ndarray
        ``(H, W) uint8`` with 0 background, 1 cytoplasm, 2 nucleus.
    """
    grey = np.asarray(grey)
    if grey.ndim != 2:
        raise DataError(f"The mask {name} has shape {grey.shape}; a mask must be a 2D image.")
    lut = np.full(256, 255, dtype=np.uint8)
    for index, level in enumerate(UPSTREAM_MASK_VALUES):
        lut[level] = index
    grey = _as_uint8(grey, f"The mask {name} holds", "upstream masks use 0, 128, 255")
    classes = lut[grey]
    if (classes == 255).any():
        odd = sorted(set(np.unique(grey[classes == 255]).tolist()))[:5]
        raise DataError(
            f"The mask {name} holds grey level(s) {odd}; expected only 0, 128 and 255 "
            "(background, cytoplasm, nucleus)."
        )
    return classes


def _as_uint8(values: np.ndarray, subject_holds: str, fix: str) -> np.ndarray:
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

    Grayscale, palette and RGBA files are converted. 16-bit and float files
    are accepted only when their values fit 8 bits (or 0..1), as
    :func:`~napari_bloodcells.core.imaging.to_rgb_uint8` requires; they are
    never clipped.

    Raises
    ------
    DataError
        If the file is not a readable image, or its values do not fit 8 bits.
    """
    from napari_bloodcells.core.imaging import to_rgb_uint8

    try:
        with Image.open(path) as im:
            if im.mode in _HIGH_DEPTH_MODES or im.mode in {"L", "RGB", "RGBA"}:
                pixels = np.asarray(im)
            else:
                pixels = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(
            f"Cannot read the image {path} ({exc}); replace or remove the damaged file."
        ) from exc
    return to_rgb_uint8(pixels, str(path))


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
    """Read pairs from ``root/images/**`` and ``root/masks/**``.

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
    return data


def from_arrays(images: np.ndarray, masks: np.ndarray) -> SegmentationData:
    """Build pairs from napari layer data.

    Parameters
    ----------
    images : ndarray
        ``(H, W, 3)`` or a stack ``(N, H, W, 3)``; any real dtype, see
        :func:`napari_bloodcells.core.imaging.to_rgb_uint8`.
    masks : ndarray
        ``(H, W)`` or ``(N, H, W)`` class indices.

    Returns
    -------
    SegmentationData
    """
    from napari_bloodcells.core.imaging import to_rgb_uint8

    images, masks = np.asarray(images), np.asarray(masks)
    if images.ndim == 3 and masks.ndim == 2:
        images, masks = images[None], masks[None]
    if images.ndim != 4 or masks.ndim != 3:
        raise DataError(
            f"Got an image of shape {images.shape} and labels of shape {masks.shape}; give an "
            "RGB image (H, W, 3) or stack (N, H, W, 3) with labels (H, W) or (N, H, W)."
        )
    if images.shape[:3] != masks.shape:
        raise DataError(
            f"The image is {images.shape[:3]} but the labels are {masks.shape}; the labels "
            "must have the image's shape without its colour axis."
        )
    masks = _as_uint8(masks, "The labels hold", "use class indices 0, 1, 2")
    rgb = [to_rgb_uint8(im) for im in images]
    return SegmentationData(rgb, list(masks))


def split_indices(n: int, dev_fraction: float = 0.2, seed: int = NOTEBOOK_SEED) -> tuple:
    """Train and dev indices, drawn exactly as the reference notebook does.

    ``torch.utils.data.random_split`` with a generator seeded ``seed`` and
    ``int(dev_fraction * n)`` dev items.

    Returns
    -------
    tuple of (list of int, list of int)
        Train indices and dev indices.
    """
    n_dev = int(dev_fraction * n)
    train, dev = torch.utils.data.random_split(
        range(n), [n - n_dev, n_dev], generator=torch.Generator().manual_seed(seed)
    )
    return list(train.indices), list(dev.indices)


def write_pairs(raw: Path, dest: Path) -> Path:
    """Convert the upstream files into the notebook's layout, atomically.

    Writes ``dest/bloodcells_seg/{images,masks}/all/NNN.png``; masks hold class
    indices. The folder appears complete or not at all.

    Returns
    -------
    Path
        ``dest/bloodcells_seg``.
    """
    final = dest / DATASET_FOLDER
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{DATASET_FOLDER}-", dir=dest))
    try:
        (staging / "images" / "all").mkdir(parents=True)
        (staging / "masks" / "all").mkdir(parents=True)
        for bmp in sorted((raw / "Dataset 1").glob("*.bmp")):
            grey = np.asarray(Image.open(bmp.with_suffix(".png")))
            Image.fromarray(read_image(bmp)).save(staging / "images" / "all" / f"{bmp.stem}.png")
            Image.fromarray(mask_from_grey(grey, bmp.with_suffix(".png").name)).save(
                staging / "masks" / "all" / f"{bmp.stem}.png"
            )
        if final.exists():
            old = final.with_name(f".{DATASET_FOLDER}-old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(staging, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def bloodcell_folder(dest: Path | None = None, progress: Progress | None = None) -> Path:
    """The blood-cell dataset in the notebook's layout, downloading it if needed.

    Parameters
    ----------
    dest : Path, optional
        Where to write ``bloodcells_seg``; defaults to the cache folder.
    progress : callable, optional
        Passed to :func:`fetch_raw`.

    Returns
    -------
    Path
        The ``bloodcells_seg`` folder, usable with :func:`load_folder`.
    """
    dest = dest or cache_dir()
    final = dest / DATASET_FOLDER
    if len(list((final / "masks" / "all").glob("*.png"))) == 300:
        return final
    raw = fetch_raw(cache=cache_dir(), progress=progress)
    return write_pairs(raw, dest)
