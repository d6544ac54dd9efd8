"""Segmenting a large image block by block, with memory bounded by one block.

Each block is read from a lazy array together with the whole-image tiles
that cover it (:func:`aligned_region`), segmented by the ordinary tiled
inference of :mod:`~napari_bloodcells.core.inference.tiled`, cropped back to the block
and written to a zarr store, which marks it done. Because the tiles and their
blending are those of a whole-image run, the labels do not depend on where the
blocks fall. (At a scale other than 1 the tiles fall on the resized image; a
margin of context, the halo, is read instead.) The same function runs in one
process or, one block per task, on dask.distributed workers
(:mod:`~napari_bloodcells.core.large.cluster`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from napari_bloodcells.core.base.imaging import to_rgb_uint8
from napari_bloodcells.core.events import (
    BlocksSegmented,
    BlockWritten,
    Notice,
    SegmentationFinished,
)
from napari_bloodcells.core.inference.tiled import TileSettings, segment, tile_starts

if TYPE_CHECKING:
    from collections.abc import Callable, Generator

    from napari_bloodcells.core.large.stores import Block, LabelsStore
    from napari_bloodcells.core.model.trained import TrainedModel

DEFAULT_BLOCK = 2048
"""Block side in pixels: 12 MB of RGB pixels and 4 MB of labels per block."""


def default_halo(tiles: TileSettings, scale: float) -> int:
    """Margin read around each block: one tile overlap at the model's scale, at least 64 px."""
    return max(64, int(np.ceil(tiles.overlap / max(scale, 1e-6))))


def _covering(start: int, stop: int, length: int, tiles: TileSettings) -> slice:
    """The span of the whole-image tiles (:func:`~.infer.tile_starts`) that meet ``start:stop``."""
    size = tiles.size
    if length <= size:
        return slice(0, length)
    starts = [s for s in tile_starts(length, size, tiles.overlap) if s < stop and s + size > start]
    return slice(min(starts), max(starts) + size)


def aligned_region(
    block: Block, height: int, width: int, tiles: TileSettings
) -> tuple[slice, slice]:
    """The pixels to read for ``block``: exactly the tiles a whole-image run puts over it.

    Segmenting this region tiles it as the whole image would be tiled there
    (same tile positions, same blending), so the block's labels do not depend
    on where the blocks fall: tile seams stay where a single run has them.
    """
    return (
        _covering(block.top, block.bottom, height, tiles),
        _covering(block.left, block.right, width, tiles),
    )


def segment_block(
    model: TrainedModel,
    image: object,
    block: Block,
    *,
    halo: int,
    scale: float = 1.0,
    tiles: TileSettings | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> np.ndarray | None:
    """The labels of one block, from the block and its halo read out of ``image``.

    ``image`` is any ``(H, W, C)`` array that slices lazily (dask, zarr, numpy).
    Returns ``None`` if stopped.
    """
    height, width = image.shape[:2]  # type: ignore[attr-defined]
    tiles = tiles or TileSettings()
    if scale == 1.0:
        rows, cols = aligned_region(block, height, width, tiles)
    else:  # tiles fall on the resized image: a margin of context instead
        rows, cols = block.with_halo(halo, height, width)
    pixels = to_rgb_uint8(np.asarray(image[rows, cols]))  # type: ignore[index]
    result = None
    for event in segment(model, pixels, scale=scale, tiles=tiles, should_stop=should_stop):
        if isinstance(event, SegmentationFinished):
            result = event.result
    if result is None or result.labels is None:
        return None
    top, left = block.top - rows.start, block.left - cols.start
    return np.ascontiguousarray(
        result.labels[top : top + block.bottom - block.top, left : left + block.right - block.left]
    )


def segment_blocks(
    model: TrainedModel,
    image: object,
    store: LabelsStore,
    todo: list[Block],
    *,
    halo: int,
    scale: float = 1.0,
    tiles: TileSettings | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Generator[BlockWritten | Notice | BlocksSegmented, None, int]:
    """Segment and write ``todo`` blocks one after the other; returns how many were written.

    Stopping ends the job between tile batches; blocks written stay valid and
    marked done, the block under way is not written.
    """
    should_stop = should_stop or (lambda: False)
    for done, block in enumerate(todo):
        labels = segment_block(
            model, image, block, halo=halo, scale=scale, tiles=tiles, should_stop=should_stop
        )
        if labels is None:
            yield Notice(
                f"Stopped; {done} of {len(todo)} blocks were written to {store.path} and are kept."
            )
            yield BlocksSegmented(done, len(todo))
            return done
        store.write(block, labels)
        yield BlockWritten(done + 1, len(todo), block.row, block.col)
    yield BlocksSegmented(len(todo), len(todo))
    return len(todo)
