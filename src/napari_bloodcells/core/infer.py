"""Apply a trained model to images of any size.

Images no larger than a tile are padded to the network's input multiple and
predicted in one pass. Larger images are cut into overlapping tiles that are
blended with a weight ramp; tiles are processed one row at a time and each
finished band of rows is reduced to labels straight away, so peak memory grows
with the tile batch and the image width, not with the image area.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from napari_bloodcells.core.batches import pad_to
from napari_bloodcells.core.device import autocast_dtype
from napari_bloodcells.core.imaging import to_rgb_uint8
from napari_bloodcells.core.preprocessing import image_to_tensor
from napari_bloodcells.errors import ConfigError

if TYPE_CHECKING:
    from napari_bloodcells.core.checkpoint import TrainedModel

ProgressCallback = Callable[[int, int], None]
NoticeCallback = Callable[[str], None]


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

    size: int = 384
    overlap: int = 64
    batch: int = 4

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


def _is_memory_error(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError)
        and any(
            s in str(exc).lower()
            for s in ("out of memory", "can't allocate memory", "not enough memory")
        )
    )


class _Runner:
    """Forward passes with normalisation, autocast and halving on memory errors."""

    def __init__(
        self,
        model: TrainedModel,
        device: torch.device | None,
        precision: str,
        on_notice: NoticeCallback | None,
    ) -> None:
        self.model = model
        self.device = device or next(model.network.parameters()).device
        self.dtype = autocast_dtype(precision, self.device)
        self.on_notice = on_notice
        model.network.to(self.device).eval()

    def probabilities(self, batch: torch.Tensor, max_batch: int) -> tuple[torch.Tensor, int]:
        """Softmax of ``(N, 3, H, W) uint8``; returns the probabilities and the batch size used."""
        while True:
            try:
                parts = [
                    self._forward(batch[i : i + max_batch]) for i in range(0, len(batch), max_batch)
                ]
                return torch.cat(parts), max_batch
            except (RuntimeError, torch.OutOfMemoryError) as exc:
                if not _is_memory_error(exc) or max_batch == 1:
                    raise
                max_batch //= 2
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                if self.on_notice:
                    self.on_notice(f"Ran out of memory; retrying with {max_batch} tile(s) at once.")

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        x = self.model.preprocessing.normalize(batch.to(self.device))
        autocast = (
            torch.autocast(self.device.type, dtype=self.dtype)
            if self.dtype
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            logits = self.model.network(x)
        return torch.softmax(logits.float(), dim=1).cpu()


def _probability_bands(
    runner: _Runner,
    image: np.ndarray,
    tiles: TileSettings,
    progress: ProgressCallback | None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(row, probabilities)`` bands that together cover the image, top to bottom."""
    height, width = image.shape[:2]
    multiple = runner.model.spec.input_multiple
    if height <= tiles.size and width <= tiles.size:
        ph, pw = -(-height // multiple) * multiple, -(-width // multiple) * multiple
        padded = image_to_tensor(pad_to(image, ph, pw))[None]
        probs, _ = runner.probabilities(padded, 1)
        if progress:
            progress(1, 1)
        yield 0, probs[0, :, :height, :width]
        return
    tiles.check(multiple)
    t = tiles.size
    padded = pad_to(image, t, t)
    ph, pw = padded.shape[:2]
    ys, xs = tile_starts(ph, t, tiles.overlap), tile_starts(pw, t, tiles.overlap)
    ramp = _ramp(t, tiles.overlap)
    weight = ramp[:, None] * ramp[None, :]
    k = runner.model.spec.num_classes
    acc = torch.zeros(k, t, pw)
    wsum = torch.zeros(1, t, pw)
    top, batch_size, done = ys[0], tiles.batch, 0
    for y in ys:
        if y > top:  # rows above `y` receive no more tiles: emit them and slide the window
            shift = y - top
            yield top, acc[:, :shift] / wsum[:, :shift]
            acc = torch.cat([acc[:, shift:], torch.zeros(k, shift, pw)], dim=1)
            wsum = torch.cat([wsum[:, shift:], torch.zeros(1, shift, pw)], dim=1)
            top = y
        crops = torch.stack([image_to_tensor(padded[y : y + t, x : x + t]) for x in xs])
        probs, batch_size = runner.probabilities(crops, batch_size)
        for x, p in zip(xs, probs, strict=False):
            acc[:, :, x : x + t] += p * weight
            wsum[:, :, x : x + t] += weight
        done += len(xs)
        if progress:
            progress(done, len(xs) * len(ys))
    last = min(t, height - top)
    yield top, acc[:, :last] / wsum[:, :last]


def _crop_width(bands: Iterator[tuple[int, torch.Tensor]], width: int):
    for top, probs in bands:
        yield top, probs[:, :, :width]


def _resized(model: TrainedModel, image: np.ndarray, scale: float) -> np.ndarray:
    if model.preprocessing.mode == "resize":
        size = model.preprocessing.size
        return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
    if scale != 1.0:
        height, width = image.shape[:2]
        new = (max(1, round(width * scale)), max(1, round(height * scale)))
        return np.asarray(Image.fromarray(image).resize(new, Image.BILINEAR))
    return image


def segment_image(
    model: TrainedModel,
    image: np.ndarray,
    *,
    scale: float = 1.0,
    tiles: TileSettings | None = None,
    device: torch.device | None = None,
    precision: str = "auto",
    confidence: bool = False,
    progress: ProgressCallback | None = None,
    on_notice: NoticeCallback | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Class labels (and optionally confidence) for one 2D image.

    Parameters
    ----------
    model : TrainedModel
        The model to apply.
    image : ndarray
        ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)``; see :func:`to_rgb_uint8`.
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
    progress : callable, optional
        ``progress(done, total)`` in tiles.
    on_notice : callable, optional
        Receives messages such as a tile batch reduced after a memory error.

    Returns
    -------
    labels : ndarray
        ``(H, W) uint8`` class indices.
    confidence : ndarray or None
        ``(H, W) float32`` in 0..1 when requested.
    """
    if not np.isfinite(scale) or not 0.05 <= scale <= 20:
        raise ConfigError(f"The scale {scale} is out of range; use a factor between 0.05 and 20.")
    rgb = to_rgb_uint8(image)
    height, width = rgb.shape[:2]
    work = _resized(model, rgb, scale)
    runner = _Runner(model, device, precision, on_notice)
    wh, ww = work.shape[:2]
    labels = np.empty((wh, ww), dtype=np.uint8)
    conf = np.empty((wh, ww), dtype=np.float32) if confidence else None
    bands = _crop_width(_probability_bands(runner, work, tiles or TileSettings(), progress), ww)
    for top, probs in bands:
        best, winner = probs.max(dim=0)
        labels[top : top + probs.shape[1]] = winner.numpy()
        if conf is not None:
            conf[top : top + probs.shape[1]] = best.numpy()
    if (wh, ww) != (height, width):
        labels = np.asarray(Image.fromarray(labels).resize((width, height), Image.NEAREST))
        if conf is not None:
            conf = np.asarray(Image.fromarray(conf).resize((width, height), Image.BILINEAR))
    return labels, conf


def predict_probabilities(
    model: TrainedModel,
    image: np.ndarray,
    *,
    tiles: TileSettings | None = None,
    device: torch.device | None = None,
    precision: str = "auto",
) -> np.ndarray:
    """Class probabilities ``(K, H, W) float32`` at the network's working size.

    Holds the whole probability map in memory; use :func:`segment_image` for
    very large images.
    """
    rgb = _resized(model, to_rgb_uint8(image), 1.0)
    runner = _Runner(model, device, precision, None)
    bands = _probability_bands(runner, rgb, tiles or TileSettings(), None)
    return torch.cat([p[:, :, : rgb.shape[1]] for _, p in bands], dim=1).numpy()
