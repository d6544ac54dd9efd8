"""Peak memory of napari while the Segment widget segments a whole-slide-sized dask layer.

The slide of ``large_image.py`` (20000 x 20000 RGB by default, written chunk by
chunk) gets a pyramid of 2x-downsampled levels, also written chunk by chunk, and
is opened in napari as a multiscale dask layer, the way a whole-slide reader
(napari-ome-zarr, for example) opens one. The Segment widget then segments it
block by block into a zarr-backed Labels layer while the peak resident memory of
the napari process is recorded. Run it under Xvfb:

    xvfb-run -a python benchmarks/napari_large.py --model model.pt [--size 20000] [--scale 0.25]
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np

from _common import hardware, settle, wait_for
from large_image import make_slide


def pyramid(path: Path, levels: int = 5) -> list:
    """Dask arrays of the slide and of ``levels - 1`` halvings, written to zarr once."""
    import dask.array as da

    arrays = [da.from_zarr(str(path))]
    for level in range(1, levels):
        target = path.with_name(f"{path.stem}-level{level}.zarr")
        if not target.exists():
            half = da.coarsen(np.mean, arrays[-1], {0: 2, 1: 2}, trim_excess=True)
            half.astype("uint8").rechunk((1024, 1024, 3)).to_zarr(str(target))
        arrays.append(da.from_zarr(str(target)))
    return arrays


def peak_gib() -> float:
    """Peak resident memory so far, in GiB (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--size", type=int, default=20000)
    parser.add_argument("--scale", type=float, default=0.25)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/large-image-bench"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    slide = args.workdir / f"slide{args.size}.zarr"
    if not slide.exists():
        make_slide(slide, args.size)
    levels = pyramid(slide)

    import napari

    from napari_bloodcells._widgets.state import state_of
    from napari_bloodcells.core.model.checkpoint import load_checkpoint

    print(hardware(), flush=True)
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1066, 651)
    layer = viewer.add_image(levels, multiscale=True, rgb=True, name="slide")
    _, widget = viewer.window.add_plugin_dock_widget("napari-bloodcells", "Segment")
    state_of(viewer).current.set(load_checkpoint(args.model), "benchmark model")
    widget.image_layer.value = layer
    widget.scale.value = args.scale
    settle(3000)
    before = peak_gib()
    started = time.perf_counter()
    wait_for(widget.run_finished, widget.segment, busy=lambda: widget.running, timeout_s=3600)
    seconds = time.perf_counter() - started
    settle(1000)
    print(
        f"napari, Segment widget, {args.size}x{args.size} RGB multiscale dask layer, scale "
        f"{args.scale}: {seconds:.0f} s; peak resident memory {peak_gib():.2f} GiB = "
        f"{peak_gib() * 2**30 / 1e9:.2f} GB ({before:.2f} GiB before segmenting)"
    )
    labels = widget.last_layer
    print(f"result: {labels.name!r}, multiscale {labels.multiscale}, {labels.data[0].shape}")
    viewer.close()


if __name__ == "__main__":
    main()
