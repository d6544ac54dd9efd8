"""``napari-bloodcells evaluate``: per-class Dice and IoU of a model."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from napari_bloodcells.cli.common import file_progress
from napari_bloodcells.core.events import Notice, run_to_end
from napari_bloodcells.core.jobs import SPLITS, evaluation_job

if TYPE_CHECKING:
    import argparse

HELP = "per-class Dice and IoU of a model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", type=Path, help="default: the blood-cell dataset")
    parser.add_argument("--split", choices=list(SPLITS), default="dev")
    parser.add_argument(
        "--model-split",
        action="store_true",
        help="split as the model was trained (its dev fraction and seed) instead of the "
        "reference split that makes models comparable",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _notice(event: object) -> None:
    if isinstance(event, Notice):
        print(event.message, file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    job = evaluation_job(
        args.model,
        args.data,
        split=args.split,
        own_split=args.model_split,
        device=args.device,
        progress=file_progress("download"),
    )
    scores = run_to_end(job, _notice)
    if args.json:
        record = asdict(scores)
        record["dice"] = dict(zip(scores.classes, scores.dice, strict=True))
        record["iou"] = dict(zip(scores.classes, scores.iou, strict=True))
        del record["classes"]
        print(json.dumps(record, indent=2))
        return 0
    where = "" if scores.split == "all" else f" ({scores.split_rule})"
    print(f"{scores.split} split{where}, {scores.images} images (pooled pixels)")
    print(f"{'class':<12} {'Dice':>7} {'IoU':>7}")
    for name, dice, iou in zip(scores.classes, scores.dice, scores.iou, strict=True):
        print(f"{name:<12} {dice:7.4f} {iou:7.4f}")
    return 0
