"""Fine-tuning the cell types on a user's reclassified cells.

Only the last layer learns: a few corrections cannot teach the convolutions, which then
forget the stains they knew (a full fine-tune on 8 restained cells lowered the other
restained cells from 0.893 to 0.839; the last layer alone kept them, docs/benchmarks.md).
With the body frozen, the features of a few augmented views of every cell are computed
once, and the last layer trains on them in milliseconds. That makes the choice affordable
by **cross-fitting**: each correction is typed by a last layer trained without it, so all
the corrections judge (two held-out cells, the segmentation's way, decided nothing on a
real microscope: docs/benchmarks.md), and the kept layer learns from all of them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from napari_bloodcells.core.model.type_model import TypeModel
from napari_bloodcells.core.training.type_fit import (
    BATCH,
    MIN_DRAWS,
    TypedCells,
    accuracy,
    augmented,
    share_text,
    type_order,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

FINETUNE_EPOCHS = 12
FINETUNE_LR = 1e-2
KNOWN_TYPES_SHARE = 0.25
"""The corrections' largest share of the draws when they bring no new type: on two stain
proxies the segmentation's 0.75 forgot up to 0.3 of the model's own cells and typed the
restained cells worse than no fine-tune; a quarter forgot about 0.02 (docs/benchmarks.md)."""
STATISTICS_FROM = 5
"""Corrected cells from which a fine-tune takes their batch statistics: the statistics of
one or two cells are mostly those cells' own (a choice; the benchmark measured 10)."""
VIEWS = (32, 6)
"""Augmented views whose features are computed per correction and per replayed cell: each
is drawn about as often as in a fine-tune that augments every draw afresh."""
FOLDS = 5
"""At most this many cross-fitting folds: two corrections a fold for ten, one for five."""
CROSS_FIT_FROM = 5
"""Corrected cells from which each is judged unseen, as the segmentation holds corrections
out from five: one cell learned from one or two others says little, and a user who
reclassified two cells expects them typed so (the fine-tune is then judged on them)."""


