"""Apply a trained model to images of any size, as a generator of progress events.

:func:`segment` is the one inference loop: the Segment widget's worker, the
CLI's jobs and the tests drive it, as they drive training. It handles one
image or a stack, yields :class:`~napari_bloodcells.core.events.SegmentProgress`
after every tile batch (and a :class:`~napari_bloodcells.core.events.Notice`
when it has to lower the tile batch), polls ``should_stop`` between tile
batches, and returns a :class:`~napari_bloodcells.core.events.Segmentation`.

Images no larger than a tile are padded to the network's input multiple and
predicted in one pass. Larger images are cut into overlapping tiles that are
blended with a weight ramp; tiles are processed one row at a time and each
finished band of rows is reduced to labels straight away, so peak memory grows
with the tile batch and the image width, not with the image area.

Cutting, blending and the arg-max happen on the model's device: a GPU receives
each row of tiles once as ``uint8`` and hands back only ``uint8`` labels, so
the copies and the CPU stay out of its way. On the CPU it is the same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import numpy as np
import torch
from PIL import Image

from napari_bloodcells.core.base.bounds import MAGNIFICATION_RANGE, Range
from napari_bloodcells.core.base.device import (
    autocast,
    autocast_dtype,
    is_memory_error,
    release_memory,
)
from napari_bloodcells.core.base.imaging import pad_to, to_rgb_uint8
from napari_bloodcells.core.events import (
    Notice,
    Segmentation,
    SegmentationEvent,
    SegmentationFinished,
    SegmentProgress,
    run_to_end,
)
from napari_bloodcells.core.model.fold import folded
from napari_bloodcells.core.model.preprocessing import array_to_tensor, image_to_tensor
from napari_bloodcells.errors import ConfigError, DataError

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Sequence

    from napari_bloodcells.core.model.trained import TrainedModel


@dataclass(frozen=True)
class TileSettings:
    """How large images are cut.

    Attributes
    ----------
    size : int
        Tile height and width, a multiple of the model's input multiple.
    overlap : int
        Pixels shared by neighbouring tiles, blended with a linear ramp.
    batch : int
        Tiles per forward pass; bounds peak memory.
    """

    # The defaults suit a CPU: one 640 px tile at a time was the fastest choice on 2
    # AVX2 cores (docs/benchmarks.md), and a batch of one holds the least memory.
    size: Annotated[int, Range(64, 8192, "The tile size")] = 640
    overlap: Annotated[int, Range(0, 4096, "The tile overlap")] = 64
    batch: Annotated[int, Range(1, 1024, "The tile batch")] = 1

    def check(self, multiple: int) -> None:
        """Raise :class:`ConfigError` if the settings cannot work with this model."""
        if self.size <= 0 or self.size % multiple:
            raise ConfigError(
                f"The tile size {self.size} must be a positive multiple of {multiple} for this "
                "model; pick e.g. 256 or 384."
            )
        if not 0 <= self.overlap < self.size // 2:
            raise ConfigError(
                f"The tile overlap {self.overlap} must be between 0 and half the tile size "
                f"({self.size // 2})."
            )
        if self.batch < 1:
            raise ConfigError("The tile batch must be at least 1.")

    def for_size(self, size: int) -> TileSettings:
        """These settings with another tile size, the overlap kept below a quarter of it."""
        return TileSettings(size, min(self.overlap, size // 4), self.batch)

    @classmethod
    def for_device(cls, device: torch.device | str | None) -> TileSettings:
        """Defaults suited to ``device``: larger tiles and batches on a GPU.

        A CPU gains nothing from large batches and pays for them in memory; a
        GPU is fed poorly by small ones (each pass is bound by kernel launches),
        and larger tiles waste less of its work on the overlap.
        """
        kind = torch.device(device).type if device is not None else "cpu"
        if kind == "cuda":
            return cls(size=1024, overlap=64, batch=16)
        return cls()


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles covering ``0..length`` with at least ``overlap`` shared pixels.

    ``length`` must be at least ``tile``; the last tile ends exactly at ``length``.
    """
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    return [*starts, length - tile]


