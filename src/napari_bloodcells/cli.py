"""Command line: ``napari-bloodcells gui | fetch | train | evaluate | segment``.

A thin front end over :mod:`napari_bloodcells.core`: it parses arguments,
drives the same training generator as the napari widget, and turns
:class:`~napari_bloodcells.errors.BloodcellsError` into one line on stderr and
exit status 2 (``--debug`` shows the traceback instead).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_bloodcells import __version__
from napari_bloodcells.core.base.bounds import check_bounds, options_of
from napari_bloodcells.core.exchange.export import WEIGHT_FORMATS, ExportSettings
from napari_bloodcells.core.inference.tiled import TileSettings
from napari_bloodcells.core.model.checkpoint import SUFFIX
from napari_bloodcells.core.model.networks import OFFERED_ENCODERS
from napari_bloodcells.core.training.config import PRESETS, TrainConfig
from napari_bloodcells.core.training.ddp import ProcessGroup, from_environment
from napari_bloodcells.errors import BloodcellsError, ConfigError

if TYPE_CHECKING:
    from collections.abc import Sequence

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


_ENVIRONMENT = """environment:
  NAPARI_BLOODCELLS_DATA_URL  the dataset's source: a mirror's URL, or a folder holding a copy
                              of zxaoyou/segmentation_WBC (offline use)
  NAPARI_BLOODCELLS_CACHE     where the dataset and the recovery model are kept"""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows every option's default, and the environment block as written."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-bloodcells",
        description="Train, evaluate, apply and measure blood-cell segmentation models from "
        "the command line (no display needed); 'gui' opens napari with the widgets.",
        epilog=_ENVIRONMENT,
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

    def add_command(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        """A sub-command that takes --debug too, and shows defaults and the environment."""
        return sub.add_parser(
            name, parents=[common], formatter_class=_HelpFormatter, epilog=_ENVIRONMENT, **kwargs
        )

    gui = add_command(
        "gui",
        help="open napari with the widgets docked and the sample loaded",
    )
    gui.add_argument(
        "--sample", default="bloodcells", choices=["bloodcells", "single_cell", "none"]
    )

    fetch = add_command(
        "fetch",
        help="download the blood-cell dataset (Zheng et al. 2018)",
    )
    fetch.add_argument(
        "--dest",
        type=Path,
        help="folder for bloodcells_seg/ (default: ./data in a checkout, else the cache)",
    )

    train = add_command(
        "train",
        help="train a model",
    )
    train.add_argument(
        "--data", type=Path, help="folder with images/ and masks/ (default: the blood-cell dataset)"
    )
    train.add_argument(
        "--preset", default="default", choices=list(PRESETS), help="default, or seed (the notebook)"
    )
    train.add_argument("--arch", help="notebook-unet or an smp architecture (Unet, FPN, ...)")
    train.add_argument("--encoder", help=f"smp encoder ({', '.join(OFFERED_ENCODERS[:5])}, ...)")
    train.add_argument("--encoder-weights", help="imagenet, none, or a weights file")
    train.add_argument("--epochs", type=int)
    train.add_argument("--lr", type=float)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--dev-fraction", type=float)
    train.add_argument("--seed", type=int)
    train.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps")
    train.add_argument("--precision", choices=options_of(TrainConfig, "precision"))
    train.add_argument(
        "--smear",
        type=float,
        help="share of training patches given red cells and platelets as background, as whole "
        "smear fields have (default preset: 0.5; 0 turns it off)",
    )
    train.add_argument(
        "--scale",
        type=float,
        help="resize the training pairs by this factor first, as segment --scale does",
    )
    train.add_argument(
        "--init",
        type=Path,
        help="continue from this model (fine-tuning); without --epochs the fine-tune "
        "schedule is used: a step budget, replay of the model's own data, and the "
        "model kept that does best on your held-out corrections, with what it forgot of "
        "its own data counted against it",
    )
    train.add_argument(
        "--replay",
        default="auto",
        help="with --init: 'auto' replays the data the model was trained on, 'none' "
        "replays nothing, or a folder with images/ and masks/",
    )
    train.add_argument(
        "--out", type=Path, required=True, help=f"where to save the model ({SUFFIX})"
    )

    evaluate = add_command(
        "evaluate",
        help="per-class Dice and IoU of a model",
    )
    evaluate.add_argument("model", type=Path)
    evaluate.add_argument("--data", type=Path, help="default: the blood-cell dataset")
    evaluate.add_argument("--split", choices=["dev", "train", "all"], default="dev")
    evaluate.add_argument(
        "--model-split",
        action="store_true",
        help="split as the model was trained (its dev fraction and seed) instead of the "
        "reference split that makes models comparable",
    )
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of a table")

    segment = add_command(
        "segment",
        help="write class-index label images",
    )
    segment.add_argument("model", type=Path, help="a .pt model or a bioimage.io package (.zip)")
    segment.add_argument(
        "images",
        type=Path,
        nargs="+",
        help="image files, folders or glob patterns; zarr, OME-Zarr and (pyramidal) TIFF are "
        "read block by block",
    )
    segment.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output folder (PNG labels; large images as <name>.zarr), or a .zarr group",
    )
    segment.add_argument(
        "--scale",
        type=_scale,
        default=1.0,
        help="resize factor before prediction (0.5 halves each side), or 'auto' to "
        "estimate it per image from the cells' size",
    )
    segment.add_argument("--measure", type=Path, help="also measure the cells into this CSV")
    segment.add_argument("--pixel-size", type=float, help="micrometres per pixel, for areas in µm²")
    cpu, gpu = TileSettings(), TileSettings.for_device("cuda")
    segment.add_argument(
        "--tile-size", type=int, help=f"default {cpu.size} on a CPU, {gpu.size} on a GPU"
    )
    segment.add_argument("--overlap", type=int, default=cpu.overlap)
    segment.add_argument(
        "--tile-batch", type=int, help=f"default {cpu.batch} on a CPU, {gpu.batch} on a GPU"
    )
    segment.add_argument("--device", default="auto")
    segment.add_argument(
        "--resume",
        action="store_true",
        help="skip the finished files and blocks of an earlier run",
    )
    segment.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    segment.add_argument(
        "--block", type=int, default=2048, help="block side for large images (pixels)"
    )
    segment.add_argument(
        "--workers", type=int, help="spread the work over a local dask cluster of N processes"
    )
    segment.add_argument(
        "--scheduler", help="spread the work over this running dask cluster (tcp://host:port)"
    )

    measure = add_command(
        "measure",
        help="per-cell measurements (N:C ratio, lobes, ...) of class-label images",
    )
    measure.add_argument("labels", type=Path, nargs="+", help="label images of classes 0/1/2")
    measure.add_argument("--out", type=Path, required=True, help="the CSV to write")
    measure.add_argument("--pixel-size", type=float, help="micrometres per pixel, for areas in µm²")
    export = add_command(
        "export",
        help="write a model as a bioimage.io package (PyTorch, TorchScript and ONNX weights)",
    )
    export.add_argument("model", type=Path, help="a .pt model")
    export.add_argument("--out", type=Path, required=True, help="the package to write (.zip)")
    export.add_argument(
        "--sample",
        type=Path,
        help="image for the test tensors and cover (default: a blood-cell sample image)",
    )
    export.add_argument("--name", default=ExportSettings.name, help="the model's name")
    export.add_argument("--author", action="append", help="an author's name (repeat for several)")
    export.add_argument(
        "--license",
        help="SPDX licence (default: GPL-3.0-only if trained on Dataset 1, else CC-BY-4.0)",
    )
    export.add_argument(
        "--formats",
        default=",".join(WEIGHT_FORMATS),
        help="weight formats, comma-separated",
    )
    return parser


def _scale(text: str) -> float | str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number nor 'auto'") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``napari-bloodcells`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return {
            "gui": _gui,
            "fetch": _fetch,
            "train": _train,
            "evaluate": _evaluate,
            "segment": _segment,
            "measure": _measure,
            "export": _export,
        }[args.command](args)
    except BloodcellsError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED


def _gui(args: argparse.Namespace) -> int:
    from napari_bloodcells._launch import launch

    launch(None if args.sample == "none" else args.sample)
    return 0


def _default_dest() -> Path:
    from napari_bloodcells.core.data.download import cache_dir

    checkout = Path.cwd()
    if (checkout / "napari.yaml").is_file() and (checkout / "data" / "README.md").is_file():
        return checkout / "data"
    return cache_dir()


def _file_progress(desc: str):
    from tqdm import tqdm

    bar = tqdm(total=0, desc=desc, unit="file", disable=None)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()
        if done == total:
            bar.close()

    return update


def _fetch(args: argparse.Namespace) -> int:
    from napari_bloodcells.core.data.bloodcell_dataset import bloodcell_folder

    folder = bloodcell_folder(args.dest or _default_dest(), _file_progress("download"))
    print(f"Blood-cell dataset ready in {folder}")
    return 0


class _StopOnCtrlC:
    """First Ctrl-C asks training to stop after the current batch; a second one aborts."""

    def __init__(self) -> None:
        self.requested = False

    def __enter__(self) -> _StopOnCtrlC:
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nStopping after this batch; press Ctrl-C again to abort.", file=sys.stderr)

    def __call__(self) -> bool:
        return self.requested


def _train(args: argparse.Namespace) -> int:
    from napari_bloodcells.core.training.config import preset

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
        return _train_run(args, config, out, group)
    finally:
        if group is not None:
            group.close()


def _train_run(
    args: argparse.Namespace, config: TrainConfig, out: Path, group: ProcessGroup | None
) -> int:
    from tqdm import tqdm

    from napari_bloodcells.core.events import (
        BatchEnded,
        DataReady,
        EpochEnded,
        Notice,
        ScheduleChosen,
        TrainingFinished,
        TrainingStarted,
    )
    from napari_bloodcells.core.jobs import training_job
    from napari_bloodcells.core.training.report import plot_curves, write_history_json

    main_rank = group is None or group.is_main
    if main_rank:
        _check_writable(out)
    bar = None
    result = None
    class_names: tuple[str, ...] = ()
    with _StopOnCtrlC() as stop:
        job = training_job(
            config,
            args.data,
            args.init,
            should_stop=stop,
            replay=None if args.replay == "none" else args.replay,
            checkpoint_path=out,
            progress=_file_progress("download"),
            group=group,
        )
        for event in job:
            if not main_rank:  # rank 0 alone prints and reports
                if isinstance(event, TrainingFinished):
                    result = event.result
                continue
            if isinstance(event, DataReady):
                class_names = event.classes.names
            elif isinstance(event, TrainingStarted):
                ranks = f" x {group.world_size} processes" if group is not None else ""
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
                bar = tqdm(
                    total=event.epochs * event.batches_per_epoch,
                    unit="batch",
                    disable=None,
                    leave=False,
                )
            elif isinstance(event, BatchEnded) and bar is not None:
                bar.update(1)
                bar.set_postfix(epoch=event.epoch, loss=f"{event.loss:.3f}")
            elif isinstance(event, EpochEnded):
                scores = " ".join(
                    f"{name} {d:.3f}" for name, d in zip(class_names, event.dice, strict=False)
                )
                line = (
                    f"epoch {event.epoch}/{event.epochs}  train loss {event.train_loss:.4f}  "
                    f"dev loss {event.dev_loss:.4f}  dev Dice {scores}  "
                    f"{event.seconds:.1f} s{'  *best' if event.is_best else ''}"
                )
                (bar.write if bar is not None else print)(line)
            elif isinstance(event, ScheduleChosen):
                print(event.description)
            elif isinstance(event, Notice):
                print(event.message, file=sys.stderr)
            elif isinstance(event, TrainingFinished):
                result = event.result
    if bar is not None:
        bar.close()
    assert result is not None
    if not main_rank:
        return 0
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
        else f"the model of epoch {result.best_epoch}"
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


def _check_writable(path: Path) -> None:
    """Fail before training, not after it, when the model cannot be written."""
    import tempfile

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as exc:
        raise ConfigError(
            f"Cannot write to the folder {path.parent} ({exc.strerror or exc}); choose "
            "another --out."
        ) from exc


def _evaluate(args: argparse.Namespace) -> int:
    from napari_bloodcells.core.data.dataset import split_indices

    reference = TrainConfig()  # the notebook's split: 20 % of the pairs, seed 909
    from napari_bloodcells.core.base.device import resolve_device
    from napari_bloodcells.core.base.metrics import score_labels
    from napari_bloodcells.core.inference.tiled import segment_image
    from napari_bloodcells.core.jobs import load_model, load_training_data
    from napari_bloodcells.errors import DataError

    model = load_model(args.model, resolve_device(args.device))
    data = load_training_data(args.data, _file_progress("download"))
    for notice in data.notices:
        print(notice, file=sys.stderr)
    data.check_classes(model.classes.num_classes)
    if args.model_split:  # the split the model itself was trained with
        fraction = float(model.config.get("dev_fraction", reference.dev_fraction))
        seed = int(model.config.get("split_seed", reference.split_seed))
        which = f"the model's own split: {fraction:g} of the pairs, seed {seed}"
    else:  # the same images for every model, so that scores compare
        fraction, seed = reference.dev_fraction, reference.split_seed
        which = f"the reference split: {fraction:g} of the pairs, seed {seed}"
    train_idx, dev_idx = split_indices(len(data), fraction, seed)
    indices = {"dev": dev_idx, "train": train_idx, "all": list(range(len(data)))}[args.split]
    if not indices:
        raise DataError(f"The {args.split} split is empty; choose another split or more data.")
    subset = data.subset(indices)
    preds = [segment_image(model, image)[0] for image in subset.images]
    scores = score_labels(preds, subset.masks, model.classes.num_classes)
    if args.json:
        print(
            json.dumps(
                {
                    "split": args.split,
                    "split_rule": which,
                    "images": len(subset),
                    "dice": dict(zip(model.classes.names, scores.dice, strict=False)),
                    "iou": dict(zip(model.classes.names, scores.iou, strict=False)),
                },
                indent=2,
            )
        )
        return 0
    where = "" if args.split == "all" else f" ({which})"
    print(f"{args.split} split{where}, {len(subset)} images (pooled pixels)")
    print(f"{'class':<12} {'Dice':>7} {'IoU':>7}")
    for name, dice, iou in zip(model.classes.names, scores.dice, scores.iou, strict=False):
        print(f"{name:<12} {dice:7.4f} {iou:7.4f}")
    return 0


def _segment(args: argparse.Namespace) -> int:
    from napari_bloodcells.core.base.device import resolve_device
    from napari_bloodcells.core.events import BlockWritten, FileSegmented, Notice, ScaleChosen
    from napari_bloodcells.core.jobs import segment_files

    local = args.workers is None and not args.scheduler
    # Dask workers choose their own device; their tiles are the CPU's unless one is named.
    device = resolve_device(args.device) if local else args.device
    defaults = TileSettings.for_device(None if device == "auto" else device)
    tiles = TileSettings(
        defaults.size if args.tile_size is None else args.tile_size,
        args.overlap,
        defaults.batch if args.tile_batch is None else args.tile_batch,
    )
    check_bounds(tiles)
    if args.block < 256:
        raise ConfigError(f"--block must be at least 256 pixels (got {args.block}).")
    client = None
    if not local:
        from napari_bloodcells.core.large.cluster import connect

        client = connect(args.workers, args.scheduler)
    try:
        with _StopOnCtrlC() as stop:
            job = segment_files(
                args.model,
                args.images,
                args.out,
                scale=args.scale,
                tiles=tiles,
                device=device,
                should_stop=stop,
                measure_to=args.measure,
                pixel_size=_pixel_size(args.pixel_size),
                resume=args.resume,
                overwrite=args.overwrite,
                block=args.block,
                client=client,
            )
            for event in job:
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
    finally:
        if client is not None:
            from napari_bloodcells.core.large.cluster import close

            close(client)
    return 0


def _pixel_size(value: float | None) -> float | None:
    if value is not None and not value > 0:
        raise ConfigError(f"The pixel size ({value}) must be above 0, in micrometres per pixel.")
    return value


def _measure(args: argparse.Namespace) -> int:
    from napari_bloodcells.core.events import Notice
    from napari_bloodcells.core.jobs import measure_files

    job = measure_files(args.labels, args.out, pixel_size=_pixel_size(args.pixel_size))
    for event in job:
        if isinstance(event, Notice):
            print(event.message)
    return 0


def _export(args: argparse.Namespace) -> int:
    from napari_bloodcells.core.events import JobStep
    from napari_bloodcells.core.exchange.export import export_job
    from napari_bloodcells.core.jobs import load_model, sample_image

    if args.out.suffix.lower() != ".zip":
        raise ConfigError(
            f"The package {args.out} must end in .zip (bioimage.io packages are zip files); "
            "choose a name like model.zip."
        )
    _check_writable(args.out)
    model = load_model(args.model, "cpu")
    settings = ExportSettings(
        name=args.name,
        authors=tuple(args.author or ExportSettings.authors),
        license=args.license,
        formats=tuple(f.strip() for f in args.formats.split(",") if f.strip()),
    )
    sample = sample_image(args.sample, _file_progress("download"), model)
    with _StopOnCtrlC() as stop:
        job = export_job(model, args.out, sample, settings, should_stop=stop)
        while True:
            try:
                step = next(job)
            except StopIteration as end:
                written = end.value
                break
            if isinstance(step, JobStep):
                print(step.text, file=sys.stderr)
    if written is None:
        print("Stopped; no package was written.", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"Wrote {written}; check it with: bioimageio test {written}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
