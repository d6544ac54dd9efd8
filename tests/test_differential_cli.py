"""Types through the command line: train learns them, measure and differential use them."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from bad_inputs import untrained_model
from napari_bloodcells import cli
from napari_bloodcells.core.base.cell_types import ADAPT_MIN_CELLS, CELL_TYPES
from napari_bloodcells.core.events import CellsMeasured, Notice
from napari_bloodcells.core.jobs import measure_files, measure_job
from napari_bloodcells.core.model.checkpoint import load_checkpoint, save_checkpoint
from napari_bloodcells.core.model.type_model import TypeModel, type_network
from test_cli_bad_input import assert_one_line_error


def main(argv) -> int:
    return cli.main([str(a) for a in argv])


TINY = ["--preset", "seed", "--epochs", "1", "--batch-size", "2", "--device", "cpu"]


def _typed_folder(data, root, make_folder):
    make_folder(data, root)
    rows = [
        f"{n.rsplit('/', 1)[-1]}.png,{k}\n" for n, k in zip(data.names, data.types, strict=True)
    ]
    (root / "types.csv").write_text("image,type\n" + "".join(rows))
    return root


@pytest.fixture
def typed_model(tmp_path):
    torch.manual_seed(0)
    model = untrained_model(native=True)
    model.type_model = TypeModel(type_network(4).eval(), CELL_TYPES[:4], side=32)
    return save_checkpoint(model, tmp_path / "typed.pt")


@pytest.fixture
def labelled(tmp_path, bloodcells):
    """Three Dataset 1 images and their true labels, in two folders."""
    for sub in ("images", "labels"):
        (tmp_path / sub).mkdir()
    for index in range(3):
        Image.fromarray(bloodcells.images[index]).save(tmp_path / "images" / f"{index}.png")
        Image.fromarray(bloodcells.masks[index]).save(tmp_path / "labels" / f"{index}.png")
    return tmp_path


def test_the_type_model_is_kept_in_the_checkpoint(typed_model):
    model = load_checkpoint(typed_model)
    crops = np.random.default_rng(0).random((3, 5, 32, 32), dtype=np.float32)
    again = load_checkpoint(typed_model)
    assert model.type_model is not None and model.type_model.types == CELL_TYPES[:4]
    np.testing.assert_allclose(
        model.type_model.probabilities(crops), again.type_model.probabilities(crops)
    )
    untyped = save_checkpoint(untrained_model(), typed_model.with_name("plain.pt"))
    assert load_checkpoint(untyped).type_model is None


def test_train_learns_types_from_types_csv_and_a_fine_tune_continues_them(
    tmp_path, typed_bloodcells, make_folder, capsys
):
    bloodcells = typed_bloodcells
    # Twelve images with three or more of each of two types: enough to learn them.
    picked = [i for i, k in enumerate(bloodcells.types) if k == "neutrophil"][:6]
    picked += [i for i, k in enumerate(bloodcells.types) if k == "lymphocyte"][:6]
    folder = _typed_folder(bloodcells.subset(picked), tmp_path / "data", make_folder)
    out = tmp_path / "m.pt"
    assert cli.main(["train", "--data", str(folder), *TINY, "--out", str(out)]) == 0
    printed = capsys.readouterr().err
    assert "Learned 2 white-cell types (neutrophil, lymphocyte)" in printed
    model = load_checkpoint(out)
    assert model.type_model.types == ("neutrophil", "lymphocyte")
    assert model.type_model.metrics["train_cells"] >= 8
    # Corrections that call two cells monocytes: the fine-tune adds the type.
    fixes = bloodcells.subset([i for i, k in enumerate(bloodcells.types) if k == "monocyte"][:2])
    corrections = _typed_folder(fixes, tmp_path / "fixes", make_folder)
    tuned = tmp_path / "tuned.pt"
    argv = ["train", "--data", str(corrections), "--init", str(out), "--device", "cpu"]
    assert cli.main([*argv, "--out", str(tuned)]) == 0
    printed = capsys.readouterr().err
    assert "Cell types on your corrections it trained on (fewer than 5" in printed
    assert load_checkpoint(tuned).type_model.types == ("neutrophil", "lymphocyte", "monocyte")


def test_a_model_without_types_learns_them_from_typed_corrections(
    tmp_path, typed_bloodcells, make_folder, capsys
):
    plain = save_checkpoint(untrained_model(native=True), tmp_path / "plain.pt")
    kinds = typed_bloodcells.types
    picked = [i for i, k in enumerate(kinds) if k == "neutrophil"][:2]
    picked += [i for i, k in enumerate(kinds) if k == "eosinophil"][:2]
    folder = _typed_folder(typed_bloodcells.subset(picked), tmp_path / "fixes", make_folder)
    tuned = tmp_path / "tuned.pt"
    argv = ["train", "--data", folder, "--init", plain, "--device", "cpu", "--out", tuned]
    assert main(argv) == 0
    assert "Learned 2 white-cell types from 4 corrected cells" in capsys.readouterr().err
    assert load_checkpoint(tuned).type_model.types == ("neutrophil", "eosinophil")


def test_measure_and_differential_type_the_cells_of_labels(typed_model, labelled, capsys):
    cells = labelled / "cells.csv"
    labels = [str(labelled / "labels" / f"{i}.png") for i in range(3)]
    argv = ["measure", *labels, "--out", cells, "--model", typed_model]
    assert main([*argv, "--images", labelled / "images"]) == 0
    with open(cells, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {"type", "type_probability", "to_verify", "p_neutrophil", "p_eosinophil"} <= set(rows[0])
    assert all(r["type"] in CELL_TYPES for r in rows)
    report = labelled / "report.csv"
    argv = ["differential", *labels, "--model", typed_model, "--images", labelled / "images"]
    assert main([*argv, "--out", report, "--threshold", "0.9"]) == 0
    with open(report, newline="") as fh:
        counted = list(csv.DictReader(fh))
    assert [r["image"] for r in counted][-1] == "total" and len(counted) == 4
    total = counted[-1]
    assert int(total["cells"]) == sum(int(total[k]) for k in CELL_TYPES)
    assert 3 <= int(total["cells"]) <= len(rows)  # fragments are not white cells
    assert int(total["to_verify"]) == int(total["cells"])  # a random network is never sure
    assert "total:" in capsys.readouterr().out
    # The typed cells go beside the report; counting that table again gives the same.
    again = labelled / "again.csv"
    assert main(["differential", labelled / "report_cells.csv", "--out", again]) == 0
    with open(again, newline="") as fh:
        assert list(csv.DictReader(fh))[-1] == total


def test_differential_segments_images_first(typed_model, labelled):
    report = labelled / "report.csv"
    argv = ["differential", labelled / "images", "--model", typed_model, "--out", report]
    assert main(argv) == 0
    assert sorted(p.name for p in (labelled / "report_labels").iterdir()) == [
        "0.png",
        "1.png",
        "2.png",
    ]
    assert report.is_file() and (labelled / "report_cells.csv").is_file()
    with open(report, newline="") as fh:
        images = [row["image"] for row in csv.DictReader(fh)]
    # every image has its row, with or without white cells, then the total
    assert [name.rsplit("/", 1)[-1] for name in images] == ["0.png", "1.png", "2.png", "total"]


def test_differential_bad_inputs_are_one_sentence(typed_model, labelled, tmp_path, capsys):
    out = tmp_path / "r.csv"
    label = labelled / "labels" / "0.png"
    plain = save_checkpoint(untrained_model(), tmp_path / "plain.pt")
    assert_one_line_error(
        capsys,
        ["differential", label, "--model", plain, "--images", labelled / "images", "--out", out],
        "has no cell types",
    )
    empty = labelled / "labels" / "empty.png"
    Image.fromarray(np.zeros((120, 120), np.uint8)).save(empty)
    Image.fromarray(np.zeros((120, 120, 3), np.uint8)).save(labelled / "images" / "empty.png")
    assert_one_line_error(
        capsys,
        [
            "differential",
            empty,
            "--model",
            typed_model,
            "--images",
            labelled / "images",
            "--out",
            out,
        ],
        "hold no cell",
    )
    table = tmp_path / "cells.csv"
    table.write_text("image,cell,type\na.png,1,neutrophil\na.png,2,blast\n")
    assert_one_line_error(capsys, ["differential", table, "--out", out], "names the type 'blast'")
    assert_one_line_error(
        capsys, ["differential", label, "--model", typed_model, "--out", out], "--images"
    )
    assert_one_line_error(capsys, ["differential", label, "--out", out], "--model")
    assert not out.exists()


def test_adapting_to_the_cells_sets_their_batch_statistics_and_keeps_the_model():
    torch.manual_seed(0)
    model = TypeModel(type_network(4).eval(), CELL_TYPES[:4], side=32)
    crops = np.random.default_rng(1).random((70, 5, 32, 32), dtype=np.float32) * 0.3 + 0.5
    before = {k: v.clone() for k, v in model.network.state_dict().items()}
    adapted = model.adapted(crops)
    first = next(m for m in adapted.network.modules() if isinstance(m, torch.nn.BatchNorm2d))
    x = torch.from_numpy(crops)
    with torch.no_grad():  # the statistics of the four turns, as typing sees them
        means = [model.network[0](torch.rot90(x, k, (2, 3))).mean((0, 2, 3)) for k in range(4)]
    np.testing.assert_allclose(first.running_mean, sum(means) / 4, rtol=1e-3, atol=1e-4)
    assert not adapted.network.training and adapted.metrics["adapted_to_cells"] == 70
    for name, value in model.network.state_dict().items():
        assert torch.equal(value, before[name]), name  # the model itself is unchanged
    assert not np.allclose(adapted.probabilities(crops), model.probabilities(crops))
    # Typing a run's cells: their statistics alone from ADAPT_MIN_CELLS cells on; 10 cells
    # move the model's own a fifth of the way there (shrinkage); no cell changes nothing.
    assert model.for_cells(crops).metrics["adapted_weight"] == 1.0
    assert model.for_cells(crops[:0]) is model
    few = model.for_cells(crops[:10])
    alone = model.adapted(crops[:10])
    own = next(m for m in model.network.modules() if isinstance(m, torch.nn.BatchNorm2d))
    mixed, theirs = (
        next(m for m in typer.network.modules() if isinstance(m, torch.nn.BatchNorm2d))
        for typer in (few, alone)
    )
    assert few.metrics["adapted_weight"] == pytest.approx(10 / ADAPT_MIN_CELLS)
    for name in ("running_mean", "running_var"):
        expected = torch.lerp(getattr(own, name), getattr(theirs, name), 10 / ADAPT_MIN_CELLS)
        torch.testing.assert_close(getattr(mixed, name), expected)
    model.metrics["finetune_accuracy"] = [0.5, 1.0]
    assert model.fine_tuned and model.for_cells(crops) is not model


def _rows(path):
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_many_cells_are_typed_with_their_own_batch_statistics_unless_told_not_to(
    typed_model, labelled, capsys, monkeypatch
):
    labels = sorted((labelled / "labels").glob("*.png"))
    out = labelled / "cells.csv"
    argv = ["measure", *labels, "--model", typed_model, "--images", labelled / "images"]
    # A few cells are weighed against the model's own statistics, and the command says so.
    assert main([*argv, "--out", out]) == 0
    assert "% against the model's own" in capsys.readouterr().out
    # Three images hold a few cells: lower the bar instead of making a hundred.
    monkeypatch.setattr("napari_bloodcells.core.base.cell_types.ADAPT_MIN_CELLS", 2)
    assert main([*argv, "--out", out]) == 0
    adapted = _rows(out)
    assert "batch statistics of these images" in capsys.readouterr().out
    assert main([*argv, "--out", out, "--no-adapt"]) == 0
    plain = _rows(out)
    assert "batch statistics" not in capsys.readouterr().out
    assert [r["cell"] for r in adapted] == [r["cell"] for r in plain]
    assert [r["p_neutrophil"] for r in adapted] != [r["p_neutrophil"] for r in plain]
    report = labelled / "report.csv"
    assert (
        main(
            [
                "differential",
                *labels,
                "--images",
                labelled / "images",
                "--model",
                typed_model,
                "--out",
                report,
            ]
        )
        == 0
    )
    assert "batch statistics of these images" in capsys.readouterr().err


def test_differential_again_counts_the_labels_the_user_corrected(typed_model, labelled, capsys):
    report = labelled / "report.csv"
    argv = ["differential", labelled / "images", "--model", typed_model, "--out", report]
    assert main(argv) == 0
    corrected = labelled / "report_labels" / "1.png"
    erased = np.zeros_like(np.asarray(Image.open(corrected)))  # "no white cell here"
    Image.fromarray(erased).save(corrected)
    capsys.readouterr()
    assert main(argv) == 0
    said = " ".join(capsys.readouterr())
    assert "Counting the labels already in" in said and "3 image(s)" in said
    assert not np.asarray(Image.open(corrected)).any()  # not segmented over
    with open(report, newline="") as fh:
        cells = {row["image"].rsplit("/", 1)[-1]: int(row["cells"]) for row in csv.DictReader(fh)}
    assert cells["1.png"] == 0


def test_the_docks_measure_job_types_a_stack_as_measure_types_its_files(typed_model, labelled):
    """One way to type a run: the Segment dock's job and ``measure`` give the same numbers."""
    labels = sorted((labelled / "labels").glob("*.png"))
    out = labelled / "cells.csv"
    files = run_to_end_with_notices(
        measure_files(labels, out, model=typed_model, images=labelled / "images")
    )
    stack = np.stack([np.asarray(Image.open(p)) for p in labels])
    pictures = np.stack([np.asarray(Image.open(labelled / "images" / p.name)) for p in labels])
    events = list(measure_job(stack, pictures, stack=True, name="labels", model=typed_model))
    measured = next(e for e in events if isinstance(e, CellsMeasured))
    said = " ".join(e.message for e in events if isinstance(e, Notice))
    assert "% against the model's own" in said and "--no-adapt" not in said
    assert "% against the model's own" in files
    expected = [float(r["p_neutrophil"]) for r in _rows(out)]
    got = [float(v) for v in measured.table.columns["p_neutrophil"]]
    assert len(got) == len(expected) > 0
    np.testing.assert_allclose(got, expected, atol=1e-3)
    plain = list(measure_job(stack, pictures, stack=True, model=typed_model, adapt=False))
    plain_table = next(e for e in plain if isinstance(e, CellsMeasured)).table
    assert [float(v) for v in plain_table.columns["p_neutrophil"]] != got


def run_to_end_with_notices(job) -> str:
    """Drain a core job; the text of its notices."""
    return " ".join(e.message for e in job if isinstance(e, Notice))


def test_segment_measure_types_its_cells_as_measure_types_the_labels_it_wrote(
    typed_model, labelled, capsys
):
    out = labelled / "segmented"
    table = labelled / "segmented.csv"
    images = sorted((labelled / "images").glob("*.png"))
    assert main(["segment", typed_model, *images, "--out", out, "--measure", table]) == 0
    said = capsys.readouterr()
    assert "batch statistics of these images" in said.out + said.err
    again = labelled / "again.csv"
    written = sorted(out.glob("*.png"))
    argv = ["measure", *written, "--model", typed_model, "--images", labelled / "images"]
    assert main([*argv, "--out", again]) == 0
    first, second = _rows(table), _rows(again)
    assert len(first) == len(second) > 0
    np.testing.assert_allclose(
        [float(r["p_neutrophil"]) for r in first],
        [float(r["p_neutrophil"]) for r in second],
        atol=1e-3,
    )
