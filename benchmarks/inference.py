"""Tiled segmentation throughput and peak memory on large RGB images.

Each case runs in a fresh subprocess so that its peak resident memory
(``ru_maxrss``) is its own, and times ``--repeats`` calls after a warm-up on a
small crop (which also builds the inference copy with folded batch norms);
the median is reported. Networks have random weights with non-trivial batch-norm
statistics: speed and memory do not depend on the weights.

- ``preset``: the default preset's network (Unet, resnet18), what a GPU or a CPU
  with fast bf16 trains;
- ``cpu``: what the preset trains on a CPU without fast bf16
  (:data:`~napari_bloodcells.core.config.CPU_NETWORK`).

"extra MiB" is the peak minus the memory held before segmenting (model, input
image, output labels), i.e. what tiling adds.

    python benchmarks/inference.py [--sizes 4096] [--networks preset,cpu]
        [--tiles 640:64:1,384:64:4] [--precisions fp32]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

from _common import hardware


def _case(size: int, network: str, tiles: str, precision: str, repeats: int) -> dict:
    import numpy as np
    import torch

    from napari_bloodcells.core.base.classes import BLOODCELL_CLASSES
    from napari_bloodcells.core.inference.tiled import TileSettings, segment_image
    from napari_bloodcells.core.model.networks import build_model
    from napari_bloodcells.core.model.trained import TrainedModel
    from napari_bloodcells.core.training.config import CPU_NETWORK, preset

    config = preset("default")
    if network == "cpu":
        encoder, decoder = CPU_NETWORK
        config = config.with_changes(encoder=encoder, decoder_channels=decoder)
    spec = config.spec(3)
    torch.manual_seed(0)
    net = build_model(spec).eval()
    for module in net.modules():  # trained statistics, so that nothing folds away trivially
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_var.uniform_(0.5, 2.0)
    model = TrainedModel(net, spec, BLOODCELL_CLASSES, config.preprocessing())
    settings = TileSettings(*map(int, tiles.split(":")))
    image = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)
    segment_image(model, image[:512, :512], tiles=settings, precision=precision)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        labels, _ = segment_image(model, image, tiles=settings, precision=precision)
        seconds.append(time.perf_counter() - started)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert labels.shape == (size, size)
    median = statistics.median(seconds)
    return {
        "size": size,
        "network": network,
        "tiles": tiles,
        "precision": precision,
        "seconds": median,
        "runs": seconds,
        "mp_per_s": size * size / 1e6 / median,
        "peak_mib": peak,
        "extra_mib": peak - before,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default="4096")
    parser.add_argument("--networks", default="preset,cpu", help="preset, cpu")
    parser.add_argument(
        "--tiles", default="640:64:1", help="size:overlap:batch, comma-separated (default: ours)"
    )
    parser.add_argument("--precisions", default="fp32", help="fp32, auto (bf16 where native)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.case:
        size, network, tiles, precision, repeats = args.case.split("/")
        print(json.dumps(_case(int(size), network, tiles, precision, int(repeats))))
        return
    print(hardware(), flush=True)
    rows = []
    cases = [
        (size, network, tiles, precision)
        for network in args.networks.split(",")
        for precision in args.precisions.split(",")
        for tiles in args.tiles.split(",")
        for size in map(int, args.sizes.split(","))
    ]
    for size, network, tiles, precision in cases:
        case = f"{size}/{network}/{tiles}/{precision}/{args.repeats}"
        out = subprocess.run(
            [sys.executable, __file__, "--case", case], capture_output=True, text=True, check=True
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(r)
        runs = ", ".join(f"{s:.1f}" for s in r["runs"])
        print(
            f"{size}x{size} {network} network, tiles {tiles}, {precision}: "
            f"{r['mp_per_s']:.2f} MP/s (median of {runs} s), extra {r['extra_mib']:.0f} MiB",
            flush=True,
        )
    print()
    print("| image | network | tiles (size:overlap:batch) | precision | median s | MP/s | peak MiB")
    print("|---|---|---|---|---|---|---")
    for r in rows:
        print(
            f"| {r['size']}x{r['size']} | {r['network']} | {r['tiles']} | {r['precision']} | "
            f"{r['seconds']:.1f} | {r['mp_per_s']:.2f} | {r['peak_mib']:.0f}"
        )


if __name__ == "__main__":
    main()
