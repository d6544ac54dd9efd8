"""Training the cell-type model on the typed white cells of the training pairs.

An image with a type (``types.csv``) gives one example: its largest cell, cut from
the true labels. Types with fewer than :data:`MIN_EXAMPLES` examples are not
learned (one basophil teaches nothing); their cells are counted in the metrics.
The recipe (red cells pasted around the cell, flips, right-angle turns, colour
jitter, square-root class weights, label smoothing, one-cycle AdamW) was chosen in
``benchmarks/differential.py``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from napari_bloodcells.core.base.cell_types import CORRECTION_VALUES
from napari_bloodcells.core.base.classes import UNLABELLED
from napari_bloodcells.core.measure.cell_crops import cell_crops
from napari_bloodcells.core.measure.cells import cells_from_classes
from napari_bloodcells.core.model.type_model import MARGIN, SIDE, TypeModel, type_network
from napari_bloodcells.core.training.augment import paste_smear

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from napari_bloodcells.core.data.dataset import SegmentationData

MIN_EXAMPLES = 3
EPOCHS = 45
FINETUNE_EPOCHS = 12
FINETUNE_DRAWS = 128
FINETUNE_LR = 1e-2
KNOWN_TYPES_SHARE = 0.25
"""The corrections' largest share of the draws when they bring no new type: on two stain
proxies the segmentation's 0.75 forgot up to 0.3 of the model's own cells and typed the
restained cells worse than no fine-tune; a quarter forgot about 0.02 (docs/benchmarks.md)."""
STATISTICS_FROM = 5
"""Corrected cells from which a fine-tune takes their batch statistics: the statistics of
one or two cells are mostly those cells' own (a choice; the benchmark measured 10)."""
BATCH = 32
LR = 3e-3


@dataclass(frozen=True)
class TypedCells:
    """Crops of typed white cells and their types."""

    crops: np.ndarray
    types: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.types)

    def subset(self, indices: Sequence[int]) -> TypedCells:
        """The cells at ``indices``."""
        return TypedCells(self.crops[list(indices)], tuple(self.types[i] for i in indices))


def typed_cells(data: SegmentationData, side: int = SIDE, margin: float = MARGIN) -> TypedCells:
    """The largest cell of each typed image of ``data``, as a crop."""
    crops, kinds = [], []
    for index, (image, mask) in enumerate(zip(data.images, data.masks, strict=True)):
        kind = data.type_of(index)
        if kind is None:
            continue
        classes = np.where(mask == UNLABELLED, 0, mask)
        cells = cells_from_classes(classes)
        if not cells.any():
            continue
        largest = int(np.bincount(cells.ravel())[1:].argmax()) + 1
        crop, _ = cell_crops(image, classes, cells, side=side, margin=margin, ids=[largest])
        crops.append(crop[0])
        kinds.append(kind)
    shape = (len(crops), 5, side, side)
    return TypedCells(np.stack(crops) if crops else np.zeros(shape, np.float32), tuple(kinds))


def type_order(kind: str) -> tuple[int, str]:
    """Sort key: the order of the gallery's keys, unknown names last."""
    known = CORRECTION_VALUES.index(kind) if kind in CORRECTION_VALUES else len(CORRECTION_VALUES)
    return (known, kind)


def learnable_types(cells: TypedCells, already: Sequence[str] = ()) -> tuple[str, ...]:
    """``already`` plus every type with at least :data:`MIN_EXAMPLES` examples, in order."""
    counts = {kind: cells.types.count(kind) for kind in set(cells.types)}
    frequent = sorted(
        (k for k, n in counts.items() if n >= MIN_EXAMPLES and k not in already), key=type_order
    )
    return (*already, *frequent)


def accuracy(model: TypeModel, cells: TypedCells) -> float | None:
    """The share of ``cells`` (of types the model knows) typed right; ``None`` if none."""
    known = [i for i, kind in enumerate(cells.types) if kind in model.types]
    if not known:
        return None
    predicted = model.probabilities(cells.crops[known]).argmax(1)
    truth = np.array([model.types.index(cells.types[i]) for i in known])
    return float((predicted == truth).mean())


