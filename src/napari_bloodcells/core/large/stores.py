"""Images too large for memory: opened lazily from zarr, OME-Zarr and (OME-)TIFF, labels to zarr.

Whole-slide scans are tens of thousands of pixels a side. They are opened
here as dask arrays of shape ``(H, W, C)`` that read only the blocks asked
for: a zarr array, the full-resolution level of an OME-Zarr image (its
``multiscales`` metadata names it) or of a pyramidal TIFF (through tifffile's
zarr store). Labels are written as an OME-Zarr (NGFF) label image, chunk by
chunk, with its halved levels and its class colours (through ome-zarr-py), next
to a small "done" array with one entry per block, so a stopped run can resume and
what was written stays valid; napari-ome-zarr, QuPath and other OME-Zarr readers
open it as labels.

zarr and dask come with the ``distributed`` extra; without it, opening a zarr
says what to install.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_bloodcells.core.base.classes import BLOODCELL_CLASSES
from napari_bloodcells.errors import ConfigError, DataError

if TYPE_CHECKING:
    from pathlib import Path

    import dask.array as da

    from napari_bloodcells.core.base.classes import ClassInfo

EXTRA_HINT = "install the distributed extra: pip install 'napari-bloodcells[distributed]'"
LARGE_PIXELS = 4096 * 4096
"""Images with more pixels than this are segmented block by block into zarr."""
TIFF_SUFFIXES = (".tif", ".tiff")
DONE_NAME = "blocks_done"
"""Name of the per-block progress array written beside a labels array."""
PYRAMID_MIN_SIDE = 1024
"""Levels are added until the coarsest is below this many pixels a side."""


def require_extra(what: str) -> None:
    """Raise one sentence naming the extra if zarr or dask is missing."""
    try:
        import dask.array  # noqa: F401
        import zarr  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"{what} needs {exc.name}; {EXTRA_HINT}.") from exc


def is_zarr(path: Path) -> bool:
    """Whether ``path`` is a zarr array or group (v2 or v3) on disk."""
    return path.is_dir() and any(
        (path / marker).exists() for marker in ("zarr.json", ".zarray", ".zgroup")
    )


def is_large(path: Path) -> bool:
    """Whether ``path`` should be read lazily: a zarr, or a TIFF above :data:`LARGE_PIXELS`."""
    if is_zarr(path):
        return True
    if path.suffix.lower() in TIFF_SUFFIXES and path.is_file():
        import tifffile

        try:
            with tifffile.TiffFile(path) as tif:
                shape = tif.series[0].shape
        except (tifffile.TiffFileError, OSError, IndexError):
            return False
        return int(np.prod(shape[:2])) > LARGE_PIXELS or len(tif.series[0].levels) > 1
    return False


def _full_resolution(group: Any) -> Any:
    """The first (full-resolution) dataset of an OME-Zarr image, or a group's only array."""
    multiscales = group.attrs.get("multiscales") or group.attrs.get("ome", {}).get("multiscales")
    if multiscales:
        return group[multiscales[0]["datasets"][0]["path"]]
    arrays = list(group.array_keys())
    if "0" in arrays:
        return group["0"]
    if len(arrays) == 1:
        return group[arrays[0]]
    raise DataError(
        f"The zarr group holds {len(arrays)} arrays and no OME-Zarr multiscales; point at one "
        "array (folder) of it."
    )


def as_rgb_axes(array: da.Array, name: str) -> da.Array:
    """``array`` as ``(H, W, C)`` with 3 or 4 channels (or ``(H, W)`` gray), lazily.

    OME-Zarr stores channels first (``c, y, x``, often with leading ``t, z`` of
    size 1): those are squeezed and moved last.

    Raises
    ------
    DataError
        For shapes that are not a single 2D RGB(A) or gray image, or dtypes
        that are not 8-bit.
    """
    while array.ndim > 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 3 and array.shape[0] in (3, 4) and array.shape[-1] not in (3, 4):
        array = array.transpose(1, 2, 0)
    if array.ndim == 4 and array.shape[1] == 1:  # (c, z=1, y, x)
        array = array[:, 0].transpose(1, 2, 0)
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4))):
        raise DataError(
            f"{name} has shape {tuple(array.shape)}, not one 2D image (Y, X, 3), (3, Y, X) "
            "or (Y, X); export a single RGB plane."
        )
    if array.dtype != np.uint8:
        raise DataError(
            f"{name} holds {array.dtype} values; this plugin segments 8-bit images, so "
            "convert it to uint8 first."
        )
    return array


