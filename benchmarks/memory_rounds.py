"""Memory over many train-and-segment rounds in one napari session.

Opens one viewer, docks the Train and Segment widgets through the manifest,
adds the first blood-cell images as an RGB stack with their labels, then
repeats: train a fresh model on the layers (``seed`` preset by default, one
epoch), and segment the whole stack with it. After each round it records the process's
resident memory (``VmRSS`` from ``/proc/self/status``, after ``gc.collect()``)
and, with CUDA, ``torch.cuda.memory_allocated()``. A leak shows up as growth
from round to round; round 1 is the warm-up (imports, first allocations).

The Segment widget reuses its unpainted ``<image> segmentation`` layer, as it
does for a user who segments again without painting, so the layer count stays
the same; the table shows it.

    xvfb-run -a python benchmarks/memory_rounds.py
    xvfb-run -a python benchmarks/memory_rounds.py --rounds 20 --images 16 --json mem.json
    xvfb-run -a python benchmarks/memory_rounds.py --preset default --images 32
"""

from __future__ import annotations

import argparse
import gc
import time

import numpy as np

from _common import bloodcell_data, settle, wait_for, write_json


def rss_mib() -> float:
    """Resident set size of this process, in MiB (Linux)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def cuda_mib() -> float | None:
    """Memory held by torch tensors on the current CUDA device, in MiB, or None."""
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.memory_allocated() / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--preset", default="seed", help="seed (fast) or default (resnet18)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()

    import napari
    from napari.utils.notifications import (
        NotificationSeverity,
        notification_manager,
        show_console_notification,
    )

    from napari_bloodcells._sample_data import pad_stack
    from napari_bloodcells._widgets.data_picker import FROM_LAYERS

    data = bloodcell_data()
    images = pad_stack(data.images[: args.images])
    masks = pad_stack(data.masks[: args.images])

    viewer = napari.Viewer(show=True)
    _, train = viewer.window.add_plugin_dock_widget("napari-bloodcells", "Train")
    _, segment = viewer.window.add_plugin_dock_widget("napari-bloodcells", "Segment")
    image = viewer.add_image(images, rgb=True, name="cells")
    labels = viewer.add_labels(masks, name="cells labels")
    train.data.source.value = FROM_LAYERS
    train.data.image_layer.value = image
    train.data.labels_layer.value = labels
    settings = train.settings
    settings.preset.value = args.preset
    settings.epochs.value = 1
    settings.batch_size.value = args.batch_size
    settings.device.value = args.device
    segment.image_layer.value = image

    # The table is the output: keep napari's notifications off the console.
    notification_manager.notification_ready.disconnect(show_console_notification)
    failures: list[str] = []
    notification_manager.notification_ready.connect(
        lambda n: failures.append(n.message) if n.severity >= NotificationSeverity.ERROR else None
    )
    settle(1000)

    rows = []
    print(
        f"{args.rounds} rounds: train {args.images} images {images.shape[1:3]} "
        f"({args.preset}, 1 epoch, batch {args.batch_size}), then segment the stack"
    )
    print(f"{'round':>5} {'RSS MiB':>9} {'change':>8} {'CUDA MiB':>9} {'layers':>6} {'s':>6}")
    previous = None
    for number in range(1, args.rounds + 1):
        started = time.perf_counter()
        result = wait_for(train.run_finished, train.start, lambda: train.running)
        if result is None or failures:
            raise SystemExit(f"round {number}: training failed: {failures}")
        layer = wait_for(segment.run_finished, segment.segment, lambda: segment.running)
        if layer is None or failures:
            raise SystemExit(f"round {number}: segmentation failed: {failures}")
        seconds = time.perf_counter() - started
        del result, layer
        gc.collect()
        rss = rss_mib()
        cuda = cuda_mib()
        change = "" if previous is None else f"{rss - previous:+8.1f}"
        cuda_text = "-" if cuda is None else f"{cuda:.1f}"
        print(
            f"{number:5d} {rss:9.1f} {change:>8} {cuda_text:>9} {len(viewer.layers):6d} "
            f"{seconds:6.1f}",
            flush=True,
        )
        rows.append(
            {
                "round": number,
                "rss_mib": round(rss, 1),
                "cuda_mib": None if cuda is None else round(cuda, 1),
                "layers": len(viewer.layers),
                "seconds": round(seconds, 1),
            }
        )
        previous = rss

    figures: dict[str, object] = {"rounds": rows, "images": args.images}
    if len(rows) >= 4:
        rss = [r["rss_mib"] for r in rows]
        first, last = rss[1], rss[-1]
        growth = 100 * (last - first) / first
        figures["rss_growth_pct_round2_to_last"] = round(growth, 1)
        # The allocator and oneDNN's kernel cache settle over the first rounds; a leak
        # shows as growth that goes on, so fit the second half of the rounds.
        half = len(rows) // 2
        slope = np.polyfit(range(half, len(rows)), rss[half:], 1)[0]
        figures["rss_slope_second_half_mib_per_round"] = round(float(slope), 2)
        figures["rss_second_half_mib"] = [min(rss[half:]), max(rss[half:])]
        print(
            f"RSS round 2 -> round {rows[-1]['round']}: {first:.1f} -> {last:.1f} MiB "
            f"({growth:+.1f} %); rounds {half + 1}-{len(rows)}: {min(rss[half:]):.1f} to "
            f"{max(rss[half:]):.1f} MiB, fitted slope {slope:+.2f} MiB per round"
        )
        if rows[1]["cuda_mib"] is not None:
            print(
                f"CUDA allocated round 2 -> round {rows[-1]['round']}: "
                f"{rows[1]['cuda_mib']} -> {rows[-1]['cuda_mib']} MiB"
            )
    write_json(figures, args.json)
    viewer.close()


if __name__ == "__main__":
    main()