@dataclass(frozen=True)
class _Views:
    """Features of augmented views of cells (the body frozen), and whose they are."""

    features: torch.Tensor
    first: torch.Tensor
    count: torch.Tensor
    plain: torch.Tensor
    """The user's cells as typed: their four right-angle turns, ``(4, N, F)``."""

    def drawn(self, cells: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One random view of each of ``cells``."""
        pick = (torch.rand(len(cells), generator=generator) * self.count[cells]).long()
        return self.features[self.first[cells] + pick]


def widened(model: TypeModel, types: tuple[str, ...], cells: TypedCells) -> TypeModel:
    """A copy of ``model`` that outputs ``types`` (its own first).

    Each new type's output is imprinted: its weights point along the mean features
    of its examples in ``cells``, as long as the existing outputs' weights, so that
    two or three examples already make it a contender.
    """
    network = copy.deepcopy(model.network)
    if types != model.types:
        assert isinstance(network, torch.nn.Sequential)
        old = network[-1]
        assert isinstance(old, torch.nn.Linear)
        new = torch.nn.Linear(old.in_features, len(types))
        body = network[:-1].eval()
        with torch.no_grad():
            new.weight[: len(model.types)] = old.weight
            new.bias[: len(model.types)] = old.bias
            length = old.weight.norm(dim=1).mean()
            for index, kind in enumerate(types[len(model.types) :], start=len(model.types)):
                chosen = [i for i, k in enumerate(cells.types) if k == kind]
                if not chosen:  # a cross-fitting fold without an example of it
                    new.weight[index] = 0.0
                    new.bias[index] = old.bias.min() - 1.0
                    continue
                features = body(torch.from_numpy(cells.crops[chosen])).mean(0)
                new.weight[index] = features / features.norm().clamp(min=1e-6) * length
                new.bias[index] = old.bias.mean()
        network[-1] = new
    return TypeModel(network, types, model.side, model.margin, dict(model.metrics))


def statistics_of(source: TypeModel, model: TypeModel) -> TypeModel:
    """``model`` with the body of ``source``: a fine-tune changes only the last layer and the
    batch statistics, so this is ``model`` under ``source``'s statistics."""
    network = copy.deepcopy(source.network)
    assert isinstance(network, torch.nn.Sequential) and isinstance(
        model.network, torch.nn.Sequential
    )
    network[-1] = copy.deepcopy(model.network[-1])
    return TypeModel(network.eval(), model.types, model.side, model.margin, dict(model.metrics))


@torch.no_grad()
def _views(
    crops: np.ndarray, user: int, body: torch.nn.Module, own_body: torch.nn.Module, seed: int
) -> _Views:
    """Features of augmented views of ``crops``: the first ``user`` (the user's) through
    ``body`` (their statistics), the others (the replay) through ``own_body``."""
    generator = torch.Generator().manual_seed(seed)
    count = torch.tensor([VIEWS[0] if i < user else VIEWS[1] for i in range(len(crops))])
    x = torch.from_numpy(crops)
    owners, parts = [], []
    # Each group through its own statistics, shuffled so that a batch's one flip and
    # turn fall on many cells.
    for cells, through in ((torch.arange(user), body), (torch.arange(user, len(crops)), own_body)):
        owner = torch.repeat_interleave(cells, count[cells])
        owner = owner[torch.randperm(len(owner), generator=generator)]
        for begin in range(0, len(owner), BATCH):
            batch = owner[begin : begin + BATCH]
            parts.append(through(augmented(x[batch], generator)))
        owners.append(owner)
    owner = torch.cat(owners)
    order = torch.argsort(owner, stable=True)
    first = torch.cumsum(count, 0) - count
    plain = torch.stack([body(torch.rot90(x[:user], k, (2, 3))) for k in range(4)])
    return _Views(torch.cat(parts)[order], first, count, plain)


def _fit_head(
    head: torch.nn.Linear,
    views: _Views,
    labels: torch.Tensor,
    weights: torch.Tensor,
    seed: int,
) -> torch.nn.Linear:
    """A copy of ``head`` trained on the cells whose ``weights`` are above zero."""
    head = copy.deepcopy(head)
    generator = torch.Generator().manual_seed(seed)
    counts = torch.bincount(labels[weights > 0], minlength=head.out_features).clamp(min=1)
    class_weight = (counts.sum() / (head.out_features * counts)) ** 0.5
    draws = max(int((weights > 0).sum()), MIN_DRAWS)
    steps = -(-draws // BATCH)
    optimiser = torch.optim.AdamW(head.parameters(), FINETUNE_LR, weight_decay=1e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, FINETUNE_LR, total_steps=FINETUNE_EPOCHS * steps
    )
    for _ in range(FINETUNE_EPOCHS):
        order = torch.multinomial(weights, draws, replacement=True, generator=generator)
        for begin in range(0, draws, BATCH):
            batch = order[begin : begin + BATCH]
            logits = head(views.drawn(batch, generator))
            loss = F.cross_entropy(
                logits, labels[batch], weight=class_weight.float(), label_smoothing=0.05
            )
            optimiser.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
            schedule.step()
    return head.eval()


def draw_weights(corrections: int, replayed: int, share: float) -> torch.Tensor:
    """Each cell's chance to be drawn: the corrections ``share`` of it together."""
    if not replayed:
        return torch.full((corrections,), 1.0 / corrections)
    return torch.tensor(
        np.r_[np.full(corrections, share / corrections), np.full(replayed, (1 - share) / replayed)],
        dtype=torch.float32,
    )


def _folds(count: int, seed: int) -> list[list[int]]:
    """Cross-fitting folds over ``count`` corrections (none below :data:`CROSS_FIT_FROM`)."""
    if count < CROSS_FIT_FROM:
        return []
    order = np.random.default_rng(seed).permutation(count)
    return [sorted(int(i) for i in order[f :: min(FOLDS, count)]) for f in range(min(FOLDS, count))]


@dataclass(frozen=True)
class _Problem:
    """A last layer's training problem: the start (its statistics the user's), the types it
    learns, the user's corrections first among the cells, their views, labels and draw
    weights."""

    start: TypeModel
    types: tuple[str, ...]
    corrections: TypedCells
    views: _Views
    labels: torch.Tensor
    weights: torch.Tensor

    def fitted(self, without: Sequence[int], seed: int) -> torch.nn.Linear:
        """The last layer trained on every cell but the corrections ``without``."""
        rest = [i for i in range(len(self.corrections)) if i not in without]
        network = widened(self.start, self.types, self.corrections.subset(rest)).network
        assert isinstance(network, torch.nn.Sequential)
        head = network[-1]
        assert isinstance(head, torch.nn.Linear)
        weights = self.weights.clone()
        weights[list(without)] = 0.0
        mine = float(self.weights[: len(self.corrections)].sum())
        left = float(weights[: len(self.corrections)].sum())
        if left > 0:  # the corrections keep their share of the draws
            weights[: len(self.corrections)] *= mine / left
        return _fit_head(head, self.views, self.labels, weights, seed)

    def cross_fitted(self, seed: int, should_stop: Callable[[], bool]) -> float | None:
        """The share of the corrections typed right by last layers trained without them;
        ``None`` with fewer than :data:`CROSS_FIT_FROM` corrections, or when stopped."""
        folds = _folds(len(self.corrections), seed)
        right = 0
        for index, fold in enumerate(folds):
            if should_stop():
                return None
            head = self.fitted(fold, seed + 1 + index)
            with torch.no_grad():
                guess = head(self.views.plain[:, fold]).softmax(-1).mean(0).argmax(1)
            right += int((guess == self.labels[fold]).sum())
        return right / len(self.corrections) if folds else None


@dataclass(frozen=True)
class TypeFineTune:
    """What a type fine-tune kept, and the sentence that says why."""

    kept: TypeModel
    tuned: TypeModel
    before: float
    after: float
    sentence: str


def _share_right(model: TypeModel, cells: TypedCells) -> float:
    """The share of ``cells`` typed right; types the model lacks count as wrong."""
    guess = model.probabilities(cells.crops).argmax(1)
    typed = [model.types[g] for g in guess]
    return float(np.mean([a == b for a, b in zip(typed, cells.types, strict=True)]))


def _problem(
    start: TypeModel, corrections: TypedCells, replayed: TypedCells, share: float, seed: int
) -> _Problem:
    """The start under the user's statistics (from :data:`STATISTICS_FROM` corrected cells),
    the views of every cell and their draw weights."""
    new = sorted(set(corrections.types) - set(start.types), key=type_order)
    types = (*start.types, *new)
    # Corrections of types the model knows are at most a quarter of the draws; a new
    # type has only the corrections to learn from and keeps ``share``.
    share = share if new else min(share, KNOWN_TYPES_SHARE)
    replayed = replayed.subset([i for i, kind in enumerate(replayed.types) if kind in start.types])
    # The user's cells give their microscope's batch statistics: on stains outside the
    # training's jitter the last layer learned under them typed better, and measure then
    # adapts it to many cells of that microscope as it does an untuned model.
    theirs = start.adapted(corrections.crops) if len(corrections) >= STATISTICS_FROM else start
    assert isinstance(theirs.network, torch.nn.Sequential)
    assert isinstance(start.network, torch.nn.Sequential)
    views = _views(
        np.concatenate([corrections.crops, replayed.crops]),
        len(corrections),
        theirs.network[:-1].eval(),
        start.network[:-1].eval(),
        seed,
    )
    labels = torch.tensor([types.index(kind) for kind in (*corrections.types, *replayed.types)])
    weights = draw_weights(len(corrections), len(replayed), share)
    return _Problem(theirs, types, corrections, views, labels, weights)


def finetune_types(
    start: TypeModel,
    corrections: TypedCells,
    replayed: TypedCells,
    *,
    reference: TypedCells | None,
    share: float,
    seed: int = 0,
    should_stop: Callable[[], bool] = lambda: False,
) -> TypeFineTune | None:
    """Retrain ``start``'s last layer on the user's ``corrections`` plus ``replayed`` cells.

    The corrections are drawn with probability ``share`` (all of it without replay),
    at most :data:`KNOWN_TYPES_SHARE` when they bring no new type. The result carries
    the batch statistics of the corrected cells. It is kept only if it types the
    corrections better than ``start`` by more than it forgets of the ``reference`` cells
    (the model's own dev cells, typed through the start's statistics), each correction
    typed by a last layer trained without it (below :data:`CROSS_FIT_FROM`, by the one
    trained on it). ``None`` when stopped.
    """
    problem = _problem(start, corrections, replayed, share, seed)
    crossed = problem.cross_fitted(seed, should_stop)
    if should_stop():
        return None
    network = copy.deepcopy(problem.start.network)
    assert isinstance(network, torch.nn.Sequential)
    network[-1] = problem.fitted((), seed)
    tuned = TypeModel(network, problem.types, start.side, start.margin, dict(start.metrics))
    before = _share_right(start, corrections)
    after = crossed if crossed is not None else _share_right(tuned, corrections)
    forgetting, forgot = "", 0.0
    if reference is not None and len(reference):
        # The model's own cells are typed through their own statistics, as the replay
        # was seen in training (and as measure types many of them).
        remembered = accuracy(start, reference), accuracy(statistics_of(start, tuned), reference)
        forgot = max(0.0, (remembered[0] or 0.0) - (remembered[1] or 0.0))
        forgetting = (
            f"; the model's own cells: {share_text(remembered[0])} → {share_text(remembered[1])}"
        )
    # As for the segmentation: what the model forgets of its own cells counts against
    # what it gains on the corrections.
    kept = tuned if after - forgot - before > 0 else start
    tuned.metrics = {**tuned.metrics, "finetune_accuracy": [before, after]}
    judged = (
        f"your {len(corrections)} corrections, each typed by a fine-tune that had not seen it"
        if crossed is not None
        else f"your corrections it trained on (fewer than {CROSS_FIT_FROM} cannot judge it unseen)"
    )
    verdict = "kept the starting types"
    if kept is tuned:
        verdict = "kept the fine-tuned types" + (
            f", trained on all {len(corrections)}" if crossed is not None else ""
        )
    sentence = (
        f"Cell types on {judged}: accuracy {share_text(before)} → {share_text(after)}"
        f"{forgetting}; {verdict}."
    )
    return TypeFineTune(kept, tuned, before, after, sentence)
