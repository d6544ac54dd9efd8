"""Model exchange: export a checkpoint to bioimage.io, test it, and compare its weights.

For each checkpoint given:

1. ``export_package`` writes the bioimage.io package (timed);
2. ``bioimageio.core.test_model`` checks it, per weight format (the same as
   ``bioimageio test m.zip``);
3. the package loaded back segments Dataset 1's dev split (the reference
   split) exactly as the checkpoint does;
4. the package's ONNX weights under ONNX Runtime, driven by the plugin's own
   inference, give the plugin's labels (share of identical pixels).

    python benchmarks/exchange.py default.pt seed.pt tuned.pt [--json out.json]
    python benchmarks/exchange.py default.pt --speed 2048     # also torch vs ONNX Runtime MP/s
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from _common import bloodcell_data, hardware, median, write_json


def dev_images():
    from napari_bloodcells.core.data.dataset import split_indices
    from napari_bloodcells.core.training.config import TrainConfig

    data = bloodcell_data()
    reference = TrainConfig()
    _, dev = split_indices(len(data), reference.dev_fraction, reference.split_seed)
    return [data.images[i] for i in dev]


def identical_share(a_model, b_model, images) -> float:
    from napari_bloodcells.core.inference.tiled import segment_image

    same = total = 0
    for image in images:
        a, b = segment_image(a_model, image)[0], segment_image(b_model, image)[0]
        same += int((a == b).sum())
        total += a.size
    return same / total


def megapixels_per_second(model, size: int, runs: int = 3) -> float:
    from napari_bloodcells.core.inference.tiled import segment_image

    rng = np.random.default_rng(0)
    cells = bloodcell_data().images
    side = min(min(c.shape[:2]) for c in cells[:64])
    tiles = [cells[int(i)][:side, :side] for i in rng.integers(0, 64, (size // side + 1) ** 2)]
    per_row = size // side + 1
    rows = [np.concatenate(tiles[r * per_row : (r + 1) * per_row], 1) for r in range(per_row)]
    picture = np.ascontiguousarray(np.concatenate(rows, 0)[:size, :size])
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        segment_image(model, picture)
        seconds.append(time.perf_counter() - start)
    return size * size / 1e6 / median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, nargs="+")
    parser.add_argument("--speed", type=int, help="also time segmenting a SIZE x SIZE image")
    parser.add_argument("--json")
    args = parser.parse_args()

    from bioimageio.core import test_model

    from napari_bloodcells.core.exchange.export import export_package
    from napari_bloodcells.core.exchange.onnx_network import load_onnx_model
    from napari_bloodcells.core.jobs import load_model
    from napari_bloodcells.core.model.checkpoint import load_checkpoint

    print(hardware())
    images = dev_images()
    figures = {}
    for path in args.models:
        model = load_checkpoint(path)
        with tempfile.TemporaryDirectory() as folder:
            package = Path(folder) / f"{path.stem}.zip"
            start = time.perf_counter()
            export_package(model, package, images[0])
            export_s = time.perf_counter() - start
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                summary = test_model(package)
                gc.collect()
            formats = {}
            for detail in summary.details:
                for name in ("pytorch_state_dict", "torchscript", "onnx"):
                    if f"({name})" in detail.name or f"Run {name} " in detail.name:
                        ok = formats.get(name, True) and detail.status == "passed"
                        formats[name] = ok
            loaded = load_model(package, "cpu")
            same_pt = identical_share(model, loaded, images)
            same_onnx = identical_share(model, load_onnx_model(package), images)
            row = {
                "arch": f"{model.spec.arch}/{model.spec.encoder}",
                "export_s": round(export_s, 1),
                "package_mb": round(package.stat().st_size / 1e6, 1),
                "bioimageio_test": summary.status,
                "formats_passed": formats,
                "dev_images": len(images),
                "package_vs_checkpoint_identical": same_pt,
                "onnx_runtime_vs_plugin_identical": same_onnx,
            }
            if args.speed:
                row["torch_mp_s"] = round(megapixels_per_second(model, args.speed), 2)
                onnx_model = load_onnx_model(package)
                row["onnx_runtime_mp_s"] = round(megapixels_per_second(onnx_model, args.speed), 2)
        figures[path.name] = row
        passed = ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in formats.items())
        print(
            f"{path.name} ({row['arch']}): exported in {row['export_s']} s, "
            f"{row['package_mb']} MB; bioimageio test {summary.status} "
            f"({passed}); "
            f"dev split ({len(images)} images): package = checkpoint on "
            f"{100 * same_pt:.3f} % of pixels, ONNX Runtime = plugin on {100 * same_onnx:.3f} %"
        )
        if args.speed:
            print(
                f"  segment {args.speed}x{args.speed}: torch {row['torch_mp_s']} MP/s, "
                f"ONNX Runtime {row['onnx_runtime_mp_s']} MP/s"
            )
    write_json({"hardware": hardware(), "models": figures}, args.json)


if __name__ == "__main__":
    main()
