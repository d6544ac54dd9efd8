"""Real smear fields of another microscope (BCCD): zero-shot, then 10 corrected fields.

Measured from BCCD's white-cell boxes (``napari_bloodcells.core.smear_fields``):
recall is the share of white-cell boxes with at least 5 % predicted nucleus,
precision the share of predicted nucleus pixels inside a white-cell box grown
by 10 %. As a user would:

1. estimate the scale of the fields with the base model (``--scale auto``; the
   median over the train split is the one ``S`` the user then types);
2. segment the val split zero-shot at ``S`` and score it;
3. draw 10 fields of the train split, segment them and correct them the way a
   user does in napari: everything outside the white-cell boxes erased;
4. fine-tune with the product's own command as a whole process, timed:
   ``napari-bloodcells train --data DIR --init BASE --scale S --out FT``;
5. score the val split with the fine-tuned model, and Dataset 1's dev split
   before and after (forgetting).

Steps 3-5 run for several draws of the 10 fields; the medians are reported.

    python benchmarks/smear_fields.py base.pt [--draws 5] [--corrections 10]
        [--fields ../shared/data/BCCD-trainval] [--json out.json] [--leave-cells]
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from _common import bloodcell_data, hardware, median, write_json
from napari_bloodcells.core.base.classes import UNLABELLED
from napari_bloodcells.core.base.metrics import score_labels
from napari_bloodcells.core.data.dataset import read_image, split_indices
from napari_bloodcells.core.data.smear_fields import (
    Field,
    NucleusScore,
    inside_mask,
    keep_inside,
    load_fields,
    score_nucleus,
)
from napari_bloodcells.core.inference.magnification import estimate_scale
from napari_bloodcells.core.inference.tiled import segment_image
from napari_bloodcells.core.model.checkpoint import load_checkpoint

if TYPE_CHECKING:
    from napari_bloodcells.core.model.trained import TrainedModel

FIELDS = Path(__file__).resolve().parents[2] / "shared" / "data" / "BCCD-trainval"


def auto_scale(model: TrainedModel, train_fields: list[Field], count: int = 40) -> float:
    """The median of ``--scale auto`` over the first ``count`` train fields: one scale for all."""
    fields = train_fields[:count]
    return float(np.median([estimate_scale(model, read_image(f.image_path)).scale for f in fields]))


def score_fields(model: TrainedModel, fields: list[Field], scale: float) -> NucleusScore:
    """Pooled nucleus recall and precision of ``model`` on ``fields`` at ``scale``."""
    total = NucleusScore()
    for field in fields:
        labels = segment_image(model, read_image(field.image_path), scale=scale)[0]
        total = total + score_nucleus(labels, field.white_cells)
    return total


def dataset1_dev(model: TrainedModel) -> tuple[float, float]:
    """Pooled (cytoplasm, nucleus) Dice on Dataset 1's dev split."""
    data = bloodcell_data()
    _, dev_idx = split_indices(len(data))
    dev = data.subset(dev_idx)
    preds = [segment_image(model, image)[0] for image in dev.images]
    scores = score_labels(preds, dev.masks, model.classes.num_classes)
    return scores.dice[1], scores.dice[2]


def write_corrections(
    model: TrainedModel, fields: list[Field], scale: float, root: Path, leave_cells: bool = False
) -> Path:
    """Segment ``fields``, erase outside the white cells, write ``root/{images,masks}``.

    With ``leave_cells`` the white cells' boxes are left unlabelled (255) instead
    of kept as predicted: the user only erases what is wrong.
    """
    for field in fields:
        image = read_image(field.image_path)
        labels = keep_inside(segment_image(model, image, scale=scale)[0], field.white_cells)
        if leave_cells:
            labels[inside_mask(field.white_cells, labels.shape)] = UNLABELLED
        for sub, array in (("images", image), ("masks", labels)):
            path = root / sub / f"{field.name}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(path)
    return root


def fine_tune(base: Path, folder: Path, scale: float, out: Path) -> tuple[float, str]:
    """The product's fine-tune as a whole process; returns (seconds, what it printed)."""
    command = [
        sys.executable,
        "-m",
        "napari_bloodcells.cli",
        "train",
        "--data",
        str(folder),
        "--init",
        str(base),
        "--scale",
        f"{scale:.4g}",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"train failed:\n{done.stdout}\n{done.stderr}")
    return seconds, done.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("base", type=Path, help="a model from napari-bloodcells train")
    parser.add_argument("--fields", type=Path, default=FIELDS)
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--corrections", type=int, default=10)
    parser.add_argument("--json", default=None)
    parser.add_argument(
        "--leave-cells",
        action="store_true",
        help="correct by erasing only: the white cells' boxes stay unlabelled (255)",
    )
    args = parser.parse_args()
    print(hardware())

    base = load_checkpoint(args.base)
    train_fields = load_fields(args.fields, "train")
    val_fields = load_fields(args.fields, "val")
    scale = auto_scale(base, train_fields)
    print(f"--scale auto on 40 train fields: median {scale:.3f}")

    zero = score_fields(base, val_fields, scale)
    before = dataset1_dev(base)
    print(
        f"zero-shot on {len(val_fields)} val fields: recall {zero.recall:.3f}, "
        f"precision {zero.precision:.3f}; Dataset 1 dev Dice cytoplasm {before[0]:.3f}, "
        f"nucleus {before[1]:.3f}"
    )
    rows = []
    for draw in range(args.draws):
        chosen = random.Random(draw).sample(train_fields, args.corrections)
        with tempfile.TemporaryDirectory() as tmp:
            folder = write_corrections(
                base, chosen, scale, Path(tmp) / "fields", leave_cells=args.leave_cells
            )
            seconds, printed = fine_tune(args.base, folder, scale, Path(tmp) / "ft.pt")
            tuned = load_checkpoint(Path(tmp) / "ft.pt")
        after = score_fields(tuned, val_fields, scale)
        dev = dataset1_dev(tuned)
        said = next((line for line in printed.splitlines() if "corrections:" in line), "")
        rows.append(
            {
                "draw": draw,
                "recall": after.recall,
                "precision": after.precision,
                "forgetting_cytoplasm": before[0] - dev[0],
                "forgetting_nucleus": before[1] - dev[1],
                "seconds": seconds,
                "said": said,
            }
        )
        print(
            f"draw {draw}: recall {after.recall:.3f}, precision {after.precision:.3f}, "
            f"Dataset 1 dev -{before[0] - dev[0]:.4f} / -{before[1] - dev[1]:.4f}, "
            f"{seconds:.1f} s\n  {said}"
        )
    figures = {
        "scale": scale,
        "zero_shot": {"recall": zero.recall, "precision": zero.precision},
        "dataset1_dev_before": before,
        "draws": rows,
    }
    if rows:
        keys = ("recall", "precision", "forgetting_cytoplasm", "forgetting_nucleus", "seconds")
        figures["median"] = {key: median([r[key] for r in rows]) for key in keys}
        m = figures["median"]
        print(
            f"\n| {args.corrections} corrected fields, median of {len(rows)} draws | value |\n"
            f"|---|---|\n| val recall | {m['recall']:.3f} |\n"
            f"| val precision | {m['precision']:.3f} |\n"
            f"| Dataset 1 dev forgetting, cytoplasm | {m['forgetting_cytoplasm']:.4f} |\n"
            f"| Dataset 1 dev forgetting, nucleus | {m['forgetting_nucleus']:.4f} |\n"
            f"| fine-tune, whole process | {m['seconds']:.1f} s |"
        )
    write_json(figures, args.json)


if __name__ == "__main__":
    main()
