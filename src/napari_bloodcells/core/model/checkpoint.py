"""Saving and loading trained models as single, self-describing files.

A checkpoint is a plain dictionary readable with
``torch.load(path, weights_only=True)``: the weights plus everything needed to
rebuild and apply the model (architecture, classes, preprocessing), the
training configuration, final metrics and package versions. Files are
written atomically: a crash mid-save leaves the previous file intact.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import torch
from torch import nn

from napari_bloodcells.core.base.classes import ClassInfo
from napari_bloodcells.core.base.files import atomic_write
from napari_bloodcells.core.model.networks import ModelSpec, build_model
from napari_bloodcells.core.model.preprocessing import Preprocessing
from napari_bloodcells.core.model.size_model import SizeModel
from napari_bloodcells.core.model.trained import TrainedModel
from napari_bloodcells.core.model.type_model import TypeModel
from napari_bloodcells.errors import CheckpointError

FORMAT_NAME = "napari-bloodcells-model"
FORMAT_VERSION = 1
SUFFIX = ".pt"


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version(), "torch": str(torch.__version__)}
    for package in ("napari-bloodcells", "segmentation-models-pytorch", "numpy"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "unknown"
    return found


def existing_model_file(path: str | Path) -> Path:
    """``path`` as a Path, or a :class:`CheckpointError` saying that no such model file exists."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"The model file {path} does not exist; check the path.")
    return path


def kept_epochs(metrics: dict[str, Any]) -> str:
    """Where a trained model's weights come from, e.g. "epoch 30" or "epochs 21-30 averaged"."""
    averaged = metrics.get("averaged")
    if averaged:
        first, last = averaged["epochs"]
        return f"epochs {first}-{last} averaged" if first < last else f"epoch {last} averaged"
    return f"epoch {metrics.get('best_epoch')}"


def best_dev_dice(model: TrainedModel) -> str:
    """The foreground classes' dev Dice of the model's kept weights (its best epoch or
    the average of its last epochs), e.g. "cytoplasm 0.95, nucleus 0.97"; "" when its
    history does not have them."""
    best = model.metrics.get("best_epoch")
    entry = model.metrics.get("averaged") or next(
        (h for h in model.metrics.get("history", []) if h.get("epoch") == best), None
    )
    if entry is None or "dice" not in entry:
        return ""
    return ", ".join(
        f"{name} {float(dice):.2f}"
        for name, dice in zip(model.classes.names[1:], entry["dice"][1:], strict=False)
    )


def model_record(model: TrainedModel) -> dict[str, Any]:
    """Everything about ``model`` but its weights, as plain types.

    A checkpoint stores it beside the weights; a bioimage.io package
    (:mod:`~napari_bloodcells.core.exchange.export`) stores it in its ``config``.
    :func:`model_from_record` reverses it.
    """
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "model": model.spec.to_dict(),
        "classes": model.classes.to_dict(),
        "preprocessing": model.preprocessing.to_dict(),
        "config": model.config,
        "metrics": model.metrics,
        "size_model": None if model.size_model is None else model.size_model.to_dict(),
        "type_model": None if model.type_model is None else model.type_model.to_dict(),
    }


def model_from_record(
    record: dict[str, Any],
    state_dict: dict[str, torch.Tensor] | None = None,
    device: torch.device | str = "cpu",
    type_state: dict[str, torch.Tensor] | None = None,
) -> TrainedModel:
    """Rebuild a :class:`TrainedModel` from :func:`model_record` and its weights.

    Without ``state_dict`` the network is not built (an ``nn.Identity`` stands
    in): the record alone describes the model, or another runtime supplies it.
    ``type_state`` holds the cell-type network's weights, if the record has one.

    Raises
    ------
    KeyError, RuntimeError, TypeError, ValueError
        For an incomplete record or weights that do not fit it; callers name
        the file in their own sentence.
    """
    spec = ModelSpec.from_dict(record["model"])
    network: nn.Module = nn.Identity()
    if state_dict is not None:
        network = build_model(spec)
        network.load_state_dict(state_dict)
    return TrainedModel(
        network=network.to(device).eval(),
        spec=spec,
        classes=ClassInfo.from_dict(record["classes"]),
        preprocessing=Preprocessing.from_dict(record["preprocessing"]),
        config=dict(record.get("config") or {}),
        metrics=dict(record.get("metrics") or {}),
        size_model=(
            SizeModel.from_dict(record["size_model"]) if record.get("size_model") else None
        ),
        type_model=(
            TypeModel.from_dict(record["type_model"], type_state)
            if record.get("type_model")
            else None
        ),
    )


