"""``napari-bloodcells measure``: per-cell measurements of class-label images."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from napari_bloodcells.cli.common import add_adapt_argument, pixel_size
from napari_bloodcells.core.events import Notice, run_to_end
from napari_bloodcells.core.jobs import DEFAULT_THRESHOLD, measure_files

if TYPE_CHECKING:
    import argparse

HELP = "per-cell measurements (N:C ratio, lobes, ...) of class-label images"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("labels", type=Path, nargs="+", help="label images of classes 0/1/2")
    parser.add_argument("--out", type=Path, required=True, help="the CSV to write")
    parser.add_argument("--pixel-size", type=float, help="micrometres per pixel, for areas in µm²")
    parser.add_argument("--model", type=Path, help="a model with cell types: adds each cell's type")
    parser.add_argument(
        "--images",
        type=Path,
        help="the folder of the labels' images (same names): mean colours, types",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help="cells whose type is less probable are marked to_verify",
    )
    add_adapt_argument(parser)


def _print_notice(event: object) -> None:
    if isinstance(event, Notice):
        print(event.message)


def run(args: argparse.Namespace) -> int:
    job = measure_files(
        args.labels,
        args.out,
        pixel_size=pixel_size(args.pixel_size),
        model=args.model,
        images=args.images,
        threshold=args.threshold,
        adapt=args.adapt,
    )
    run_to_end(job, _print_notice)
    return 0
