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

    from napari_bloodcells.core.events import Notice
    from napari_bloodcells.core.training.keeper import BestModelKeeper
    from napari_bloodcells.core.training.run import Run, RunProgress


def try_blends(
    run: Run, kept: Candidate, start: Candidate, best_round: Candidate, keeper: BestModelKeeper
) -> tuple[Candidate, Candidate | None]:
    """Score the best round blended with the starting weights.

    Returns
    -------
    tuple
        The kept candidate (a blend that beats ``kept``, whose weights and
        round ``keeper`` then holds, or ``kept``) and the best blend tried.
    """
    best_blend: Candidate | None = None
    for share in BLENDS:
        state = blend(keeper.start_state, keeper.round_state, share)
        run.network.load_state_dict(state)
        _, cm, _ = run.evaluate_dev()
        remembered = run.reference_dice()
        scores = cm.scores()
        score = selection_score(scores.correction_score(), remembered, start.reference)
        name = f"{best_round.name} blended {share:.0%} with the starting model"
        candidate = Candidate(name, scores.dice, remembered, score)
        if best_blend is None or score > best_blend.score:
            best_blend = candidate
        if score > kept.score:
            kept = candidate
            keeper.score, keeper.epoch, keeper.state = score, keeper.round_epoch, state
    return kept, best_blend


def _choose_finetuned(run: Run, keeper: BestModelKeeper, progress: RunProgress) -> str:
    """A fine-tune's kept model among start, rounds and blends; the outcome sentence."""
    start, plan = progress.start, run.plan
    if start is None or plan is None or not progress.rounds:
        return ""
    kept = start if keeper.epoch == 0 else progress.rounds[keeper.epoch]
    tried = list(progress.rounds.values())
    best_round = progress.rounds.get(keeper.round_epoch)
    # Blends are tried even where the start won: one often beats both ends.
    if best_round is not None and not progress.stopped:
        kept, best_blend = try_blends(run, kept, start, best_round, keeper)
        tried += [best_blend] if best_blend is not None else []
        run.network.load_state_dict(keeper.state)
    best_tried = max(tried, key=lambda c: c.score)
    return outcome_sentence(start, kept, run.model.classes.names, plan.dev_held_out, best_tried)


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
    outcome = _choose_finetuned(run, keeper, progress)
    kept_start = run.plan is not None and keeper.epoch == 0 and bool(progress.history)
    if outcome:
        progress.reason = f"{progress.reason} {outcome}"
    offsets = _fit_extras(run, keeper, progress)
    model = run.model
    start_types = model.type_model
    if not progress.stopped and (keeper.epoch or kept_start):
        model.type_model = yield from fit_run_types(run)
    model.metrics = {
        "best_epoch": keeper.epoch,
        "averaged": progress.averaged,
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
