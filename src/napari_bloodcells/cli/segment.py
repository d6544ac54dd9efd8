"""``napari-bloodcells segment``: class-label images of image files, folders and slides."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from napari_bloodcells.cli.common import StopOnCtrlC, pixel_size, scale_value
from napari_bloodcells.core.base.bounds import check_bounds
from napari_bloodcells.core.events import (
    BlockWritten,
    FileSegmented,
    Notice,
    ScaleChosen,
    run_to_end,
)
from napari_bloodcells.core.inference.tiled import TileSettings
from napari_bloodcells.core.jobs import (
    close_cluster,
    connect_cluster,
    resolve_device,
    segment_files,
)
from napari_bloodcells.errors import ConfigError

if TYPE_CHECKING:
    import argparse

    import torch

HELP = "write class-index label images"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="a .pt model or a bioimage.io package (.zip)")
    parser.add_argument(
        "images",
        type=Path,
        nargs="+",
        help="image files, folders or glob patterns; zarr, OME-Zarr and (pyramidal) TIFF are "
        "read block by block",
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output folder (PNG labels; large images as <name>.zarr), or a .zarr group",
    )
    parser.add_argument(
        "--scale",
        type=scale_value,
        default=1.0,
        help="resize factor before prediction (0.5 halves each side), or 'auto' to "
        "estimate it per image from the cells' size",
    )
    parser.add_argument("--measure", type=Path, help="also measure the cells into this CSV")
    parser.add_argument("--pixel-size", type=float, help="micrometres per pixel, for areas in µm²")
    cpu, gpu = TileSettings(), TileSettings.for_device("cuda")
    parser.add_argument(
        "--tile-size", type=int, help=f"default {cpu.size} on a CPU, {gpu.size} on a GPU"
    )
    parser.add_argument("--overlap", type=int, default=cpu.overlap)
    parser.add_argument(
        "--tile-batch", type=int, help=f"default {cpu.batch} on a CPU, {gpu.batch} on a GPU"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--resume", action="store_true", help="skip the finished files and blocks of an earlier run"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument(
        "--into-input",
        action="store_true",
        help="write the labels of an OME-Zarr input into it, as <input>/labels/bloodcells",
    )
    parser.add_argument(
        "--block", type=int, default=2048, help="block side for large images (pixels)"
    )
    parser.add_argument(
        "--workers", type=int, help="spread the work over a local dask cluster of N processes"
    )
    parser.add_argument(
        "--scheduler", help="spread the work over this running dask cluster (tcp://host:port)"
    )


def _print_event(event: object) -> None:
    if isinstance(event, ScaleChosen):
        print(f"{event.name}: scale {event.scale:g}")
        if event.message:
            print(event.message, file=sys.stderr)
    elif isinstance(event, FileSegmented):
        print(f"{event.source} -> {event.target}")
    elif isinstance(event, BlockWritten):
        print(f"  block {event.done}/{event.total}", file=sys.stderr)
    elif isinstance(event, Notice):
        print(event.message, file=sys.stderr)


def _tiles(args: argparse.Namespace, device: torch.device | str) -> TileSettings:
    defaults = TileSettings.for_device(None if device == "auto" else device)
    tiles = TileSettings(
        defaults.size if args.tile_size is None else args.tile_size,
        args.overlap,
        defaults.batch if args.tile_batch is None else args.tile_batch,
    )
    check_bounds(tiles)
    return tiles


def run(args: argparse.Namespace) -> int:
    local = args.workers is None and not args.scheduler
    # Dask workers choose their own device; their tiles are the CPU's unless one is named.
    device = resolve_device(args.device) if local else args.device
    tiles = _tiles(args, device)
    if args.block < 256:
        raise ConfigError(f"--block must be at least 256 pixels (got {args.block}).")
    client = None if local else connect_cluster(args.workers, args.scheduler)
    try:
        with StopOnCtrlC() as stop:
            job = segment_files(
                args.model,
                args.images,
                args.out,
                scale=args.scale,
                tiles=tiles,
                device=device,
                should_stop=stop,
                measure_to=args.measure,
                pixel_size=pixel_size(args.pixel_size),
                resume=args.resume,
                overwrite=args.overwrite,
                block=args.block,
                client=client,
                into_input=args.into_input,
            )
            run_to_end(job, _print_event)
    finally:
        if client is not None:
            close_cluster(client)
    return 0
