"""Adapting to a user's own images: scale, partial labels, replay and the fine-tune schedule."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bad_inputs import untrained_model
from napari_bloodcells import cli
from napari_bloodcells.core.base.classes import UNLABELLED
from napari_bloodcells.core.base.metrics import ConfusionMatrix, score_labels
from napari_bloodcells.core.data.dataset import SegmentationData
from napari_bloodcells.core.events import EpochEnded, Notice, ScheduleChosen, run_to_end
from napari_bloodcells.core.inference.magnification import (
    estimate_scale,
    styles,
    unfamiliar_notice,
    zoom,
)
from napari_bloodcells.core.jobs import load_replay, training_job
from napari_bloodcells.core.model.checkpoint import load_checkpoint, save_checkpoint
from napari_bloodcells.core.model.size_model import SizeModel
from napari_bloodcells.core.training.batches import PatchSampler
from napari_bloodcells.core.training.config import preset
from napari_bloodcells.core.training.finetune import (
    Candidate,
    blend,
    outcome_sentence,
    plan_finetune,
    selection_score,
)
from napari_bloodcells.core.training.finish import try_blends
from napari_bloodcells.core.training.keeper import BestModelKeeper
from napari_bloodcells.core.training.loop import _augmented, train
from napari_bloodcells.core.training.losses import LOSSES, Objective
from napari_bloodcells.core.training.size_fit import fit_size_model
from napari_bloodcells.errors import DataError


@pytest.fixture
def native_config():
    """The default preset's recipe on the notebook U-Net at 64 px: fast on a CPU."""
    return preset("default").with_changes(
        arch="notebook-unet",
        encoder="",
        size=64,
        epochs=1,
        batch_size=4,
        device="cpu",
        finetune_steps=6,
        num_preview=0,
    )


@pytest.fixture
def base_model(few_cells, native_config):
    return run_to_end(train(native_config.with_changes(data_source="bloodcells"), few_cells)).model


def test_train_scale_resizes_every_pair_as_segment_scale_does(few_cells):
    half = few_cells.rescaled(0.5)
    for before, after, mask in zip(few_cells.images, half.images, half.masks, strict=True):
        assert after.shape[:2] == (round(before.shape[0] / 2), round(before.shape[1] / 2))
        assert mask.shape == after.shape[:2]
    assert set(np.unique(np.concatenate([m.ravel() for m in half.masks]))) <= {0, 1, 2}


def test_a_scale_that_leaves_an_image_too_small_is_one_sentence(few_cells, native_config):
    with pytest.raises(DataError, match=r"smaller than the 32-pixel minimum.*at least 0\.") as e:
        next(train(native_config.with_changes(scale=0.1), few_cells))
    assert str(e.value).count(". ") == 0


def test_unlabelled_pixels_do_not_change_the_loss():
    torch.manual_seed(0)
    masks = torch.randint(0, 3, (2, 16, 16))
    masks[:, :8] = UNLABELLED  # only the bottom half is labelled
    logits = torch.randn(2, 3, 16, 16)
    other = logits.clone()
    other[:, :, :8] = torch.randn(2, 3, 8, 16) * 10  # anything at all where nothing is labelled
    for kind in LOSSES:
        objective = Objective(kind)
        assert torch.allclose(objective(logits, masks), objective(other, masks))


def test_partial_labels_train_and_an_all_unlabelled_layer_is_refused(few_cells, native_config):
    strokes = [np.full_like(m, UNLABELLED) for m in few_cells.masks]
    for stroke, mask in zip(strokes, few_cells.masks, strict=True):
        stroke[40:80, 40:80] = mask[40:80, 40:80]  # a few strokes of each class
    partial = SegmentationData(list(few_cells.images), strokes, list(few_cells.names))
    assert run_to_end(train(native_config, partial)).best_epoch == 1
    nothing = SegmentationData(
        list(few_cells.images), [np.full_like(m, UNLABELLED) for m in few_cells.masks]
    )
    with pytest.raises(DataError, match="not labelled"):
        next(train(native_config, nothing))


