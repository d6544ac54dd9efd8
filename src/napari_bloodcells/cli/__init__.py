"""Command line: ``napari-bloodcells gui | fetch | train | evaluate | segment | suggest |
measure | export``.

A thin front end over :mod:`napari_bloodcells.core.jobs`: each command lives in a
module of its own that declares its arguments beside the code that runs its job,
and turns :class:`~napari_bloodcells.errors.BloodcellsError` into one line on
stderr and exit status 2 (``--debug`` shows the traceback instead).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from napari_bloodcells import __version__
from napari_bloodcells.cli import (
    differential,
    evaluate,
    export,
    fetch,
    gui,
    measure,
    segment,
    suggest,
    train,
)
from napari_bloodcells.cli.common import (
    ENVIRONMENT,
    EXIT_INTERRUPTED,
    EXIT_USER_ERROR,
    HelpFormatter,
)
from napari_bloodcells.errors import BloodcellsError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["EXIT_INTERRUPTED", "EXIT_USER_ERROR", "main"]

COMMANDS = {
    "gui": gui,
    "fetch": fetch,
    "train": train,
    "evaluate": evaluate,
    "segment": segment,
    "suggest": suggest,
    "measure": measure,
    "differential": differential,
    "export": export,
}
"""Each command's module: ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-bloodcells",
        description="Train, evaluate, apply and measure blood-cell segmentation models from "
        "the command line (no display needed); 'gui' opens napari with the widgets.",
        epilog=ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    # --debug is also accepted after the sub-command; SUPPRESS keeps the one given first.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks of errors"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        command.add_arguments(
            sub.add_parser(
                name,
                help=command.HELP,
                parents=[common],
                formatter_class=HelpFormatter,
                epilog=ENVIRONMENT,
            )
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``napari-bloodcells`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command].run(args)
    except BloodcellsError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED
