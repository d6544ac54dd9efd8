"""What ends a training run: the kept model chosen, the size model and calibration fitted,
the metrics recorded and the model saved."""

from __future__ import annotations

from typing import TYPE_CHECKING

from napari_bloodcells.core.events import TrainingResult
from napari_bloodcells.core.training.calibrate import add_to_head, fit_class_offsets
from napari_bloodcells.core.training.finetune import (
    BLENDS,
    Candidate,
    blend,
    outcome_sentence,
    selection_score,
)
from napari_bloodcells.core.training.size_fit import fit_size_model
from napari_bloodcells.core.training.type_stage import fit_run_types

if TYPE_CHECKING:
    from collections.abc import Generator

    import torch

    from napari_bloodcells.core.events import Notice
    from napari_bloodcells.core.training.keeper import BestModelKeeper
    from napari_bloodcells.core.training.run import Run, RunProgress


def try_blends(
    run: Run, kept: Candidate, start: Candidate, keeper: BestModelKeeper
) -> tuple[Candidate, dict[str, torch.Tensor]]:
    """Score the best round blended with the starting weights; return the best and its weights."""
    best, best_state = kept, keeper.state
    for share in BLENDS:
        state = blend(keeper.start_state, keeper.state, share)
        run.network.load_state_dict(state)
        _, cm, _ = run.evaluate_dev()
        remembered = run.reference_dice()
        scores = cm.scores()
        score = selection_score(scores.correction_score(), remembered, start.reference)
        if score > best.score:
            name = f"{kept.name} blended {share:.0%} with the starting model"
            best, best_state = Candidate(name, scores.dice, remembered, score), state
    return best, best_state


def _choose_finetuned(run: Run, keeper: BestModelKeeper, progress: RunProgress) -> str:
    """A fine-tune's kept model among start, rounds and blends; the outcome sentence."""
    start, plan = progress.start, run.plan
    if start is None or plan is None or not progress.rounds:
        return ""
    kept_start = keeper.epoch == 0
    kept = start if kept_start else progress.rounds[keeper.epoch]
    if keeper.epoch and not progress.stopped:
        kept, keeper.state = try_blends(run, kept, start, keeper)
        run.network.load_state_dict(keeper.state)
    tried = max(progress.rounds.values(), key=lambda c: c.score)
    return outcome_sentence(start, kept, run.model.classes.names, plan.dev_held_out, tried)


def _fit_extras(run: Run, keeper: BestModelKeeper, progress: RunProgress) -> tuple[float, ...]:
    """Fit the size model and, for a new model, the class-area calibration; the offsets."""
    model = run.model
    if not keeper.epoch or progress.stopped or model.preprocessing.mode != "native":
        return ()
    model.size_model = fit_size_model(model, run.schedule.train_data, run.generator)
    if run.plan is not None:  # a fine-tune keeps the calibration it started from
        return ()
    # Fitted where the best epoch was chosen: held out from training, where a
    # model's areas are biased the way they will be on new images.
    fitted = fit_class_offsets(model, run.schedule.dev_data, run.generator)
    return fitted if add_to_head(run.network, fitted) else ()


def finish_run(
    run: Run, keeper: BestModelKeeper, progress: RunProgress
) -> Generator[Notice, None, TrainingResult]:
    """Choose the kept model, fit what a finished model carries, record and save it."""
    kept_start = run.plan is not None and keeper.epoch == 0 and bool(progress.history)
    outcome = _choose_finetuned(run, keeper, progress)
    if outcome:
        progress.reason = f"{progress.reason} {outcome}"
    offsets = _fit_extras(run, keeper, progress)
    model = run.model
    start_types = model.type_model
    if not progress.stopped and (keeper.epoch or kept_start):
        model.type_model = yield from fit_run_types(run)
    model.metrics = {
        "best_epoch": keeper.epoch,
        "best_dev_score": keeper.score,
        "history": progress.history,
        "reason": progress.reason,
        "world_size": run.group.world_size if run.group is not None else 1,
        "class_offsets": list(offsets),
        "finetune_outcome": outcome,
    }
    if keeper.path is not None and (keeper.epoch or kept_start) and (notice := keeper.save(model)):
        yield notice
    return TrainingResult(
        model,
        tuple(progress.history),
        keeper.epoch,
        progress.stopped,
        progress.reason,
        keeper.path if keeper.saved else None,
        kept_start,
        outcome,
        types_changed=model.type_model is not start_types,
    )