# Ruifrok & Johnston's haematoxylin, eosin and DAB colours (skimage.color.rgb_from_hed).
_RGB_FROM_HED = torch.tensor(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=torch.float32
)
_RGB_FROM_HED = _RGB_FROM_HED / _RGB_FROM_HED.norm(dim=1, keepdim=True)
_HED_FROM_RGB = torch.linalg.inv(_RGB_FROM_HED)
STAIN_RANGE = ((0.5, 2.0), (0.33, 3.0))
"""Factors drawn (log-uniformly) for the amount of haematoxylin and of eosin: other
stains, staining times and microscopes, so that a new lab's cells are typed from the start."""


def _restain(rgb: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``rgb`` (N, 3, H, W) in 0..1 with its haematoxylin and eosin amounts changed."""
    inside = rgb.sum(1, keepdim=True) > 0  # outside the image the crop is 0: keep it so
    density = -torch.log(rgb.clamp(min=1 / 255)).permute(0, 2, 3, 1) @ _HED_FROM_RGB
    n = rgb.shape[0]
    factors = torch.ones(n, 1, 1, 3)
    for channel, (low, high) in enumerate(STAIN_RANGE):
        u = torch.rand(n, generator=generator)
        factors[:, 0, 0, channel] = torch.exp(
            torch.log(torch.tensor(low)) + u * torch.log(torch.tensor(high / low))
        )
    restained = torch.exp(-((density * factors) @ _RGB_FROM_HED)).permute(0, 3, 1, 2)
    return torch.where(inside, restained.clamp(0, 1), rgb)


SMEAR = 0.5
"""Share of training crops painted with red cells and platelets around the cell: a
smear field's white cell lies among red cells, Dataset 1's mostly on clear glass. With
red cells painted around the held-out cells, three cross-validations typed 0.946-0.953
of them against 0.916-0.920 without; Dataset 1's own cells 0.940-0.953 against
0.936-0.953 (docs/benchmarks.md)."""


def _smeared(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``x`` with red cells and platelets painted around a share of the cells."""
    classes = torch.where(x[:, 4] > 0.5, 2, torch.where(x[:, 3] > 0.5, 1, 0))
    painted, _ = paste_smear(x[:, :3], classes, generator, SMEAR, move_aside=False)
    outside = x[:, :3].sum(1, keepdim=True) == 0  # beyond the image's edge: nothing to paint
    x = x.clone()
    x[:, :3] = torch.where(outside, x[:, :3], painted)
    return x


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    # Before the stain jitter, which then restains the pasted red cells with the cell.
    x = _smeared(x, generator)
    if torch.rand(1, generator=generator) < 0.5:
        x = x.flip(3)
    turns = int(torch.randint(0, 4, (1,), generator=generator))
    x = torch.rot90(x, turns, (2, 3)).clone()
    x[:, :3] = _restain(x[:, :3], generator)
    if torch.rand(1, generator=generator) < 0.3:  # another focus
        x[:, :3] = F.avg_pool2d(x[:, :3], 3, stride=1, padding=1, count_include_pad=False)
    gain = 1 + 0.1 * torch.randn(x.shape[0], 3, 1, 1, generator=generator)
    shift = 0.05 * torch.randn(x.shape[0], 3, 1, 1, generator=generator)
    x[:, :3] = (x[:, :3] * gain + shift).clamp(0, 1)
    return x


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
                features = body(torch.from_numpy(cells.crops[chosen])).mean(0)
                new.weight[index] = features / features.norm().clamp(min=1e-6) * length
                new.bias[index] = old.bias.mean()
        network[-1] = new
    return TypeModel(network, types, model.side, model.margin, dict(model.metrics))


def fit_types(
    cells: TypedCells,
    types: tuple[str, ...],
    *,
    start: TypeModel | None = None,
    weights: np.ndarray | None = None,
    user: int = 0,
    statistics: np.ndarray | None = None,
    epochs: int = EPOCHS,
    lr: float = LR,
    seed: int = 0,
    should_stop: Callable[[], bool] = lambda: False,
) -> TypeModel | None:
    """Train a type model on ``cells`` (those of ``types``), or continue ``start``.

    ``weights`` makes some cells drawn more often (a fine-tune's corrections).
    Continuing ``start`` trains its last layer only. With ``statistics`` (crops of the
    user's own cells, types not needed), the result takes their batch statistics
    (:meth:`TypeModel.adapted`) and the first ``user`` of ``cells`` (the user's) are seen
    through them, the others (the replay) through the start's: each microscope
    normalised by its own statistics, as :meth:`TypeModel.for_cells` types them later.
    Returns ``None`` when stopped.
    """
    chosen = [i for i, kind in enumerate(cells.types) if kind in types]
    x = torch.from_numpy(cells.crops[chosen])
    y = torch.tensor([types.index(cells.types[i]) for i in chosen])
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    mine = torch.tensor([i < user for i in chosen], dtype=torch.bool)
    start, own_body = _in_user_statistics(start, statistics)
    model = (
        widened(start, types, cells)
        if start is not None
        else TypeModel(type_network(len(types)), types, int(cells.crops.shape[-1]), MARGIN)
    )
    # Channels-last convolutions trained in 0.70x the time on a 2-core AVX2 CPU (oneDNN,
    # docs/benchmarks.md): the type stage must fit in a minute on two cores.
    network = model.network.to(memory_format=torch.channels_last)
    assert isinstance(network, torch.nn.Sequential)
    # A fine-tune retrains only the last layer: its few corrections cannot teach the
    # convolutions, which then forget the stains they knew (a full fine-tune on 8
    # restained cells lowered the other restained cells from 0.893 to 0.839; the last
    # layer alone kept them, 0.900 to 0.900 and 0.926 to 0.906, docs/benchmarks.md).
    body, head = network[:-1], network[-1]
    learned = network if start is None else head
    counts = np.bincount(y.numpy(), minlength=len(types)).clip(min=1)
    class_weight = torch.tensor((counts.sum() / (len(types) * counts)) ** 0.5, dtype=torch.float32)
    draw = None if weights is None else torch.tensor(np.asarray(weights)[chosen], dtype=torch.float)
    # A fine-tune draws at least FINETUNE_DRAWS cells per epoch: two corrections alone
    # would otherwise be one step per epoch.
    draws = len(y) if draw is None else max(len(y), FINETUNE_DRAWS)
    per_epoch = -(-draws // BATCH)
    optimiser = torch.optim.AdamW(learned.parameters(), lr, weight_decay=1e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, lr, total_steps=epochs * per_epoch)
    # A batch of a few corrections has no statistics worth learning: a fine-tune's are
    # fixed, the start's or those of all the user's cells at once (adapted above).
    network.train(start is None)
    for _ in range(epochs):
        if should_stop():
            return None
        order = (
            torch.randperm(len(y), generator=generator)
            if draw is None
            else torch.multinomial(draw, draws, replacement=True, generator=generator)
        )
        for begin in range(0, len(order), BATCH):
            batch = order[begin : begin + BATCH]
            augmented = _augment(x[batch], generator).contiguous(memory_format=torch.channels_last)
            if start is None:
                logits = network(augmented)
            else:
                logits = head(_features(augmented, body, own_body, ~mine[batch]))
            loss = F.cross_entropy(logits, y[batch], weight=class_weight, label_smoothing=0.05)
            optimiser.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
            schedule.step()
    network.eval().to(memory_format=torch.contiguous_format)
    return model


def _in_user_statistics(
    start: TypeModel | None, statistics: np.ndarray | None
) -> tuple[TypeModel | None, torch.nn.Module | None]:
    """``start`` adapted to ``statistics`` (if any), and the body it had before."""
    if start is None or statistics is None or not len(statistics):
        return start, None
    assert isinstance(start.network, torch.nn.Sequential)
    return start.adapted(statistics), start.network[:-1].eval()


@torch.no_grad()
def _features(
    x: torch.Tensor, body: torch.nn.Module, own_body: torch.nn.Module | None, theirs: torch.Tensor
) -> torch.Tensor:
    """The features of ``x`` through ``body``, those of ``theirs`` through ``own_body``."""
    features: torch.Tensor = body(x)
    if own_body is not None and bool(theirs.any()):
        features[theirs] = own_body(x[theirs])
    return features


def statistics_of(source: TypeModel, model: TypeModel) -> TypeModel:
    """``model`` with the body of ``source``: a fine-tune changes only the last layer and the
    batch statistics, so this is ``model`` under ``source``'s statistics."""
    network = copy.deepcopy(source.network)
    assert isinstance(network, torch.nn.Sequential) and isinstance(
        model.network, torch.nn.Sequential
    )
    network[-1] = copy.deepcopy(model.network[-1])
    return TypeModel(network.eval(), model.types, model.side, model.margin, dict(model.metrics))


def share_text(value: float | None) -> str:
    """An accuracy as the sentences show it."""
    return "–" if value is None else f"{value:.2f}"


@dataclass(frozen=True)
class TypeFineTune:
    """What a type fine-tune kept, and the sentence that says why."""

    kept: TypeModel | None
    tuned: TypeModel
    before: float | None
    after: float | None
    sentence: str


def finetune_types(
    start: TypeModel | None,
    fixes: TypedCells,
    replayed: TypedCells,
    *,
    held: TypedCells | None,
    reference: TypedCells | None,
    share: float,
    seed: int = 0,
    should_stop: Callable[[], bool] = lambda: False,
) -> TypeFineTune | None:
    """Continue ``start`` on the user's corrected cells ``fixes`` plus ``replayed`` cells.

    The corrections are drawn with probability ``share`` (all of it without replay),
    at most :data:`KNOWN_TYPES_SHARE` when they bring no new type.
    The result carries the batch statistics of the user's cells (``fixes`` and
    ``held``; see :func:`fit_types`). It is kept only if it types the ``held``-out
    corrections (or, with none held out, the corrections themselves) better than
    ``start`` by more than it forgets of the ``reference`` cells (the model's own dev
    cells, typed through the start's statistics). ``None`` when stopped.
    """
    new = sorted(set(fixes.types) - set(start.types if start else ()), key=type_order)
    types = (*(start.types if start else ()), *new)
    cells = TypedCells(np.concatenate([fixes.crops, replayed.crops]), fixes.types + replayed.types)
    # Types the model knows are fine-tuned with the corrections at a quarter of the draws;
    # a new type has only the corrections to learn from and keeps ``share``.
    share = (share if new else min(share, KNOWN_TYPES_SHARE)) if len(replayed) else 1.0
    weights = np.r_[
        np.full(len(fixes), share / len(fixes)),
        np.full(len(replayed), (1 - share) / max(1, len(replayed))),
    ]
    # The user's cells, held-out ones too (no type is read), give their microscope's
    # batch statistics: on stains outside the training's jitter the last layer learned
    # under them typed better, and measure then adapts it to many cells of that
    # microscope as it does an untuned model (docs/benchmarks.md).
    users = [fixes.crops] + ([held.crops] if held is not None and len(held) else [])
    own_statistics = start is not None and sum(map(len, users)) >= STATISTICS_FROM
    tuned = fit_types(
        cells,
        types,
        start=start,
        weights=weights,
        user=len(fixes),
        statistics=np.concatenate(users) if own_statistics else None,
        epochs=FINETUNE_EPOCHS if start is not None else EPOCHS,
        lr=FINETUNE_LR if start is not None else LR,
        seed=seed,
        should_stop=should_stop,
    )
    if tuned is None:
        return None
    judge = held if held is not None and len(held) else fixes
    before = accuracy(start, judge) if start is not None else None
    after = accuracy(tuned, judge)
    forgetting, forgot = "", 0.0
    if reference is not None and len(reference) and start is not None:
        # The model's own cells are typed through their own statistics, as the replay
        # was seen in training (and as measure types many of them).
        remembered = accuracy(start, reference), accuracy(statistics_of(start, tuned), reference)
        forgot = max(0.0, (remembered[0] or 0.0) - (remembered[1] or 0.0))
        forgetting = (
            f"; the model's own cells: {share_text(remembered[0])} → {share_text(remembered[1])}"
        )
    # As for the segmentation: what the model forgets of its own cells counts against
    # what it gains on the corrections.
    gain = (after or 0.0) - forgot - (before or 0.0)
    kept = tuned if start is None or gain > 0 else start
    chosen = "held-out corrections" if judge is held else "corrections it trained on"
    verdict = "kept the fine-tuned types" if kept is tuned else "kept the starting types"
    if start is not None:
        tuned.metrics = {**tuned.metrics, "finetune_accuracy": [before, after]}
    sentence = (
        f"Cell types on your {chosen}: accuracy {share_text(before)} → {share_text(after)}"
        f"{forgetting}; {verdict}."
    )
    return TypeFineTune(kept, tuned, before, after, sentence)
