"""Batch norms folded into the convolutions before them, for inference.

In eval mode a batch norm is a per-channel affine map, so it can be merged
into the weights and bias of the convolution that feeds it, and the network
then skips a pass over every activation. On 2 AVX2 cores the batch norms of
the CPU-tuned network take about an eighth of its inference time
(docs/benchmarks.md). ONNX Runtime and TensorRT do the same when they load a
model; this does it for the plugin's own PyTorch inference, whatever the smp
architecture or encoder.

Which convolution feeds which norm is read from one traced forward pass, not
from the module names, which differ between encoders. The folded copy is then
checked against the network on a random input and is only used if it agrees,
so an unusual wiring (a convolution's output also used elsewhere) costs speed,
never correctness. The copy is kept per network until its weights change, or
until :func:`forget` says they did.
"""

from __future__ import annotations

import copy
import weakref
from typing import TYPE_CHECKING, cast

import torch
from torch import nn

if TYPE_CHECKING:
    from collections.abc import Iterator

_TOLERANCE = 1e-3
"""Largest difference of the folded network's logits, relative to their range."""

_cache: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[int, ...], nn.Module]] = (
    weakref.WeakKeyDictionary()
)


def folded(network: nn.Module, multiple: int = 32) -> nn.Module:
    """An eval-mode copy of ``network`` with its batch norms folded, or ``network`` itself.

    Parameters
    ----------
    network : torch.nn.Module
        An image network in eval mode, taking ``(N, C, H, W)`` inputs.
    multiple : int
        A side length the network accepts; the check runs on an input twice it.

    Returns
    -------
    torch.nn.Module
        The folded copy, on the network's device and memory format, when there
        was something to fold and the copy agrees with the network; otherwise
        ``network``. The copy is cached until any weight of ``network`` changes.
    """
    version = _version(network)
    cached = _cache.get(network)
    if cached is not None and cached[0] == version:
        return cached[1]
    result = _fold_checked(network, multiple)
    _cache[network] = (version, result)
    return result


def forget(network: nn.Module) -> None:
    """Drop ``network``'s folded copy, whose weights were changed unseen.

    Fused optimisers (``torch.optim.AdamW(fused=True)``) update the weights
    in place without bumping their version counters, so :func:`folded` cannot
    tell that its copy is stale; whatever steps such an optimiser calls this.
    """
    _cache.pop(network, None)


def _version(network: nn.Module) -> tuple[int, ...]:
    """Changes whenever a parameter or buffer is replaced or modified in place."""
    tensors = [*network.parameters(), *network.buffers()]
    return tuple(v for t in tensors for v in (id(t), t.data_ptr(), t._version))


def _fold_checked(network: nn.Module, multiple: int) -> nn.Module:
    first = next(network.parameters(), None)
    channels = _input_channels(network)
    if network.training or first is None or channels is None:
        return network
    if not any(_foldable(m) for m in network.modules()):
        return network
    side = 2 * multiple
    # A fixed, varied input: the global random state is the caller's.
    probe = torch.arange(channels * side * side, device=first.device, dtype=first.dtype)
    probe = (probe * 0.37).sin().reshape(1, channels, side, side)
    probe = probe.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        pairs, expected = _conv_norm_pairs(network, probe)
        if not pairs:
            return network
        result = copy.deepcopy(network)
        _fold_pairs(result, pairs)
        got = result(probe)
    scale = float(expected.abs().max()) or 1.0
    if got.shape != expected.shape or float((got - expected).abs().max()) > _TOLERANCE * scale:
        return network
    return result.eval()


def _foldable(module: nn.Module) -> bool:
    """A batch norm with running statistics, plain or timm's ``BatchNormAct2d``."""
    if not isinstance(module, nn.BatchNorm2d) or module.running_var is None:
        return False
    return type(module) is nn.BatchNorm2d or _is_norm_act(module)


def _is_norm_act(norm: nn.BatchNorm2d) -> bool:
    """timm's ``BatchNormAct2d``: the norm, then a dropout and an activation module."""
    drop, act = getattr(norm, "drop", None), getattr(norm, "act", None)
    return (
        type(norm).__name__ == "BatchNormAct2d"
        and isinstance(drop, nn.Module)
        and isinstance(act, nn.Module)
    )


def _replacement(norm: nn.BatchNorm2d) -> nn.Module:
    """What stands in for a foldable ``norm``: nothing, or the dropout and activation it applies."""
    if _is_norm_act(norm):
        return nn.Sequential(cast("nn.Module", norm.drop), cast("nn.Module", norm.act))
    return nn.Identity()


def _input_channels(network: nn.Module) -> int | None:
    for module in network.modules():
        if isinstance(module, nn.Conv2d):
            return int(module.in_channels)
    return None


def _conv_norm_pairs(
    network: nn.Module, probe: torch.Tensor
) -> tuple[list[tuple[str, str]], torch.Tensor]:
    """Names of (convolution, norm) pairs where the norm's input is the convolution's output.

    Also returns the network's output for ``probe``, which the check compares with.
    """
    names = {id(m): n for n, m in network.named_modules()}
    outputs: dict[int, str] = {}
    kept: list[torch.Tensor] = []  # alive until the pass ends, so no id is reused
    pairs: list[tuple[str, str]] = []
    calls: dict[str, int] = {}

    def on_conv(module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        name = names[id(module)]
        calls[name] = calls.get(name, 0) + 1
        outputs[id(out)] = name
        kept.append(out)

    def on_norm(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        name = names[id(module)]
        calls[name] = calls.get(name, 0) + 1
        conv = outputs.get(id(args[0])) if args else None
        if conv is not None:
            pairs.append((conv, name))

    handles = [
        m.register_forward_hook(on_conv) for m in network.modules() if isinstance(m, nn.Conv2d)
    ]
    handles += [m.register_forward_pre_hook(on_norm) for m in network.modules() if _foldable(m)]
    try:
        output: torch.Tensor = network(probe)
    finally:
        for handle in handles:
            handle.remove()
    # A module called more than once (shared) is left alone.
    return [(c, n) for c, n in pairs if calls[c] == 1 and calls[n] == 1], output


def _fold_pairs(target: nn.Module, pairs: list[tuple[str, str]]) -> None:
    """Fold each pair's norm into its convolution, in ``target``."""
    modules = dict(target.named_modules())
    for conv_name, norm_name in pairs:
        conv, norm = modules[conv_name], modules[norm_name]
        assert isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d)
        assert norm.running_mean is not None and norm.running_var is not None  # _foldable
        replacement = _replacement(norm)
        factor = torch.rsqrt(norm.running_var + norm.eps)
        if norm.weight is not None:
            factor = factor * norm.weight
        shift = -norm.running_mean * factor
        if norm.bias is not None:
            shift = shift + norm.bias
        weight = conv.weight * factor.reshape(-1, 1, 1, 1)
        bias = shift if conv.bias is None else conv.bias * factor + shift
        conv.weight = nn.Parameter(weight.clone(), requires_grad=False)
        conv.bias = nn.Parameter(bias.clone(), requires_grad=False)
        for parent, attribute in _references(target, norm):
            setattr(parent, attribute, replacement)


def _references(root: nn.Module, child: nn.Module) -> Iterator[tuple[nn.Module, str]]:
    for module in root.modules():
        for attribute, value in list(module._modules.items()):
            if value is child:
                yield module, attribute
