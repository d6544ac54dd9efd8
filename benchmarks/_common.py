"""Shared set-up for the benchmark scripts: the dataset from ../shared or the cache."""

from __future__ import annotations

import os
from pathlib import Path

from napari_bloodcells.core.dataset import SegmentationData, bloodcell_folder, load_folder

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "segmentation_WBC"


def bloodcell_data() -> SegmentationData:
    """All 300 pairs; reads ../shared when present so no download is needed."""
    if SHARED.is_dir():
        os.environ.setdefault("NAPARI_BLOODCELLS_DATA_URL", str(SHARED))
    return load_folder(bloodcell_folder())


def median(values: list[float]) -> float:
    """The median of ``values``."""
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
