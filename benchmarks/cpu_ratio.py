"""The default ``train`` against the notebook's 20-epoch loop: whole processes, side by side.

The speed issue's CPU target: on any x86-64 CPU (AVX2 included) the default
``napari-bloodcells train`` reaches dev Dice >= 0.95 nucleus and >= 0.93
cytoplasm within the wall time of the notebook's own 20-epoch loop on the same
machine. Both run here as separate processes, one after the other (alternating
when ``--rounds`` > 1), and the model is scored with ``evaluate --split dev``.

    python benchmarks/cpu_ratio.py [--rounds 1]

The reference is :class:`speed.ReferenceLoop`: the notebook's dataset that reads
and resizes the files on every access, ``DataLoader(num_workers=2)``, its U-Net
with torch's ``nn.ELU``, Adam 1e-4, cross-entropy, batch 8, a dev pass per epoch.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import SHARED, bloodcell_data, hardware, median

HERE = Path(__file__).resolve().parent


def reference(epochs: int) -> None:
    """The notebook's loop, ``epochs`` epochs, in this process."""
    from napari_bloodcells.core.data.bloodcell_dataset import DATASET_FOLDER
    from napari_bloodcells.core.data.download import cache_dir
    from speed import ReferenceLoop

    loop = ReferenceLoop(cache_dir() / DATASET_FOLDER)
    for _ in range(epochs):
        loop.epoch()


def timed(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    run = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - started, run.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=20, help="the notebook's epochs")
    parser.add_argument("--out", type=Path, default=Path("/tmp/cpu-ratio"))
    parser.add_argument("--reference-only", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reference_only:
        bloodcell_data()
        reference(args.reference_only)
        return
    print(hardware(), flush=True)
    bloodcell_data()  # fetched once, outside the timings
    env = dict(os.environ)
    if SHARED.is_dir():
        env.setdefault("NAPARI_BLOODCELLS_DATA_URL", str(SHARED))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    args.out.mkdir(parents=True, exist_ok=True)
    model = args.out / "default.pt"
    notebook_times, our_times = [], []
    for _ in range(args.rounds):
        seconds, _ = timed(
            [sys.executable, str(HERE / "cpu_ratio.py"), "--reference-only", str(args.epochs)], env
        )
        notebook_times.append(seconds)
        print(f"notebook loop, {args.epochs} epochs: {seconds:.1f} s", flush=True)
        seconds, out = timed(
            [sys.executable, "-m", "napari_bloodcells", "train", "--out", str(model)], env
        )
        our_times.append(seconds)
        chosen = [line for line in out.splitlines() if line.startswith(("Training on", "Chosen"))]
        print("\n".join(chosen))
        print(f"napari-bloodcells train: {seconds:.1f} s", flush=True)
    _, scores = timed(
        [sys.executable, "-m", "napari_bloodcells", "evaluate", str(model), "--split", "dev"], env
    )
    print(scores)
    ratio = median(our_times) / median(notebook_times)
    print(f"ratio (train / notebook loop, medians of {args.rounds}): {ratio:.2f}")


if __name__ == "__main__":
    main()
