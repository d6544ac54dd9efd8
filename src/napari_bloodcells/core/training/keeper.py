"""Keeping a run's best model: in memory always, on disk as it improves, and after a crash."""

from __future__ import annotations

import contextlib
import copy
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_bloodcells.core.events import Notice
from napari_bloodcells.core.model.checkpoint import save_checkpoint
from napari_bloodcells.core.model.trained import TrainedModel
from napari_bloodcells.errors import CheckpointError

if TYPE_CHECKING:
    import torch

SAVE_EVERY_S = 10.0
"""Improvements are written at most this often while training; the end of a run,
a stop and a crash write the best model whatever the interval."""


def cpu_state(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of ``network``'s weights, unaffected by later training steps."""
    return {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}


class BestModelKeeper:
    """The best weights of a run by dev score, and the checkpoint that holds them.

    Parameters
    ----------
    network : torch.nn.Module
        The network being trained (not its DDP wrapper).
    checkpoint_path : path or None
        Where the best model is written; ``None`` keeps it in memory only.

    Attributes
    ----------
    state : dict
        The best weights so far, on the CPU.
    start_state : dict
        The weights the run started from.
    score : float
        The best score so far (a fine-tune starts at its starting model's).
    epoch : int
        The epoch ``state`` comes from; 0 for the starting weights.
    round_state, round_score, round_epoch
        The best trained epoch (round), even where a fine-tune's starting
        weights score higher: it is what gets blended with them.
    saved : bool
        Whether ``checkpoint_path`` holds the best model so far.
    """

    def __init__(self, network: torch.nn.Module, checkpoint_path: str | Path | None) -> None:
        self.network = network
        self.path = Path(checkpoint_path) if checkpoint_path is not None else None
        self.state = cpu_state(network)
        self.start_state = self.state
        self.score = -math.inf
        self.epoch = 0
        self.round_state = self.state
        self.round_score = -math.inf
        self.round_epoch = 0
        self.saved = False
        self._save_failed = False
        self._last_save = -math.inf
        self._written_epoch = 0

    def keep_if_best(self, score: float, epoch: int) -> bool:
        """Keep the network's weights if ``score`` beats the best; say whether it did."""
        if score > self.round_score:
            self.round_score, self.round_epoch = score, epoch
            self.round_state = cpu_state(self.network)
        if not score > self.score:
            return False
        self.score, self.epoch, self.state = score, epoch, self.round_state
        return True

    def save(self, candidate: TrainedModel) -> Notice | None:
        """Write ``candidate`` to the checkpoint; a failure is told once, not raised."""
        assert self.path is not None
        try:
            save_checkpoint(candidate, self.path)
        except CheckpointError as exc:
            # A full disk must not end the run: the best model is still in memory.
            self.saved = False
            if self._save_failed:
                return None
            self._save_failed = True
            return Notice(
                f"{str(exc).removesuffix('.')}; training goes on and keeps the best model "
                "in memory."
            )
        self.saved = True
        return None

    def snapshot(self, model: TrainedModel, history: list[dict[str, Any]]) -> TrainedModel:
        """A CPU copy of the best model so far, as a checkpoint records it."""
        network_copy = copy.deepcopy(self.network).cpu()
        network_copy.load_state_dict(self.state)
        return TrainedModel(
            network_copy,
            model.spec,
            model.classes,
            model.preprocessing,
            model.config,
            {"best_epoch": self.epoch, "history": [*history]},
            model.size_model,
        )

    def save_if_due(self, model: TrainedModel, history: list[dict[str, Any]]) -> Notice | None:
        """After an improvement, write the best model unless one was written moments ago.

        Epochs of a fraction of a second are not each written: the end of the run,
        a stop or a crash writes the best model.
        """
        if self.path is None or time.perf_counter() - self._last_save < SAVE_EVERY_S:
            return None
        self._last_save = time.perf_counter()
        notice = self.save(self.snapshot(model, history))
        if self.saved:
            self._written_epoch = self.epoch
        return notice

    def save_after_crash(self, model: TrainedModel, history: list[dict[str, Any]]) -> None:
        """Write the best model if the checkpoint holds an older one; never raise."""
        if self.path is not None and self.epoch != self._written_epoch:
            with contextlib.suppress(Exception):  # a crash keeps the best model, not an older one
                self.save(self.snapshot(model, history))
