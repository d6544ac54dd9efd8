"""``napari-bloodcells suggest``: which images to correct first."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_bloodcells.cli.common import StopOnCtrlC, check_writable, scale_value
from napari_bloodcells.core.events import Notice, ScaleChosen, SegmentProgress, run_to_end
from napari_bloodcells.core.jobs import suggest_job, write_ranking
from napari_bloodcells.errors import ConfigError

if TYPE_CHECKING:
    import argparse

HELP = "rank images by how much correcting each one is expected to teach the model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="a .pt model or a bioimage.io package (.zip)")
    parser.add_argument("images", type=Path, nargs="+", help="image files, folders or patterns")
    parser.add_argument("--top", type=int, help="print only the N most useful images")
    parser.add_argument("--out", type=Path, help="also write the whole ranking to this CSV")
    parser.add_argument(
        "--scale",
        type=scale_value,
        default=1.0,
        help="resize factor before prediction, or 'auto' to estimate it from the first images",
    )


class _Progress:
    """One progress line on stderr, rewritten as images are scored."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self.bar: Any = tqdm(total=0, desc="ranking", unit="image", disable=None)

    def __call__(self, event: object) -> None:
        if isinstance(event, SegmentProgress):
            self.bar.total = event.images
            self.bar.n = event.index + 1
            self.bar.refresh()
        elif isinstance(event, ScaleChosen):
            self.bar.write(f"{event.name}: scale {event.scale:g}", file=sys.stderr)
        elif isinstance(event, Notice):
            self.bar.write(event.message, file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    if args.top is not None and args.top < 1:
        raise ConfigError(f"--top must be at least 1 (got {args.top}).")
    if args.out is not None:
        check_writable(args.out)
    progress = _Progress()
    with StopOnCtrlC() as stop:
        ranked = run_to_end(
            suggest_job(args.model, args.images, scale=args.scale, should_stop=stop), progress
        )
    progress.bar.close()
    if args.out is not None:
        write_ranking(ranked, args.out)
    for s in ranked[: args.top]:
        print(f"{s.name}: score {s.score:.4f}")
    return 0
