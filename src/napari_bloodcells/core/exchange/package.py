"""Loading bioimage.io model packages back: the packages this plugin exported.

A package written by :mod:`napari_bloodcells.core.exchange.export` carries this plugin's
record of the model (architecture, classes, preprocessing, training
configuration, scores, size model) under ``config["napari-bloodcells"]`` and
its weights as ``pytorch_state_dict``, so it loads exactly as the ``.pt`` file
it came from. Packages from other tools describe other networks, inputs and
outputs; they are named and refused in one sentence rather than run wrongly.

Reading needs only the standard library's ``zipfile`` and PyYAML (which napari
brings), not the ``bioimageio`` extra.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from napari_bloodcells.core.model.checkpoint import (
    FORMAT_NAME,
    FORMAT_VERSION,
    existing_model_file,
    model_from_record,
)
from napari_bloodcells.errors import CheckpointError

if TYPE_CHECKING:
    from napari_bloodcells.core.model.trained import TrainedModel

CONFIG_KEY = "napari-bloodcells"
"""Key of this plugin's record in a package's ``config`` (as written by the exporter)."""
TYPE_WEIGHTS = "cell_types.pt"
"""The package attachment holding the cell-type network's weights (a state dict)."""
RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
SUPPORTED_SPEC = "0.5"
"""Major.minor of the model spec versions this plugin reads."""
_CAN_LOAD = "napari-bloodcells loads its own .pt models and the bioimage.io packages it exported"


def is_package(path: str | Path) -> bool:
    """Whether ``path`` looks like a bioimage.io package (a zip), not a ``.pt`` checkpoint."""
    path = Path(path)
    return path.suffix.lower() == ".zip" or (path.is_file() and _is_plain_zip(path))


def _is_plain_zip(path: Path) -> bool:
    # torch.save writes zip files too; a package has an rdf at its root.
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name in archive.namelist() for name in RDF_NAMES)
    except (zipfile.BadZipFile, OSError):
        return False


def read_description(path: str | Path) -> tuple[dict[str, Any], zipfile.ZipFile]:
    """The package's resource description and its open archive (close it when done).

    Raises
    ------
    CheckpointError
        If the file is missing, not a zip, or has no ``rdf.yaml``.
    """
    import yaml

    path = existing_model_file(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(
            f"The file {path} is not a bioimage.io package (not a zip file); {_CAN_LOAD}."
        ) from exc
    name = next((n for n in RDF_NAMES if n in archive.namelist()), None)
    if name is None:
        archive.close()
        raise CheckpointError(
            f"The zip file {path} holds no rdf.yaml, so it is not a bioimage.io package; "
            f"{_CAN_LOAD}."
        )
    try:
        description = yaml.safe_load(archive.read(name))
    except yaml.YAMLError as exc:
        archive.close()
        raise CheckpointError(
            f"The package {path} has a damaged {name}; export the model again."
        ) from exc
    if not isinstance(description, dict):
        archive.close()
        raise CheckpointError(f"The package {path} has an empty {name}; export it again.")
    return description, archive


def package_weights(
    path: str | Path, weight_format: str, missing: str
) -> tuple[dict[str, Any], bytes]:
    """This plugin's record of the package's model, and the bytes of one of its weight files.

    ``missing`` is the sentence for a package without that weight format.

    Raises
    ------
    CheckpointError
        In one sentence: for a package of another kind or from another tool, an
        unsupported spec version, missing weights, or damaged contents.
    """
    path = Path(path)
    description, archive = read_description(path)
    with archive:
        kind = description.get("type", "unknown")
        name = description.get("name", path.stem)
        if kind != "model":
            raise CheckpointError(
                f"The package {path.name} is a bioimage.io {kind} ('{name}'), not a model; "
                f"{_CAN_LOAD}."
            )
        version = str(description.get("format_version", "?"))
        record = (description.get("config") or {}).get(CONFIG_KEY)
        if not isinstance(record, dict) or record.get("format") != FORMAT_NAME:
            raise CheckpointError(
                f"The package {path.name} is a bioimage.io model ('{name}', spec {version}) "
                f"made by another tool; {_CAN_LOAD}."
            )
        if (
            not version.startswith(SUPPORTED_SPEC + ".")
            or int(record.get("format_version", 0)) > FORMAT_VERSION
        ):
            raise CheckpointError(
                f"The package {path.name} uses model spec {version}, which this version of "
                f"napari-bloodcells does not read (it reads {SUPPORTED_SPEC}.x); upgrade "
                "napari-bloodcells or export the model again."
            )
        entry = (description.get("weights") or {}).get(weight_format) or {}
        source = entry.get("source")
        if not isinstance(source, str) or source not in archive.namelist():
            raise CheckpointError(missing)
        try:
            return record, archive.read(source)
        except (zipfile.BadZipFile, OSError) as exc:
            raise CheckpointError(
                f"The {weight_format} weights in {path.name} are damaged; export the model again."
            ) from exc


def load_package(path: str | Path, device: torch.device | str = "cpu") -> TrainedModel:
    """Load a package that :mod:`~.export` wrote, as its ``.pt`` would load.

    Raises
    ------
    CheckpointError
        In one sentence: for a package of another kind or from another tool, an
        unsupported spec version, or damaged contents.
    """
    path = Path(path)
    record, weights = package_weights(
        path,
        "pytorch_state_dict",
        f"The package {path.name} lacks its pytorch_state_dict weights; export the model "
        "again with that weight format.",
    )
    try:
        state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
        type_state = None
        if record.get("type_model"):
            with zipfile.ZipFile(path) as archive:
                type_bytes = archive.read(TYPE_WEIGHTS)
            type_state = torch.load(io.BytesIO(type_bytes), map_location="cpu", weights_only=True)
        return model_from_record(record, state, device, type_state)
    except (KeyError, RuntimeError, TypeError, ValueError, zipfile.BadZipFile) as exc:
        raise CheckpointError(
            f"The package {path.name} is incomplete or damaged ({type(exc).__name__}); "
            "export the model again."
        ) from exc