def _ramp(tile: int, overlap: int) -> torch.Tensor:
    if overlap == 0:
        return torch.ones(tile)
    edge = (torch.arange(overlap, dtype=torch.float32) + 0.5) / overlap
    ramp = torch.ones(tile)
    ramp[:overlap] = edge
    ramp[-overlap:] = torch.minimum(ramp[-overlap:], edge.flip(0))
    return ramp


class _Runner:
    """Forward passes with normalisation and autocast; halves the tile batch on memory errors."""

    def __init__(
        self, model: TrainedModel, device: torch.device | None, precision: str, batch: int
    ) -> None:
        self.model = model
        # A network without parameters (ONNX Runtime's stand-in) runs on the CPU.
        first = next(model.network.parameters(), None)
        self.device = device or (first.device if first is not None else torch.device("cpu"))
        self.dtype = autocast_dtype(precision, self.device)
        self.batch = batch
        # NHWC suits tensor cores and oneDNN's CPU convolutions alike: 1.5x faster
        # on 2 AVX2 cores than NCHW. Training uses it too (TrainConfig.channels_last).
        model.network.to(self.device).eval()
        model.network.to(memory_format=torch.channels_last)
        self.network = folded(model.network, model.spec.input_multiple)

    def probabilities(self, tiles: torch.Tensor) -> Generator[Notice, None, torch.Tensor | None]:
        """Softmax of ``(N, 3, H, W) uint8`` tiles, or ``None`` after lowering the batch.

        On a memory error the tile batch is halved and a notice yielded; the
        caller then retries with :attr:`batch` tiles.
        """
        try:
            return self._forward(tiles)
        except (RuntimeError, torch.OutOfMemoryError) as exc:
            if not is_memory_error(exc) or len(tiles) == 1:
                raise
            self.batch = max(1, min(len(tiles) - 1, self.batch // 2))
            release_memory(self.device)
            yield Notice(f"Ran out of memory; retrying with {self.batch} tile(s) at once.")
            return None

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        x = self.model.preprocessing.normalize(batch.to(self.device))
        with torch.inference_mode(), autocast(self.device, self.dtype):
            x = x.contiguous(memory_format=torch.channels_last)
            logits = self.network(x)
            return torch.softmax(logits.float(), dim=1)


@dataclass(frozen=True)
class _Band:
    """Probabilities ``(K, rows, W)`` of the image rows from ``top`` on."""

    top: int
    probs: torch.Tensor


@dataclass(frozen=True)
class _TilesDone:
    done: int
    total: int


def _tile_probabilities(
    runner: _Runner,
    tiles: torch.Tensor,
    count: list[int],
    total: int,
    should_stop: Callable[[], bool],
) -> Generator[Notice | _TilesDone, None, list[torch.Tensor] | None]:
    """Probabilities of ``(N, 3, H, W) uint8`` tiles in batches, polling ``should_stop``.

    ``count`` holds the tiles done so far in the image and is advanced in place.
    Returns ``None`` when stopped.
    """
    parts: list[torch.Tensor] = []
    cursor = 0
    while cursor < len(tiles):
        if should_stop():
            return None
        chunk = tiles[cursor : cursor + runner.batch]
        probs = yield from runner.probabilities(chunk)
        if probs is None:
            continue  # the batch was halved: retry this chunk smaller
        parts.extend(probs)
        cursor += len(chunk)
        count[0] += len(chunk)
        yield _TilesDone(count[0], total)
    return parts


def _probability_bands(
    runner: _Runner,
    image: np.ndarray,
    tiles: TileSettings,
    should_stop: Callable[[], bool],
) -> Generator[_Band | _TilesDone | Notice, None, bool]:
    """Yield bands of probabilities that cover the image top to bottom, with progress.

    Returns False if ``should_stop`` ended it early.
    """
    height, width = image.shape[:2]
    multiple = runner.model.spec.input_multiple
    device = runner.device
    if height <= tiles.size and width <= tiles.size:
        ph, pw = -(-height // multiple) * multiple, -(-width // multiple) * multiple
        whole = yield from _tile_probabilities(
            runner, image_to_tensor(pad_to(image, ph, pw))[None], [0], 1, should_stop
        )
        if whole is None:
            return False
        yield _Band(0, whole[0][:, :height, :width])
        return True
    tiles.check(multiple)
    t = tiles.size
    padded = pad_to(image, t, t)
    ph, pw = padded.shape[:2]
    ys, xs = tile_starts(ph, t, tiles.overlap), tile_starts(pw, t, tiles.overlap)
    ramp = _ramp(t, tiles.overlap).to(device)
    weight = ramp[:, None] * ramp[None, :]
    k = runner.model.spec.num_classes
    acc = torch.zeros(k, t, pw, device=device)
    wsum = torch.zeros(1, t, pw, device=device)
    top, count, total = ys[0], [0], len(xs) * len(ys)
    for y in ys:
        if y > top:  # rows above `y` receive no more tiles: emit them and slide the window
            shift = y - top
            yield _Band(top, (acc[:, :shift] / wsum[:, :shift])[:, :, :width])
            acc = torch.cat([acc[:, shift:], acc.new_zeros(k, shift, pw)], dim=1)
            wsum = torch.cat([wsum[:, shift:], wsum.new_zeros(1, shift, pw)], dim=1)
            top = y
        # One copy of the row to the device; the tiles are views cut there.
        row = array_to_tensor(padded[y : y + t])
        if device.type == "cuda":  # from pinned memory the copy does not hold up the host
            row = row.pin_memory()
        row = row.to(device, non_blocking=True).permute(2, 0, 1)
        crops = torch.stack([row[:, :, x : x + t] for x in xs])
        probs = yield from _tile_probabilities(runner, crops, count, total, should_stop)
        if probs is None:
            return False
        for x, p in zip(xs, probs, strict=True):
            acc[:, :, x : x + t] += p * weight
            wsum[:, :, x : x + t] += weight
    last = min(t, height - top)
    yield _Band(top, (acc[:, :last] / wsum[:, :last])[:, :, :width])
    return True


def _working_size(model: TrainedModel, size: tuple[int, int], scale: float) -> tuple[int, int]:
    """The (height, width) the network sees for an image of ``size`` at ``scale``."""
    height, width = size
    if model.preprocessing.mode == "resize":
        return model.preprocessing.size, model.preprocessing.size
    if scale != 1.0:
        return max(1, round(height * scale)), max(1, round(width * scale))
    return height, width


def _resized(model: TrainedModel, image: np.ndarray, scale: float) -> np.ndarray:
    height, width = _working_size(model, (image.shape[0], image.shape[1]), scale)
    if (height, width) == image.shape[:2]:
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))


class _Landing:
    """Copies finished bands of labels (and confidence) into the host arrays.

    From a GPU the copy is asynchronous, into pinned memory, and a band lands
    only when the next one is sent: the host cuts and uploads the next row of
    tiles while the device is still working, instead of waiting on every band.
    """

    def __init__(self, labels: np.ndarray, conf: np.ndarray | None) -> None:
        self.labels, self.conf = labels, conf
        self.pending: list[tuple[slice, torch.Tensor, torch.Tensor | None, object]] = []

    def send(self, rows: slice, labels: torch.Tensor, conf: torch.Tensor | None) -> None:
        if labels.device.type != "cuda":
            self._land(rows, labels, conf)
            return
        host = torch.empty(labels.shape, dtype=labels.dtype, pin_memory=True)
        host.copy_(labels, non_blocking=True)
        host_conf = None
        if conf is not None:
            host_conf = torch.empty(conf.shape, dtype=conf.dtype, pin_memory=True)
            host_conf.copy_(conf, non_blocking=True)
        done = torch.cuda.Event()  # type: ignore[no-untyped-call]
        done.record()
        self.wait()
        self.pending.append((rows, host, host_conf, done))

    def wait(self) -> None:
        """Land every band sent so far."""
        for rows, labels, conf, done in self.pending:
            done.synchronize()  # type: ignore[attr-defined]
            self._land(rows, labels, conf)
        self.pending.clear()

    def _land(self, rows: slice, labels: torch.Tensor, conf: torch.Tensor | None) -> None:
        self.labels[rows] = labels.cpu().numpy()
        if self.conf is not None and conf is not None:
            self.conf[rows] = conf.cpu().numpy()


def _segment_one(
    runner: _Runner,
    image: np.ndarray,
    scale: float,
    tiles: TileSettings,
    confidence: bool,
    index: int,
    images: int,
    should_stop: Callable[[], bool],
) -> Generator[SegmentationEvent, None, tuple[np.ndarray, np.ndarray | None] | None]:
    """Labels (and confidence) of one 2D image, or ``None`` when stopped."""
    rgb = to_rgb_uint8(image)
    height, width = rgb.shape[:2]
    work = _resized(runner.model, rgb, scale)
    wh, ww = work.shape[:2]
    labels = np.empty((wh, ww), dtype=np.uint8)
    conf = np.empty((wh, ww), dtype=np.float32) if confidence else None
    bands = _probability_bands(runner, work, tiles, should_stop)
    landing = _Landing(labels, conf)
    while True:
        try:
            message = next(bands)
        except StopIteration as end:
            finished = bool(end.value)
            break
        if isinstance(message, _Band):
            best, winner = message.probs.max(dim=0)  # on the device: only labels come back
            rows = slice(message.top, message.top + message.probs.shape[1])
            landing.send(rows, winner.to(torch.uint8), best if conf is not None else None)
        elif isinstance(message, _TilesDone):
            yield SegmentProgress(index, images, message.done, message.total)
        else:
            yield message
    landing.wait()
    if not finished:
        return None
    if (wh, ww) != (height, width):  # np.array, not asarray: PIL's buffers are read-only
        labels = np.array(Image.fromarray(labels).resize((width, height), Image.Resampling.NEAREST))
        if conf is not None:
            conf = np.array(
                Image.fromarray(conf).resize((width, height), Image.Resampling.BILINEAR)
            )
    return labels, conf


def _slices(images: np.ndarray | Sequence[np.ndarray], stack: bool) -> list[np.ndarray] | None:
    if not stack:
        return None
    if len(images) == 0:
        raise DataError("The stack holds no images; open at least one image.")
    return [np.asarray(images[i]) for i in range(len(images))]


def _check_geometry(
    model: TrainedModel, images: np.ndarray | Sequence[np.ndarray], stack: bool, scale: float
) -> None:
    """Refuse what a model that resizes every image (the ``seed`` preset) cannot do."""
    if model.preprocessing.mode != "resize":
        return
    size = model.preprocessing.size
    if scale != 1.0:
        raise ConfigError(
            f"This model resizes every image to {size}x{size} (the seed preset), so a scale "
            "does not apply; use scale 1, or a default-preset model, which keeps the pixel size."
        )
    first = np.asarray(images[0]) if stack else np.asarray(images)
    if max(first.shape[:2]) > 4 * size:
        raise ConfigError(
            f"This model resizes every image to {size}x{size} (the seed preset), so this "
            f"{first.shape[1]}x{first.shape[0]} image would be squashed; crop it to single "
            "cells, or use a default-preset model, which tiles large images."
        )


def segment(
    model: TrainedModel,
    images: np.ndarray | Sequence[np.ndarray],
    *,
    stack: bool = False,
    scale: float = 1.0,
    tiles: TileSettings | None = None,
    device: torch.device | None = None,
    precision: str = "auto",
    confidence: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> Generator[SegmentationEvent, None, Segmentation]:
    """Segment one 2D image or every image of a stack, yielding progress events.

    Parameters
    ----------
    model : TrainedModel
        The model to apply.
    images : ndarray or sequence of ndarray
        One image ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)`` (see
        :func:`~napari_bloodcells.core.base.imaging.to_rgb_uint8`), or with
        ``stack=True`` a stack whose first axis indexes the images.
    stack : bool
        Whether ``images`` is a stack.
    scale : float
        Resize factor applied before prediction when the magnification differs
        from the training data (0.5 halves each side); labels are returned at
        the input's own size.
    tiles : TileSettings, optional
        Tiling for images larger than one tile.
    device : torch.device, optional
        Defaults to the network's device.
    precision : {"auto", "fp32", "bf16"}
        Autocast precision; "auto" uses bf16 where it is natively fast.
    confidence : bool
        Also return the winning class's probability per pixel.
    should_stop : callable, optional
        Polled before every tile batch; when it returns True the job ends with
        ``stopped=True`` and no labels.

    Yields
    ------
    SegmentProgress, Notice, SegmentationFinished

    Returns
    -------
    Segmentation
        Also carried by the final :class:`SegmentationFinished` event.
    """
    MAGNIFICATION_RANGE.check(scale)
    slices = _slices(images, stack)
    _check_geometry(model, images, stack, scale)
    tiles = tiles or TileSettings()
    should_stop = should_stop or (lambda: False)
    items = slices if slices is not None else [np.asarray(images)]
    runner = _Runner(model, device, precision, tiles.batch)
    labels: list[np.ndarray] = []
    confs: list[np.ndarray] = []
    for index, image in enumerate(items):
        outcome = yield from _segment_one(
            runner, image, scale, tiles, confidence, index, len(items), should_stop
        )
        if outcome is None:
            where = f" at image {index + 1} of {len(items)}" if len(items) > 1 else ""
            result = Segmentation(
                None, None, model.classes, True, f"Segmentation stopped{where}; nothing was kept."
            )
            yield SegmentationFinished(result)
            return result
        labels.append(outcome[0])
        if outcome[1] is not None:
            confs.append(outcome[1])
    if slices is None:
        result = Segmentation(labels[0], confs[0] if confs else None, model.classes)
    else:
        result = Segmentation(_stacked(labels), _stacked(confs) if confs else None, model.classes)
    yield SegmentationFinished(result)
    return result


def _stacked(arrays: list[np.ndarray]) -> np.ndarray:
    if len({a.shape for a in arrays}) > 1:  # a stack of differing sizes: pad, as layers do
        height = max(a.shape[0] for a in arrays)
        width = max(a.shape[1] for a in arrays)
        return np.stack([pad_to(a, height, width, 0) for a in arrays])
    return np.stack(arrays)


def segment_image(
    model: TrainedModel,
    image: np.ndarray,
    *,
    scale: float = 1.0,
    tiles: TileSettings | None = None,
    device: torch.device | None = None,
    precision: str = "auto",
    confidence: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Class labels (and optionally confidence) of one 2D image: :func:`segment`, drained.

    For scripts, evaluation and tests that need no progress. See
    :func:`segment` for the parameters.

    Returns
    -------
    labels : ndarray
        ``(H, W) uint8`` class indices.
    confidence : ndarray or None
        ``(H, W) float32`` in 0..1 when requested.
    """
    result = run_to_end(
        segment(
            model,
            image,
            scale=scale,
            tiles=tiles,
            device=device,
            precision=precision,
            confidence=confidence,
        )
    )
    assert result.labels is not None  # nothing asks this run to stop
    return result.labels, result.confidence


def predict_probabilities(
    model: TrainedModel,
    image: np.ndarray,
    *,
    tiles: TileSettings | None = None,
    device: torch.device | None = None,
    precision: str = "auto",
) -> np.ndarray:
    """Class probabilities ``(K, H, W) float32`` at the network's working size.

    Holds the whole probability map in memory; use :func:`segment` for very
    large images.
    """
    rgb = _resized(model, to_rgb_uint8(image), 1.0)
    tiles = tiles or TileSettings()
    runner = _Runner(model, device, precision, tiles.batch)
    bands = [m.probs for m in _drain(_probability_bands(runner, rgb, tiles, lambda: False))]
    return torch.cat(bands, dim=1).cpu().numpy()


def _drain(
    messages: Generator[_Band | _TilesDone | Notice, None, bool],
) -> Generator[_Band, None, None]:
    for message in messages:
        if isinstance(message, _Band):
            yield message
