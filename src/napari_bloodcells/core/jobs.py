"""The jobs that the CLI and the widgets share, as generators of core events.

A job loads what it needs (the training data, the starting model, a
checkpoint), then runs the engine's generator and passes its events on. The
CLI iterates a job in the foreground; a widget runs the same job in a napari
thread worker. Nothing here imports napari or Qt, and nothing is written
twice: loading data, resolving the model to start from and segmenting a stack
or a list of files each happen here and only here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_bloodcells.core.bloodcell_dataset import SOURCE_NAME, bloodcell_folder
from napari_bloodcells.core.checkpoint import TrainedModel, atomic_write, load_checkpoint
from napari_bloodcells.core.classes import BLOODCELL_CLASSES, UNLABELLED
from napari_bloodcells.core.dataset import SegmentationData, load_folder, read_image, read_mask
from napari_bloodcells.core.device import resolve_device
from napari_bloodcells.core.events import (
    BlockWritten,
    CellsMeasured,
    DataReady,
    FileSegmented,
    Notice,
    ScaleChosen,
    SegmentationEvent,
    SegmentationFinished,
    SegmentProgress,
    TrainingEvent,
    TrainingResult,
)
from napari_bloodcells.core.imaging import to_rgb_uint8
from napari_bloodcells.core.infer import SCALE_RANGE, TileSettings, segment
from napari_bloodcells.core.measure import (
    Measurements,
    check_class_labels,
    concatenate,
    measure_cells,
    write_csv,
)
from napari_bloodcells.core.package import is_package, load_package
from napari_bloodcells.core.scale import ScaleEstimate, estimate_scale, unfamiliar_notice
from napari_bloodcells.core.train import train
from napari_bloodcells.errors import ConfigError, DataError, DownloadError

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Sequence

    import torch
    from distributed import Client

    from napari_bloodcells.core.config import TrainConfig
    from napari_bloodcells.core.ddp import ProcessGroup
    from napari_bloodcells.core.download import Progress
    from napari_bloodcells.core.events import Segmentation

TrainingData = SegmentationData | Path | None
"""Pairs already in memory, a folder with ``images/`` and ``masks/``, or ``None``
for the blood-cell dataset (downloaded on first use)."""
ModelSource = TrainedModel | Path
"""A model in memory, or a checkpoint file to read."""


def load_training_data(source: TrainingData, progress: Progress | None = None) -> SegmentationData:
    """The training pairs of ``source`` (see :data:`TrainingData`).

    Parameters
    ----------
    source : SegmentationData, Path or None
        What to train on.
    progress : callable, optional
        ``progress(done, total)`` in files while the dataset downloads.

    Raises
    ------
    DataError, DownloadError
        The folder cannot be read, or the dataset cannot be fetched.
    """
    if isinstance(source, SegmentationData):
        return source
    if source is None:
        return load_folder(bloodcell_folder(progress=progress))
    return load_folder(source)


def load_model(source: ModelSource, device: torch.device | str | None = None) -> TrainedModel:
    """``source`` as a model: as it is, or read from its checkpoint onto ``device``.

    ``device`` defaults to the best one here (``resolve_device("auto")``).

    Raises
    ------
    CheckpointError
        The file is missing, damaged or not a napari-bloodcells model (a ``.pt``
        file, or a bioimage.io package this plugin exported).
    """
    if isinstance(source, TrainedModel):
        return source
    if is_package(source):
        return load_package(source, device=device or resolve_device("auto"))
    return load_checkpoint(source, device=device or resolve_device("auto"))


BLOODCELL_SOURCE = SOURCE_NAME


def sample_image(
    path: Path | None = None,
    progress: Progress | None = None,
    model: TrainedModel | None = None,
) -> np.ndarray:
    """An RGB image to show what a model does.

    In order: ``path``; the first image of the folder ``model`` records it was
    trained on, when that folder is still there; the blood-cell sample's first
    image, read from the cache or downloaded once.

    Raises
    ------
    DataError
        If the image cannot be read.
    DownloadError
        If the dataset is needed and cannot be fetched; the sentence says to
        pass a sample image.
    """
    if path is not None:
        return read_image(path)
    recorded = str(model.config.get("data_source", "")) if model is not None else ""
    if recorded and recorded != BLOODCELL_SOURCE:
        images = Path(recorded) / "images"
        files = sorted(p for p in images.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            return read_image(files[0])
    try:
        folder = bloodcell_folder(progress=progress) / "images" / "all"
    except DownloadError as exc:
        raise DownloadError(
            f"{str(exc).removesuffix('.')}; or give the package's test image yourself "
            "(export --sample IMAGE)."
        ) from exc
    first = min(folder.iterdir(), key=lambda p: p.name)
    return read_image(first)


REPLAY_AUTO = "auto"
"""Replay what the starting model records it was trained on."""


def data_source_of(data: TrainingData) -> str:
    """What ``TrainConfig.data_source`` records for ``data``: a later fine-tune replays it."""
    if data is None:
        return BLOODCELL_SOURCE
    if isinstance(data, Path):
        return str(data.resolve())
    return ""  # pairs copied from layers: nothing on disk to replay


def load_replay(
    start: TrainedModel, choice: str | Path | None, progress: Progress | None = None
) -> SegmentationData | None:
    """The starting model's own training pairs, replayed while fine-tuning.

    Parameters
    ----------
    start : TrainedModel
        The model being fine-tuned.
    choice : "auto", a folder, or None
        ``"auto"`` replays what ``start`` records (the blood-cell dataset or
        its training folder); a folder replays that folder; ``None`` replays
        nothing.

    Raises
    ------
    DataError
        The recorded or given folder no longer exists.
    """
    if choice is None:
        return None
    if choice != REPLAY_AUTO:
        return load_folder(Path(choice))
    source = str(start.config.get("data_source", ""))
    if source == BLOODCELL_SOURCE:
        return load_training_data(None, progress)
    if not source:
        return None
    folder = Path(source)
    if not folder.is_dir():
        raise DataError(
            f"The model was trained on {folder}, which no longer exists, so it cannot be "
            "replayed while fine-tuning; restore the folder, point --replay at a copy, or "
            "use --replay none to fine-tune on the corrections alone."
        )
    return load_folder(folder)


def training_job(
    config: TrainConfig,
    data: TrainingData,
    init: ModelSource | None = None,
    *,
    replay: str | Path | None = REPLAY_AUTO,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_path: Path | None = None,
    progress: Progress | None = None,
    group: ProcessGroup | None = None,
) -> Generator[TrainingEvent | DataReady, None, TrainingResult]:
    """Load the data and the starting model, then train, yielding the engine's events.

    Parameters
    ----------
    config : TrainConfig
        Settings, validated here before anything is loaded.
    data : SegmentationData, Path or None
        See :func:`load_training_data`.
    init : TrainedModel or Path, optional
        The model to fine-tune; ``None`` trains a new one.
    replay : "auto", a folder, or None
        With the ``finetune`` schedule, the pairs replayed beside the
        corrections; see :func:`load_replay`.
    should_stop : callable, optional
        Polled between batches.
    checkpoint_path : Path, optional
        Where the best model is kept, atomically, while training.
    progress : callable, optional
        Download progress of the blood-cell dataset.

    Yields
    ------
    DataReady, then the events of :func:`~napari_bloodcells.core.train.train`.
    """
    config.validate()
    if checkpoint_path is not None and isinstance(init, Path) and _same_file(init, checkpoint_path):
        raise ConfigError(
            f"The model would be saved over {init}, the model it starts from; choose another "
            "--out so the starting model stays as it is."
        )
    pairs = load_training_data(data, progress)
    start = None if init is None else load_model(init, "cpu")
    if start is None:
        config = config.with_changes(data_source=data_source_of(data))
    else:  # a fine-tune replays what the starting model was trained on, next time too
        config = config.with_changes(data_source=str(start.config.get("data_source", "")))
    config = config.with_changes(data_digest=pairs.digest())
    replayed = (
        load_replay(start, replay, progress)
        if start is not None and config.schedule == "finetune"
        else None
    )
    yield DataReady(
        len(pairs),
        start.classes if start is not None else BLOODCELL_CLASSES,
        "a new model" if start is None else f"a {start.spec.arch} model",
    )
    return (
        yield from train(
            config,
            pairs,
            init=start,
            replay=replayed,
            should_stop=should_stop,
            checkpoint_path=checkpoint_path,
            group=group,
        )
    )


def _same_file(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def segmentation_job(
    source: ModelSource,
    images: np.ndarray,
    *,
    stack: bool,
    scale: float = 1.0,
    tiles: TileSettings | None = None,
    confidence: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> Generator[SegmentationEvent, None, Segmentation]:
    """Load the model, then segment one image or a stack (see :func:`~.infer.segment`).

    Before segmenting, a :class:`~.events.Notice` says so when the image (a
    stack's first slice) looks unlike the model's training images.
    """
    model = load_model(source)
    first = images[0] if stack else images
    if notice := unfamiliar_notice(model, to_rgb_uint8(np.asarray(first))):
        yield Notice(notice)
    return (
        yield from segment(
            model,
            images,
            stack=stack,
            scale=scale,
            tiles=tiles,
            confidence=confidence,
            should_stop=should_stop,
        )
    )


_STACK_SAMPLES = 8
"""Slices of a stack that :func:`scale_job` estimates on (evenly spaced)."""


def scale_job(
    source: ModelSource,
    images: np.ndarray,
    *,
    stack: bool,
    name: str = "the image",
    should_stop: Callable[[], bool] | None = None,
) -> Generator[ScaleChosen, None, ScaleEstimate]:
    """Estimate the resize factor of one image, or of a stack from up to 8 of its slices.

    Yields one :class:`~napari_bloodcells.core.events.ScaleChosen` per slice
    looked at, then returns the median of the slices where cells were found
    (1.0, with the sentence of the first failure, if none was).
    """
    model = load_model(source)
    should_stop = should_stop or (lambda: False)
    if stack:
        picks = np.unique(np.linspace(0, len(images) - 1, _STACK_SAMPLES).round().astype(int))
        items = [(f"{name} [{i}]", images[int(i)]) for i in picks]
    else:
        items = [(name, images)]
    found: list[ScaleEstimate] = []
    failures: list[ScaleEstimate] = []
    for index, (label, pixels) in enumerate(items):
        if should_stop():
            break
        estimate = estimate_scale(model, to_rgb_uint8(np.asarray(pixels)), label)
        yield ScaleChosen(index, label, estimate.scale, estimate.message)
        (found if estimate.found else failures).append(estimate)
    if not found:
        return failures[0] if failures else ScaleEstimate(1.0, False, "Estimation stopped.")
    return ScaleEstimate(round(float(np.median([e.scale for e in found])), 3), True)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
"""Files a folder given to ``segment`` contributes (zarr folders count too)."""


def expand_inputs(paths: Sequence[Path]) -> list[Path]:
    """Files, folders (their images and zarrs, sorted) and glob patterns, as a list of inputs.

    Raises
    ------
    DataError
        A path that does not exist, or a pattern or folder that holds no image.
    """
    import glob

    from napari_bloodcells.core.large_images import is_zarr

    found: list[Path] = []
    for path in paths:
        if is_zarr(path) or path.is_file():
            found.append(path)
        elif path.is_dir():
            inside = sorted(
                p
                for p in path.iterdir()
                if (p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES) or is_zarr(p)
            )
            if not inside:
                raise DataError(f"The folder {path} holds no image (.png, .tif, .zarr, ...).")
            found.extend(inside)
        elif glob.has_magic(str(path)):
            matches = sorted(Path(m) for m in glob.glob(str(path)))
            if not matches:
                raise DataError(f"No file matches {path}; check the pattern.")
            found.extend(expand_inputs(matches))
        else:
            raise DataError(f"No such image file: {path}; check the path.")
    return found


def output_paths(images: Sequence[Path], out: Path) -> list[Path]:
    """Where :func:`segment_files` writes each image's labels.

    ``out/<stem>.png`` for ordinary images; ``out/<stem>.zarr`` for large ones
    (zarr inputs, TIFFs above 4096x4096 pixels or pyramidal); and
    ``out/<stem>`` inside the zarr group when ``out`` itself ends in ``.zarr``.

    Raises
    ------
    DataError
        Two inputs would be written to the same place (``a/x.png`` and
        ``b/x.tif``), so one would silently replace the other.
    """
    from napari_bloodcells.core.large_images import is_large

    def target(path: Path) -> Path:
        stem = path.name.removesuffix(".zarr").removesuffix(".ome") if path.is_dir() else path.stem
        if out.suffix.lower() == ".zarr":
            return out / stem
        return out / (f"{stem}.zarr" if is_large(path) else f"{stem}.png")

    targets = [target(path) for path in images]
    seen: dict[Path, Path] = {}
    for path, place in zip(images, targets, strict=True):
        if place in seen:
            raise DataError(
                f"{seen[place]} and {path} would both be written to {place}; rename one of "
                "them or segment them into different --out folders."
            )
        seen[place] = path
    return targets


AUTO_SCALE = "auto"
"""``scale`` value asking :func:`segment_files` to estimate each image's factor."""
FileEvent = SegmentationEvent | FileSegmented | ScaleChosen | BlockWritten
"""What :func:`segment_files` yields."""


def _check_targets(targets: Sequence[Path], resume: bool, overwrite: bool) -> None:
    existing = [t for t in targets if t.exists()]
    if existing and not (resume or overwrite):
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise DataError(
            f"The output {existing[0]}{more} exists; pass --resume to keep what is done and "
            "finish the rest, --overwrite to replace it, or choose another --out."
        )


def segment_files(
    source: ModelSource,
    images: Sequence[Path],
    out: Path,
    *,
    scale: float | str = 1.0,
    tiles: TileSettings | None = None,
    device: torch.device | str | None = None,
    should_stop: Callable[[], bool] | None = None,
    measure_to: Path | None = None,
    pixel_size: float | None = None,
    resume: bool = False,
    overwrite: bool = False,
    block: int | None = None,
    client: Client | None = None,
) -> Generator[FileEvent, None, list[Path]]:
    """Segment image files, writing each one's labels atomically (see :func:`output_paths`).

    Every path is checked, and every output name, before any work starts. Large
    images (zarr, OME-Zarr, big or pyramidal TIFF) are read block by block and
    written to zarr chunk by chunk (:mod:`~napari_bloodcells.core.blockwise`),
    so memory stays bounded by one block. With ``measure_to`` the cells of
    every ordinary image are measured (:mod:`~.measure`) into one CSV. With
    ``scale="auto"`` each image's factor is estimated and announced with a
    :class:`~napari_bloodcells.core.events.ScaleChosen`.

    Parameters
    ----------
    resume, overwrite : bool
        What to do with outputs that exist: skip finished files and blocks, or
        replace them. Neither: refuse before any work.
    block : int, optional
        Block side for large images (default
        :data:`~napari_bloodcells.core.blockwise.DEFAULT_BLOCK`).
    client : distributed.Client, optional
        Spread the files and blocks over this dask cluster's workers
        (:mod:`~napari_bloodcells.core.scale_out`); ``source`` must then be a path.

    Returns
    -------
    list of Path
        The outputs written or completed (fewer than the inputs when stopped).

    Raises
    ------
    DataError
        A missing input, two inputs with the same output, an output that
        exists (without ``resume`` or ``overwrite``), or a large input of the
        wrong shape or dtype.
    """
    from napari_bloodcells.core.blockwise import DEFAULT_BLOCK

    images = expand_inputs(images)
    targets = output_paths(images, out)
    _check_targets(targets, resume, overwrite)
    if client is not None and not isinstance(source, Path | str):
        raise ConfigError("Segmenting on dask workers needs the model as a file path.")
    if client is not None and measure_to is not None:
        raise ConfigError(
            "--measure is not offered with dask workers; measure the label files afterwards "
            "with: napari-bloodcells measure."
        )
    # A name ("auto", "cuda") is resolved here; workers resolve it for themselves.
    model = load_model(source, resolve_device(device) if isinstance(device, str) else device)
    tiles = tiles or TileSettings()
    tiles.check(model.spec.input_multiple)
    if scale != AUTO_SCALE:
        SCALE_RANGE.check(float(scale))
    out.mkdir(parents=True, exist_ok=True)
    should_stop = should_stop or (lambda: False)
    plan = _SegmentPlan(
        model, source, tiles, scale, block or DEFAULT_BLOCK, resume, overwrite, device, client
    )
    written: list[Path] = []
    tables: list[Measurements] = []
    for index, (path, target) in enumerate(zip(images, targets, strict=True)):
        if resume and target.is_file():
            written.append(target)
            yield FileSegmented(index, len(images), path, target)
            continue
        if should_stop():
            yield Notice(f"Stopped before {path}; {len(written)} file(s) were written.")
            break
        if target.suffix.lower() == ".png":
            done = yield from plan.small_file(index, len(images), path, target, should_stop)
            if done is None:
                yield Notice(f"Stopped before {path}; {len(written)} file(s) were written.")
                break
            labels, pixels = done
            if measure_to is not None and labels is not None:
                table = measure_cells(labels, pixels, name=str(path), pixel_size=pixel_size)[1]
                tables.append(table)
        else:
            finished = yield from plan.large_file(path, target, should_stop)
            if not finished:
                break
        if client is None:
            written.append(target)
            yield FileSegmented(index, len(images), path, target)
        else:
            plan.queued[target] = (index, path)
    if client is not None:
        written += yield from plan.drain(len(images), should_stop)
    if measure_to is not None:
        yield from _write_measurements(tables, measure_to)
    return written


_FAMILIARITY_CHECKS = 3
"""Files of a folder whose styles are compared with the training images' (one microscope's
files look alike, and each check costs an encoder pass)."""


class _SegmentPlan:
    """How :func:`segment_files` runs each file: here, block by block, or on dask workers."""

    def __init__(
        self,
        model: TrainedModel,
        source: ModelSource,
        tiles: TileSettings,
        scale: float | str,
        block: int,
        resume: bool,
        overwrite: bool,
        device: torch.device | str | None,
        client: Client | None,
    ) -> None:
        self.model, self.source, self.tiles, self.scale = model, source, tiles, scale
        self.block, self.resume, self.overwrite, self.client = block, resume, overwrite, client
        self.device = str(device) if device is not None else "auto"
        self.futures: list[tuple[Any, Path]] = []
        self.queued: dict[Path, tuple[int, Path]] = {}
        self.familiarity_checks = _FAMILIARITY_CHECKS

    def unfamiliar(self, pixels: np.ndarray, path: Path) -> str:
        """The unfamiliar-image sentence for one of the first files, said at most once."""
        if self.familiarity_checks <= 0:
            return ""
        self.familiarity_checks -= 1
        notice = unfamiliar_notice(self.model, pixels, path.name)
        if notice:
            self.familiarity_checks = 0
        return notice

    def factor(self, pixels: np.ndarray, name: str) -> tuple[float, ScaleEstimate | None]:
        if self.scale != AUTO_SCALE:
            return float(self.scale), None
        estimate = estimate_scale(self.model, pixels, name)
        return estimate.scale, estimate

    def small_file(
        self, index: int, count: int, path: Path, target: Path, should_stop: Callable[[], bool]
    ) -> Generator[FileEvent, None, tuple[np.ndarray | None, np.ndarray] | None]:
        """Segment here (labels, pixels), queue on the workers (None, pixels), or stopped (None)."""
        pixels = read_image(path)
        if notice := self.unfamiliar(pixels, path):
            yield Notice(notice)
        factor, estimate = self.factor(pixels, str(path))
        if estimate is not None:
            yield ScaleChosen(index, str(path), factor, estimate.message)
        if self.client is not None:
            from napari_bloodcells.core.scale_out import file_task, submit

            future = submit(
                self.client,
                file_task,
                str(self.source),
                str(path),
                str(target),
                factor,
                self.tiles,
                self.device,
            )
            self.futures.append((future, target))
            return None, pixels
        result = None
        for event in segment(
            self.model, pixels, scale=factor, tiles=self.tiles, should_stop=should_stop
        ):
            if isinstance(event, SegmentationFinished):
                result = event.result
            elif isinstance(event, SegmentProgress):  # count files, not slices
                yield SegmentProgress(index, count, event.done, event.total)
            else:
                yield event
        if result is None or result.labels is None:
            return None
        write_labels(result.labels, target)
        return result.labels, pixels

    def large_file(
        self, path: Path, target: Path, should_stop: Callable[[], bool]
    ) -> Generator[FileEvent, None, bool]:
        import shutil

        from napari_bloodcells.core.blockwise import default_halo, segment_blocks
        from napari_bloodcells.core.large_images import blocks, create_labels_store, open_lazy

        image = (
            open_lazy(path)
            if path.is_dir() or path.suffix.lower() in (".tif", ".tiff")
            else read_image(path)
        )
        height, width = image.shape[:2]
        if self.scale == AUTO_SCALE:
            raise ConfigError(
                f"--scale auto is not offered for large images like {path.name}; estimate the "
                "scale on a crop (segment --scale auto crop.png) and pass it as a number."
            )
        factor = float(self.scale)
        if self.overwrite and target.exists():
            shutil.rmtree(target)
        store = create_labels_store(
            target,
            (height, width),
            self.block,
            resume=self.resume,
            attributes={"source": str(path), "classes": list(self.model.classes.names)},
        )
        todo = [b for b in blocks(height, width, self.block) if not store.is_done(b)]
        halo = default_halo(self.tiles, factor)
        if self.client is not None:
            from napari_bloodcells.core.scale_out import block_task, submit

            for b in todo:
                future = submit(
                    self.client,
                    block_task,
                    str(self.source),
                    str(path),
                    str(target),
                    b,
                    halo,
                    factor,
                    self.tiles,
                    self.device,
                )
                self.futures.append((future, target))
            return True
        written = yield from segment_blocks(
            self.model,
            image,
            store,
            todo,
            halo=halo,
            scale=factor,
            tiles=self.tiles,
            should_stop=should_stop,
        )
        return written == len(todo)

    def drain(
        self, files: int, should_stop: Callable[[], bool]
    ) -> Generator[FileEvent, None, list[Path]]:
        """Wait for the workers' tasks and report each file as its last task ends.

        Stop cancels the tasks not started; a task that failed on every retry
        cancels the rest and ends the job with one sentence.
        """
        from distributed import as_completed

        from napari_bloodcells.core.scale_out import failure

        remaining: dict[Path, int] = {}
        for _, target in self.futures:
            remaining[target] = remaining.get(target, 0) + 1
        pending = dict(self.futures)
        finished: list[Path] = [t for t in self.queued if t not in remaining]  # nothing to do
        total = len(pending)
        for done, future in enumerate(as_completed(list(pending))):
            target = pending.pop(future)
            if should_stop():
                for other in pending:
                    other.cancel()
                yield Notice(
                    f"Stopped; {done} of {total} tasks finished on the workers (--resume "
                    "finishes the rest)."
                )
                return finished
            try:
                future.result()
            except Exception as exc:  # a worker's exception, after the retries
                for other in pending:
                    other.cancel()
                raise failure(exc, str(self.queued[target][1])) from exc
            yield SegmentProgress(done, total, 1, 1)
            remaining[target] -= 1
            if remaining[target] == 0:
                index, path = self.queued[target]
                finished.append(target)
                yield FileSegmented(index, files, path, target)
        return finished


def _write_measurements(tables: list[Measurements], path: Path) -> Generator[Notice, None, None]:
    table = concatenate(tables)
    write_csv(table, path)
    if not len(table):
        yield Notice(f"No cell was found, so {path} holds only the header.")
    else:
        yield Notice(f"Measured {len(table)} cell(s) into {path}.")


def measure_job(
    labels: np.ndarray,
    image: np.ndarray | None = None,
    *,
    stack: bool = False,
    name: str = "",
    pixel_size: float | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Generator[SegmentProgress | Notice | CellsMeasured, None, CellsMeasured | None]:
    """Measure the cells of class labels (one image, or every slice of a stack).

    The cell ids of a stack run on from slice to slice, so that every cell has
    one id; the table's ``image`` column names the slice.
    """
    should_stop = should_stop or (lambda: False)
    slices = list(labels) if stack else [labels]
    pictures = (list(image) if stack else [image]) if image is not None else [None] * len(slices)
    cells = np.zeros((len(slices), *np.asarray(slices[0]).shape), np.int32)
    tables = []
    for index, (classes, picture) in enumerate(zip(slices, pictures, strict=True)):
        if should_stop():
            return None
        label = f"{name} [{index}]" if stack else name
        found, table = measure_cells(
            check_class_labels(np.asarray(classes), f"The labels {name}".strip()),
            None if picture is None else to_rgb_uint8(np.asarray(picture)),
            name=label,
            pixel_size=pixel_size,
        )
        offset = int(cells.max())
        cells[index] = np.where(found > 0, found + offset, 0)
        table.columns["cell"] = [c + offset for c in table.columns["cell"]]
        tables.append(table)
        yield SegmentProgress(index, len(slices), 1, 1)
    result = CellsMeasured(cells if stack else cells[0], concatenate(tables))
    if not len(result.table):
        yield Notice(f"No cell was found in {name or 'the labels'}; the table is empty.")
    yield result
    return result


def measure_files(
    labels: Sequence[Path], out: Path, *, pixel_size: float | None = None
) -> Generator[Notice | SegmentProgress, None, Measurements]:
    """Measure the cells of class-label image files (0/1/2) into one CSV at ``out``.

    Raises
    ------
    DataError
        A missing file, or labels that are not single-channel classes 0, 1 and 2.
    """
    missing = [str(p) for p in labels if not Path(p).is_file()]
    if missing:
        raise DataError(f"No such label file: {', '.join(missing[:3])}; check the paths.")
    tables = []
    for index, path in enumerate(labels):
        classes = check_class_labels(read_mask(Path(path)), f"The labels {path}")
        tables.append(measure_cells(classes, name=str(path), pixel_size=pixel_size)[1])
        yield SegmentProgress(index, len(labels), 1, 1)
    yield from _write_measurements(tables, out)
    return concatenate(tables)


def write_labels(labels: np.ndarray, path: Path) -> Path:
    """Write class indices as a palette PNG in the class colours, atomically.

    The pixel values stay the class indices (0, 1, 2), so the file reads back
    as labels; the palette makes it open as a picture in any viewer instead of
    looking black.
    """
    from PIL import Image

    picture = Image.fromarray(np.asarray(labels, dtype=np.uint8), mode="P")
    picture.putpalette(_palette())
    atomic_write(path, lambda tmp: picture.save(tmp, format="PNG"))
    return path


def _palette() -> list[int]:
    palette = [0] * 768
    for index, rgba in enumerate(BLOODCELL_CLASSES.colors):
        rgb = (0.0, 0.0, 0.0) if rgba[3] == 0 else rgba[:3]
        palette[3 * index : 3 * index + 3] = [round(255 * c) for c in rgb]
    palette[3 * UNLABELLED : 3 * UNLABELLED + 3] = [128, 128, 128]
    return palette
