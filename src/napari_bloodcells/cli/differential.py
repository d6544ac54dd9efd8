"""``napari-bloodcells differential``: how many white cells of each type."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from napari_bloodcells.cli.common import (
    StopOnCtrlC,
    add_adapt_argument,
    check_writable,
    scale_value,
)
from napari_bloodcells.core.events import FileSegmented, Notice, run_to_end
from napari_bloodcells.core.jobs import DEFAULT_THRESHOLD, differential_job

if TYPE_CHECKING:
    import argparse

HELP = "count the white cells of each type (the differential) in images, labels or cell tables"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs",
        type=Path,
        nargs="+",
        help="images (segmented first), class-label images (with --images), or cell tables "
        "(CSV with a type column, e.g. from the gallery)",
    )
    parser.add_argument("--model", type=Path, help="a .pt model with cell types")
    parser.add_argument("--out", type=Path, required=True, help="the report CSV to write")
    parser.add_argument("--images", type=Path, help="the folder of the labels' images")
    parser.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help="cells whose type is less probable are counted as to verify",
    )
    add_adapt_argument(parser)
    parser.add_argument(
        "--scale", type=scale_value, default=1.0, help="resize factor for images, or 'auto'"
    )


def _print(event: object) -> None:
    if isinstance(event, FileSegmented):
        print(f"segmented {event.source} -> {event.target}", file=sys.stderr)
    elif isinstance(event, Notice):
        print(event.message, file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    check_writable(args.out)
    with StopOnCtrlC() as stop:
        rows = run_to_end(
            differential_job(
                args.inputs,
                args.out,
                model=args.model,
                images=args.images,
                threshold=args.threshold,
                adapt=args.adapt,
                scale=args.scale,
                should_stop=stop,
            ),
            _print,
        )
    for row in rows:
        shares = ", ".join(
            f"{kind} {row.counts[kind]} ({row.percent(kind):.0f} %)"
            for kind in row.counts
            if row.counts[kind]
        )
        print(f"{row.image}: {row.cells} cells; {shares or 'none'}; {row.to_verify} to verify")
    return 0
