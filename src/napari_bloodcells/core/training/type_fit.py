"""Training the cell-type model on the typed white cells of the training pairs.

An image with a type (``types.csv``) gives one example: its largest cell, cut from
the true labels. Types with fewer than :data:`MIN_EXAMPLES` examples are not
learned (one basophil teaches nothing); their cells are counted in the metrics.
The recipe (red cells pasted around the cell, flips, right-angle turns, colour
jitter, square-root class weights, label smoothing, one-cycle AdamW) was chosen in
``benchmarks/differential.py``.
"""

from __future__ import annotations

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
MIN_DRAWS = 128
"""Cells drawn per epoch at least when some are weighted (a few corrections)."""
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

    def joined(self, other: TypedCells) -> TypedCells:
        """These cells, then ``other``."""
        return TypedCells(np.concatenate([self.crops, other.crops]), self.types + other.types)


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


def augmented(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A training view of the crops ``x``: red cells around, one flip and turn for the
    batch, a stain, focus and colour of its own for each crop."""
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


def fit_types(
    cells: TypedCells,
    types: tuple[str, ...],
    *,
    weights: np.ndarray | None = None,
    epochs: int = EPOCHS,
    lr: float = LR,
    seed: int = 0,
    should_stop: Callable[[], bool] = lambda: False,
) -> TypeModel | None:
    """Train a new type model on ``cells`` (those of ``types``).

    ``weights`` makes some cells drawn more often (a user's corrections, for a model
    that had no types); each epoch then draws at least :data:`MIN_DRAWS` cells.
    Returns ``None`` when stopped.
    """
    chosen = [i for i, kind in enumerate(cells.types) if kind in types]
    x = torch.from_numpy(cells.crops[chosen])
    y = torch.tensor([types.index(cells.types[i]) for i in chosen])
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = TypeModel(type_network(len(types)), types, int(cells.crops.shape[-1]), MARGIN)
    # Channels-last convolutions trained in 0.70x the time on a 2-core AVX2 CPU (oneDNN,
    # docs/benchmarks.md): the type stage must fit in a minute on two cores.
    network = model.network.to(memory_format=torch.channels_last)
    counts = np.bincount(y.numpy(), minlength=len(types)).clip(min=1)
    class_weight = torch.tensor((counts.sum() / (len(types) * counts)) ** 0.5, dtype=torch.float32)
    draw = None if weights is None else torch.tensor(np.asarray(weights)[chosen], dtype=torch.float)
    # Two weighted corrections alone would otherwise be one step per epoch.
    draws = len(y) if draw is None else max(len(y), MIN_DRAWS)
    per_epoch = -(-draws // BATCH)
    optimiser = torch.optim.AdamW(network.parameters(), lr, weight_decay=1e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, lr, total_steps=epochs * per_epoch)
    network.train()
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
            views = augmented(x[batch], generator).contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(
                network(views), y[batch], weight=class_weight, label_smoothing=0.05
            )
            optimiser.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
            schedule.step()
    network.eval().to(memory_format=torch.contiguous_format)
    return model


def share_text(value: float | None) -> str:
    """An accuracy as the sentences show it."""
    return "–" if value is None else f"{value:.2f}"
