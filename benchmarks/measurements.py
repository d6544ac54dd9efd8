"""N:C ratio from predictions against the ground truth, on Dataset 1's dev split.

For each dev image, the largest cell's nucleus:cytoplasm ratio measured on the
model's prediction (``core.measure``) is compared with the ratio a direct
count of the ground-truth pixels gives; the figure is the median relative
error (target: at most 6 %).

    python benchmarks/measurements.py model.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from _common import bloodcell_data, hardware
from napari_bloodcells.core.checkpoint import load_checkpoint
from napari_bloodcells.core.dataset import split_indices
from napari_bloodcells.core.infer import segment_image
from napari_bloodcells.core.measure import measure_cells


def largest_cell_ratio(labels: np.ndarray) -> float:
    """N:C ratio of the largest cell that :func:`measure_cells` finds in ``labels``."""
    _, table = measure_cells(labels)
    rows = table.rows()
    if not rows:
        return float("nan")
    return float(max(rows, key=lambda r: r["area"])["nc_ratio"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("model", type=Path)
    args = parser.parse_args()
    print(hardware())
    data = bloodcell_data()
    _, dev_idx = split_indices(len(data))
    model = load_checkpoint(args.model)
    errors = []
    for i in dev_idx:
        truth = data.masks[i]
        direct = float((truth == 2).sum()) / float((truth == 1).sum())
        predicted = largest_cell_ratio(segment_image(model, data.images[i])[0])
        errors.append(abs(predicted - direct) / direct)
    errors = np.asarray(errors)
    print(
        f"N:C of the largest cell, {len(errors)} dev images: median relative error "
        f"{np.median(errors):.1%} (90th percentile {np.percentile(errors, 90):.1%})"
    )


if __name__ == "__main__":
    main()
