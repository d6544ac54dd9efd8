"""``napari-bloodcells fetch``: download the blood-cell dataset."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from napari_bloodcells.cli.common import file_progress
from napari_bloodcells.core.jobs import bloodcell_folder, cache_dir

if TYPE_CHECKING:
    import argparse

HELP = "download the blood-cell dataset (Zheng et al. 2018)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dest",
        type=Path,
        help="folder for bloodcells_seg/ (default: ./data in a checkout, else the cache)",
    )


def _default_dest() -> Path:
    checkout = Path.cwd()
    if (checkout / "napari.yaml").is_file() and (checkout / "data" / "README.md").is_file():
        return checkout / "data"
    return cache_dir()


def run(args: argparse.Namespace) -> int:
    folder = bloodcell_folder(args.dest or _default_dest(), file_progress("download"))
    print(f"Blood-cell dataset ready in {folder}")
    return 0
