"""Accuracy of a preset: train on the notebook's split, then segment the dev images.

Trains with the chosen preset (timing the whole run, model construction and
data preparation included), then applies the model with ``segment_image`` --
what ``napari-bloodcells segment`` runs -- to each dev image at its native size,
and reports Dice and IoU of the pooled pixels per class.

    python benchmarks/accuracy.py --preset default
    python benchmarks/accuracy.py --preset seed
"""

from __future__ import annotations

import argparse
import time

from _common import bloodcell_data, write_json
from napari_bloodcells.core.base.metrics import score_labels
from napari_bloodcells.core.data.dataset import split_indices
from napari_bloodcells.core.events import EpochEnded, TrainingFinished
from napari_bloodcells.core.inference.tiled import segment_image
from napari_bloodcells.core.training.config import preset
from napari_bloodcells.core.training.loop import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--encoder")
    parser.add_argument("--arch")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()

    data = bloodcell_data()
    config = preset(args.preset).with_changes(
        epochs=args.epochs, lr=args.lr, encoder=args.encoder, arch=args.arch
    )
    started = time.perf_counter()
    result = None
    for event in train(config, data):
        if isinstance(event, EpochEnded):
            print(
                f"epoch {event.epoch:3d}  {time.perf_counter() - started:6.1f} s  "
                f"train {event.train_loss:.4f}  dev {event.dev_loss:.4f}  dice "
                + " ".join(f"{d:.3f}" for d in event.dice),
                flush=True,
            )
        elif isinstance(event, TrainingFinished):
            result = event.result
    train_seconds = time.perf_counter() - started

    _, dev_idx = split_indices(len(data), config.dev_fraction, config.split_seed)
    dev = data.subset(dev_idx)
    started = time.perf_counter()
    preds = [segment_image(result.model, image)[0] for image in dev.images]
    segment_seconds = time.perf_counter() - started
    scores = score_labels(preds, dev.masks, 3)
    figures = {
        "preset": args.preset,
        "config": config.to_dict(),
        "train_seconds": round(train_seconds, 1),
        "segment_seconds": round(segment_seconds, 2),
        "best_epoch": result.best_epoch,
        "dice": dict(zip(result.model.classes.names, scores.dice, strict=False)),
        "iou": dict(zip(result.model.classes.names, scores.iou, strict=False)),
    }
    print()
    print(
        "| preset | train s | dev images | Dice cytoplasm | Dice nucleus | IoU cytoplasm "
        "| IoU nucleus |"
    )
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {args.preset} | {train_seconds:.0f} | {len(dev)} | {scores.dice[1]:.3f} | "
        f"{scores.dice[2]:.3f} | {scores.iou[1]:.3f} | {scores.iou[2]:.3f} |"
    )
    write_json(figures, args.json)


if __name__ == "__main__":
    main()
