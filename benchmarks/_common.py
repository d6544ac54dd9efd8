"""Shared by the benchmark and screenshot scripts: the dataset, medians, Qt event-loop waits."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from napari_bloodcells.core.jobs import load_training_data

if TYPE_CHECKING:
    from collections.abc import Callable

    from napari_bloodcells.core.data.dataset import SegmentationData

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "segmentation_WBC"


def bloodcell_data() -> SegmentationData:
    """All 300 pairs; reads ../shared when present so no download is needed."""
    if SHARED.is_dir():
        os.environ.setdefault("NAPARI_BLOODCELLS_DATA_URL", str(SHARED))
    return load_training_data(None)


def median(values: list[float]) -> float:
    """The median of ``values``."""
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def write_json(figures: dict, path: str | None) -> None:
    """Write ``figures`` to ``path`` as JSON, if a path was given."""
    if path:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(figures, fh, indent=2)


def settle(ms: int = 300) -> None:
    """Run the Qt event loop for ``ms`` milliseconds, so layouts and paints complete."""
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def wait_for(
    signal,
    start: Callable[[], object],
    busy: Callable[[], bool] = lambda: True,
    timeout_s: float = 600.0,
):
    """Call ``start()`` and run the Qt event loop until ``signal`` fires; return its argument.

    ``busy()`` says whether the job started; a refused start returns ``None`` at once.
    """
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    got: list[object] = []

    def done(value: object) -> None:
        got.append(value)
        loop.quit()

    signal.connect(done)
    QTimer.singleShot(int(timeout_s * 1000), loop.quit)
    try:
        start()
        if not got and busy():
            loop.exec()
    finally:
        signal.disconnect(done)
    return got[0] if got else None


def hardware() -> str:
    """The machine in one line: CPU model, its vector extensions, torch's CPU capability, GPU."""
    import platform

    import torch

    model, flags = platform.processor() or "unknown CPU", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name") and model in {"", "unknown CPU", "x86_64"}:
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    vector = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in flags] or ["?"]
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (
        f"hardware: {model}, {torch.get_num_threads()} threads, {'/'.join(vector)}, "
        f"torch {torch.__version__} CPU capability {torch.backends.cpu.get_cpu_capability()}, "
        f"{gpu}"
    )
