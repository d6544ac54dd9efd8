"""Training reports: per-epoch metrics as JSON and loss/Dice curves as PNG."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from napari_bloodcells.core.base.files import atomic_write

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path


def write_history_json(
    history: Sequence[dict[str, Any]], path: Path, extra: dict[str, Any] | None = None
) -> Path:
    """Write per-epoch records (and ``extra`` top-level fields) as JSON, atomically."""
    payload = {**(extra or {}), "epochs": list(history)}

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2)

    atomic_write(path, write)
    return path


def plot_curves(history: Sequence[dict[str, Any]], class_names: Sequence[str], path: Path) -> Path:
    """Draw train/dev loss and per-class dev Dice against the epoch into a PNG."""
    from matplotlib.figure import Figure  # no pyplot: works without any GUI backend

    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(9, 3.6), dpi=100, layout="constrained")
    loss_ax, dice_ax = fig.subplots(1, 2)
    loss_ax.plot(epochs, [h["train_loss"] for h in history], label="train")
    loss_ax.plot(epochs, [h["dev_loss"] for h in history], label="dev")
    loss_ax.set(xlabel="epoch", ylabel="loss", title="Loss")
    loss_ax.legend()
    for k, name in enumerate(class_names):
        if k == 0:
            continue
        dice_ax.plot(epochs, [h["dice"][k] for h in history], label=name)
    dice_ax.set(xlabel="epoch", ylabel="Dice", title="Dev Dice", ylim=(0, 1))
    dice_ax.legend()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    return path
