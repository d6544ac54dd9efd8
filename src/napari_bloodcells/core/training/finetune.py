"""Fine-tuning on a few corrections: replay, a step budget, and the model kept for the user.

A microscopist corrects a handful of images of their own and fine-tunes. With
so few pairs, an ordinary epoch is one or two optimiser steps, a dev split is
impossible, and the model drifts towards the corrections and forgets the rest.
The ``finetune`` schedule (``TrainConfig.schedule``) answers each:

- **A step budget**, not epochs: ``finetune_steps`` optimiser steps at
  ``finetune_lr`` whatever the number of corrections, split into rounds that
  are each followed by an evaluation.
- **Replay**: every batch draws ``correction_share`` of its patches from the
  corrections and the rest from the model's own training data, so the
  corrections weigh as much as everything the model knew.
- **The user's corrections choose.** With 5 or more corrections a fifth of them
  (at least one) is held out and scores every candidate; with fewer, the
  candidates are scored on the corrections they trained on, and the outcome
  says so. The starting model is candidate 0. A candidate's fit is its mean
  Dice over the foreground classes the corrections label, or over background
  when they label none: a user may only erase what the model painted wrong and
  leave the white cell unlabelled (``Scores.correction_score``).
- **Forgetting is a cost, not a veto.** Each candidate's mean foreground Dice on
  the replay's own dev images is measured; a drop below the starting model's
  is subtracted from its gain on the corrections (:func:`selection_score`). A
  large gain for a small loss is kept; a small gain for a large loss is not;
  a candidate that gains nothing on the corrections never beats the start.
- **Weight-space blending** (WiSE-FT, Wortsman et al. 2022): the best round is
  also tried blended with the starting weights (:data:`BLENDS`), which keeps
  most of the gain for a fraction of the forgetting; the same score chooses.
  The blends are tried even when no round beat the start: on real smear
  fields a blend often beats both.
- **The statistics of the batch norms stay those of the start**
  (:func:`hold_norm_statistics`): re-estimated on a few batches of the user's
  images mixed with replay, they shifted every prediction at once and cost
  more on the model's own data than the fine-tune's steps did.
- **The corrections are trained as they are** (:data:`CORRECTION_AUGMENTATION`):
  they show the user's microscope, so they are only flipped, turned and
  lightly jittered, while the replay keeps the augmentation the model was
  trained with (and so its robustness). Restained, zoomed and pasted with
  synthetic red cells, corrections taught the model to paint more of what the
  user had erased (``docs/benchmarks.md``, "The fine-tune on real fields").
- **Both numbers, said once**: :func:`outcome_sentence` gives the corrections'
  Dice before and after and the change on the model's own data, for the CLI
  and the napari notification alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from napari_bloodcells.core.data.dataset import SegmentationData, split_indices
from napari_bloodcells.core.training.augment import Augmentation
from napari_bloodcells.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from napari_bloodcells.core.model.trained import TrainedModel

HOLD_OUT_FROM = 5
"""With this many corrections or more, some are held out to choose the kept model."""
BLENDS = (0.25, 0.5, 0.75)
"""Shares of the fine-tuned weights tried in blends with the starting weights (WiSE-FT)."""
_ROUNDS = 5
_REFERENCE_IMAGES = 30
CORRECTION_AUGMENTATION = Augmentation()
"""What the corrections get: flips, quarter turns and a light colour jitter, nothing more."""


def hold_norm_statistics(network: nn.Module) -> None:
    """Put ``network``'s batch norms in eval mode: they normalise with the start's statistics.

    Their weights and biases still learn; only the running means and
    variances, which a few small mixed batches would re-estimate, are held.
    """
    for module in network.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


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

    def are_corrections(self, indices: Sequence[int]) -> list[bool]:
        """Which of ``indices`` (into :attr:`pool`) are corrections rather than replay."""
        return [i < self.corrections for i in indices]

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
            f"{held}; they choose the model to keep, and what it forgets of its own "
            "data counts against it."
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
    """A candidate's score: its Dice on the corrections, less what it forgot.

    Forgetting is the drop of the replay dev Dice below the starting model's;
    a rise there earns nothing, so that the model's own data never outvote the
    user's corrections. Without replay dev images the corrections alone count.
    """
    if reference is None or start_reference is None:
        return dev_score
    return dev_score - max(0.0, start_reference - reference)


def blend(
    start: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor], share: float
) -> dict[str, torch.Tensor]:
    """Weights ``share`` of the way from ``start`` to ``tuned`` (integer buffers from ``tuned``)."""
    return {
        name: torch.lerp(start[name], value, share) if value.is_floating_point() else value
        for name, value in tuned.items()
    }


@dataclass(frozen=True)
class Candidate:
    """A model the fine-tune may keep, with what chose it.

    Attributes
    ----------
    name : str
        How the outcome names it, e.g. "round 3 blended 50 % with the starting model".
    dice : tuple of float
        Per-class Dice on the corrections that choose (held out where there were enough).
    reference : float or None
        Mean foreground Dice on the replay's dev images; ``None`` without replay.
    score : float
        :func:`selection_score`: the higher, the better.
    classes : tuple of int
        The starting model's only: the classes every candidate's score averages
        and the outcome names, since all are scored on the same corrections
        (:meth:`~napari_bloodcells.core.base.metrics.Scores.scored_classes`);
        empty means every class but background.
    """

    name: str
    dice: tuple[float, ...]
    reference: float | None
    score: float
    classes: tuple[int, ...] = ()


def outcome_sentence(
    start: Candidate,
    kept: Candidate,
    class_names: Sequence[str],
    held_out: bool,
    best_round: Candidate | None = None,
) -> str:
    """The fine-tune's outcome in one sentence, with both numbers.

    For example "Your held-out corrections: cytoplasm 0.70 → 0.89, nucleus
    0.93 → 0.95; the model's own data: -0.004; kept round 4 blended 75 % with
    the starting model." When the start is kept, the numbers are those of
    ``best_round``, the best candidate tried, so the user sees what was refused.
    """
    shown = best_round if kept is start and best_round is not None else kept
    whose = (
        "Your held-out corrections"
        if held_out
        else "Your corrections (too few to hold any out, so the ones trained on choose)"
    )
    classes = start.classes or tuple(range(1, len(start.dice)))
    pairs = ", ".join(
        f"{class_names[k]} {_before_after(start.dice[k], shown.dice[k])}" for k in classes
    )
    own = ""
    if start.reference is not None and shown.reference is not None:
        own = f"; the model's own data: {shown.reference - start.reference:+.3f}"
    if shown is kept:
        return f"{whose}: {pairs}{own}; kept {kept.name}."
    gained = sum(shown.dice[k] for k in classes) > sum(start.dice[k] for k in classes)
    why = "a gain smaller than what it forgot" if gained else "no gain"
    return (
        f"{whose}: {pairs} with {shown.name}, the best tried{own}; that is {why}, so the "
        "starting model is kept."
    )


def _before_after(before: float, after: float) -> str:
    """ "0.70 → 0.89", with a third decimal where two would hide a change."""
    digits = 2 if f"{before:.2f}" != f"{after:.2f}" or before == after else 3
    return f"{before:.{digits}f} → {after:.{digits}f}"


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
