"""Cell types: reading them, cutting cells, training, fine-tuning, measuring and counting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_bloodcells.core.base.cell_types import CELL_TYPES, parse_type
from napari_bloodcells.core.data.dataset import SegmentationData, load_folder
from napari_bloodcells.core.data.type_table import read_type_table
from napari_bloodcells.core.measure.cell_crops import cell_crops
from napari_bloodcells.core.measure.cells import Measurements, measure_cells
from napari_bloodcells.core.measure.differential import differential
from napari_bloodcells.core.training.type_finetune import finetune_types, statistics_of
from napari_bloodcells.core.training.type_fit import (
    TypedCells,
    _smeared,
    accuracy,
    fit_types,
    typed_cells,
)
from napari_bloodcells.errors import DataError


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Neutrophil", "neutrophil"),
        ("3", "monocyte"),
        (" lymphocytes ", "lymphocyte"),
        ("5", "basophil"),
        ("not a white cell", "not a white cell"),
    ],
)
def test_types_are_read_by_name_plural_or_dataset_1_number(value, expected):
    assert parse_type(value, "x") == expected


@pytest.mark.parametrize("value", ["blast", "6", "0", ""])
def test_an_unknown_type_is_one_sentence_naming_the_accepted_ones(value):
    with pytest.raises(DataError) as info:
        parse_type(value, "The type table t.csv, row 3,")
    message = str(info.value)
    assert "row 3" in message and "neutrophil" in message and "\n" not in message


def test_types_csv_and_dataset_1_csv_are_read(tmp_path):
    ours = tmp_path / "types.csv"
    ours.write_text("image,type\nall/007.png,Eosinophil\nb.tif,2\nc.png,\n")
    assert read_type_table(ours) == {"7": "eosinophil", "b": "lymphocyte"}
    theirs = tmp_path / "labels.csv"
    theirs.write_text("image ID,class label\n1,1\n2,4\n")
    assert read_type_table(theirs) == {"1": "neutrophil", "2": "eosinophil"}
    odd = tmp_path / "odd.csv"
    odd.write_text("file,kind\na,1\n")
    with pytest.raises(DataError, match="needs the columns image"):
        read_type_table(odd)


def test_a_folder_with_types_csv_has_types_that_follow_subsets_and_sums(
    tmp_path, few_cells, make_folder
):
    root = make_folder(few_cells.subset(range(4)), tmp_path / "data")
    names = [n.rsplit("/", 1)[-1] for n in few_cells.names[:3]]
    (root / "types.csv").write_text(
        "image,type\n" + "".join(f"{n}.png,{k}\n" for n, k in zip(names, (1, 2, 3), strict=True))
    )
    data = load_folder(root)
    assert data.types == ["neutrophil", "lymphocyte", "monocyte", None]
    assert data.subset([2, 0]).types == ["monocyte", "neutrophil"]
    untyped = SegmentationData([data.images[0]], [data.masks[0]], ["x"])
    assert (untyped + data.subset([1])).types == [None, "lymphocyte"]
    assert data.rescaled(0.5).types == data.types
    assert not untyped.has_types


def test_the_dataset_1_folder_has_the_upstream_types(typed_bloodcells):
    assert len(typed_bloodcells.types) == 300
    counts = {k: typed_bloodcells.types.count(k) for k in CELL_TYPES}
    assert counts == {
        "neutrophil": 176,
        "lymphocyte": 53,
        "monocyte": 48,
        "eosinophil": 22,
        "basophil": 1,
    }


def _disc_image(size: int, radius: float, colour) -> tuple[np.ndarray, np.ndarray]:
    """One cell: a disc of cytoplasm with a nucleus of half its radius, on white."""
    yy, xx = np.mgrid[:size, :size]
    distance = np.hypot(yy - size / 2, xx - size / 2)
    labels = np.where(distance < radius, 1, 0) + (distance < radius / 2)
    image = np.full((size, size, 3), 240, np.uint8)
    image[labels == 1] = (230, 180, 200)
    image[labels == 2] = colour
    return image, labels.astype(np.uint8)


def test_a_crop_is_sized_to_the_cell_so_magnification_does_not_change_it():
    small_image, small = _disc_image(60, 12, (90, 30, 120))
    large_image, large = _disc_image(120, 24, (90, 30, 120))
    crop_small, ids = cell_crops(small_image, small, (small > 0).astype(int), side=32, margin=1.3)
    crop_large, _ = cell_crops(large_image, large, (large > 0).astype(int), side=32, margin=1.3)
    assert ids == [1] and crop_small.shape == (1, 5, 32, 32)
    assert np.abs(crop_small[0, 3:] - crop_large[0, 3:]).mean() < 0.05  # the same masks
    assert np.abs(crop_small - crop_large).mean() < 0.05


def test_a_crop_holds_only_its_own_cell_in_the_masks():
    image, labels = _disc_image(80, 12, (90, 30, 120))
    labels[:, 60:] = 0
    labels[30:50, 62:78] = 1  # a neighbour inside the crop window of a wide margin
    cells = np.where(labels > 0, 1, 0)
    cells[:, 60:] *= 2
    crops, ids = cell_crops(image, labels, cells, side=32, margin=3.0, ids=[1])
    assert ids == [1]
    neighbour = cell_crops(image, labels, cells, side=32, margin=3.0, ids=[2])[0]
    assert crops[0, 3].sum() > 0 and neighbour[0, 3].sum() > 0
    assert (crops[0, 3] * neighbour[0, 3]).sum() == 0 or crops[0, 3].sum() != neighbour[0, 3].sum()


def _disc_cell(size: int, radius: float, share: float, colour) -> tuple[np.ndarray, np.ndarray]:
    """One cell whose nucleus has ``share`` of the cell's radius."""
    yy, xx = np.mgrid[:size, :size]
    distance = np.hypot(yy - size / 2, xx - size / 2)
    labels = (np.where(distance < radius, 1, 0) + (distance < radius * share)).astype(np.uint8)
    image = np.full((size, size, 3), 240, np.uint8)
    image[labels == 1] = (230, 180, 200)
    image[labels == 2] = colour
    return image, labels


