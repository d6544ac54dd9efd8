"""Every bad input of the hardening table, through the command line.

Each case must end with exit status 2 and exactly one line on stderr,
``error: <one sentence>``, with no traceback. The same cases are driven
through the widgets in ``test_gui_bad_input.py``.
"""

from __future__ import annotations

import errno

import pytest

from bad_inputs import OFFLINE_URL, BadInputs, untrained_model
from napari_bloodcells import cli
from napari_bloodcells.core.data import download

TRAIN = ["train", "--preset", "seed", "--epochs", "1", "--batch-size", "2", "--device", "cpu"]


def assert_one_line_error(capsys, argv, fragment: str) -> str:
    """Run the CLI in-process and check its failure is one plain line naming ``fragment``."""
    code = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == cli.EXIT_USER_ERROR, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("case", list(BadInputs.FOLDERS))
def test_bad_training_folders(case, bad_inputs, tmp_path, capsys):
    out = tmp_path / "model.pt"
    argv = [*TRAIN, "--data", bad_inputs.folder(case), "--out", out]
    assert_one_line_error(capsys, argv, BadInputs.FOLDERS[case])
    assert not out.exists()


def test_files_that_are_not_images_are_skipped_with_a_notice(bad_inputs, tmp_path, capsys):
    folder = bad_inputs.good_folder()
    (folder / "images" / "notes.txt").write_text("not an image")
    out = tmp_path / "model.pt"
    assert cli.main([str(a) for a in [*TRAIN, "--data", folder, "--out", out]]) == 0
    err = capsys.readouterr().err
    assert "Skipped 1 file(s)" in err and "notes.txt" in err
    assert out.is_file()


@pytest.mark.parametrize("command", ["segment", "evaluate", "train --init"])
@pytest.mark.parametrize("case", list(BadInputs.CHECKPOINTS))
def test_bad_checkpoints(case, command, bad_inputs, tmp_path, capsys):
    path = bad_inputs.checkpoint(case)
    folder = bad_inputs.good_folder()
    argv = {
        "segment": ["segment", path, folder / "images" / "000.png", "--out", tmp_path / "labels"],
        "evaluate": ["evaluate", path, "--data", folder],
        "train --init": [*TRAIN, "--data", folder, "--init", path, "--out", tmp_path / "m.pt"],
    }[command]
    assert_one_line_error(capsys, argv, BadInputs.CHECKPOINTS[case])


def test_a_model_whose_classes_differ_from_the_data(bad_inputs, tmp_path, capsys):
    model = bad_inputs.two_class_checkpoint()
    folder = bad_inputs.good_folder()
    assert_one_line_error(
        capsys, ["evaluate", model, "--data", folder, "--split", "all"], BadInputs.TWO_CLASSES
    )
    train = [*TRAIN, "--data", folder, "--init", model, "--out", tmp_path / "m.pt"]
    assert_one_line_error(capsys, train, BadInputs.TWO_CLASSES)


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--lr", "-1"], "learning rate (-1.0) must be above 0"),
        (["--lr", "5"], "learning rate (5.0) must be above 0 and at most 1"),
        (["--epochs", "0"], "number of epochs (0) must be 1 to 10000"),
        (["--batch-size", "0"], "batch size (0) must be 1 to 1024"),
        (["--batch-size", "64"], "larger than the training set (7 images)"),
        (["--dev-fraction", "0.05"], "leaves no dev images out of 8; raise it to at least 0.13"),
        (["--dev-fraction", "1"], "dev fraction (1.0) must be between 0 and 1"),
    ],
)
def test_training_settings_out_of_range(flags, fragment, bad_inputs, tmp_path, capsys):
    argv = [*TRAIN, *flags, "--data", bad_inputs.good_folder(), "--out", tmp_path / "m.pt"]
    assert_one_line_error(capsys, argv, fragment)


@pytest.mark.parametrize(
    ("case", "fragment"),
    [
        ("image with no finite values", "holds no finite values"),
        ("truncated image", "Cannot read the image"),
    ],
)
def test_segmenting_an_unreadable_image(case, fragment, bad_inputs, tmp_path, capsys):
    from napari_bloodcells.core.model.checkpoint import save_checkpoint

    model = save_checkpoint(untrained_model(), tmp_path / "model.pt")
    (image,) = (bad_inputs.folder(case) / "images").glob("001.*")
    out = tmp_path / "labels"
    assert_one_line_error(capsys, ["segment", model, image, "--out", out], fragment)
    assert not list(out.glob("*.png"))


def test_offline_with_no_cache(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("NAPARI_BLOODCELLS_DATA_URL", OFFLINE_URL)
    monkeypatch.setenv("NAPARI_BLOODCELLS_CACHE", str(tmp_path / "cache"))
    line = assert_one_line_error(capsys, ["fetch", "--dest", tmp_path / "d"], "Could not download")
    assert "NAPARI_BLOODCELLS_DATA_URL" in line
    assert not (tmp_path / "d" / "bloodcells_seg").exists()


def test_checksum_mismatch(monkeypatch, tmp_path, serve, tampered_mirror, capsys):
    monkeypatch.setenv("NAPARI_BLOODCELLS_DATA_URL", serve(tampered_mirror))
    monkeypatch.setenv("NAPARI_BLOODCELLS_CACHE", str(tmp_path / "cache"))
    train = [*TRAIN, "--out", tmp_path / "m.pt"]  # no --data: the blood-cell dataset
    line = assert_one_line_error(capsys, train, "does not match its known checksum")
    assert "150.png" in line


def test_full_disk_while_downloading(monkeypatch, tmp_path, shared_data, capsys):
    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setenv("NAPARI_BLOODCELLS_DATA_URL", str(shared_data))
    monkeypatch.setenv("NAPARI_BLOODCELLS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(download.shutil, "copyfile", no_space)
    line = assert_one_line_error(capsys, ["fetch", "--dest", tmp_path / "d"], "disk is full")
    assert "NAPARI_BLOODCELLS_CACHE" in line
