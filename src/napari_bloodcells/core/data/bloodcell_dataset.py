"""The blood-cell dataset of Zheng et al. (2018), Dataset 1, in the notebook's layout.

:mod:`~napari_bloodcells.core.data.download` fetches and verifies the upstream
files; this module converts them once into ``bloodcells_seg/{images,masks}/all``
(masks as class indices 0/1/2) with a ``types.csv`` (the upstream cell types, which experts
did not check), which :func:`~napari_bloodcells.core.data.dataset.load_folder` reads like any
user folder.
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from napari_bloodcells.core.base.files import atomic_write
from napari_bloodcells.core.data.dataset import as_uint8, read_image
from napari_bloodcells.core.data.download import Progress, cache_dir, fetch_raw
from napari_bloodcells.core.data.type_table import TYPES_FILE, read_type_table
from napari_bloodcells.errors import DataError

SOURCE_NAME = "bloodcells"
"""``TrainConfig.data_source`` of models trained on this dataset."""
REFERENCE = (
    "Zheng X, Wang Y, Wang G, Liu J. Fast and robust segmentation of white blood cell images "
    "by self-supervised learning. Micron 107:55-71 (2018)"
)
DOI = "10.1016/j.micron.2018.01.010"
CREDIT = "Jiangxi Tecom Science Corporation, China"
"""Where the images come from (GPL-3.0)."""
CITATION = f"Images: {CREDIT}. Cite: {REFERENCE}. doi:{DOI}"

DATASET_FOLDER = "bloodcells_seg"
"""Name of the converted dataset's folder."""
IMAGE_COUNT = 300
"""Images in Dataset 1: a converted folder with fewer is incomplete."""
UPSTREAM_MASK_VALUES = (0, 128, 255)
TYPE_LABELS = "Class Labels of Dataset 1.csv"
"""The upstream type of each image's white cell (1-5); not checked by experts."""
"""Grey levels of background, cytoplasm and nucleus in the upstream masks."""


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
    grey = as_uint8(grey, f"The mask {name} holds", "upstream masks use 0, 128, 255")
    classes: np.ndarray = lut[grey]
    if (classes == 255).any():
        odd = sorted(set(np.unique(grey[classes == 255]).tolist()))[:5]
        raise DataError(
            f"The mask {name} holds grey level(s) {odd}; expected only 0, 128 and 255 "
            "(background, cytoplasm, nucleus)."
        )
    return classes


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
        write_types(raw, staging)
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


def write_types(raw: Path, folder: Path) -> None:
    """Write ``folder/types.csv`` from the upstream class labels (nothing if they are absent)."""
    source = raw / TYPE_LABELS
    if not source.is_file():
        return
    table = read_type_table(source)

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(("image", "type"))
            writer.writerows((f"{int(key):03d}.png", kind) for key, kind in table.items())

    atomic_write(folder / TYPES_FILE, write)


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
    if len(list((final / "masks" / "all").glob("*.png"))) == IMAGE_COUNT:
        if not (final / TYPES_FILE).is_file():  # converted by a version without types
            write_types(fetch_raw(cache=cache_dir(), progress=progress), final)
        return final
    raw = fetch_raw(cache=cache_dir(), progress=progress)
    return write_pairs(raw, dest)
