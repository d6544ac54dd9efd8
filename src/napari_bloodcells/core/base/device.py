"""Choosing where and in which precision to compute."""

from __future__ import annotations

import contextlib
import functools
import os
from contextlib import AbstractContextManager

import torch

from napari_bloodcells.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16")
"""Autocast precisions a user can ask for; "auto" picks by the hardware."""

FAST_BF16_ENV = "NAPARI_BLOODCELLS_FAST_BF16"
"""Set to ``1`` to treat the CPU as one with fast bf16 (AVX512-BF16 or AMX), ``0`` as one without.

Everything that "auto" decides by the CPU then follows: bf16 autocast in training
and inference, and the network the default preset trains. The test suite runs
once with ``1`` so that a failure that only a bf16 CPU would show appears on any
machine; a user whose CPU is misdetected can set it too.
"""


def resolve_device(name: str = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"mps"`` into a device.

    ``"auto"`` picks CUDA, then Apple's MPS, then the CPU.

    Raises
    ------
    ConfigError
        If the named device is not available on this machine.
    """
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"Unknown device {name!r}; use auto, cpu, cuda or mps.") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("No CUDA GPU is available here; choose device 'auto' or 'cpu'.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("Apple MPS is not available here; choose device 'auto' or 'cpu'.")
    return device


def fast_bf16(device: torch.device) -> bool:
    """Whether bfloat16 autocast is natively fast on ``device``.

    On CPUs it needs AVX512-BF16 or AMX; elsewhere bf16 is emulated and slower
    than float32. ``NAPARI_BLOODCELLS_FAST_BF16`` (``1`` or ``0``) overrides the
    CPU's answer (see :data:`FAST_BF16_ENV`).

    Raises
    ------
    ConfigError
        If the environment variable holds anything but ``1`` or ``0``.
    """
    if device.type == "cpu" and (forced := cpu_bf16_override()) is not None:
        return forced
    return _fast_bf16(device.type, device.index)


def cpu_bf16_override() -> bool | None:
    """What ``NAPARI_BLOODCELLS_FAST_BF16`` says about the CPU, or ``None`` when it is unset.

    Raises
    ------
    ConfigError
        If it holds anything but ``1`` or ``0``.
    """
    value = os.environ.get(FAST_BF16_ENV, "").strip()
    if not value:
        return None
    if value not in {"0", "1"}:
        raise ConfigError(
            f"{FAST_BF16_ENV} is {value!r}; set it to 1 (treat the CPU as having fast bf16), "
            "0 (as not), or unset it."
        )
    return value == "1"


@functools.cache
def _fast_bf16(kind: str, index: int | None) -> bool:
    # Asked once per device: CUDA's answer takes about 10 ms, and every inference
    # call asks.
    if kind == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if kind == "cpu":
        return _cpu_has("_is_avx512_bf16_supported") or _cpu_has("_is_amx_tile_supported")
    return False


def _cpu_has(probe: str) -> bool:
    """Ask one of torch's private CPU-feature probes; a torch without it means "no".

    torch offers no public test for AVX512-BF16 or AMX. A release that renames
    or drops these probes must fall back to float32, not stop the plugin.
    """
    check = getattr(torch.cpu, probe, None)
    if check is None:
        return False
    try:
        return bool(check())
    except Exception:  # a probe that exists but fails tells us nothing either
        return False


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` ("auto", "fp32" or "bf16"), or ``None`` for fp32."""
    if precision == "fp32":
        return None
    if precision == "bf16" or (precision == "auto" and fast_bf16(device)):
        return torch.bfloat16
    if precision != "auto":
        raise ConfigError(f"Unknown precision {precision!r}; use {', '.join(PRECISIONS)}.")
    return None


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager[object]:
    """Autocast to ``dtype`` on ``device``'s type, or nothing when ``dtype`` is ``None`` (fp32).

    Parameters
    ----------
    device : torch.device
        Where the forward pass runs.
    dtype : torch.dtype or None
        From :func:`autocast_dtype`.
    """
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def release_memory(device: torch.device) -> None:
    """Return cached accelerator memory to the system between runs."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


def is_memory_error(exc: BaseException) -> bool:
    """Whether ``exc`` says the device ran out of memory (then a smaller batch may fit)."""
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError)
        and any(
            s in str(exc).lower()
            for s in ("out of memory", "can't allocate memory", "not enough memory")
        )
    )
