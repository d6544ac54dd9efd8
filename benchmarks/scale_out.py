"""One process against dask.distributed workers: the same labels, and the time each takes.

Writes a folder of 20 images (sample cells tiled to SIZE x SIZE), then segments
it three ways with the command line:

1. one process;
2. ``--workers N`` (a LocalCluster);
3. ``--scheduler`` of a cluster started by hand: ``dask scheduler`` and
   ``dask worker`` processes on 127.0.0.1, as one would on a cluster.

It prints each wall time and checks that every label image is identical to
the single-process one.

    python benchmarks/scale_out.py --model model.pt [--images 20] [--size 512] [--workers 2]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from _common import bloodcell_data, hardware


def make_folder(folder: Path, count: int, size: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cells = [c[:96, :96] for c in bloodcell_data().images if min(c.shape[:2]) >= 96]
    per_side = -(-size // 96)
    for i in range(count):
        pick = [cells[(i * 7 + k) % len(cells)] for k in range(per_side * per_side)]
        rows = [np.concatenate(pick[r * per_side : (r + 1) * per_side], 1) for r in range(per_side)]
        Image.fromarray(np.concatenate(rows)[:size, :size]).save(folder / f"field{i:02d}.png")
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(command: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/scale-out-bench"))
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    folder = make_folder(args.workdir / "fields", args.images, args.size)
    base = [sys.executable, "-m", "napari_bloodcells", "segment", args.model, str(folder)]
    print(hardware())
    times = {"one process": run([*base, "--out", str(args.workdir / "one")])}
    times[f"--workers {args.workers}"] = run(
        [*base, "--out", str(args.workdir / "workers"), "--workers", str(args.workers)]
    )
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = str(Path(sys.executable).with_name("dask"))
    scheduler = subprocess.Popen(
        [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    worker = subprocess.Popen(
        [
            dask,
            "worker",
            address,
            "--nworkers",
            str(args.workers),
            "--nthreads",
            "1",
            "--no-dashboard",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(8)  # the scheduler and workers start
        times["--scheduler (dask scheduler + dask worker)"] = run(
            [*base, "--out", str(args.workdir / "scheduler"), "--scheduler", address]
        )
    finally:
        worker.terminate()
        scheduler.terminate()
        worker.wait(30)
        scheduler.wait(30)
    identical = all(
        np.array_equal(
            np.asarray(Image.open(args.workdir / "one" / p.name)),
            np.asarray(Image.open(args.workdir / run_dir / p.name)),
        )
        for run_dir in ("workers", "scheduler")
        for p in sorted(folder.glob("*.png"))
    )
    megapixels = args.images * args.size * args.size / 1e6
    for name, seconds in times.items():
        print(f"{name}: {seconds:.1f} s for {args.images} images ({megapixels / seconds:.2f} MP/s)")
    print(f"labels identical to one process: {identical}")


if __name__ == "__main__":
    main()
