"""``napari-bloodcells export``: a model as a bioimage.io package."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from napari_bloodcells.cli.common import (
    EXIT_INTERRUPTED,
    StopOnCtrlC,
    check_writable,
    file_progress,
)
from napari_bloodcells.core.events import JobStep, run_to_end
from napari_bloodcells.core.exchange.export import WEIGHT_FORMATS, ExportSettings
from napari_bloodcells.core.jobs import export_model, load_model, sample_image
from napari_bloodcells.errors import ConfigError

if TYPE_CHECKING:
    import argparse

HELP = "write a model as a bioimage.io package (PyTorch, TorchScript and ONNX weights)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="a .pt model")
    parser.add_argument("--out", type=Path, required=True, help="the package to write (.zip)")
    parser.add_argument(
        "--sample",
        type=Path,
        help="image for the test tensors and cover (default: the first image the model was "
        "trained on, else a blood-cell sample image)",
    )
    parser.add_argument("--name", default=ExportSettings.name, help="the model's name")
    parser.add_argument("--author", action="append", help="an author's name (repeat for several)")
    parser.add_argument(
        "--license",
        help="SPDX licence (default: GPL-3.0-only if trained on Dataset 1, else CC-BY-4.0)",
    )
    parser.add_argument(
        "--formats", default=",".join(WEIGHT_FORMATS), help="weight formats, comma-separated"
    )


def _print_step(event: object) -> None:
    if isinstance(event, JobStep):
        print(event.text, file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    if args.out.suffix.lower() != ".zip":
        raise ConfigError(
            f"The package {args.out} must end in .zip (bioimage.io packages are zip files); "
            "choose a name like model.zip."
        )
    check_writable(args.out)
    settings = ExportSettings(
        name=args.name,
        authors=tuple(args.author or ExportSettings.authors),
        license=args.license,
        formats=tuple(f.strip() for f in args.formats.split(",") if f.strip()),
    )
    model = load_model(args.model, "cpu")
    # Read before the job starts, so that a missing image is one line, not a step and a line.
    sample = sample_image(args.sample, file_progress("download"), model)
    with StopOnCtrlC() as stop:
        written = run_to_end(export_model(model, args.out, sample, settings, stop), _print_step)
    if written is None:
        print("Stopped; no package was written.", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"Wrote {written}; check it with: bioimageio test {written}")
    return 0