def _cells_of(shares: dict[str, float], each: int, seed: int) -> TypedCells:
    """Synthetic typed cells whose nucleus size (a share of the cell's radius) gives the type:
    a cue that survives the colour and stain changes of training."""
    rng = np.random.default_rng(seed)
    images, masks, types = [], [], []
    for kind, share in shares.items():
        for _ in range(each):
            colour = tuple(int(c) for c in rng.integers(40, 200, 3))
            image, labels = _disc_cell(48, float(rng.uniform(12, 18)), share, colour)
            images.append(image)
            masks.append(labels)
            types.append(kind)
    return typed_cells(SegmentationData(images, masks, types=types), side=32)


SHARES = {"neutrophil": 0.35, "lymphocyte": 0.85}


def test_training_crops_get_red_cells_around_the_cell_and_nowhere_else():
    crops = torch.zeros(32, 5, 64, 64)
    crops[:, :3, :, 8:] = torch.tensor([0.95, 0.9, 0.7]).view(3, 1, 1)  # glass; 0 is beyond
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    distance = ((yy - 32) ** 2 + (xx - 36) ** 2).sqrt()
    crops[:, 3] = (distance < 20).float()  # the cell
    crops[:, 4] = (distance < 9).float()  # its nucleus
    crops[:, :3] -= 0.5 * crops[:, 3:4]
    painted = _smeared(crops, torch.Generator().manual_seed(0))
    changed = (painted != crops).any(1)
    cell, beyond = crops[:, 3] > 0, crops[:, 0] == 0
    assert torch.equal(painted[:, 3:], crops[:, 3:])
    assert not changed[cell].any() and not changed[beyond].any()
    per_crop = changed.flatten(1).any(1)
    # About half of the crops get red cells; the rest stay as they were.
    assert 8 <= int(per_crop.sum()) <= 24
    assert torch.equal(_smeared(crops, torch.Generator().manual_seed(0)), painted)


def test_the_type_model_learns_types_and_types_measured_cells(few_cells):
    model = fit_types(_cells_of(SHARES, 16, 0), tuple(SHARES), epochs=40)
    assert accuracy(model, _cells_of(SHARES, 4, 1)) == 1.0
    image, labels = _disc_cell(48, 15, SHARES["lymphocyte"], (60, 40, 160))
    _, table = measure_cells(labels, image, type_model=model, threshold=0.55)
    assert table.columns["type"] == ["lymphocyte"]
    assert table.columns["p_lymphocyte"][0] > 0.55 and table.columns["to_verify"] == [False]
    with pytest.raises(DataError, match="needs the image"):
        measure_cells(labels, type_model=model)