def _cpu_state(network: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in network.state_dict().items()}


def save_checkpoint(model: TrainedModel, path: str | Path) -> Path:
    """Write ``model`` to ``path`` atomically.

    Returns
    -------
    Path
        The path written.

    Raises
    ------
    CheckpointError
        If the file cannot be written (no permission, disk full); any earlier
        file at ``path`` is left as it was.
    """
    payload = {
        **model_record(model),
        "world_size": int(model.metrics.get("world_size", 1)),
        "versions": _versions(),
        "state_dict": _cpu_state(model.network),
    }
    if model.type_model is not None:
        payload["type_state_dict"] = _cpu_state(model.type_model.network)
    path = Path(path)
    try:
        atomic_write(path, lambda tmp: torch.save(payload, tmp))
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise CheckpointError(
            f"Could not write the model to {path} ({reason}); free some disk space or "
            "choose a file in a folder you can write to."
        ) from exc
    return path


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> TrainedModel:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Parameters
    ----------
    path : path
        The checkpoint file.
    device : torch.device or str
        Where to put the network.

    Returns
    -------
    TrainedModel
        In evaluation mode.

    Raises
    ------
    CheckpointError
        If the file is missing, truncated, foreign, or from a newer format.
    """
    path = existing_model_file(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types for foreign or damaged bytes
        raise CheckpointError(
            f"The model file {path} is damaged or not a PyTorch file ({type(exc).__name__}); "
            "use another copy or train the model again."
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise CheckpointError(
            f"The file {path} is not a napari-bloodcells model; pick a .pt file saved by "
            "napari-bloodcells (train or the Save button)."
        )
    if int(payload.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(
            f"The model file {path} was saved in format version {payload['format_version']}, "
            f"newer than this napari-bloodcells understands ({FORMAT_VERSION}); upgrade "
            "napari-bloodcells."
        )
    try:
        model = model_from_record(
            payload, payload["state_dict"], device, payload.get("type_state_dict")
        )
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"The model file {path} is incomplete or inconsistent ({type(exc).__name__}: "
            f"{str(exc)[:80]}); use another copy or train the model again."
        ) from exc
    return model


def describe(model: TrainedModel) -> str:
    """One line on what ``model`` is: architecture, training data and best dev scores.

    Examples
    --------
    ``"Unet (resnet18), trained on bloodcells; epoch 28, dev Dice cytoplasm 0.95, nucleus 0.97"``
    """
    arch = (
        model.spec.arch
        if model.spec.arch == "notebook-unet"
        else (f"{model.spec.arch} ({model.spec.encoder})")
    )
    source = model.config.get("data_source")
    text = f"{arch}, trained on {source}" if source else arch
    scores = best_dev_dice(model)
    if scores:
        text += f"; {kept_epochs(model.metrics)}, dev Dice {scores}"
    if model.type_model is not None:
        accuracy = model.type_model.metrics.get("dev_accuracy")
        shown = f" (dev accuracy {accuracy:.2f})" if isinstance(accuracy, float) else ""
        text += f"; types {len(model.type_model.types)} white-cell types{shown}"
    return text


def describe_file(path: str | Path) -> str:
    """:func:`describe` for a checkpoint file, read without building its network.

    The tensors are memory-mapped, not read, so it is quick enough for the
    main thread of a GUI.

    Raises
    ------
    CheckpointError
        As :func:`load_checkpoint` for a missing, damaged or foreign file.
    """
    path = existing_model_file(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
            raise ValueError("not a napari-bloodcells model")
        model = model_from_record(payload)
    except Exception as exc:  # torch.load raises many types for foreign or damaged bytes
        raise CheckpointError(
            f"The file {path} is not a napari-bloodcells model or is damaged; pick a .pt "
            "file saved by napari-bloodcells (train or the Save button)."
        ) from exc
    return f"{path.name}: {describe(model)}"
