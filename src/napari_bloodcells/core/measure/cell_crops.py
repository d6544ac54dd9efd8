"""Each cell as the cell-type model sees it: a square crop sized to the cell.

A crop holds the RGB image around the cell (0..1) and two masks, the cell's own
cytoplasm and nucleus (neighbours' pixels are 0), resampled bilinearly to a fixed
side. Its size follows the cell's bounding box, so a cell looks the same at any
magnification; outside the image the crop is 0.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from skimage import measure

CYTOPLASM, NUCLEUS = 1, 2


def cell_crops(
    image: np.ndarray,
    labels: np.ndarray,
    cells: np.ndarray,
    *,
    side: int,
    margin: float,
    ids: list[int] | None = None,
) -> tuple[np.ndarray, list[int]]:
    """Crops of the cells of ``cells`` (ascending id, or ``ids`` in that order).

    Parameters
    ----------
    image : ndarray
        ``(H, W, 3) uint8`` RGB.
    labels : ndarray
        ``(H, W)`` classes 0, 1, 2.
    cells : ndarray
        ``(H, W)`` cell instances (0 = none), as from
        :func:`~napari_bloodcells.core.measure.cells.cells_from_classes`.
    side : int
        Crop side in pixels.
    margin : float
        Crop side as a multiple of the cell's larger bounding-box side.
    ids : list of int, optional
        Which cells, in which order; every cell by default.

    Returns
    -------
    crops : ndarray
        ``(N, 5, side, side) float32``.
    ids : list of int
        The cell id of each crop.
    """
    boxes = {int(r.label): r.bbox for r in measure.regionprops(np.asarray(cells))}
    ids = sorted(boxes) if ids is None else [i for i in ids if i in boxes]
    if not ids:
        return np.zeros((0, 5, side, side), np.float32), []
    height, width = labels.shape
    colour = torch.from_numpy(np.array(image[..., :3])).permute(2, 0, 1).float() / 255
    crops = np.zeros((len(ids), 5, side, side), np.float32)
    for n, cell in enumerate(ids):
        min_row, min_col, max_row, max_col = boxes[cell]
        half = max(max_row - min_row, max_col - min_col) * margin / 2
        top, left = (
            max(0, int((min_row + max_row) / 2 - half)),
            max(0, int((min_col + max_col) / 2 - half)),
        )
        bottom = min(height, int(np.ceil((min_row + max_row) / 2 + half)))
        right = min(width, int(np.ceil((min_col + max_col) / 2 + half)))
        own = cells[top:bottom, left:right] == cell
        window = labels[top:bottom, left:right]
        masks = np.stack([own & (window == CYTOPLASM), own & (window == NUCLEUS)])
        stacked = torch.cat([colour[:, top:bottom, left:right], torch.from_numpy(masks).float()])
        centre = ((min_row + max_row) / 2 - top, (min_col + max_col) / 2 - left)
        crops[n] = _resample(stacked, centre, half, side)
    return crops, ids


def _resample(
    window: torch.Tensor, centre: tuple[float, float], half: float, side: int
) -> np.ndarray:
    """The square of half-side ``half`` around ``centre`` (pixels of ``window``), at ``side``²."""
    _, h, w = window.shape
    # affine_grid works in [-1, 1] coordinates of the window (pixel centres, align_corners=False).
    theta = torch.tensor(
        [
            [half / (w / 2), 0.0, (centre[1] - w / 2) / (w / 2)],
            [0.0, half / (h / 2), (centre[0] - h / 2) / (h / 2)],
        ],
        dtype=torch.float32,
    )[None]
    grid = F.affine_grid(theta, [1, 5, side, side], align_corners=False)
    out = F.grid_sample(window[None], grid, align_corners=False, padding_mode="zeros")
    result: np.ndarray = out[0].numpy()
    return result


def cell_pair(
    image: np.ndarray,
    labels: np.ndarray,
    cells: np.ndarray,
    cell: int,
    *,
    not_a_cell: bool = False,
    margin: float = 2.0,
    minimum: int = 32,
) -> tuple[np.ndarray, np.ndarray]:
    """The image and labels around one cell, as a training pair for a reclassified cell.

    The window is ``margin`` times the cell's larger side (at least ``minimum``
    pixels where the image allows). Other cells in it are left unlabelled (255), so
    that only this cell is learned; with ``not_a_cell`` its own pixels become
    background, which teaches the segmentation that it is none.
    """
    from napari_bloodcells.core.base.classes import UNLABELLED

    rows, cols = np.nonzero(cells == cell)
    if rows.size == 0:
        raise ValueError(f"there is no cell {cell}")
    height, width = labels.shape
    half = max(minimum / 2, margin * max(np.ptp(rows) + 1, np.ptp(cols) + 1) / 2)
    centre = ((rows.min() + rows.max()) / 2, (cols.min() + cols.max()) / 2)
    top = max(0, int(centre[0] - half))
    left = max(0, int(centre[1] - half))
    bottom = min(height, int(np.ceil(centre[0] + half)) + 1)
    right = min(width, int(np.ceil(centre[1] + half)) + 1)
    window = (slice(top, bottom), slice(left, right))
    mask = np.array(labels[window], dtype=np.uint8)
    inside = cells[window]
    mask[(inside > 0) & (inside != cell)] = UNLABELLED
    if not_a_cell:
        mask[inside == cell] = 0
    return np.array(image[window][..., :3], dtype=np.uint8), mask
