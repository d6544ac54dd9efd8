"""``napari-bloodcells gui``: napari with both docks and the sample loaded."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

HELP = "open napari with the widgets docked and the sample loaded"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sample", default="bloodcells", choices=["bloodcells", "single_cell", "none"]
    )


def run(args: argparse.Namespace) -> int:
    from napari_bloodcells._launch import launch

    launch(None if args.sample == "none" else args.sample)
    return 0
