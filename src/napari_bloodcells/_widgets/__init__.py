"""The napari front end: thin widgets over :mod:`napari_bloodcells.core`.

``train_widget`` and ``segment_widget`` hold the two dock widgets. They share
one lifecycle (:mod:`.job_widget`), run the core's jobs in napari thread
workers (:mod:`.workers`) and share per-viewer state (:mod:`.state`);
:mod:`.plots` and :mod:`.preview` are the training views and :mod:`.layers`
reads and writes napari layers.
"""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator


def _llvm_loaded() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            return any("libLLVM" in line for line in maps)
    except OSError:
        return False


@contextlib.contextmanager
def _without_triton_after_llvm() -> Iterator[None]:
    """Hide triton while this plugin's own imports run, if Mesa's LLVM is loaded.

    napari imports these widgets after its OpenGL canvas exists. With Mesa's
    LLVM-based drivers (llvmpipe under Xvfb or remote desktops, radeonsi)
    ``libLLVM`` is then already mapped, and loading triton's own LLVM on top
    of it crashes the process. torchvision, which segmentation-models-pytorch
    imports, imports ``torch._dynamo``, which probes for triton by importing
    it. Hiding triton for the length of that import makes torch note "no
    triton" (so it never loads it later either) without crashing. The entry
    is removed again at once, so any other code in the process that imports
    triton itself is not affected by this plugin.
    """
    if "triton" in sys.modules or not _llvm_loaded():
        yield
        return
    sys.modules["triton"] = None  # type: ignore[assignment]  # "import triton" fails
    try:
        yield
    finally:
        if sys.modules.get("triton", False) is None:
            del sys.modules["triton"]


with _without_triton_after_llvm():
    import segmentation_models_pytorch  # noqa: F401  # the import that probes for triton
