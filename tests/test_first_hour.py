"""Surprises a new user met in the first hour: file permissions, black labels, 16-bit TIFF, help."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import tifffile
from PIL import Image

from bad_inputs import untrained_model
from napari_bloodcells import cli
from napari_bloodcells.core.data.dataset import read_mask
from napari_bloodcells.core.model.checkpoint import save_checkpoint
from napari_bloodcells.errors import DataError


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield 0o027
    os.umask(old)


def test_saved_files_follow_the_umask(tmp_path, umask_027):
    path = save_checkpoint(untrained_model(), tmp_path / "m.pt")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640, "0666 less the umask, not 0600"


def test_label_pngs_are_pictures_that_still_read_as_classes(tmp_path):
    model = save_checkpoint(untrained_model(), tmp_path / "m.pt")
    Image.fromarray(np.full((40, 40, 3), 180, np.uint8)).save(tmp_path / "cell.png")
    out = tmp_path / "labels"
    assert cli.main(["segment", str(model), str(tmp_path / "cell.png"), "--out", str(out)]) == 0
    written = Image.open(out / "cell.png")
    assert written.mode == "P"
    palette = written.getpalette()
    assert palette[3:9] == [0, 255, 0, 0, 0, 255], "cytoplasm lime, nucleus blue"
    assert set(np.unique(read_mask(out / "cell.png"))) <= {0, 1, 2}


def test_a_16_bit_rgb_tiff_is_segmented_like_its_8_bit_version_with_one_notice(tmp_path, capsys):
    model = save_checkpoint(untrained_model(), tmp_path / "m.pt")
    shallow = np.random.default_rng(0).integers(0, 256, (32, 32, 3)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "shallow.tif", shallow, photometric="rgb")
    tifffile.imwrite(tmp_path / "deep.tif", shallow.astype(np.uint16) * 257, photometric="rgb")
    argv = ["segment", str(model), str(tmp_path / "shallow.tif"), str(tmp_path / "deep.tif")]
    assert cli.main([*argv, "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr()
    assert "16-bit" in out.out + out.err and "shallow.tif" not in out.err
    np.testing.assert_array_equal(
        read_mask(tmp_path / "o" / "deep.png"), read_mask(tmp_path / "o" / "shallow.png")
    )


def test_clashing_output_names_are_refused_before_any_work(tmp_path, capsys):
    model = save_checkpoint(untrained_model(), tmp_path / "m.pt")
    for folder, suffix in (("a", ".png"), ("b", ".tif")):
        (tmp_path / folder).mkdir()
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / folder / f"x{suffix}")
    argv = ["segment", str(model), str(tmp_path / "a" / "x.png"), str(tmp_path / "b" / "x.tif")]
    assert cli.main([*argv, "--out", str(tmp_path / "o")]) == cli.EXIT_USER_ERROR
    assert "would both be written to" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_help_shows_defaults_and_the_offline_variables_and_debug_goes_anywhere(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    shown = capsys.readouterr().out
    assert "NAPARI_BLOODCELLS_DATA_URL" in shown and "(default: default)" in shown
    with pytest.raises(DataError):
        cli.main(["segment", "missing.pt", "x.png", "--out", "o", "--debug"])


def test_evaluate_scores_the_reference_split_and_says_so(tmp_path, capsys, data_env):
    model = untrained_model()
    model.config = {"dev_fraction": 0.5, "split_seed": 1}
    path = save_checkpoint(model, tmp_path / "m.pt")
    assert cli.main(["evaluate", str(path), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "the reference split: 0.2 of the pairs, seed 909" in out and "60 images" in out
    assert cli.main(["evaluate", str(path), "--device", "cpu", "--model-split"]) == 0
    assert "the model's own split: 0.5 of the pairs, seed 1), 150 images" in capsys.readouterr().out