def open_lazy(path: Path) -> da.Array:
    """Open a zarr, OME-Zarr or (pyramidal, OME-) TIFF image as a lazy ``(H, W, C)`` array.

    Raises
    ------
    DataError
        If the file cannot be read or is not a single 8-bit 2D image.
    ConfigError
        If zarr or dask is not installed.
    """
    require_extra(f"Reading {path.name}")
    import dask.array as da
    import zarr

    name = str(path)
    try:
        if not is_zarr(path):
            tiff = TiffRegions(path)
            return as_rgb_axes(da.from_array(tiff, chunks=tiff.chunks), name)
        node: Any = zarr.open(str(path), mode="r")
        array = node if isinstance(node, zarr.Array) else _full_resolution(node)
    except DataError:
        raise
    except Exception as exc:  # zarr and tifffile raise many types for unreadable input
        raise DataError(
            f"Could not open {name} as a zarr or TIFF image ({type(exc).__name__}); check "
            "that it is a complete zarr array or TIFF file."
        ) from exc
    return as_rgb_axes(da.from_zarr(array), name)


class TiffRegions:
    """The full-resolution level of a (pyramidal, OME-) TIFF, read region by region.

    Each read opens the file through tifffile's zarr store and closes it
    again, so a lazy array over it holds no open file between reads.
    """

    def __init__(self, path: Path) -> None:
        import tifffile

        self.path = path
        with tifffile.TiffFile(path) as tif:
            level = tif.series[0].levels[0]
            self.shape: tuple[int, ...] = tuple(level.shape)
            self.dtype = np.dtype(level.dtype)
            self.axes: str = level.axes
            page = level.keyframe
            tile = (page.tilelength or page.rowsperstrip or 256, page.tilewidth or 4096)
        self.ndim = len(self.shape)
        # Reads of whole tiles (or strips), at least 1024 px a side: few opens per block.
        self.chunks = tuple(
            max(1024, int(t)) if i < 2 else n
            for i, (t, n) in enumerate(zip((*tile, *self.shape[2:]), self.shape, strict=False))
        )

    def __getitem__(self, key: Any) -> np.ndarray:
        import tifffile
        import zarr

        with tifffile.imread(self.path, aszarr=True) as store:
            node = zarr.open(store, mode="r")
            array = node if isinstance(node, zarr.Array) else node["0"]
            return np.asarray(array[key])


@dataclass(frozen=True)
class Block:
    """One block of a blockwise run: rows ``top:bottom`` and columns ``left:right``."""

    row: int
    col: int
    top: int
    bottom: int
    left: int
    right: int

    def with_halo(self, halo: int, height: int, width: int) -> tuple[slice, slice]:
        """The block grown by ``halo`` pixels on every side, within the image."""
        return (
            slice(max(0, self.top - halo), min(height, self.bottom + halo)),
            slice(max(0, self.left - halo), min(width, self.right + halo)),
        )


def blocks(height: int, width: int, size: int) -> list[Block]:
    """The blocks of ``size x size`` pixels (smaller at the right and bottom) covering an image."""
    return [
        Block(r, c, top, min(top + size, height), left, min(left + size, width))
        for r, top in enumerate(range(0, height, size))
        for c, left in enumerate(range(0, width, size))
    ]


