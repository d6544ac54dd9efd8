"""Tiled segmentation throughput and peak memory on large RGB images.

Each case runs in a fresh subprocess so that its peak resident memory
(``ru_maxrss``) is its own. The model is the default preset's network
(U-Net, resnet18) with random weights: speed and memory do not depend on the
weights. "extra MiB" is the peak minus the memory held before segmenting
(model, input image, output labels allocated up front), i.e. what tiling adds.

    python benchmarks/inference.py
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _case(size: int, tile_batch: int, precision: str, decoder: str = "full") -> dict:
    import numpy as np
    import torch

    from napari_bloodcells.core.checkpoint import TrainedModel
    from napari_bloodcells.core.classes import BLOODCELL_CLASSES
    from napari_bloodcells.core.config import CPU_DECODER, preset
    from napari_bloodcells.core.infer import TileSettings, segment_image
    from napari_bloodcells.core.models import build_model

    config = preset("default")
    if decoder == "light":  # what the preset trains on a CPU without fast bf16
        config = config.with_changes(decoder_channels=CPU_DECODER)
    spec = config.spec(3)
    torch.manual_seed(0)
    model = TrainedModel(build_model(spec).eval(), spec, BLOODCELL_CLASSES, config.preprocessing())
    image = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)
    # Warm up kernels on a small image so the timing is steady-state.
    segment_image(model, image[:512, :512], precision=precision)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    labels, _ = segment_image(
        model, image, tiles=TileSettings(384, 64, tile_batch), precision=precision
    )
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert labels.shape == (size, size)
    return {
        "size": size,
        "tile_batch": tile_batch,
        "precision": precision,
        "decoder": decoder,
        "seconds": seconds,
        "mp_per_s": size * size / 1e6 / seconds,
        "peak_mib": peak,
        "extra_mib": peak - before,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default="2048,4096")
    parser.add_argument("--tile-batches", default="1,4")
    parser.add_argument("--precisions", default="fp32,auto")
    parser.add_argument("--decoders", default="full", help="full, light (the CPU-tuned Unet)")
    args = parser.parse_args()
    if args.case:
        size, batch, precision, decoder = args.case.split(":")
        print(json.dumps(_case(int(size), int(batch), precision, decoder)))
        return
    rows = []
    cases = [
        (size, batch, precision, decoder)
        for decoder in args.decoders.split(",")
        for precision in args.precisions.split(",")
        for batch in map(int, args.tile_batches.split(","))
        for size in map(int, args.sizes.split(","))
    ]
    for size, batch, precision, decoder in cases:
        case = f"{size}:{batch}:{precision}:{decoder}"
        out = (
            subprocess.run(
                [sys.executable, __file__, "--case", case],
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        rows.append(json.loads(out))
        r = rows[-1]
        print(
            f"{r['size']}x{r['size']} batch {batch} {precision} {decoder} decoder: "
            f"{r['mp_per_s']:.2f} MP/s, extra {r['extra_mib']:.0f} MiB",
            flush=True,
        )
    print()
    print(
        "| image | decoder | tile batch | precision | seconds | MP/s | peak RSS MiB | extra MiB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['size']}x{r['size']} | {r['decoder']} | {r['tile_batch']} | {r['precision']} | "
            f"{r['seconds']:.1f} | {r['mp_per_s']:.2f} | {r['peak_mib']:.0f} | "
            f"{r['extra_mib']:.0f} |"
        )


if __name__ == "__main__":
    main()
