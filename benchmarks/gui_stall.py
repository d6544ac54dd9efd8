"""Longest stall of napari's main thread while the Train widget trains.

Opens a viewer, docks the Train widget through the manifest, trains on the
first blood-cell images from layers, and meanwhile ticks a QTimer every 10 ms
on the main thread. A gap between ticks much longer than 10 ms is time the
GUI could not respond: work done on the main thread (the widget's event
handlers, the plot and preview redraws) or the worker holding the GIL.

The widget's handler is timed per event type, and each long gap is put down
to the view update that preceded it (the handler plus the repaint it causes)
or, when no handler ran just before, to the worker thread holding the GIL.

    xvfb-run -a python benchmarks/gui_stall.py
    xvfb-run -a python benchmarks/gui_stall.py --preset default --images 40 --epochs 2
    xvfb-run -a python benchmarks/gui_stall.py --preset default --images 10 --init base.pt
    xvfb-run -a python benchmarks/gui_stall.py --segment 2048 [--model model.pt]

With ``--segment SIZE`` it times the Segment widget instead: a SIZE x SIZE RGB
image (sample cells tiled) is segmented twice, the first run adding the result
layer and the second writing into it, as a re-run does.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np

from _common import bloodcell_data, hardware, median, settle, write_json

TICK_MS = 10


def cause(busy: list[tuple[float, float, str]], start: float, end: float) -> str:
    """The widget handler that ran last before a gap ended, or the worker if none was recent.

    A handler's view updates are painted after it returns, so a gap that
    follows a handler by less than a tick or two is that update's cost; any
    other gap is the worker thread holding the GIL.
    """
    recent = [name for s, e, name in busy if s < end and e > start - 2 * TICK_MS / 1000]
    return recent[-1] if recent else "worker (GIL)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="seed")
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--init", help="fine-tune this checkpoint instead (the fine-tune schedule, with replay)"
    )
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--segment", type=int, help="time segmenting a SIZE x SIZE image instead")
    parser.add_argument("--model", help="checkpoint for --segment (default: an untrained U-Net)")
    args = parser.parse_args()
    if args.segment:
        segment_stalls(args)
        return

    import napari
    from qtpy.QtCore import QEventLoop, QTimer

    from napari_bloodcells._sample_data import pad_stack
    from napari_bloodcells._widgets.data_picker import FROM_LAYERS

    data = bloodcell_data()
    # Some images are smaller than 120 px: pad them into one stack, as the sample does.
    images = pad_stack(data.images[: args.images])
    masks = pad_stack(data.masks[: args.images])

    viewer = napari.Viewer(show=True)
    image = viewer.add_image(images, rgb=True, name="cells")
    labels = viewer.add_labels(masks, name="cells labels")
    _, widget = viewer.window.add_plugin_dock_widget("napari-bloodcells", "Train")
    widget.data.source.value = FROM_LAYERS
    widget.data.image_layer.value = image
    widget.data.labels_layer.value = labels
    settings = widget.settings
    settings.preset.value = args.preset
    settings.epochs.value = args.epochs
    settings.batch_size.value = args.batch_size
    settings.device.value = args.device
    if args.init:
        from pathlib import Path

        from napari_bloodcells._widgets.options import FROM_FILE

        settings.continue_from.value = FROM_FILE
        settings.init_file.value = Path(args.init)

    # Time the widget's main-thread handler for each kind of event.
    handler_ms: dict[str, list[float]] = defaultdict(list)
    handled = widget._on_yielded
    busy: list[tuple[float, float, str]] = []

    def timed(event: object) -> None:
        start = time.perf_counter()
        handled(event)
        end = time.perf_counter()
        handler_ms[type(event).__name__].append((end - start) * 1000)
        busy.append((start, end, type(event).__name__))

    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(TICK_MS)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))

    # Let the window finish its first paints (vispy set-up, docking) before measuring.
    settle(2000)

    loop = QEventLoop()
    widget.run_finished.connect(lambda _result: loop.quit())
    # start() connects the worker's yielded signal to this attribute: time every call.
    widget._on_yielded = timed
    timer.start()
    started = time.perf_counter()
    widget.start()
    loop.exec()
    seconds = time.perf_counter() - started
    timer.stop()

    gaps = np.diff(ticks) * 1000
    worst = [
        {"gap_ms": round(float(gaps[i]), 1), "after": cause(busy, ticks[i], ticks[i + 1])}
        for i in np.argsort(-gaps)[:5]
    ]
    figures = {
        "preset": args.preset,
        "images": args.images,
        "epochs": args.epochs,
        "seconds": round(seconds, 1),
        "ticks": len(ticks),
        "median_gap_ms": round(float(np.median(gaps)), 1),
        "p99_gap_ms": round(float(np.percentile(gaps, 99)), 1),
        "max_gap_ms": round(float(gaps.max()), 1),
        "worst_gaps": worst,
        "handler_max_ms": {k: round(max(v), 1) for k, v in handler_ms.items()},
        "handler_median_ms": {k: round(median(v), 2) for k, v in handler_ms.items()},
    }
    result = widget.result
    print(hardware())
    print(
        f"trained {args.images} images x {args.epochs} epochs ({args.preset}) in {seconds:.1f} s;"
        f" best epoch {result.best_epoch if result else '-'}"
    )
    print(
        f"main-thread tick gaps ({TICK_MS} ms timer, {len(ticks)} ticks): "
        f"median {figures['median_gap_ms']} ms, p99 {figures['p99_gap_ms']} ms, "
        f"max {figures['max_gap_ms']} ms"
    )
    print("  longest: " + ", ".join(f"{w['gap_ms']} ms after {w['after']}" for w in worst))
    for name, values in sorted(handler_ms.items()):
        print(
            f"  handler {name:18s} n={len(values):4d}  median {median(values):7.2f} ms  "
            f"max {max(values):7.1f} ms"
        )
    write_json(figures, args.json)
    viewer.close()


def gaps_after(ticks: list[float]) -> np.ndarray:
    return np.diff(ticks) * 1000 if len(ticks) > 1 else np.zeros(1)


def segment_stalls(args: argparse.Namespace) -> None:
    """Longest main-thread gap while the Segment widget segments and writes a large result."""
    import napari
    from qtpy.QtCore import QTimer

    from _common import wait_for
    from napari_bloodcells._widgets.state import state_of
    from napari_bloodcells.core.base.classes import BLOODCELL_CLASSES
    from napari_bloodcells.core.model.checkpoint import load_checkpoint
    from napari_bloodcells.core.model.networks import NOTEBOOK_UNET, ModelSpec, build_model
    from napari_bloodcells.core.model.trained import TrainedModel
    from napari_bloodcells.core.training.config import preset

    if args.model:
        model = load_checkpoint(args.model)
    else:
        spec = ModelSpec(NOTEBOOK_UNET, "", 3)
        model = TrainedModel(
            build_model(spec).eval(), spec, BLOODCELL_CLASSES, preset("default").preprocessing()
        )
    data = bloodcell_data()
    size = args.segment
    cell = min(min(i.shape[:2]) for i in data.images[:64])
    tiles = [i[:cell, :cell] for i in data.images[:64]]
    per_row = -(-size // cell)
    rows = [
        np.concatenate([tiles[(r * per_row + c) % 64] for c in range(per_row)], 1)
        for r in range(per_row)
    ]
    picture = np.ascontiguousarray(np.concatenate(rows, 0)[:size, :size])

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1066, 651)
    layer = viewer.add_image(picture, rgb=True, name="slide")
    _, widget = viewer.window.add_plugin_dock_widget("napari-bloodcells", "Segment")
    state_of(viewer).current.set(model, "benchmark model")
    widget.image_layer.value = layer
    settle(2000)
    print(hardware())
    figures: dict[str, dict[str, float]] = {}
    for run in ("first run (adds the layer)", "second run (writes into it)"):
        ticks: list[float] = []
        timer = QTimer()
        timer.setInterval(TICK_MS)
        timer.timeout.connect(lambda ticks=ticks: ticks.append(time.perf_counter()))
        clicked: list[float] = []

        def click(clicked: list[float] = clicked) -> None:
            begun = time.perf_counter()
            widget.segment()
            clicked.append(time.perf_counter() - begun)

        timer.start()
        started = time.perf_counter()
        wait_for(widget.run_finished, click, busy=lambda: widget.running)
        ended = time.perf_counter()
        settle(500)  # the paints that follow the write
        timer.stop()
        # The click's own handler (input copy, the result layer when one is added) happens
        # before any tick; the gaps after it are the run and the write at its end.
        after = [t for t in ticks if t > started + clicked[0]]
        gaps = gaps_after(after)
        end_gaps = gaps_after([t for t in ticks if t > ended - 1.0])
        figures[run] = {
            "seconds": round(ended - started, 1),
            "click_ms": round(clicked[0] * 1000, 1),
            "max_gap_ms": round(float(gaps.max()), 1),
            "max_gap_at_end_ms": round(float(end_gaps.max()), 1),
        }
        print(
            f"segment {size}x{size}, {run}: {ended - started:.1f} s; click handler "
            f"{clicked[0] * 1000:.1f} ms; then main-thread gaps median {np.median(gaps):.1f} ms, "
            f"max {gaps.max():.1f} ms (around the write at the end: {end_gaps.max():.1f} ms)"
        )
    write_json(figures, args.json)
    viewer.close()


if __name__ == "__main__":
    main()
