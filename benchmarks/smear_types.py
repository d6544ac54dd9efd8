"""Typing the white cells of a real microscope's smear fields (BCCD val, #24).

The 87 val fields of ``../shared/data/BCCD-trainval`` carry white-cell boxes but no
types. ``bccd_val_types.csv`` types 56 of them (fields with one white cell), **labelled
by eye by a developer, not by an expert**, from the cells' look (granules, lobes,
cytoplasm); those that were blurred, torn, smudged or ambiguous are left out. Treat
its figures as a rough check on another microscope, not as ground truth.

Each field is segmented by the model at ``--scale auto`` (the median of 40 train
fields, as ``smear_fields.py`` does); the largest cell that the segmentation finds in
the box is cut and typed, as ``measure`` cuts it. Reported:

1. typed as trained (one cell at a time, ``--no-adapt``);
2. adapted to the batch statistics of all the val fields' cells (what ``measure`` does with 50
   or more cells, no label read);
3. after 10 reclassified cells (the product's type fine-tune, each of the 10 judged by a
   fine-tune that had not seen it, Dataset 1's cells replayed), on the 46 other labelled
   cells, typed both ways; three draws of the 10, medians.

``--refit-types`` first replaces the checkpoint's type model by one trained with this
version's recipe on Dataset 1's train split, as ``train`` would.

    python smear_types.py MODEL [--refit-types] [--json out.json]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from _common import bloodcell_data, hardware, median, write_json
from differential import SHARE, TYPES, corrections_of, predicted, scores
from napari_bloodcells.core.data.dataset import read_image, split_indices
from napari_bloodcells.core.data.smear_fields import load_fields
from napari_bloodcells.core.data.type_table import image_key, read_type_table
from napari_bloodcells.core.inference.tiled import segment_image
from napari_bloodcells.core.measure.cell_crops import cell_crops
from napari_bloodcells.core.measure.cells import cells_from_classes
from napari_bloodcells.core.model.checkpoint import load_checkpoint
from napari_bloodcells.core.training.type_finetune import finetune_types
from napari_bloodcells.core.training.type_fit import (
    TypedCells,
    accuracy,
    fit_types,
    typed_cells,
)
from smear_fields import FIELDS, auto_scale

LABELS = Path(__file__).with_name("bccd_val_types.csv")


def field_cells(model, scale: float) -> tuple[list[str], np.ndarray]:
    """The image name and crop of the largest segmented cell in each val field's box."""
    names, crops = [], []
    types = model.type_model
    for field in load_fields(FIELDS, "val"):
        if len(field.white_cells) != 1:
            continue  # the types are per image: one white cell each
        image = read_image(field.image_path)
        classes = segment_image(model, image, scale=scale)[0]
        cells = cells_from_classes(classes)
        box = field.white_cells[0]
        counts = np.bincount(cells[box.y0 : box.y1, box.x0 : box.x1].ravel())
        counts[0] = 0
        if counts.max() == 0:
            continue  # nothing found there: a missed cell is the segmentation's score
        crop, _ = cell_crops(
            image, classes, cells, side=types.side, margin=types.margin, ids=[int(counts.argmax())]
        )
        names.append(field.image_path.name)
        crops.append(crop[0])
    return names, np.stack(crops)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("model", type=Path, help="a model with types from napari-bloodcells train")
    parser.add_argument("--refit-types", action="store_true")
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    print(hardware())
    model = load_checkpoint(args.model)
    if model.type_model is None:
        sys.exit(f"{args.model} has no cell types: train it on data with types first.")
    data = bloodcell_data()
    train_idx, dev_idx = split_indices(len(data))
    replay, reference = typed_cells(data.subset(train_idx)), typed_cells(data.subset(dev_idx))
    if args.refit_types:
        model.type_model = fit_types(replay, model.type_model.types)
    start = model.type_model
    scale = auto_scale(model, load_fields(FIELDS, "train"))
    names, crops = field_cells(model, scale)
    table = read_type_table(LABELS)
    labelled = [i for i, name in enumerate(names) if image_key(name) in table]
    truth = TypedCells(crops[labelled], tuple(table[image_key(names[i])] for i in labelled))
    adapted = start.for_cells(crops)
    figures: dict = {
        "scale": scale,
        "labelled cells found": f"{len(labelled)} of {len(table)}",
        "as trained": scores(np.array(truth.types), predicted(start, truth)),
        "adapted to all val cells": scores(np.array(truth.types), predicted(adapted, truth)),
    }
    rows = []
    for draw in range(args.draws):
        picked = corrections_of(start, truth, draw)
        rest = truth.subset([i for i in range(len(truth)) if i not in picked])
        tuned = finetune_types(
            start, truth.subset(picked), replay, reference=reference, share=SHARE, seed=draw
        )
        typed = {"as trained": tuned.kept, "adapted": tuned.kept.for_cells(crops)}
        rows.append({key: round(accuracy(m, rest) or 0.0, 3) for key, m in typed.items()})
        print(f"draw {draw}: {rows[-1]}; {tuned.sentence}", flush=True)
    if rows:
        figures["after 10 reclassified (median of draws)"] = {
            key: median([row[key] for row in rows]) for key in rows[0]
        }
    for key, value in figures.items():
        print(f"{key}: {value}")
    print(f"types: {TYPES}")
    write_json(figures, args.json)


if __name__ == "__main__":
    main()
