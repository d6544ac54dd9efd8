"""The command line: outputs, exit codes and one-line error messages."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from napari_bloodcells import cli
from napari_bloodcells.core.model.checkpoint import load_checkpoint

TINY = ["--preset", "seed", "--epochs", "1", "--batch-size", "2", "--device", "cpu"]


@pytest.fixture
def small_folder(tmp_path, few_cells, make_folder):
    return make_folder(few_cells, tmp_path / "data")


@pytest.fixture
def trained(tmp_path_factory, few_cells, make_folder):
    """A model trained once through the CLI."""
    root = tmp_path_factory.mktemp("cli")
    make_folder(few_cells, root / "data")
    out = root / "model.pt"
    assert cli.main(["train", "--data", str(root / "data"), *TINY, "--out", str(out)]) == 0
    return out


def test_train_writes_model_metrics_and_curves(trained, capsys):
    assert trained.is_file()
    metrics = json.loads(trained.with_suffix(".metrics.json").read_text())
    assert metrics["epochs"][0]["epoch"] == 1
    assert len(metrics["epochs"][0]["dice"]) == 3
    png = trained.with_suffix(".curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model = load_checkpoint(trained)
    assert model.spec.arch == "notebook-unet"
    assert model.config["epochs"] == 1


def test_train_reports_device_and_epochs(small_folder, tmp_path, capsys):
    out = tmp_path / "m.pt"
    argv = ["train", "--data", str(small_folder), *TINY, "--smear", "0.3", "--out", str(out)]
    assert cli.main(argv) == 0
    assert load_checkpoint(out).config["smear"] == 0.3
    printed = capsys.readouterr().out
    assert "Training on cpu" in printed
    assert "epoch 1/1" in printed
    assert "dev Dice" in printed
    assert f"Saved the model of epoch 1 to {out}" in printed


def test_fine_tune_from_a_model(trained, small_folder, tmp_path):
    out = tmp_path / "tuned.pt"
    code = cli.main(
        ["train", "--data", str(small_folder), *TINY, "--init", str(trained), "--out", str(out)]
    )
    assert code == 0
    assert load_checkpoint(out).spec == load_checkpoint(trained).spec


def test_evaluate_prints_per_class_scores(trained, small_folder, capsys):
    assert cli.main(["evaluate", str(trained), "--data", str(small_folder), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["dice"]) == {"background", "cytoplasm", "nucleus"}
    assert report["images"] == 2
    assert cli.main(["evaluate", str(trained), "--data", str(small_folder), "--split", "all"]) == 0
    table = capsys.readouterr().out
    assert "12 images" in table
    assert "nucleus" in table


def test_segment_writes_labels_of_each_inputs_size(trained, tmp_path, few_cells):
    inputs = []
    for i, shape in enumerate([(120, 120, 3), (97, 61), (300, 260, 4)]):
        rng = np.random.default_rng(i)
        path = tmp_path / f"in{i}.png"
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(path)
        inputs.append((path, shape))
    out = tmp_path / "labels"
    args = ["segment", str(trained), *[str(p) for p, _ in inputs], "--out", str(out)]
    assert cli.main(args) == 0  # a seed-preset model: it takes no --scale (test_adapt.py)
    for path, shape in inputs:
        labels = np.asarray(Image.open(out / f"{path.stem}.png"))
        assert labels.shape == shape[:2]
        assert labels.max() <= 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["segment", "{missing}", "{image}", "--out", "o"], "does not exist"),
        (["segment", "{corrupt}", "{image}", "--out", "o"], "damaged"),
        (["segment", "{corrupt}", "x.png", "--out", "o"], "No such image file: x.png"),
        (["train", "--arch", "Unetish", "--data", "{empty}", "--out", "m.pt"], "Unknown arch"),
        (["train", "--data", "{empty}", "--out", "{a_file}/m.pt"], "Cannot write to the folder"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(tmp_path, capsys, argv, message):
    (tmp_path / "empty" / "images").mkdir(parents=True)
    (tmp_path / "empty" / "masks").mkdir()
    (tmp_path / "corrupt.pt").write_bytes(b"PK\x03\x04garbage")
    (tmp_path / "a_file").write_text("a file where a folder should be")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "cell.png")
    paths = {
        "image": tmp_path / "cell.png",
        "a_file": tmp_path / "a_file",
        "missing": tmp_path / "missing.pt",
        "corrupt": tmp_path / "corrupt.pt",
        "empty": tmp_path / "empty",
    }
    argv = [a.format(**paths) for a in argv]
    assert cli.main(argv) == cli.EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert message in err
    assert err.strip().count("\n") == 0
    assert "Traceback" not in err


def test_console_script_runs_and_reports_usage():
    done = subprocess.run(
        [sys.executable, "-m", "napari_bloodcells.cli", "train"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "--out" in done.stderr
