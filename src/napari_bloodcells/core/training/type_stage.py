"""The cell-type stage that ends a training run whose pairs have types.

A new model learns the types of its training split and is scored on its dev split.
A fine-tune retrains the starting model's last layer on the corrections (at most a
quarter of the draws unless they bring a new type) plus the replayed cells, and keeps
the result only if the corrections, each typed by a fine-tune that did not see it, are
typed better; the replay's dev cells measure what it forgot. Both numbers are said, as
for the segmentation. A model without types learns them from the corrections.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from napari_bloodcells.core.events import Notice
from napari_bloodcells.core.training.type_finetune import draw_weights, finetune_types
from napari_bloodcells.core.training.type_fit import (
    MIN_EXAMPLES,
    TypedCells,
    accuracy,
    fit_types,
    learnable_types,
    share_text,
    type_order,
    typed_cells,
)

if TYPE_CHECKING:
    from collections.abc import Generator

    from napari_bloodcells.core.model.type_model import TypeModel
    from napari_bloodcells.core.training.finetune import FineTunePlan
    from napari_bloodcells.core.training.run import Run


def fit_run_types(run: Run) -> Generator[Notice, None, TypeModel | None]:
    """The type model the run's model carries: new, fine-tuned, or the one it started with."""
    if run.plan is not None:
        return (yield from _finetune_types(run, run.plan))
    train = typed_cells(run.schedule.train_data)
    if not len(train):
        return None
    types = learnable_types(train)
    if len(types) < 2:
        yield Notice(
            f"Cell types were not learned: fewer than two types have {MIN_EXAMPLES} or more "
            "typed images; type more images in types.csv."
        )
        return None
    yield Notice(f"Learning the white-cell types from {len(train)} cells…")
    started = time.perf_counter()
    model = fit_types(train, types, seed=run.config.seed, should_stop=run.stop_asked)
    if model is None:
        return None
    dev = typed_cells(run.schedule.dev_data)
    dev_accuracy = accuracy(model, dev)
    rare = sorted(set(train.types) - set(types))
    model.metrics = {
        "train_cells": len(train),
        "dev_cells": len(dev),
        "dev_accuracy": dev_accuracy,
        "seconds": round(time.perf_counter() - started, 1),
        "too_few_to_learn": {kind: train.types.count(kind) for kind in rare},
    }
    left_out = f"; too few to learn: {', '.join(rare)}" if rare else ""
    yield Notice(
        f"Learned {len(types)} white-cell types ({', '.join(types)}) from {len(train)} cells: "
        f"dev accuracy {share_text(dev_accuracy)} on {len(dev)} cells{left_out}."
    )
    return model


def _finetune_types(run: Run, plan: FineTunePlan) -> Generator[Notice, None, TypeModel | None]:
    start = run.model.type_model
    # The segmentation holds some corrections out to choose; the types cross-fit over all
    # of them instead (core/training/type_finetune.py), so they are one set again.
    corrections = typed_cells(plan.pool.subset(range(plan.corrections)))
    if plan.dev_held_out:
        corrections = corrections.joined(typed_cells(plan.dev))
    if not len(corrections):
        return start
    replayed = typed_cells(plan.pool.subset(range(plan.corrections, len(plan.pool))))
    yield Notice(f"Fine-tuning the white-cell types on {len(corrections)} corrected cell(s)…")
    if start is None:
        return (yield from _first_types(run, corrections, replayed, plan.share))
    tuned = finetune_types(
        start,
        corrections,
        replayed,
        reference=typed_cells(plan.reference) if plan.reference is not None else None,
        share=plan.share,
        seed=run.config.seed,
        should_stop=run.stop_asked,
    )
    if tuned is None:
        return start
    yield Notice(tuned.sentence)
    return tuned.kept


def _first_types(
    run: Run, corrections: TypedCells, replayed: TypedCells, share: float
) -> Generator[Notice, None, TypeModel | None]:
    """A model without types learns them from the corrections, ``share`` of the draws."""
    cells = corrections.joined(replayed)
    types = tuple(sorted(set(corrections.types), key=type_order))
    if len(types) < 2:
        yield Notice("Cell types were not learned: correct cells of at least two types.")
        return None
    weights = draw_weights(len(corrections), len(replayed), share).numpy()
    model = fit_types(cells, types, weights=weights, seed=run.config.seed)
    if model is not None:
        yield Notice(
            f"Learned {len(types)} white-cell types from {len(corrections)} corrected cells."
        )
    return model