def test_a_type_fine_tune_learns_what_was_reclassified_and_forgetting_counts_against_it():
    model = fit_types(_cells_of(SHARES, 16, 0), tuple(SHARES), epochs=40)
    # Another lab calls the small nuclei lymphocytes, and adds a type of its own.
    theirs = {"neutrophil": 0.85, "lymphocyte": 0.35, "monocyte": 0.6}
    fixes = _cells_of(theirs, 3, 2).joined(_cells_of(theirs, 3, 3))
    result = finetune_types(model, fixes, _cells_of(theirs, 0, 4), reference=None, share=0.5)
    assert result.kept is result.tuned
    assert result.kept.types == ("neutrophil", "lymphocyte", "monocyte")
    # Only the last layer learned: the convolutions are the start's, and the batch
    # statistics are those of the user's cells (the held-out ones too), as adapting gives.
    start_body, tuned_body = model.network.state_dict(), result.tuned.network.state_dict()
    theirs = model.adapted(fixes.crops).network.state_dict()
    last = max(int(name.split(".")[0]) for name in start_body)
    for name, value in start_body.items():
        if int(name.split(".")[0]) == last:
            continue
        if name.endswith(("running_mean", "running_var")):
            assert not torch.equal(value, tuned_body[name]), name
            torch.testing.assert_close(tuned_body[name], theirs[name])
        elif not name.endswith("num_batches_tracked"):
            assert torch.equal(value, tuned_body[name]), name
    assert result.after > result.before and result.kept.fine_tuned and not model.fine_tuned
    # Each of the 18 was judged by a fine-tune that had not seen it; the kept one saw all.
    assert "your 18 corrections, each typed by a fine-tune that had not seen it" in result.sentence
    assert "trained on all 18" in result.sentence
    assert accuracy(result.kept, fixes) >= result.after
    # The same, judged against the model's own cells, which it now types the other way:
    # what it forgets counts against what it gains, and both are said.
    weighed = finetune_types(
        model, fixes, _cells_of(theirs, 0, 4), reference=_cells_of(SHARES, 4, 5), share=0.5
    )
    assert "own cells" in weighed.sentence
    # Its own cells are typed through its own statistics, as they were replayed.
    own = statistics_of(model, weighed.tuned)
    assert own.network[-1].weight.equal(weighed.tuned.network[-1].weight)
    assert own.network[1].running_mean.equal(model.network[1].running_mean)
    forgot = (accuracy(model, _cells_of(SHARES, 4, 5)) or 0) - (
        accuracy(own, _cells_of(SHARES, 4, 5)) or 0
    )
    assert (weighed.kept is weighed.tuned) == (weighed.after - forgot > weighed.before)
    # Corrections the model already gets right teach nothing: the start is kept.
    again = finetune_types(
        model, _cells_of(SHARES, 3, 6), _cells_of(SHARES, 2, 7), reference=None, share=0.5
    )
    assert again.kept is model and "kept the starting types" in again.sentence
    # Below STATISTICS_FROM corrected cells their statistics are mostly their own: kept.
    few = finetune_types(
        model,
        _cells_of({"neutrophil": 0.85, "lymphocyte": 0.35}, 2, 8),
        _cells_of(SHARES, 2, 9),
        reference=None,
        share=0.5,
    )
    assert few.tuned.network[1].running_mean.equal(model.network[1].running_mean)


def test_the_differential_counts_types_leaves_fragments_out_and_lets_corrections_win():
    table = Measurements(
        {
            "image": ["a", "a", "a", "b", "b"],
            "cell": [1, 2, 3, 1, 2],
            "area": [400, 420, 20, 380, 410],
            "nucleus_area": [100, 90, 5, 80, 0],
            "type": ["neutrophil", "neutrophil", "neutrophil", "monocyte", "lymphocyte"],
            "to_verify": [False, True, False, True, False],
            "corrected_type": ["", "eosinophil", "", "", ""],
        }
    )
    rows = differential(table)
    assert [r.image for r in rows] == ["a", "b", "total"]
    a, b, total = rows
    assert a.counts["neutrophil"] == 1 and a.counts["eosinophil"] == 1 and a.cells == 2
    assert a.to_verify == 0  # the one to verify was reclassified
    assert b.cells == 1 and b.to_verify == 1  # the cell without nucleus is no white cell
    assert total.cells == 3 and total.percent("monocyte") == pytest.approx(100 / 3)


def test_an_image_without_white_cells_gets_its_row_of_zeros():
    table = Measurements(
        {
            "image": ["a", "b"],
            "cell": [1, 1],
            "area": [400, 380],
            "nucleus_area": [100, 80],
            "type": ["neutrophil", "monocyte"],
            "to_verify": [False, True],
            "corrected_type": ["", ""],
        }
    )
    rows = differential(table, ["empty field", "b"])
    assert [r.image for r in rows] == ["empty field", "b", "a", "total"]
    assert rows[0].cells == 0 and rows[0].to_verify == 0 and rows[0].percent("neutrophil") == 0
    assert rows[-1].cells == 2


def test_a_type_fine_tune_is_judged_on_corrections_it_had_not_seen():
    model = fit_types(_cells_of(SHARES, 16, 0), tuple(SHARES), epochs=40)
    # Six cells the model already types right, and one of a type it never saw.
    corrections = _cells_of(SHARES, 3, 11).joined(_cells_of({"monocyte": 0.6}, 1, 12))
    result = finetune_types(
        model, corrections, _cells_of(SHARES, 2, 13), reference=None, share=0.75
    )
    # Trained on all seven, it types the new cell too; but the one monocyte, held out, has
    # nothing to be learned from, so unseen the seven are typed no better than before.
    assert accuracy(result.tuned, corrections) == 1.0
    assert result.before == pytest.approx(6 / 7) and result.after <= result.before
    assert result.kept is model and "kept the starting types" in result.sentence