def test_replay_is_mixed_into_every_batch(few_cells, bloodcells):
    plan = plan_finetune(
        few_cells.subset(range(3)),
        bloodcells.subset(range(20, 40)),
        steps=10,
        batch_size=8,
        share=0.5,
        split_seed=0,
    )
    batch = plan.draw(torch.Generator().manual_seed(0))
    assert sum(i < plan.corrections for i in batch) == 4, "half the batch is corrections"
    assert plan.reference is not None and not plan.dev_held_out
    assert "replayed from 16 training images" in plan.describe(3e-4)


def test_finetune_replays_the_recorded_dataset_or_says_there_is_none(
    few_cells, base_model, native_config, data_env
):
    corrections = few_cells.subset(range(2))
    assert len(load_replay(base_model, "auto")) == 300
    config = native_config.with_changes(schedule="finetune")
    events = list(training_job(config, corrections, base_model))
    [chosen] = [e for e in events if isinstance(e, ScheduleChosen)]
    assert chosen.replay and "replayed" in chosen.description
    assert "6 steps" in chosen.description and "too few to hold any out" in chosen.description

    base_model.config["data_source"] = ""
    events = list(training_job(config, corrections, base_model))
    assert any(isinstance(e, Notice) and e.message.startswith("No replay") for e in events)


def test_a_vanished_replay_folder_is_one_sentence(base_model, tmp_path):
    base_model.config["data_source"] = str(tmp_path / "gone")
    with pytest.raises(DataError, match=r"no longer exists.*--replay none"):
        load_replay(base_model, "auto")


def test_finetune_from_one_correction_keeps_the_start_unless_beaten(
    few_cells, base_model, native_config
):
    config = native_config.with_changes(schedule="finetune", finetune_lr=1e-12)
    one = few_cells.subset([3])
    result = run_to_end(train(config, one, init=base_model))
    assert result.kept_start and result.best_epoch == 0
    assert "starting model" in result.reason
    for key, value in base_model.network.state_dict().items():
        assert torch.equal(result.model.network.state_dict()[key].cpu(), value.cpu()), key


def test_the_size_model_estimates_how_much_an_image_was_enlarged(base_model, few_cells):
    base_model.size_model = fit_size_model(base_model, few_cells, torch.Generator())
    estimates = [estimate_scale(base_model, zoom(im, 2.0)).scale for im in few_cells.images[:4]]
    assert 0.3 < float(np.median(estimates)) < 0.8


def test_styles_of_many_images_at_once_equal_each_image_alone(base_model, few_cells):
    # Sizes that pad to the same shape share a pass; others get their own.
    images = [
        zoom(im, f) for im, f in zip(few_cells.images[:6], (1, 1, 0.5, 1.3, 1, 0.5), strict=True)
    ]
    together = styles(base_model, images)
    alone = np.concatenate([styles(base_model, [im]) for im in images])
    assert together.shape == alone.shape
    np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-5)


def test_no_cell_found_falls_back_to_1_with_one_sentence(base_model, few_cells):
    base_model.size_model = fit_size_model(base_model, few_cells, torch.Generator())
    head = base_model.network.head
    torch.nn.init.zeros_(head.weight)
    head.bias.data = torch.tensor([10.0, -10.0, -10.0])  # background everywhere
    estimate = estimate_scale(base_model, few_cells.images[0], "cell.png")
    assert not estimate.found and estimate.scale == 1.0
    assert (
        estimate.message == "No cell was found in cell.png; using scale 1.0, so check the result."
    )


