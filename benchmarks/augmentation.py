"""Which augmentation parts make a Dataset-1 model robust to stain and magnification?

Trains the default preset once per variant (the current augmentation, then
each optional part of ``core.augment.Augmentation`` added alone, then all of
them) and scores each model on:

- Dataset 1's dev split in its own stain (accuracy must not drop);
- the same images in another stain and 2.5 times larger, segmented at the
  true scale (``benchmarks/adaptation.py`` builds them);
- ``estimate_scale`` on dev images enlarged 1.5, 2 and 2.5 times: the share
  estimated within 15 % of 1/zoom.

Each run takes minutes on a GPU and hours on a laptop CPU:

    python benchmarks/augmentation.py [--variants baseline,all] [--save-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from _common import bloodcell_data, hardware
from adaptation import dice, magnify, new_microscope
from napari_bloodcells.core.data.dataset import split_indices
from napari_bloodcells.core.events import run_to_end
from napari_bloodcells.core.inference.magnification import estimate_scale
from napari_bloodcells.core.model.checkpoint import save_checkpoint
from napari_bloodcells.core.training.config import preset
from napari_bloodcells.core.training.loop import train

OFF = {"stain_jitter": 0.0, "hue_jitter": 0.0, "grayscale": 0.0, "blur": 0.0, "zoom_jitter": 1.0}
"""The optional parts switched off: the augmentation of the first version."""
PARTS = {
    "stain": {"stain_jitter": 0.15},
    "hue": {"hue_jitter": 0.04},
    "grayscale": {"grayscale": 0.1},
    "blur": {"blur": 0.2},
    "zoom": {"zoom_jitter": 1.4},
}
VARIANTS = {
    "baseline": OFF,
    **{f"+{name}": {**OFF, **part} for name, part in PARTS.items()},
    "all": {k: v for part in PARTS.values() for k, v in part.items()},
    "default": {},  # the default preset as it is: the parts that helped
}


def scale_accuracy(model, images, zooms=(1.5, 2.0, 2.5)) -> dict[str, float]:
    """Share of images whose estimated factor is within 15 % of 1/zoom, per zoom."""
    shares = {}
    for z in zooms:
        hits = []
        for image in images:
            big, _ = magnify(image, np.zeros(image.shape[:2], np.uint8), z)
            hits.append(abs(estimate_scale(model, big).scale * z - 1) <= 0.15)
        shares[f"x{z:g}"] = float(np.mean(hits))
    return shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--save-dir", type=Path, help="keep each variant's model here")
    parser.add_argument("--json", type=Path, help="write the table as JSON")
    args = parser.parse_args()
    print(hardware())
    data = bloodcell_data()
    _, dev_idx = split_indices(len(data))
    dev = data.subset(dev_idx)
    shifted = new_microscope(dev, 2.5)
    rows = {}
    for name in args.variants.split(","):
        config = preset("default").with_changes(
            device=args.device, data_source="bloodcells", **VARIANTS[name]
        )
        started = time.perf_counter()
        model = run_to_end(train(config, data)).model
        seconds = time.perf_counter() - started
        row = {
            "seconds": round(seconds, 1),
            "dev": dice(model, dev, [1.0] * len(dev)),
            "new_stain_x2.5": dice(model, shifted, [0.4] * len(shifted)),
            "scale_within_15%": scale_accuracy(model, dev.images),
        }
        rows[name] = row
        print(name, json.dumps(row), flush=True)
        if args.save_dir:
            args.save_dir.mkdir(parents=True, exist_ok=True)
            save_checkpoint(model, args.save_dir / f"{name.lstrip('+')}.pt")
    print(
        "\n| variant | Dataset 1 dev cytoplasm | nucleus | new stain x2.5 cytoplasm | nucleus ",
        end="",
    )
    print("| scale within 15 % at x1.5/x2/x2.5 |\n|---|---|---|---|---|---|")
    for name, row in rows.items():
        shares = "/".join(f"{v:.0%}" for v in row["scale_within_15%"].values())
        print(
            f"| {name} | {row['dev'][0]:.3f} | {row['dev'][1]:.3f} | "
            f"{row['new_stain_x2.5'][0]:.3f} | {row['new_stain_x2.5'][1]:.3f} | {shares} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
