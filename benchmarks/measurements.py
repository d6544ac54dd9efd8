"""N:C ratio from predictions against the ground truth, on Dataset 1's dev split.

For each dev image, the largest cell's nucleus:cytoplasm ratio measured on the
model's prediction (``core.measure``) is compared with the ratio a direct
count of the ground-truth pixels gives; the figure is the median relative
error (target: at most 6 %). ``--calibrate`` first fits the class-area offsets
of ``core.calibrate`` (for models trained before training did it): on the whole
dev split, or on each half of it and measured on the other half.

    python benchmarks/measurements.py model.pt [--calibrate none|dev|halves]
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import torch

from _common import bloodcell_data, hardware
from napari_bloodcells.core.base.metrics import ConfusionMatrix
from napari_bloodcells.core.data.dataset import split_indices
from napari_bloodcells.core.inference.tiled import segment_image
from napari_bloodcells.core.measure.cells import measure_cells
from napari_bloodcells.core.model.checkpoint import load_checkpoint
from napari_bloodcells.core.training.calibrate import add_to_head, fit_class_offsets


def largest_cell_ratio(labels: np.ndarray) -> float:
    """N:C ratio of the largest cell that :func:`measure_cells` finds in ``labels``."""
    _, table = measure_cells(labels)
    rows = table.rows()
    if not rows:
        return float("nan")
    return float(max(rows, key=lambda r: r["area"])["nc_ratio"])


def errors_and_dice(model, data, indices) -> tuple[list[float], ConfusionMatrix]:
    """Relative N:C errors of the largest cells, and the pooled confusion matrix."""
    errors, matrix = [], ConfusionMatrix(model.spec.num_classes)
    for i in indices:
        truth = data.masks[i]
        direct = float((truth == 2).sum()) / float((truth == 1).sum())
        labels = segment_image(model, data.images[i])[0]
        matrix.update(labels, truth)
        errors.append(abs(largest_cell_ratio(labels) - direct) / direct)
    return errors, matrix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("model", type=Path)
    parser.add_argument(
        "--calibrate",
        choices=["none", "dev", "halves"],
        default="none",
        help="first fit class offsets (core.calibrate) on the dev split, or on each half of it "
        "and measure on the other half",
    )
    args = parser.parse_args()
    print(hardware())
    data = bloodcell_data()
    _, dev_idx = split_indices(len(data))
    base = load_checkpoint(args.model)
    if args.calibrate == "halves":
        folds = [(dev_idx[::2], dev_idx[1::2]), (dev_idx[1::2], dev_idx[::2])]
    elif args.calibrate == "dev":
        folds = [(dev_idx, dev_idx)]
    else:
        folds = [([], dev_idx)]
    errors, matrix = [], ConfusionMatrix(base.spec.num_classes)
    for fit_on, measure_on in folds:
        model = copy.deepcopy(base)
        if fit_on:
            offsets = fit_class_offsets(
                model, data.subset(fit_on), torch.Generator().manual_seed(0)
            )
            add_to_head(model.network, offsets)
            print("class offsets", [round(o, 2) for o in offsets])
        fold_errors, fold_matrix = errors_and_dice(model, data, measure_on)
        errors += fold_errors
        matrix.matrix += fold_matrix.matrix
    errors = np.asarray(errors)
    dice = matrix.scores().dice
    print(
        f"N:C of the largest cell, {len(errors)} dev images: median relative error "
        f"{np.median(errors):.1%} (90th percentile {np.percentile(errors, 90):.1%}); "
        f"Dice cytoplasm {dice[1]:.4f}, nucleus {dice[2]:.4f}"
    )


if __name__ == "__main__":
    main()
