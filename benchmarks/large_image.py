"""Peak memory of segmenting a whole-slide-sized zarr (20000 x 20000 RGB by default).

Writes a synthetic slide of tiled sample cells to a zarr store chunk by chunk
(never whole in memory), then runs ``napari-bloodcells segment`` on it under
``/usr/bin/time -v`` and prints the peak resident memory and the throughput.

    python benchmarks/large_image.py --model model.pt [--size 20000] [--scale 0.25] [--workers 2]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from _common import bloodcell_data, hardware


def make_slide(path: Path, size: int, chunk: int = 1024) -> Path:
    import zarr

    cells = [c[:96, :96] for c in bloodcell_data().images[:100] if min(c.shape[:2]) >= 96]
    tile = np.concatenate(
        [np.concatenate(cells[r * 10 : (r + 1) * 10], axis=1) for r in range(len(cells) // 10)]
    )
    array = zarr.create_array(
        str(path), shape=(size, size, 3), chunks=(chunk, chunk, 3), dtype="uint8", overwrite=True
    )
    reps = -(-chunk // tile.shape[0]) + 1, -(-chunk // tile.shape[1]) + 1, 1
    block = np.tile(tile, reps)
    for top in range(0, size, chunk):
        for left in range(0, size, chunk):
            h, w = min(chunk, size - top), min(chunk, size - left)
            array[top : top + h, left : left + w] = block[:h, :w]
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--size", type=int, default=20000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/large-image-bench"))
    parser.add_argument("--workers", type=int)
    parser.add_argument(
        "--scale", default="1", help="passed to segment (0.25: cells 4x larger than trained on)"
    )
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    slide = args.workdir / f"slide{args.size}.zarr"
    if not slide.exists():
        make_slide(slide, args.size)
    out = args.workdir / "out"
    command = [
        "/usr/bin/time",
        "-v",
        sys.executable,
        "-m",
        "napari_bloodcells",
        "segment",
        args.model,
        str(slide),
        "--out",
        str(out),
        "--overwrite",
        "--scale",
        args.scale,
    ]
    if args.workers:
        command += ["--workers", str(args.workers)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    print(hardware())
    if done.returncode != 0 or peak is None:
        print(done.stderr[-3000:])
        raise SystemExit(1)
    megapixels = args.size * args.size / 1e6
    print(
        f"segment {args.size}x{args.size} RGB zarr ({megapixels:.0f} MP, scale {args.scale}): "
        f"{seconds:.0f} s, "
        f"{megapixels / seconds:.2f} MP/s, peak resident memory "
        f"{int(peak.group(1)) / 2**20:.2f} GiB = {int(peak.group(1)) * 1024 / 1e9:.2f} GB "
        "(main process"
        f"{'; workers not counted' if args.workers else ''})"
    )


if __name__ == "__main__":
    main()
