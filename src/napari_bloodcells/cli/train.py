"""``napari-bloodcells train``: train a model, or fine-tune one with ``--init``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_bloodcells.cli.common import (
    EXIT_USER_ERROR,
    StopOnCtrlC,
    check_writable,
    file_progress,
)
from napari_bloodcells.core.base.bounds import options_of
from napari_bloodcells.core.events import (
    BatchEnded,
    DataReady,
    EpochEnded,
    Notice,
    ScheduleChosen,
    TrainingResult,
    TrainingStarted,
    run_to_end,
)
from napari_bloodcells.core.jobs import (
    from_environment,
    kept_epochs,
    plot_curves,
    training_job,
    write_history_json,
)
from napari_bloodcells.core.model.checkpoint import SUFFIX
from napari_bloodcells.core.model.networks import OFFERED_ENCODERS
from napari_bloodcells.core.training.config import PRESETS, TrainConfig, preset

if TYPE_CHECKING:
    import argparse

    from napari_bloodcells.core.training.ddp import ProcessGroup

HELP = "train a model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", type=Path, help="folder with images/ and masks/ (default: the blood-cell dataset)"
    )
    parser.add_argument(
        "--preset", default="default", choices=list(PRESETS), help="default, or seed (the notebook)"
    )
    parser.add_argument("--arch", help="notebook-unet or an smp architecture (Unet, FPN, ...)")
    parser.add_argument("--encoder", help=f"smp encoder ({', '.join(OFFERED_ENCODERS[:5])}, ...)")
    parser.add_argument("--encoder-weights", help="imagenet, none, or a weights file")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--dev-fraction", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--precision", choices=options_of(TrainConfig, "precision"))
    parser.add_argument(
        "--smear",
        type=float,
        help="share of training patches given red cells and platelets as background, as whole "
        "smear fields have (default preset: 0.5; 0 turns it off)",
    )
    parser.add_argument(
        "--scale",
        type=float,
        help="resize the training pairs by this factor first, as segment --scale does",
    )
    parser.add_argument(
        "--init",
        type=Path,
        help="continue from this model (fine-tuning); without --epochs the fine-tune "
        "schedule is used: a step budget, replay of the model's own data, and the "
        "model kept that does best on your held-out corrections, with what it forgot of "
        "its own data counted against it",
    )
    parser.add_argument(
        "--replay",
        default="auto",
        help="with --init: 'auto' replays the data the model was trained on, 'none' "
        "replays nothing, or a folder with images/ and masks/",
    )
    parser.add_argument(
        "--out", type=Path, required=True, help=f"where to save the model ({SUFFIX})"
    )


def run(args: argparse.Namespace) -> int:
    config = preset(args.preset).with_changes(
        arch=args.arch,
        encoder=args.encoder,
        encoder_weights=args.encoder_weights,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        dev_fraction=args.dev_fraction,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
        scale=args.scale,
        smear=args.smear,
    )
    if args.init is not None and args.epochs is None:
        config = config.with_changes(schedule="finetune")
    config.validate()
    out = args.out if args.out.suffix else args.out.with_suffix(SUFFIX)
    group = from_environment(config.device)  # torchrun: one of several processes
    try:
        main_rank = group is None or group.is_main
        if main_rank:
            check_writable(out)
        with StopOnCtrlC() as stop:
            job = training_job(
                config,
                args.data,
                args.init,
                should_stop=stop,
                replay=None if args.replay == "none" else args.replay,
                checkpoint_path=out,
                progress=file_progress("download"),
                group=group,
            )
            # Rank 0 alone prints and reports.
            printer = _TrainingPrinter(group)
            result = run_to_end(job, printer if main_rank else None)
            printer.close()
        return _report(result, out) if main_rank else 0
    finally:
        if group is not None:
            group.close()


class _TrainingPrinter:
    """Prints a training job's events: a progress bar, one line per epoch, the notices."""

    def __init__(self, group: ProcessGroup | None) -> None:
        self.group = group
        self.bar: Any = None
        self.class_names: tuple[str, ...] = ()

    def __call__(self, event: object) -> None:
        if isinstance(event, DataReady):
            self.class_names = event.classes.names
        elif isinstance(event, TrainingStarted):
            self._started(event)
        elif isinstance(event, BatchEnded) and self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(epoch=event.epoch, loss=f"{event.loss:.3f}")
        elif isinstance(event, EpochEnded):
            scores = " ".join(
                f"{name} {d:.3f}" for name, d in zip(self.class_names, event.dice, strict=False)
            )
            line = (
                f"epoch {event.epoch}/{event.epochs}  train loss {event.train_loss:.4f}  "
                f"dev loss {event.dev_loss:.4f}  dev Dice {scores}  "
                f"{event.seconds:.1f} s{'  *best' if event.is_best else ''}"
            )
            (self.bar.write if self.bar is not None else print)(line)
        elif isinstance(event, ScheduleChosen):
            print(event.description)
        elif isinstance(event, Notice):
            print(event.message, file=sys.stderr)

    def _started(self, event: TrainingStarted) -> None:
        from tqdm import tqdm

        ranks = f" x {self.group.world_size} processes" if self.group is not None else ""
        print(
            f"Training on {event.device}{ranks} ({event.precision}): {event.n_train} "
            f"train / {event.n_dev} dev images, {event.epochs} epochs, batch "
            f"{event.batch_size}, learning rate {event.lr:.3g}."
        )
        if event.chosen:
            print(
                f"Chosen for this device: {event.chosen} (set --encoder, --epochs, "
                "--batch-size or --lr to choose yourself)."
            )
        self.bar = tqdm(
            total=event.epochs * event.batches_per_epoch, unit="batch", disable=None, leave=False
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _report(result: TrainingResult, out: Path) -> int:
    """Write the metrics and curves beside the model, and say what was saved where."""
    history_path = out.with_suffix(".metrics.json")
    write_history_json(
        result.history,
        history_path,
        {"best_epoch": result.best_epoch, "reason": result.reason, "config": result.model.config},
    )
    curves = None
    if result.history:
        curves = plot_curves(
            result.history, result.model.classes.names, out.with_suffix(".curves.png")
        )
    print(result.reason)
    print(f"Metrics: {history_path}" + (f"  Curves: {curves}" if curves else ""))
    kept = (
        "the starting model"
        if result.kept_start
        else "the model the fine-tune kept"
        if result.outcome
        else f"the model of {kept_epochs(result.model.metrics)}"
    )
    if not result.best_epoch and not result.kept_start:
        print("No epoch finished, so no model was saved.")
    elif result.saved_to is None:
        print(
            f"error: {kept} could not be saved to {out}; free some disk space or choose "
            "another --out, and train again.",
            file=sys.stderr,
        )
        return EXIT_USER_ERROR
    else:
        print(f"Saved {kept} to {out}")
    return 0
