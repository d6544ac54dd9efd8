"""Fine-tuning on a few corrections without forgetting: replay, a step budget, the kept model.

A microscopist corrects a handful of images of their own and fine-tunes. With
so few pairs, an ordinary epoch is one or two optimiser steps, a dev split is
impossible, and the model drifts towards the corrections and forgets the rest.
The ``finetune`` schedule (``TrainConfig.schedule``) fixes all three:

- **A step budget**, not epochs: ``finetune_steps`` optimiser steps at
  ``finetune_lr`` whatever the number of corrections, split into rounds that
  are each followed by an evaluation.
- **Replay**: every batch draws ``correction_share`` of its patches from the
  corrections and the rest from the model's own training data, so the
  corrections weigh as much as everything the model knew.
- **The kept model**: the starting model is scored first and is a candidate
  like every round. With 5 or more corrections a fifth of them (at least one)
  is held out and scores each candidate; with fewer, the candidates are scored
  on the corrections they trained on. Either way a candidate whose Dice on the
  replay's own dev images drops by more than 0.01 below the starting model's is
  not kept, so a fine-tune never leaves a model worse where it was good.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from napari_bloodcells.core.dataset import SegmentationData, split_indices
from napari_bloodcells.errors import ConfigError

if TYPE_CHECKING:
    from napari_bloodcells.core.checkpoint import TrainedModel

HOLD_OUT_FROM = 5
"""With this many corrections or more, some are held out to choose the kept model."""
FORGETTING_TOLERANCE = 0.01
"""How far the replay dev Dice may fall below the starting model's for a candidate to be kept."""
_ROUNDS = 5
_REFERENCE_IMAGES = 30


@dataclass(frozen=True)
class FineTunePlan:
    """What a fine-tune trains on, how long, and how it chooses the model to keep.

    Attributes
    ----------
    pool : SegmentationData
        Training pairs: the corrections first, then the replay pairs.
    corrections : int
        How many of ``pool`` are corrections.
    dev : SegmentationData
        The pairs that score each candidate.
    dev_held_out : bool
        Whether ``dev`` was held out of training (else it is the corrections).
    reference : SegmentationData or None
        Replay dev pairs guarding against forgetting.
    batch_size, rounds, steps_per_round : int
    share : float
        The corrections' share of each batch.
    """

    pool: SegmentationData
    corrections: int
    dev: SegmentationData
    dev_held_out: bool
    reference: SegmentationData | None
    batch_size: int
    rounds: int
    steps_per_round: int
    share: float

    def draw(self, generator: torch.Generator) -> list[int]:
        """Indices into :attr:`pool` for one batch, ``share`` of them corrections."""
        replay = len(self.pool) - self.corrections
        from_corrections = (
            self.batch_size if replay == 0 else max(1, round(self.batch_size * self.share))
        )
        picked = torch.randint(0, self.corrections, (from_corrections,), generator=generator)
        indices = picked.tolist()
        if self.batch_size > from_corrections:
            others = torch.randint(
                0, replay, (self.batch_size - from_corrections,), generator=generator
            )
            indices += (others + self.corrections).tolist()
        return indices

    def describe(self, lr: float) -> str:
        """One sentence on the schedule, for the CLI and the widget."""
        held = (
            f"{len(self.dev)} of them held out to choose the model"
            if self.dev_held_out
            else "too few to hold any out, so the model is chosen on them"
        )
        replay = len(self.pool) - self.corrections
        mix = (
            f"{round(self.share * 100)} % corrections and the rest replayed from "
            f"{replay} training images"
            if replay
            else "corrections only (no replay)"
        )
        return (
            f"Fine-tune schedule: {self.rounds * self.steps_per_round} steps of "
            f"{self.batch_size} patches ({mix}) at learning rate {lr:g}, on "
            f"{self.corrections + (len(self.dev) if self.dev_held_out else 0)} correction(s), "
            f"{held}; the starting model is kept unless a round beats it."
        )


def plan_finetune(
    corrections: SegmentationData,
    replay: SegmentationData | None,
    *,
    steps: int,
    batch_size: int,
    share: float,
    split_seed: int,
) -> FineTunePlan:
    """Split the corrections and the replay, and size the rounds.

    Raises
    ------
    ConfigError
        There are no corrections.
    """
    if len(corrections) == 0:
        raise ConfigError("There are no corrections to fine-tune on; add corrected images first.")
    if len(corrections) >= HOLD_OUT_FROM:
        train_idx, dev_idx = split_indices(len(corrections), 0.2, split_seed)
        if not dev_idx:  # pragma: no cover - 0.2 * 5 rounds to 1
            train_idx, dev_idx = train_idx[1:], train_idx[:1]
        train_part, dev, held = corrections.subset(train_idx), corrections.subset(dev_idx), True
    else:
        train_part, dev, held = corrections, corrections, False
    reference = None
    pool = train_part
    if replay is not None and len(replay):
        replay_train, replay_dev = split_indices(len(replay), 0.2, split_seed)
        if replay_dev:
            reference = replay.subset(replay_dev[:_REFERENCE_IMAGES])
        pool = train_part + replay.subset(replay_train or list(range(len(replay))))
    per_round = math.ceil(steps / min(_ROUNDS, steps))
    rounds = math.ceil(steps / per_round)  # rounds x per_round is the budget, give or take one
    return FineTunePlan(
        pool=pool,
        corrections=len(train_part),
        dev=dev,
        dev_held_out=held,
        reference=reference,
        batch_size=batch_size,
        rounds=rounds,
        steps_per_round=per_round,
        share=share,
    )


def selection_score(
    dev_score: float, reference: float | None, start_reference: float | None
) -> float:
    """A candidate's score: its dev Dice, or minus infinity if it forgot too much."""
    forgot = (
        reference is not None
        and start_reference is not None
        and reference < start_reference - FORGETTING_TOLERANCE
    )
    return -math.inf if forgot else dev_score


def same_dev_split(a: TrainedModel, b: TrainedModel) -> bool:
    """Whether ``a`` and ``b`` were scored on the same dev images, so their scores compare."""
    keys = ("data_digest", "dev_fraction", "split_seed")
    return bool(a.config.get("data_digest")) and all(
        a.config.get(key) == b.config.get(key) for key in keys
    )


def better_current(current: TrainedModel | None, candidate: TrainedModel) -> float | None:
    """The current model's dev score if it beats ``candidate`` on the same dev images.

    Used when a run was stopped: its best model replaces the current one only
    if it is at least as good, where the two can be compared.

    Returns
    -------
    float or None
        The current model's best dev score when it is higher than the
        candidate's on the same split; ``None`` when the candidate should be kept
        (it is as good or better, or the scores do not compare).
    """
    if current is None or not same_dev_split(current, candidate):
        return None
    ours, theirs = current.metrics.get("best_dev_score"), candidate.metrics.get("best_dev_score")
    if ours is None or theirs is None or float(theirs) >= float(ours):
        return None
    return float(ours)
