"""Which files a segmentation job reads and where it writes each result."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from napari_bloodcells.errors import DataError

if TYPE_CHECKING:
    from collections.abc import Sequence


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

    from napari_bloodcells.core.large.stores import is_zarr

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
                raise DataError(
                    f"The folder {path} holds no image (.png, .tif, .zarr, ...); choose a "
                    "folder of images."
                )
            found.extend(inside)
        elif glob.has_magic(str(path)):
            matches = sorted(Path(m) for m in glob.glob(str(path)))
            if not matches:
                raise DataError(f"No file matches {path}; check the pattern.")
            found.extend(expand_inputs(matches))
        else:
            raise DataError(f"No such image file: {path}; check the path.")
    return found


LABELS_NAME = "bloodcells"
"""The label image's name inside an OME-Zarr input (``<input>/labels/bloodcells``)."""


def output_paths(images: Sequence[Path], out: Path, into_input: bool = False) -> list[Path]:
    """Where :func:`segment_files` writes each image's labels.

    ``out/<stem>.png`` for ordinary images; ``out/<stem>.zarr`` for large ones
    (zarr inputs, TIFFs above 4096x4096 pixels or pyramidal); and
    ``out/<stem>`` inside the zarr group when ``out`` itself ends in ``.zarr``.
    With ``into_input``, a zarr input's labels go into the input itself, as
    ``<input>/labels/bloodcells``, where OME-Zarr readers look for them.

    Raises
    ------
    DataError
        Two inputs would be written to the same place (``a/x.png`` and
        ``b/x.tif``), so one would silently replace the other.
    """
    from napari_bloodcells.core.large.stores import is_large

    def target(path: Path) -> Path:
        if into_input and path.is_dir():
            return path / "labels" / LABELS_NAME
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
