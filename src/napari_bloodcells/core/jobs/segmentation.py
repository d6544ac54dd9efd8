"""The segmentation jobs: one image or stack, the magnification of images, and lists of files
(one process, a dask cluster, or block by block for large images)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_bloodcells.core.base.bounds import MAGNIFICATION_RANGE
from napari_bloodcells.core.base.cell_types import DEFAULT_THRESHOLD
from napari_bloodcells.core.base.classes import BLOODCELL_CLASSES
from napari_bloodcells.core.base.device import resolve_device
from napari_bloodcells.core.base.imaging import convert_to_rgb, to_rgb_uint8
from napari_bloodcells.core.data.dataset import read_image, read_image_noting
from napari_bloodcells.core.data.labels_io import write_labels
from napari_bloodcells.core.events import (
    BlocksSegmented,
    BlockWritten,
    FileSegmented,
    FilesSegmented,
    Notice,
    ScaleChosen,
    ScaleEstimate,
    ScaleEstimated,
    SegmentationEvent,
    SegmentationFinished,
    SegmentProgress,
)
from napari_bloodcells.core.exchange.open_model import ModelSource, load_model
from napari_bloodcells.core.inference.magnification import (
    estimate_scale,
    unfamiliar_notice,
)
from napari_bloodcells.core.inference.tiled import TileSettings, segment
from napari_bloodcells.core.jobs.inputs import expand_inputs, output_paths
from napari_bloodcells.core.jobs.measurement import measure_image, write_typed
from napari_bloodcells.errors import ConfigError, DataError

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Sequence

    import torch
    from distributed import Client

    from napari_bloodcells.core.base.classes import ClassInfo
    from napari_bloodcells.core.events import Segmentation
    from napari_bloodcells.core.large.stores import LabelsStore
    from napari_bloodcells.core.measure.cells import Measurements
    from napari_bloodcells.core.model.trained import TrainedModel


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

    Before segmenting, a :class:`~.events.Notice` says how the image (a stack's
    first slice) is converted to 8-bit RGB, if it is, and another when it looks
    unlike the model's training images.
    """
    model = load_model(source)
    first = images[0] if stack else images
    rgb, conversion = convert_to_rgb(np.asarray(first))
    if conversion:  # said here, in the worker: rescaling reads every pixel
        yield Notice(conversion)
    if notice := unfamiliar_notice(model, rgb):
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
) -> Generator[ScaleChosen | ScaleEstimated, None, ScaleEstimate]:
    """Estimate the resize factor of one image, or of a stack from up to 8 of its slices.

    Yields one :class:`~napari_bloodcells.core.events.ScaleChosen` per slice
    looked at, then :class:`~napari_bloodcells.core.events.ScaleEstimated` with the
    median of the slices where cells were found (1.0, with the sentence of the
    first failure, if none was).
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
    if found:
        result = ScaleEstimate(round(float(np.median([e.scale for e in found])), 3), True)
    else:
        result = failures[0] if failures else ScaleEstimate(1.0, False, "Estimation stopped.")
    yield ScaleEstimated(result)
    return result


AUTO_SCALE = "auto"
"""``scale`` value asking :func:`segment_files` to estimate each image's factor."""
FileEvent = (
    SegmentationEvent
    | FileSegmented
    | ScaleChosen
    | BlockWritten
    | BlocksSegmented
    | FilesSegmented
)
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
    into_input: bool = False,
) -> Generator[FileEvent, None, list[Path]]:
    """Segment image files, writing each one's labels atomically (see :func:`output_paths`).

    Every path is checked, and every output name, before any work starts. Large
    images (zarr, OME-Zarr, big or pyramidal TIFF) are read block by block and
    written to zarr chunk by chunk (:mod:`~napari_bloodcells.core.large.blockwise`),
    so memory stays bounded by one block. With ``measure_to`` the cells of
    every ordinary image are measured
    (:mod:`~napari_bloodcells.core.measure.cells`) into one CSV. With
    ``scale="auto"`` each image's factor is estimated and announced with a
    :class:`~napari_bloodcells.core.events.ScaleChosen`.

    Parameters
    ----------
    resume, overwrite : bool
        What to do with outputs that exist: skip finished files and blocks, or
        replace them. Neither: refuse before any work.
    block : int, optional
        Block side for large images (default
        :data:`~napari_bloodcells.core.large.blockwise.DEFAULT_BLOCK`).
    into_input : bool
        Write a zarr input's labels into the input (``<input>/labels/bloodcells``).
    client : distributed.Client, optional
        Spread the files and blocks over this dask cluster's workers
        (:mod:`~napari_bloodcells.core.large.cluster`); ``source`` must then be a path.

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
    from napari_bloodcells.core.large.blockwise import DEFAULT_BLOCK

    images = expand_inputs(images)
    targets = output_paths(images, out, into_input)
    model, tiles = _checked_file_job(
        source, targets, scale, tiles, device, measure_to, resume, overwrite, client
    )
    out.mkdir(parents=True, exist_ok=True)
    plan = _SegmentPlan(
        model, source, tiles, scale, block or DEFAULT_BLOCK, resume, overwrite, device, client
    )
    measured: list[tuple[Measurements, np.ndarray | None]] = []
    written = yield from _segment_each(
        plan,
        images,
        targets,
        measured if measure_to is not None else None,
        pixel_size,
        should_stop or (lambda: False),
    )
    if client is not None:
        written += yield from plan.drain(len(images), should_stop or (lambda: False))
    if measure_to is not None:
        yield from write_typed(measured, plan.model.type_model, measure_to)
    yield FilesSegmented(tuple(written))
    return written


def _checked_file_job(
    source: ModelSource,
    targets: Sequence[Path],
    scale: float | str,
    tiles: TileSettings | None,
    device: torch.device | str | None,
    measure_to: Path | None,
    resume: bool,
    overwrite: bool,
    client: Client | None,
) -> tuple[TrainedModel, TileSettings]:
    """The model and tiles of a file job, after every check that can fail before work starts."""
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
        MAGNIFICATION_RANGE.check(float(scale))
    return model, tiles


def _segment_each(
    plan: _SegmentPlan,
    images: Sequence[Path],
    targets: Sequence[Path],
    measured: list[tuple[Measurements, np.ndarray | None]] | None,
    pixel_size: float | None,
    should_stop: Callable[[], bool],
) -> Generator[FileEvent, None, list[Path]]:
    """Segment the files one by one (or queue them on the cluster); the outputs written."""
    written: list[Path] = []
    for index, (path, target) in enumerate(zip(images, targets, strict=True)):
        if plan.resume and target.is_file():
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
            if measured is not None and labels is not None:
                _, table, crops = measure_image(
                    labels, pixels, str(path), pixel_size, plan.model.type_model, DEFAULT_THRESHOLD
                )
                measured.append((table, crops))  # typed together once all are measured
        elif not (yield from plan.large_file(path, target, should_stop)):
            break
        if plan.client is None:
            written.append(target)
            yield FileSegmented(index, len(images), path, target)
        else:
            plan.queued[target] = (index, path)
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
        self.conversion_said = False

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
        pixels, conversion = read_image_noting(path)
        if conversion and not self.conversion_said:
            self.conversion_said = True  # a folder from one camera converts alike
            yield Notice(conversion)
        if notice := self.unfamiliar(pixels, path):
            yield Notice(notice)
        factor, estimate = self.factor(pixels, str(path))
        if estimate is not None:
            yield ScaleChosen(index, str(path), factor, estimate.message)
        if self.client is not None:
            from napari_bloodcells.core.large.cluster import file_task, submit

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
        from napari_bloodcells.core.large.blockwise import default_halo
        from napari_bloodcells.core.large.stores import open_lazy

        image = (
            open_lazy(path)
            if path.is_dir() or path.suffix.lower() in (".tif", ".tiff")
            else read_image(path)
        )
        if self.scale == AUTO_SCALE:
            raise ConfigError(
                f"--scale auto is not offered for large images like {path.name}; estimate the "
                "scale on a crop (segment --scale auto crop.png) and pass it as a number."
            )
        factor = float(self.scale)
        store = large_labels_store(
            target,
            image.shape[:2],
            self.block,
            resume=self.resume,
            overwrite=self.overwrite,
            attributes={"source": str(path)},
            classes=self.model.classes,
        )
        if self.client is None:
            yield from blocks_job(
                self.model, image, store, scale=factor, tiles=self.tiles, should_stop=should_stop
            )
            if store.blocks_to_do():
                yield Notice(f"Run again with --resume to finish {path.name}.")
                return False
            return True
        from napari_bloodcells.core.large.cluster import block_task, submit

        halo = default_halo(self.tiles, factor)
        for b in store.blocks_to_do():
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

    def drain(
        self, files: int, should_stop: Callable[[], bool]
    ) -> Generator[FileEvent, None, list[Path]]:
        """Wait for the workers' tasks and report each file as its last task ends.

        Stop cancels the tasks not started; a task that failed on every retry
        cancels the rest and ends the job with one sentence.
        """
        from distributed import as_completed

        from napari_bloodcells.core.large.cluster import failure

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


def large_labels_store(
    target: Path,
    shape: tuple[int, int],
    block: int,
    *,
    resume: bool = False,
    overwrite: bool = False,
    attributes: dict[str, Any] | None = None,
    classes: ClassInfo = BLOODCELL_CLASSES,
) -> LabelsStore:
    """The OME-Zarr label image a large image's labels are written into, block by block.

    When ``target`` sits in a zarr group (``--out out.zarr``, or an OME-Zarr input's
    ``labels`` group) it is listed there, so readers find it beside the image.

    Parameters
    ----------
    target : Path
        The ``.zarr`` folder.
    shape : tuple of int
        The image's height and width.
    block : int
        Block side in pixels.
    resume, overwrite : bool
        Reopen an unfinished store, or replace an existing one; neither refuses
        an existing store.
    attributes : dict, optional
        Recorded with the labels (the source image, ...).
    classes : ClassInfo
        The model's classes: the label image's names and colours.
    """
    from napari_bloodcells.core.large.stores import create_labels_store

    if overwrite and target.exists():
        shutil.rmtree(target)
    height, width = shape
    parent = target.parent
    in_group = parent.suffix.lower() == ".zarr" or parent.name == "labels"
    return create_labels_store(
        target,
        (int(height), int(width)),
        block,
        resume=resume,
        attributes=attributes,
        classes=classes,
        container=parent if in_group else None,
    )


def blocks_job(
    model: ModelSource,
    image: Any,
    store: LabelsStore,
    *,
    scale: float = 1.0,
    tiles: TileSettings | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Generator[BlockWritten | Notice | BlocksSegmented, None, int]:
    """Segment the blocks of ``image`` that ``store`` lacks; ends with ``BlocksSegmented``.

    The one large-image path: the CLI's large files and the Segment widget's large
    layers both run it. Only one block (plus its halo) of pixels is in memory at a time.

    Parameters
    ----------
    model : TrainedModel or Path
        The model.
    image : array-like
        ``(H, W, C)``, read lazily block by block (a dask or zarr array, or numpy).
    store : LabelsStore
        From :func:`large_labels_store`.
    """
    from napari_bloodcells.core.large.blockwise import default_halo, segment_blocks

    tiles = tiles or TileSettings()
    return (
        yield from segment_blocks(
            load_model(model),
            image,
            store,
            store.blocks_to_do(),
            halo=default_halo(tiles, scale),
            scale=scale,
            tiles=tiles,
            should_stop=should_stop,
        )
    )
