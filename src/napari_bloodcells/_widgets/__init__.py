"""The napari front end: thin widgets over :mod:`napari_bloodcells.core`.

``train_widget`` and ``segment_widget`` hold the two dock widgets; they share a
session (current model, training set, training lock) through :mod:`.session`.
Work runs in napari thread workers driving the Qt-free generators of
:mod:`.jobs`; :mod:`.plots` and :mod:`.preview` are the training views and
:mod:`.layers` reads and writes napari layers.
"""

from __future__ import annotations

import sys


def _keep_triton_out_after_llvm() -> bool:
    """Stop torch from importing triton once Mesa's LLVM is loaded; return True if it did.

    napari imports these widgets after its OpenGL canvas exists. With Mesa's
    LLVM-based drivers (llvmpipe under Xvfb or remote desktops, radeonsi)
    ``libLLVM`` is then already mapped, and loading triton's own LLVM on top
    of it crashes the process. torch imports triton lazily (``torch._dynamo``,
    pulled in by torchvision through segmentation-models-pytorch) only to
    offer ``torch.compile``, which this plugin does not use; marking triton
    as unavailable makes torch skip it. Nothing changes when triton is already
    imported or no LLVM is loaded.
    """
    if "triton" in sys.modules or not sys.platform.startswith("linux"):
        return False
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            llvm_loaded = any("libLLVM" in line for line in maps)
    except OSError:
        return False
    if llvm_loaded:
        sys.modules["triton"] = None  # type: ignore[assignment]  # "import triton" fails
    return llvm_loaded


_keep_triton_out_after_llvm()