@dataclass(frozen=True)
class LabelsStore:
    """An OME-Zarr (NGFF) label image and its per-block progress, opened for writing.

    Attributes
    ----------
    path : Path
        The label image's group: ``multiscales`` levels ``0``, ``1``, ... (each
        halved), ``image-label`` metadata with the class colours and names, and
        ``blocks_done``, which OME-Zarr readers ignore.
    labels : zarr.Array
        ``(H, W) uint8`` class indices at full resolution, chunked like the blocks.
    done : zarr.Array
        ``(rows, cols) bool``: which blocks are written.
    levels : tuple of zarr.Array
        The halved levels, coarsest last.
    """

    path: Path
    labels: Any
    done: Any
    levels: tuple[Any, ...] = ()

    @property
    def shape(self) -> tuple[int, int]:
        """The image's height and width."""
        height, width = self.labels.shape
        return int(height), int(width)

    @property
    def block(self) -> int:
        """The side of a block (and of a chunk of ``labels``)."""
        return int(self.labels.chunks[0])

    def blocks_to_do(self) -> list[Block]:
        """The blocks not written yet, in order."""
        return [b for b in blocks(*self.shape, self.block) if not self.is_done(b)]

    def is_done(self, block: Block) -> bool:
        """Whether ``block`` was written by an earlier run."""
        return bool(self.done[block.row, block.col])

    def pyramid(self) -> list[Any]:
        """The labels at full resolution and every coarser level, for a multiscale layer."""
        return [self.labels, *self.levels]

    def write(self, block: Block, labels: np.ndarray) -> None:
        """Write one block's labels (and its pyramid levels), then mark it done.

        A crash before the mark leaves the block undone, so ``--resume`` redoes it.
        """
        self.labels[block.top : block.bottom, block.left : block.right] = labels
        for level, array in enumerate(self.levels, start=1):
            step = 2**level
            rows = slice(block.top // step, -(-block.bottom // step))
            cols = slice(block.left // step, -(-block.right // step))
            array[rows, cols] = labels[::step, ::step]
        self.done[block.row, block.col] = True


def _level_count(shape: tuple[int, int], block: int) -> int:
    """Halved levels, for napari to show the whole slide without reading it all."""
    level = 0
    while max(shape) // 2 ** (level + 1) >= PYRAMID_MIN_SIDE and block // 2 ** (level + 1) >= 64:
        level += 1
    return level


def _write_ngff_metadata(
    group: Any, name: str, levels: int, classes: ClassInfo, container: Any
) -> None:
    """``multiscales`` and ``image-label`` through ome-zarr-py, so any OME-Zarr reader sees
    labels with the class colours and names.

    ``container`` is the group that lists the label image under ``labels`` (an input's
    ``labels`` group, or the ``--out`` group), or ``None`` when the label image is a store
    of its own.
    """
    from ome_zarr.format import CurrentFormat
    from ome_zarr.writer import add_metadata, write_label_metadata, write_multiscales_metadata

    fmt = CurrentFormat()
    datasets = [
        {
            "path": str(level),
            "coordinateTransformations": [{"type": "scale", "scale": [2.0**level] * 2}],
        }
        for level in range(levels + 1)
    ]
    axes = [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    write_multiscales_metadata(group, datasets, fmt=fmt, axes=axes, name=name.removesuffix(".zarr"))
    colors = [
        {"label-value": value, "rgba": [round(255 * c) for c in rgba]}
        for value, rgba in enumerate(classes.colors)
    ]
    properties = [{"label-value": value, "class": n} for value, n in enumerate(classes.names)]
    if container is not None:
        write_label_metadata(container, name, colors=colors, properties=properties, fmt=fmt)
    else:
        label = {"colors": colors, "properties": properties, "version": fmt.version}
        add_metadata(group, {"image-label": label}, fmt=fmt)


def _reopen(path: Path, shape: tuple[int, int], block: int) -> LabelsStore:
    import zarr

    existing: Any = zarr.open_group(str(path), mode="r+")
    if "0" not in existing or DONE_NAME not in existing:
        raise DataError(
            f"The output {path} was not written by this version of napari-bloodcells block "
            "by block, so it cannot be resumed; choose another --out."
        )
    store = open_labels_store(path)
    if store.shape != tuple(shape) or store.block != block:
        raise DataError(
            f"The output {path} holds labels of shape {store.shape} in blocks of "
            f"{store.block}, not {tuple(shape)} in blocks of {block}; choose another "
            "--out, or resume with the same --block."
        )
    return store


def create_labels_store(
    path: Path,
    shape: tuple[int, int],
    block: int,
    *,
    resume: bool = False,
    attributes: dict[str, Any] | None = None,
    classes: ClassInfo = BLOODCELL_CLASSES,
    container: Path | None = None,
) -> LabelsStore:
    """Open (``resume``) or create the OME-Zarr label image for an image of ``shape``.

    Parameters
    ----------
    path : Path
        The label image's group.
    shape : tuple of int
        Height and width.
    block : int
        Block (and chunk) side.
    resume : bool
        Reopen an unfinished store instead of refusing an existing one.
    attributes : dict, optional
        Recorded in the group's attributes (the source image, ...).
    classes : ClassInfo
        Names and colours for the ``image-label`` metadata.
    container : Path, optional
        A zarr group to list the label image in (under ``labels``): ``path`` is then
        ``container / name``.

    Raises
    ------
    DataError
        If ``path`` exists and ``resume`` is not set, or it holds labels of
        another shape or block size, or was not written block by block.
    """
    require_extra(f"Writing {path.name}")
    import zarr

    if path.exists():
        if not resume:
            raise DataError(
                f"The output {path} exists; pass --resume to finish it, or choose another --out."
            )
        return _reopen(path, shape, block)
    parent: Any = None
    if container is not None:  # opened through its container, so the two stay one store
        parent = zarr.open_group(str(container), mode="a")
        group = parent.create_group(path.name)
    else:
        group = zarr.open_group(str(path), mode="w")
    grid = (-(-shape[0] // block), -(-shape[1] // block))
    levels = _level_count(shape, block)
    arrays = [
        group.create_array(
            str(level),
            shape=(-(-shape[0] // 2**level), -(-shape[1] // 2**level)),
            chunks=(block // 2**level, block // 2**level),
            dtype="uint8",
            fill_value=0,
            dimension_names=("y", "x"),
        )
        for level in range(levels + 1)
    ]
    done = group.create_array(DONE_NAME, shape=grid, chunks=(1, 1), dtype="bool", fill_value=False)
    # Before the OME-Zarr metadata: each attribute write replaces the group's attributes
    # with what this handle holds.
    group.attrs["napari-bloodcells"] = json.loads(json.dumps(attributes or {}))
    _write_ngff_metadata(group, path.name, levels, classes, parent)
    return LabelsStore(path, arrays[0], done, tuple(arrays[1:]))


def open_labels_store(path: Path) -> LabelsStore:
    """Open an existing label image for writing (a dask worker's side of a run)."""
    require_extra(f"Writing {path.name}")
    import zarr

    group = zarr.open_group(str(path), mode="r+")
    levels: list[Any] = []
    while str(len(levels) + 1) in group:
        levels.append(group[str(len(levels) + 1)])
    return LabelsStore(path, group["0"], group[DONE_NAME], tuple(levels))
