"""The correct-and-retrain loop on a simulated new microscope, built from Dataset 1 alone.

The dev split of Dataset 1 (60 images the base model never trained on) plays a
new microscope: every image gets another stain (its colours recomposed from a
different colour basis in optical density, a purple Wright-Giemsa-like look)
and a larger magnification (x2.5 by default). Then, as a user would:

1. segment them zero-shot, at ``--scale auto`` and at the true scale (1/2.5);
2. "correct" 10 of them (their ground truth, resized like the images), and
   fine-tune with ``napari-bloodcells train --data DIR --init BASE --scale S
   --out FT`` and no ``--epochs``, timed as a whole process;
3. score the other 50 with the fine-tuned model at the true scale;
4. score Dataset 1's dev split in its own stain before and after, to measure
   forgetting.

Run, on the CPU of the machine to measure (a model from ``napari-bloodcells
train --out base.pt``):

    python benchmarks/adaptation.py base.pt [--zoom 2.5] [--corrections 10]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.color import combine_stains, hed_from_rgb, separate_stains

from _common import bloodcell_data, hardware
from napari_bloodcells.core.base.metrics import score_labels
from napari_bloodcells.core.data.dataset import SegmentationData, split_indices
from napari_bloodcells.core.inference.magnification import estimate_scale
from napari_bloodcells.core.inference.tiled import segment_image
from napari_bloodcells.core.model.checkpoint import load_checkpoint

# Another colour basis: haematoxylin pulled towards violet, eosin towards magenta,
# as Wright-Giemsa smears look beside Dataset 1's.
NEW_STAIN = np.array(
    [
        [0.55, 0.75, 0.36],  # haematoxylin-like
        [0.20, 0.85, 0.48],  # eosin-like
        [0.36, 0.22, 0.90],  # third
    ]
)


def restain(image: np.ndarray) -> np.ndarray:
    """``image`` with its stain amounts recomposed in :data:`NEW_STAIN`'s colours."""
    stains = separate_stains(image, hed_from_rgb)
    basis = NEW_STAIN / np.linalg.norm(NEW_STAIN, axis=1, keepdims=True)
    rgb = combine_stains(stains, basis)
    return (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)


def magnify(image: np.ndarray, mask: np.ndarray, zoom: float) -> tuple[np.ndarray, np.ndarray]:
    """Image (bilinear) and mask (nearest) enlarged by ``zoom``."""
    height, width = mask.shape
    size = (round(width * zoom), round(height * zoom))
    big = Image.fromarray(image).resize(size, Image.Resampling.BILINEAR)
    labels = Image.fromarray(mask).resize(size, Image.Resampling.NEAREST)
    return np.asarray(big), np.asarray(labels)


def new_microscope(data: SegmentationData, zoom: float) -> SegmentationData:
    """The pairs of ``data`` in the new stain, ``zoom`` times larger."""
    pairs = [
        magnify(restain(image), mask, zoom)
        for image, mask in zip(data.images, data.masks, strict=False)
    ]
    return SegmentationData([p[0] for p in pairs], [p[1] for p in pairs], list(data.names))


def dice(model, data: SegmentationData, scales) -> tuple[float, float]:
    """Pooled (cytoplasm, nucleus) Dice of ``model`` on ``data``, image i at ``scales[i]``."""
    preds = [
        segment_image(model, image, scale=s)[0]
        for image, s in zip(data.images, scales, strict=True)
    ]
    scores = score_labels(preds, data.masks, model.classes.num_classes)
    return scores.dice[1], scores.dice[2]


def write_folder(data: SegmentationData, root: Path) -> Path:
    """``root/images/<i>.png`` and ``root/masks/<i>.png``."""
    for i, (image, mask) in enumerate(zip(data.images, data.masks, strict=True)):
        for sub, array in (("images", image), ("masks", mask)):
            path = root / sub / f"{i:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(path)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("base", type=Path, help="a default-preset model trained on Dataset 1")
    parser.add_argument("--zoom", type=float, default=2.5)
    parser.add_argument("--corrections", type=int, default=10)
    parser.add_argument("--replay", default="auto", help="passed to train --replay")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(hardware())

    data = bloodcell_data()
    _, dev_idx = split_indices(len(data))
    dev = data.subset(dev_idx)
    shifted = new_microscope(dev, args.zoom)
    corrected = shifted.subset(range(args.corrections))
    others = shifted.subset(range(args.corrections, len(shifted)))
    true_scale = round(1 / args.zoom, 4)
    base = load_checkpoint(args.base)

    estimates = [estimate_scale(base, image).scale for image in others.images]
    errors = np.abs(np.asarray(estimates) * args.zoom - 1)
    rows = [
        ("Dataset 1 dev, own stain, base model", *dice(base, dev, [1.0] * len(dev))),
        ("new microscope, zero-shot, --scale auto", *dice(base, others, estimates)),
        (
            f"new microscope, zero-shot, --scale {true_scale:g}",
            *dice(base, others, [true_scale] * len(others)),
        ),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_folder(corrected, Path(tmp) / "corrected")
        tuned = Path(tmp) / "ft.pt"
        command = [
            sys.executable,
            "-m",
            "napari_bloodcells.cli",
            "train",
            "--data",
            str(folder),
            "--init",
            str(args.base),
            "--scale",
            str(true_scale),
            "--replay",
            args.replay,
            "--device",
            args.device,
            "--out",
            str(tuned),
        ]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        seconds = time.perf_counter() - started
        print(done.stdout.strip())
        model = load_checkpoint(tuned)
    rows += [
        (
            f"new microscope, after {args.corrections} corrections, --scale {true_scale:g}",
            *dice(model, others, [true_scale] * len(others)),
        ),
        ("Dataset 1 dev, own stain, after the fine-tune", *dice(model, dev, [1.0] * len(dev))),
    ]
    print(
        f"\n--scale auto on {len(others)} new-microscope images (true scale {true_scale:g}): "
        f"median {np.median(estimates):.3f}, {np.mean(errors <= 0.15):.0%} within 15 %"
    )
    print(f"fine-tune on {args.corrections} corrections, whole process: {seconds:.1f} s")
    print("\n| step | cytoplasm Dice | nucleus Dice |\n|---|---|---|")
    for name, cytoplasm, nucleus in rows:
        print(f"| {name} | {cytoplasm:.3f} | {nucleus:.3f} |")


if __name__ == "__main__":
    main()
