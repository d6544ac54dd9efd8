"""torchrun with 2 gloo processes on the CPU: DDP training, rank 0 saves, world_size recorded."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from napari_bloodcells import cli


def test_torchrun_two_processes_train_a_checkpoint_that_segment_loads(
    tmp_path, make_folder, few_cells
):
    folder = make_folder(few_cells, tmp_path / "data")
    out = tmp_path / "ddp.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            "29533",
            "-m",
            "napari_bloodcells",
            "train",
            "--device",
            "cpu",
            "--epochs",
            "1",
            "--preset",
            "seed",
            "--batch-size",
            "4",
            "--data",
            str(folder),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("Training on cpu x 2 processes") == 1  # rank 0 alone prints
    assert done.stdout.count("epoch 1/1") == 1
    payload = torch.load(out, weights_only=True, map_location="cpu")
    assert payload["world_size"] == 2 and payload["metrics"]["world_size"] == 2
    image = folder / "images" / f"{few_cells.names[0]}.png"
    assert cli.main(["segment", str(out), str(image), "--out", str(tmp_path / "labels")]) == 0
    assert (tmp_path / "labels" / image.name).is_file()
