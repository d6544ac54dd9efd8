"""Do 12- and 16-bit versions of real smear fields segment like their 8-bit originals?

Each BCCD field is written as a 12-bit and a 16-bit RGB TIFF (values scaled to the full depth),
read back as the plugin reads files, and segmented; the figures are whether the 8-bit pixels come
back and the share of labels equal to the original's.

    python benchmarks/deep_images.py --model default.pt [--fields 5]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import tifffile

from _common import SHARED, hardware
from napari_bloodcells.core.data.dataset import read_image_noting
from napari_bloodcells.core.inference.tiled import segment_image
from napari_bloodcells.core.jobs import load_model, read_image

FIELDS = SHARED.parent / "BCCD-trainval" / "JPEGImages"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--fields", type=int, default=5)
    args = parser.parse_args()
    model = load_model(Path(args.model))
    print(hardware())
    agreement: dict[int, list[float]] = {12: [], 16: []}
    with tempfile.TemporaryDirectory() as folder:
        for path in sorted(FIELDS.glob("*.jpg"))[: args.fields]:
            rgb = read_image(path)
            original = np.asarray(segment_image(model, rgb)[0])
            for bits in agreement:
                deep = np.round(rgb.astype(np.float64) * (2**bits - 1) / 255).astype(np.uint16)
                tifffile.imwrite(Path(folder) / "deep.tif", deep, photometric="rgb")
                pixels, notice = read_image_noting(Path(folder) / "deep.tif")
                labels = np.asarray(segment_image(model, pixels)[0])
                agreement[bits].append(float(np.mean(labels == original)))
                print(
                    f"{path.name} {bits}-bit: 8-bit pixels back {np.array_equal(pixels, rgb)}, "
                    f"labels equal {agreement[bits][-1]:.4%} ({notice})"
                )
    for bits, shares in agreement.items():
        print(f"{bits}-bit: labels equal to the 8-bit original's, lowest {min(shares):.4%}")


if __name__ == "__main__":
    main()
