"""Bad input and faults: clear errors, and nothing the user made is lost."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from PIL import Image

from napari_bloodcells import cli
from napari_bloodcells.core.data import download
from napari_bloodcells.core.data.dataset import SegmentationData, load_folder
from napari_bloodcells.core.events import Notice, run_to_end
from napari_bloodcells.core.model.checkpoint import load_checkpoint
from napari_bloodcells.core.training.loop import train
from napari_bloodcells.errors import DataError, DownloadError


def _pairs(root, n=3, size=(16, 16)):
    for i in range(n):
        for sub in ("images", "masks"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((*size, 3), np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray(np.ones(size, np.uint8)).save(root / "masks" / f"{i}.png")


def test_non_image_files_are_skipped_with_a_notice(tmp_path, capsys):
    _pairs(tmp_path)
    (tmp_path / "images" / "notes.txt").write_text("hello")
    data = load_folder(tmp_path)
    assert len(data) == 3
    assert data.notices == [
        f"Skipped 1 file(s) in {tmp_path / 'images'} that are not images: notes.txt."
    ]


def test_truncated_image_names_the_file(tmp_path):
    _pairs(tmp_path)
    path = tmp_path / "images" / "1.png"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DataError, match=r"Cannot read the image .*1\.png"):
        load_folder(tmp_path)


def test_all_background_labels_are_refused(tiny_config):
    data = SegmentationData(
        [np.zeros((32, 32, 3), np.uint8)] * 6, [np.zeros((32, 32), np.uint8)] * 6
    )
    with pytest.raises(DataError, match="all background"):
        next(train(tiny_config, data))


def test_model_classes_must_cover_the_data(few_cells, tiny_config):
    model = run_to_end(train(tiny_config, few_cells)).model
    two_class = few_cells.subset(range(len(few_cells)))
    two_class.masks[0] = np.full_like(two_class.masks[0], 3)
    with pytest.raises(DataError, match=r"only classes 0 to 2"):
        next(train(tiny_config, two_class, init=model))


def test_full_disk_during_download_is_a_clear_error(tmp_path, shared_data, monkeypatch):
    def no_space(src, dst, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(download.shutil, "copyfile", no_space)
    with pytest.raises(DownloadError, match="disk is full"):
        download.fetch_raw(source=str(shared_data), cache=tmp_path)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()], "no partial file is kept"


def test_memory_error_during_training_halves_the_batch(few_cells, tiny_config, monkeypatch):
    from napari_bloodcells.core.model.networks import NotebookUNet

    original = NotebookUNet.forward

    def picky(self, x):
        if self.training and x.shape[0] > 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(self, x)

    monkeypatch.setattr(NotebookUNet, "forward", picky)
    events = list(train(tiny_config.with_changes(batch_size=4), few_cells))
    notices = [e.message for e in events if isinstance(e, Notice)]
    assert notices == [
        "Ran out of memory; continuing with batch size 2.",
        "Ran out of memory; continuing with batch size 1.",
    ]
    assert events[-1].result.best_epoch == 1


def _kill_after(proc: subprocess.Popen, seen, delay: float = 0.0) -> None:
    """SIGKILL ``proc`` once a line of its output satisfies ``seen`` (and ``delay`` passed)."""
    try:
        for line in proc.stdout:
            if seen(line):
                break
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()


_SAVE_FOREVER = textwrap.dedent(
    """
    import sys, torch
    from napari_bloodcells.core.base.classes import BLOODCELL_CLASSES
    from napari_bloodcells.core.model.checkpoint import save_checkpoint
    from napari_bloodcells.core.model.networks import ModelSpec, build_model
    from napari_bloodcells.core.model.preprocessing import Preprocessing
    from napari_bloodcells.core.model.trained import TrainedModel
    spec = ModelSpec("Unet", "resnet34")
    i = 0
    while True:
        torch.manual_seed(i)
        model = TrainedModel(build_model(spec), spec, BLOODCELL_CLASSES, Preprocessing(),
                             metrics={"round": i})
        save_checkpoint(model, sys.argv[1])
        print(i, flush=True)
        i += 1
    """
)


def test_killing_a_process_mid_save_leaves_a_valid_checkpoint(tmp_path):
    path = tmp_path / "model.pt"
    proc = subprocess.Popen(
        [sys.executable, "-c", _SAVE_FOREVER, str(path)], stdout=subprocess.PIPE, text=True
    )
    # After the first complete save, wait a little: a resnet34 U-Net takes a while to
    # save, so the kill lands inside the next one.
    _kill_after(proc, lambda line: line.strip() == "0", delay=0.15)
    model = load_checkpoint(path)
    assert model.spec.encoder == "resnet34"
    assert model.metrics["round"] >= 0


def test_killing_training_mid_epoch_keeps_the_best_model(tmp_path, few_cells, make_folder):
    root = make_folder(few_cells, tmp_path / "data")
    out = tmp_path / "model.pt"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    argv = [
        sys.executable,
        "-m",
        "napari_bloodcells.cli",
        "train",
        "--data",
        str(root),
        "--preset",
        "seed",
        "--epochs",
        "50",
        "--batch-size",
        "2",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    _kill_after(proc, lambda line: line.startswith("epoch 2/"))
    model = load_checkpoint(out)
    assert model.metrics["best_epoch"] in (1, 2)


def test_debug_flag_shows_the_traceback(tmp_path):
    # The inputs are checked before the model is read: the missing image is named first.
    with pytest.raises(DataError, match=r"No such image file: x\.png"):
        cli.main(["--debug", "segment", str(tmp_path / "nope.pt"), "x.png", "--out", "o"])
