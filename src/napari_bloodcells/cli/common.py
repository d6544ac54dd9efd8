"""What every command shares: the help layout, Ctrl-C as Stop, progress bars, exit codes."""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from typing import TYPE_CHECKING, Any

from napari_bloodcells.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

ENVIRONMENT = """environment:
  NAPARI_BLOODCELLS_DATA_URL  the dataset's source: a mirror's URL, or a folder holding a copy
                              of zxaoyou/segmentation_WBC (offline use)
  NAPARI_BLOODCELLS_SMEAR_URL the smear-field sample's source (BCCD), a URL or a folder
  NAPARI_BLOODCELLS_CACHE     where the dataset and the recovery model are kept"""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows every option's default, and the environment block as written."""


def file_progress(desc: str) -> Callable[[int, int], None]:
    """A tqdm bar in files, for downloads; silent when stderr is not a terminal."""
    from tqdm import tqdm

    bar = tqdm(total=0, desc=desc, unit="file", disable=None)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()
        if done == total:
            bar.close()

    return update


class StopOnCtrlC:
    """First Ctrl-C asks the job to stop at its next step; a second one aborts."""

    def __init__(self) -> None:
        self.requested = False

    def __enter__(self) -> StopOnCtrlC:
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nStopping after this step; press Ctrl-C again to abort.", file=sys.stderr)

    def __call__(self) -> bool:
        return self.requested


def check_writable(path: Path) -> None:
    """Fail before the work, not after it, when the output cannot be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as exc:
        raise ConfigError(
            f"Cannot write to the folder {path.parent} ({exc.strerror or exc}); choose "
            "another --out."
        ) from exc


def pixel_size(value: float | None) -> float | None:
    """``--pixel-size``, checked."""
    if value is not None and not value > 0:
        raise ConfigError(f"The pixel size ({value}) must be above 0, in micrometres per pixel.")
    return value


def print_error(message: str) -> None:
    print(message, file=sys.stderr)


def scale_value(text: str) -> float | str:
    """``--scale``: a number, or "auto"."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number nor 'auto'") from None


def add_adapt_argument(parser: argparse.ArgumentParser) -> None:
    """``--no-adapt``: type many cells as trained, not with their own batch statistics."""
    # Here, not at the top: every command imports this module, and torch is slow to load.
    from napari_bloodcells.core.jobs import ADAPT_MIN_CELLS

    parser.add_argument(
        "--no-adapt",
        dest="adapt",
        action="store_false",
        help="type the cells as trained, without the batch statistics of these images "
        f"(used alone from {ADAPT_MIN_CELLS} cells on, weighed against the model's below)",
    )