@pytest.mark.parametrize(
    ("recorded", "replayed"),
    [(0.2, 0.2), (None, 0.0)],  # None: a model trained before the jitter existed
)
def test_cli_init_without_epochs_uses_and_prints_the_finetune_schedule(
    base_model, few_cells, make_folder, tmp_path, capsys, data_env, recorded, replayed
):
    # The preset's jitter is 0.4; the start's own recipe is what its replay is shown with.
    base_model.config.pop("intensity_jitter")
    if recorded is not None:
        base_model.config["intensity_jitter"] = recorded
    base = save_checkpoint(base_model, tmp_path / "base.pt")
    data = make_folder(few_cells.subset(range(6)), tmp_path / "corrected")
    out = tmp_path / "tuned.pt"
    argv = ["train", "--data", str(data), "--init", str(base), "--device", "cpu"]
    assert cli.main([*argv, "--scale", "0.8", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Fine-tune schedule: 80 steps" in printed
    assert "replayed from" in printed and "held out to choose the model" in printed
    tuned = load_checkpoint(out)
    assert tuned.config["schedule"] == "finetune" and tuned.config["scale"] == 0.8
    assert tuned.config["data_source"] == "bloodcells", "the next fine-tune replays it too"
    assert tuned.config["intensity_jitter"] == replayed, "the replay is shown as the start saw it"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--scale", "0"], "The scale (0.0) must be 0.05 to 20"),
        (["--scale", "-1"], "The scale (-1.0) must be 0.05 to 20"),
        (["--scale", "0.1"], "smaller than the 32-pixel minimum"),
        (["--replay", "none", "--out", "{base}"], "starts from; choose another --out"),
    ],
)
def test_cli_bad_scales_and_outputs_are_one_sentence(
    base_model, few_cells, make_folder, tmp_path, capsys, extra, message
):
    base = save_checkpoint(base_model, tmp_path / "base.pt")
    data = make_folder(few_cells.subset(range(2)), tmp_path / "corrected")
    extra = [a.format(base=base) for a in extra]
    out = [] if "--out" in extra else ["--out", str(tmp_path / "t.pt")]
    argv = ["train", "--data", str(data), "--init", str(base), "--device", "cpu"]
    assert cli.main([*argv, "--replay", "none", *extra, *out]) == cli.EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert message in err and err.strip().count("\n") == 0
    assert load_checkpoint(base).spec == base_model.spec, "the starting model is untouched"


