"""The correction queue's job: score the user's images and rank them, most useful first."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_bloodcells.core.base.files import atomic_write
from napari_bloodcells.core.base.imaging import to_rgb_uint8
from napari_bloodcells.core.data.dataset import read_image
from napari_bloodcells.core.events import Notice, Ranked, ScaleChosen, SegmentProgress
from napari_bloodcells.core.exchange.open_model import ModelSource, load_model
from napari_bloodcells.core.inference.magnification import estimate_scale
from napari_bloodcells.core.inference.suggest import suggestion
from napari_bloodcells.core.jobs.inputs import expand_inputs
from napari_bloodcells.errors import DataError

if TYPE_CHECKING:
    from collections.abc import Callable, Generator

    from napari_bloodcells.core.data.project import Suggestion
    from napari_bloodcells.core.inference.tiled import TileSettings
    from napari_bloodcells.core.model.trained import TrainedModel

QueueImages = Sequence[Path] | Sequence[tuple[str, np.ndarray]]
"""Image files, folders or glob patterns; or images in memory, each with its name (a
layer's name, or ``name [i]`` for a stack's slice)."""
AUTO_SCALE = "auto"
_SCALE_SAMPLES = 3


def _named_images(images: QueueImages) -> list[tuple[str, Path | np.ndarray]]:
    if all(isinstance(item, tuple) for item in images):
        return [(str(name), array) for name, array in images]  # type: ignore[misc]
    paths = expand_inputs([Path(p) for p in images])  # type: ignore[arg-type]
    return [(str(path), path) for path in paths]


def _pixels(item: Path | np.ndarray) -> np.ndarray:
    return read_image(item) if isinstance(item, Path) else to_rgb_uint8(np.asarray(item))


def _common_scale(
    model: TrainedModel, items: list[tuple[str, Path | np.ndarray]]
) -> Generator[ScaleChosen | Notice, None, float]:
    """The median estimate over the first readable images: one microscope, one scale."""
    found: list[float] = []
    for index, (name, item) in enumerate(items[: _SCALE_SAMPLES * 2]):
        try:
            estimate = estimate_scale(model, _pixels(item), name)
        except DataError:
            continue  # said when the image's turn comes
        yield ScaleChosen(index, name, estimate.scale, estimate.message)
        if estimate.found:
            found.append(estimate.scale)
        if len(found) == _SCALE_SAMPLES:
            break
    return round(float(np.median(found)), 3) if found else 1.0


def suggest_job(
    source: ModelSource,
    images: QueueImages,
    *,
    scale: float | str = 1.0,
    tiles: TileSettings | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Generator[SegmentProgress | Notice | ScaleChosen | Ranked, None, tuple[Suggestion, ...]]:
    """Score every image for the correction queue; ends with ``Ranked``, most useful first.

    Parameters
    ----------
    source : TrainedModel or Path
        The model whose mistakes the corrections will teach.
    images : sequence
        Files, folders or glob patterns, or ``(name, array)`` pairs.
    scale : float or "auto"
        The magnification; "auto" estimates it once, as the median over the first
        few images (one microscope's images share it).
    tiles : TileSettings, optional
        Tiling for large images.
    should_stop : callable, optional
        Polled between images; a stopped job ranks the images scored so far.

    Raises
    ------
    DataError
        No image among the inputs (an empty folder, a pattern that matches nothing).
    """
    should_stop = should_stop or (lambda: False)
    model = load_model(source)
    items = _named_images(images)
    if not items:
        raise DataError("There are no images to rank; open a folder or layers with images.")
    factor = float(scale) if scale != AUTO_SCALE else (yield from _common_scale(model, items))
    scored: list[Suggestion] = []
    for index, (name, item) in enumerate(items):
        if should_stop():
            yield Notice(f"Stopped after {index} of {len(items)} images; those are ranked.")
            break
        try:
            pixels = _pixels(item)
        except DataError as exc:
            yield Notice(f"Skipped {name}: {exc}")
            continue
        scored.append(suggestion(model, pixels, name, factor, tiles))
        yield SegmentProgress(index, len(items), 1, 1)
    ranked = tuple(sorted(scored, key=lambda s: -s.score))
    yield Ranked(ranked)
    return ranked


RANKING_COLUMNS = ("image", "score", "painted", "nucleus", "uncertain", "scale")


def write_ranking(ranked: Sequence[Suggestion], path: Path) -> Path:
    """Write a ranking as CSV (one row per image, most useful first), atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            out = csv.writer(handle)
            out.writerow(RANKING_COLUMNS)
            for s in ranked:
                numbers = (s.score, s.painted, s.nucleus, s.uncertain)
                out.writerow([s.name, *(f"{x:.4f}" for x in numbers), f"{s.scale:g}"])

    atomic_write(path, write)
    return path
