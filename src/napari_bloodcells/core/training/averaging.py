"""The average of a run's last epochs as its kept model (stochastic weight averaging).

Izmailov et al. (UAI 2018): the weights of the last epochs of a run, averaged, lie in
a flatter part of the loss than any one of them and generalise further. For the
default preset it found 0.017-0.037 more of a real microscope's white cells in each of
three seeds, for 0.001-0.003 of Dataset 1's dev Dice (docs/benchmarks.md), so a new
model that trained all its epochs keeps the average, whatever its own dev score: the
dev images are Dataset 1's, the microscopes it is for are not. A stopped run keeps its
best epoch as before; a fine-tune chooses among its rounds by the user's corrections.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from napari_bloodcells.core.events import Notice
from napari_bloodcells.core.model.checkpoint import kept_epochs
from napari_bloodcells.core.training.keeper import cpu_state

if TYPE_CHECKING:
    from collections.abc import Callable, Generator

    from napari_bloodcells.core.training.keeper import BestModelKeeper
    from napari_bloodcells.core.training.run import Run, RunProgress

    Inputs = Callable[[list[int]], tuple[torch.Tensor, torch.Tensor]]

MIN_AVERAGED = 2
"""The fewest epochs an average takes; with fewer the run keeps its best epoch."""


class EpochAverage:
    """The running average of the weights of a run's last epochs.

    Parameters
    ----------
    run : Run
        A new model's run; a fine-tune's or a run whose config averages no epochs
        gets an average that does nothing.
    """

    def __init__(self, run: Run) -> None:
        epochs = run.schedule.epochs
        count = 0 if run.plan is not None else round(epochs * run.config.average_share)
        # One epoch "averaged" is that epoch with re-estimated statistics: it would
        # replace the best epoch of a short run for nothing, so it takes two.
        count = count if count >= MIN_AVERAGED else 0
        self.first = epochs - count + 1
        self.last = epochs
        self.average = torch.optim.swa_utils.AveragedModel(run.network) if count > 0 else None

    def add(self, network: torch.nn.Module, epoch: int) -> None:
        """Add the weights ``network`` has after ``epoch``, if it is one of the last."""
        if self.average is not None and epoch >= self.first:
            self.average.update_parameters(network)

    def keep(
        self, run: Run, keeper: BestModelKeeper, progress: RunProgress, inputs: Inputs
    ) -> Generator[Notice, None, None]:
        """Make the average the run's kept model, once every averaged epoch has been added.

        Averaged weights need batch statistics of their own: they are re-estimated
        over one epoch of training batches (``inputs`` augments and normalises one),
        in the run's precision.
        """
        average = self.average
        if average is None or progress.stopped:  # a run that is not stopped added every epoch
            return
        alone = progress.history[-1]["dice"]  # the last epoch, scored as it ended
        run.network.load_state_dict(average.module.state_dict())
        batches = (inputs(indices)[0] for indices in run.batches(progress.batch_size))
        with torch.no_grad(), run.autocast():
            torch.optim.swa_utils.update_bn(batches, run.trained)
        run.network.eval()
        _, averaged, _ = run.evaluate_dev()
        scores = averaged.scores()
        keeper.score, keeper.epoch = scores.mean_foreground_dice(), self.last
        keeper.state = keeper.round_state = cpu_state(run.network)
        progress.averaged = {"epochs": [self.first, self.last], "dice": list(scores.dice)}
        names = run.model.classes.names
        said = ", ".join(
            f"{names[c]} {alone[c]:.3f} → {scores.dice[c]:.3f}" for c in range(1, len(names))
        )
        yield Notice(
            f"Kept {kept_epochs({'averaged': progress.averaged})}: averaged weights find more "
            f"cells on other microscopes; dev Dice, epoch {self.last} alone → averaged: {said}."
        )