def test_segment_scale_auto_prints_one_line_per_image(base_model, few_cells, tmp_path, capsys):
    from PIL import Image

    base_model.size_model = fit_size_model(base_model, few_cells, torch.Generator())
    model = save_checkpoint(base_model, tmp_path / "m.pt")
    big = tmp_path / "big.png"
    Image.fromarray(zoom(few_cells.images[0], 2.0)).save(big)
    argv = ["segment", str(model), str(big), "--out", str(tmp_path / "o"), "--scale", "auto"]
    assert cli.main([*argv, "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{big}: scale 0.")


def test_a_seed_model_refuses_a_scale_in_one_sentence():
    from napari_bloodcells.core.inference.tiled import segment_image
    from napari_bloodcells.errors import ConfigError

    with pytest.raises(ConfigError, match=r"seed preset.*scale does not apply"):
        segment_image(untrained_model(), np.zeros((120, 120, 3), np.uint8), scale=0.5)
    with pytest.raises(ConfigError, match=r"would be squashed"):
        segment_image(untrained_model(), np.zeros((2048, 600, 3), np.uint8))


def test_a_large_gain_on_the_corrections_outweighs_a_little_forgetting():
    start = selection_score(0.30, 0.95, 0.95)
    # The smear fields: +0.67 on the corrections for -0.03 on the model's own data.
    assert selection_score(0.97, 0.92, 0.95) > start
    # A small gain bought with a large loss is not worth it.
    assert selection_score(0.31, 0.90, 0.95) < start
    # Doing better on the model's own data earns nothing over the corrections.
    assert selection_score(0.30, 0.99, 0.95) == start
    # Without replay dev images the corrections alone decide.
    assert selection_score(0.40, None, None) == 0.40


def test_blending_moves_floating_weights_and_keeps_counters():
    start = {"w": torch.zeros(3), "n": torch.tensor(2)}
    tuned = {"w": torch.full((3,), 4.0), "n": torch.tensor(9)}
    assert torch.equal(blend(start, tuned, 0.0)["w"], start["w"])
    assert torch.equal(blend(start, tuned, 1.0)["w"], tuned["w"])
    half = blend(start, tuned, 0.5)
    assert torch.equal(half["w"], torch.full((3,), 2.0)) and int(half["n"]) == 9


def test_the_outcome_names_both_numbers_and_what_was_kept():
    names = ("background", "cytoplasm", "nucleus")
    start = Candidate("the starting model", (0.9, 0.70, 0.93), 0.950, 0.815)
    tuned = Candidate("round 4 blended 75% with the starting model", (0.9, 0.89, 0.95), 0.946, 0.91)
    said = outcome_sentence(start, tuned, names, held_out=True)
    assert said == (
        "Your held-out corrections: cytoplasm 0.70 → 0.89, nucleus 0.93 → 0.95; "
        "the model's own data: -0.004; kept round 4 blended 75% with the starting model."
    )
    worse = Candidate("round 2", (0.9, 0.71, 0.93), 0.90, 0.77)
    refused = outcome_sentence(start, start, names, held_out=False, best_round=worse)
    assert "cytoplasm 0.70 → 0.71" in refused and "-0.050" in refused
    assert "too few to hold any out" in refused
    assert refused.endswith(
        "that is a gain smaller than what it forgot, so the starting model is kept."
    )
    lost = outcome_sentence(
        start, start, names, held_out=True, best_round=replace(worse, dice=(0.9, 0.6, 0.9))
    )
    assert lost.endswith("that is no gain, so the starting model is kept.")
    # Corrections that only erase are scored on background, where gains are small:
    # a third decimal shows a change that two would hide.
    erased = replace(start, dice=(0.9954, 0.5, 0.5), classes=(0,))
    cleaner = replace(worse, dice=(0.9978, 0.5, 0.5), classes=(0,))
    said = outcome_sentence(erased, erased, names, held_out=True, best_round=cleaner)
    assert said.startswith("Your held-out corrections: background 0.995 → 0.998 with round 2")


def test_a_finetune_with_held_out_corrections_says_both_numbers(
    few_cells, base_model, native_config, bloodcells
):
    config = native_config.with_changes(schedule="finetune", finetune_lr=3e-3, finetune_steps=10)
    replay = bloodcells.subset(range(100, 140))
    result = run_to_end(train(config, few_cells.subset(range(6)), init=base_model, replay=replay))
    assert result.outcome.startswith("Your held-out corrections: cytoplasm ")
    assert "the model's own data: " in result.outcome and result.outcome in result.reason
    assert result.model.metrics["finetune_outcome"] == result.outcome
    kept = "kept the starting model" if result.kept_start else "kept round "
    assert kept in result.outcome or "starting model is kept" in result.outcome


def test_style_distance_is_one_on_average_over_the_fit_images():
    rng = np.random.default_rng(0)
    fit = rng.normal(3.0, 2.0, size=(200, 12))
    size_model = SizeModel(tuple(fit.mean(0)), tuple(fit.std(0)), (0.0,) * 13)
    squares = [size_model.distance(v) ** 2 for v in fit]
    assert np.mean(squares) == pytest.approx(1.0)
    assert size_model.distance(fit.mean(0) + 5 * fit.std(0)) == pytest.approx(5.0)


def test_an_image_unlike_the_training_images_is_said_once_per_job(
    base_model, few_cells, tmp_path, data_env
):
    from PIL import Image

    from napari_bloodcells.core.jobs import segment_files, segmentation_job

    familiar = few_cells.images[0]
    own = styles(base_model, list(few_cells.images))
    # Training images centred on the familiar one, with their own spread.
    base_model.size_model = replace(
        base_model.size_model, mean=tuple(own[0]), std=tuple(own.std(0) + 1e-6)
    )
    assert unfamiliar_notice(base_model, familiar) == ""
    # A purple, grainy image: nothing like Dataset 1's yellow fields.
    rng = np.random.default_rng(1)
    strange = rng.integers(0, 256, size=(120, 120, 3), dtype=np.uint8)
    strange[..., 1] //= 4
    said = unfamiliar_notice(base_model, strange, "field.png")
    assert said.startswith("field.png looks unlike the images this model was trained on")
    assert said.endswith("fine-tune.") and "\n" not in said

    events = list(segmentation_job(base_model, strange, stack=False))
    assert sum(isinstance(e, Notice) and "looks unlike" in e.message for e in events) == 1
    for i in range(3):
        Image.fromarray(strange).save(tmp_path / f"strange{i}.png")
    events = list(segment_files(base_model, [tmp_path], tmp_path / "out"))
    assert sum(isinstance(e, Notice) and "looks unlike" in e.message for e in events) == 1


def test_a_finetune_learns_from_corrections_that_only_erase(
    few_cells, base_model, native_config, bloodcells
):
    # A user who erases the cells painted on red cells and leaves the white cell
    # unlabelled: background and 255 only. A new model cannot learn from that,
    # a fine-tune can.
    erased = [np.where(m == 0, 0, UNLABELLED).astype(np.uint8) for m in few_cells.masks[:6]]
    corrections = SegmentationData(list(few_cells.images[:6]), erased)
    with pytest.raises(DataError, match="all background"):
        next(train(native_config, corrections))
    config = native_config.with_changes(schedule="finetune", finetune_lr=3e-3, finetune_steps=10)
    replay = bloodcells.subset(range(100, 140))
    result = run_to_end(train(config, corrections, init=base_model, replay=replay))
    # Scored on what the user labelled: the background they erased to.
    assert result.outcome.startswith("Your held-out corrections: background ")
    assert "cytoplasm" not in result.outcome and "the model's own data: " in result.outcome


def test_a_correction_score_averages_the_classes_the_labels_hold():
    truth = np.array([[0, 0, 1, 1], [0, 0, 2, 2]], np.uint8)
    painted_red_cell = np.array([[2, 0, 1, 1], [0, 0, 2, 2]], np.uint8)
    both = score_labels([painted_red_cell], [truth], 3)
    assert both.scored_classes() == (1, 2)
    assert both.correction_score() == pytest.approx((1.0 + 2 * 2 / 5) / 2)
    erased = np.where(truth == 0, 0, UNLABELLED).astype(np.uint8)
    only_erased = score_labels([painted_red_cell], [erased], 3)
    assert only_erased.scored_classes() == (0,)
    # 3 of the 4 erased pixels left as background: Dice 2*3 / (2*3 + 1).
    assert only_erased.correction_score() == pytest.approx(6 / 7)
    # The foreground mean sees 1 for a class never painted on the erased pixels and
    # 0 for one painted once, however much of the rest was erased.
    assert only_erased.mean_foreground_dice() == 0.5


@pytest.fixture
def with_norms(few_cells, native_config):
    """A model with batch norms (the notebook U-Net has none) and its configuration."""
    config = native_config.with_changes(arch="Unet", encoder="resnet18")
    return run_to_end(train(config, few_cells)).model, config


def finetune_rounds(with_norms, few_cells, bloodcells, lr):
    start, config = with_norms
    config = config.with_changes(schedule="finetune", finetune_lr=lr, finetune_steps=10)
    replay = bloodcells.subset(range(100, 140))
    return list(train(config, few_cells.subset(range(6)), init=start, replay=replay))


def test_a_finetune_normalises_with_its_starting_statistics(with_norms, few_cells, bloodcells):
    # With a vanishing learning rate, only batch norms re-estimating their
    # statistics on the mixed batches could make one round differ from another.
    events = finetune_rounds(with_norms, few_cells, bloodcells, lr=1e-12)
    rounds = [e for e in events if isinstance(e, EpochEnded)]
    assert len(rounds) >= 2
    assert {e.dice for e in rounds} == {rounds[0].dice}
    assert {e.reference_dice for e in rounds} == {rounds[0].reference_dice}
    assert "the model's own data: +0.000" in events[-1].result.outcome


def test_each_round_is_scored_with_its_own_weights(with_norms, few_cells, bloodcells):
    # The held-out corrections are larger than a patch, so they are segmented
    # tile by tile with a folded copy of the network, which must follow the steps.
    events = finetune_rounds(with_norms, few_cells, bloodcells, lr=1e-2)
    rounds = [e for e in events if isinstance(e, EpochEnded)]
    assert len({e.dice for e in rounds}) > 1


def test_corrections_are_trained_as_they_are_and_the_replay_as_the_model_was(bloodcells):
    corrections, replay = bloodcells.subset(range(6)), bloodcells.subset(range(100, 140))
    plan = plan_finetune(corrections, replay, steps=4, batch_size=8, share=0.5, split_seed=0)
    config = preset("default").with_changes(size=64, zoom_jitter=2.0, smear=1.0)
    sampler = PatchSampler(plan.pool, config.preprocessing())
    run = SimpleNamespace(config=config, plan=plan, generator=torch.Generator().manual_seed(0))
    indices = [0, 1, 2, 3, 8, 16, 24, 32]
    images, masks = sampler.batch(indices, run.generator)
    _, new_masks = _augmented(run, indices, images.float() / 255, masks)

    def counts(mask):
        return torch.bincount(mask.flatten().long(), minlength=256)

    own = plan.are_corrections(indices)
    assert own == [True] * 4 + [False] * 4
    for i, is_correction in enumerate(own):
        if is_correction:  # only flipped or turned: every class keeps its pixel count
            assert torch.equal(counts(new_masks[i]), counts(masks[i]))
    # The replay is zoomed (and given red cells): its labels move.
    assert any(not torch.equal(counts(new_masks[i]), counts(masks[i])) for i in range(4, 8))


def test_a_blend_is_tried_and_kept_even_where_the_start_beat_every_round():
    network = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(network.weight)

    class Run:
        """One weight w; the labels are best matched at w = 0.5, half way to the round."""

        def __init__(self):
            self.network = network

        def evaluate_dev(self):
            w = float(network.weight.detach())
            wrong = round(abs(w - 0.5) * 16)
            cm = ConfusionMatrix(3)
            truth = np.array([1] * 10 + [2] * 10)
            pred = truth.copy()
            pred[:wrong] = 2
            cm.update(pred, truth)
            return 0.0, cm, ()

        def reference_dice(self):
            return None

    run = Run()
    keeper = BestModelKeeper(network, None)
    start_scores = run.evaluate_dev()[1].scores()
    keeper.score = start_scores.correction_score()
    start = Candidate("the starting model", start_scores.dice, None, keeper.score, (1, 2))
    with torch.no_grad():
        network.weight.fill_(1.1)  # the round overshoots: worse than the start
    round_scores = run.evaluate_dev()[1].scores()
    assert not keeper.keep_if_best(round_scores.correction_score(), 1)
    best_round = Candidate("round 1", round_scores.dice, None, round_scores.correction_score())
    kept, tried = try_blends(run, start, start, best_round, keeper)
    assert kept is tried and kept.name == "round 1 blended 50% with the starting model"
    assert keeper.epoch == 1 and float(keeper.state["weight"]) == pytest.approx(0.55)
    assert kept.score > start.score > best_round.score
