"""Model construction: the reference notebook's U-Net and segmentation-models-pytorch.

A :class:`ModelSpec` says everything needed to rebuild a network; it is stored
in every checkpoint so a saved model can be applied without its training
script.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import segmentation_models_pytorch as smp
import torch
from torch import nn

from napari_bloodcells.errors import ConfigError, DownloadError

NOTEBOOK_UNET = "notebook-unet"
"""Architecture name of the reference notebook's U-Net."""


OFFERED_ENCODERS: tuple[str, ...] = (
    "resnet18",
    "resnet34",
    "resnet50",
    "mobilenet_v2",
    "efficientnet-b0",
    "mit_b0",
    "tu-regnetx_002",
)
"""Encoders the widgets offer: small enough to train on a laptop, and each one
trained for a step with every architecture it is offered with
(``tests/test_models.py``). The last is the encoder of the network a CPU without
fast bf16 trains (:data:`~napari_bloodcells.core.training.config.CPU_NETWORK`), so that a
model continued from it shows its encoder. The CLI accepts any smp encoder name."""

_UNOFFERED_ARCHITECTURES = {
    # Only timm ViT encoders ("tu-vit..."), none of which is offered.
    "DPT": "it needs a vision-transformer encoder",
    # Its pyramid attention pools 1/32 of the input three more times: patches of
    # 128 px (the default, and larger than every blood-cell image) shrink to nothing.
    "PAN": "it needs input patches of at least 256 px",
}
_UNSUPPORTED_PAIRS = frozenset({("Linknet", "mit_b0"), ("UnetPlusPlus", "mit_b0")})
"""Offered encoders that smp refuses for an offered architecture."""


def architectures() -> list[str]:
    """The architectures offered: the notebook U-Net and every smp one that trains here."""
    return [
        NOTEBOOK_UNET,
        *sorted(a for a in _smp_architectures() if a not in _UNOFFERED_ARCHITECTURES),
    ]


def encoders_for(arch: str) -> list[str]:
    """The offered encoders that build with architecture ``arch``."""
    canonical = canonical_arch(arch)
    if canonical == NOTEBOOK_UNET:
        return []
    return [e for e in OFFERED_ENCODERS if (canonical, e) not in _UNSUPPORTED_PAIRS]


def encoders() -> list[str]:
    """Every segmentation-models-pytorch encoder name (accepted by :func:`build_model`)."""
    return list(smp.encoders.get_encoder_names())


def _smp_architectures() -> dict[str, type[nn.Module]]:
    return {cls.__name__: cls for cls in smp.MODEL_ARCHITECTURES_MAPPING.values()}


class _ELUFunction(torch.autograd.Function):
    """ELU with alpha 1 from ``exp`` and clamps: ``max(x, 0) + exp(min(x, 0)) - 1``.

    ATen's ELU goes through ``expm1``, which on some CPUs (seen on AMD Zen with
    torch 2.14) runs element by element: about 11 ms forward and backward for
    one 8x16x128x128 activation, half of a notebook U-Net training step. These
    vectorised passes take about 2 ms and agree with ``F.elu`` to float
    rounding (``tests/test_models.py``).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        out = x.clamp_max(0).exp_().sub_(1).add_(x.clamp_min(0))
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (out,) = ctx.saved_tensors
        # d ELU / dx is 1 where x > 0 and exp(x) = out + 1 elsewhere.
        result: torch.Tensor = grad * out.clamp_max(0).add_(1)
        return result


def _exporting() -> bool:
    """Whether the network is being traced, scripted, compiled or exported."""
    return bool(
        torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or torch.compiler.is_compiling()
        or torch.compiler.is_exporting()
    )


class ELU(nn.ELU):
    """``nn.ELU`` (alpha 1), computed with :class:`_ELUFunction` on the CPU; same values, faster."""

    def __init__(self) -> None:
        super().__init__(alpha=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply ELU to ``x``."""
        if x.device.type != "cpu" or _exporting():
            # One fused kernel on accelerators, and the plain op in exported graphs
            # (TorchScript, ONNX), which cannot hold a Python autograd function.
            return nn.functional.elu(x)
        result: torch.Tensor = _ELUFunction.apply(x)
        return result


class ConvBlock(nn.Sequential):
    """Two 3x3 'same' convolutions with ELU, and channel dropout between them."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            ELU(),
            nn.Dropout2d(dropout),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1),
            ELU(),
        )


class NotebookUNet(nn.Module):
    """The reference notebook's U-Net, layer for layer.

    Encoder blocks of 16/32/64/128 channels, a 256-channel bottleneck,
    transposed-convolution upsampling, ELU, dropout 0.1/0.1/0.2/0.2/0.3 and He
    normal initialisation; a 1x1 convolution classifies each pixel.

    Parameters
    ----------
    in_channels : int
        Input channels (3 for RGB).
    num_classes : int
        Output classes.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 3) -> None:
        super().__init__()
        widths, drops = (16, 32, 64, 128), (0.1, 0.1, 0.2, 0.2)
        self.pool = nn.MaxPool2d(2)
        self.encoder = nn.ModuleList()
        channels = in_channels
        for width, drop in zip(widths, drops, strict=False):
            self.encoder.append(ConvBlock(channels, width, drop))
            channels = width
        self.bottleneck = ConvBlock(channels, 256, 0.3)
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        channels = 256
        for width, drop in zip(reversed(widths), reversed(drops), strict=False):
            self.up.append(nn.ConvTranspose2d(channels, width, kernel_size=2, stride=2))
            self.decoder.append(ConvBlock(2 * width, width, drop))
            channels = width
        self.head = nn.Conv2d(channels, num_classes, kernel_size=1)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                # He normal, as Keras' kernel_initializer="he_normal" in the notebook.
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def encoder_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder blocks' outputs and the bottleneck's, shallow to deep."""
        features = []
        for block in self.encoder:
            x = block(x)
            features.append(x)
            x = self.pool(x)
        features.append(self.bottleneck(x))
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel class logits ``(N, num_classes, H, W)``; H and W divisible by 16."""
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, block, skip in zip(self.up, self.decoder, reversed(skips), strict=False):
            x = block(torch.cat([up(x), skip], dim=1))
        logits: torch.Tensor = self.head(x)
        return logits


@dataclass(frozen=True)
class ModelSpec:
    """What is needed to rebuild a network.

    Attributes
    ----------
    arch : str
        ``"notebook-unet"`` or a segmentation-models-pytorch class name
        (``"Unet"``, ``"FPN"``, ...; case-insensitive).
    encoder : str
        smp encoder name; ignored by the notebook U-Net.
    num_classes : int
        Output classes.
    in_channels : int
        Input channels.
    decoder_channels : tuple of int
        Widths of the decoder's stages, deep to shallow; empty for the
        architecture's own (smp's Unet: 256, 128, 64, 32, 16).
    """

    arch: str = "Unet"
    encoder: str = "resnet18"
    num_classes: int = 3
    in_channels: int = 3
    decoder_channels: tuple[int, ...] = ()

    @property
    def input_multiple(self) -> int:
        """Input height and width must be multiples of this."""
        return 16 if self.arch == NOTEBOOK_UNET else 32

    def to_dict(self) -> dict[str, Any]:
        """Plain-type representation for checkpoints."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        """Inverse of :meth:`to_dict`."""
        return cls(
            **{k: d[k] for k in ("arch", "encoder", "num_classes", "in_channels")},
            decoder_channels=tuple(d.get("decoder_channels", ())),
        )


def canonical_arch(name: str) -> str:
    """Return the architecture's canonical spelling, or raise :class:`ConfigError`."""
    if name.lower().replace("_", "-") in {NOTEBOOK_UNET, "notebook", "unet-notebook"}:
        return NOTEBOOK_UNET
    for canonical in _smp_architectures():
        if canonical.lower() == name.lower():
            if canonical in _UNOFFERED_ARCHITECTURES:
                raise ConfigError(
                    f"The {canonical} architecture is not offered because "
                    f"{_UNOFFERED_ARCHITECTURES[canonical]}; choose one of: "
                    f"{', '.join(architectures())}."
                )
            return canonical
    raise ConfigError(
        f"Unknown architecture {name!r}; choose one of: {', '.join(architectures())}."
    )


def build_model(spec: ModelSpec, encoder_weights: str | Path | None = None) -> nn.Module:
    """Build the network described by ``spec``.

    Parameters
    ----------
    spec : ModelSpec
        Architecture, encoder and class count.
    encoder_weights : {"imagenet", None} or path, optional
        ``"imagenet"`` loads pretrained encoder weights from the local cache or
        downloads them; a path loads an encoder ``state_dict`` saved with
        ``torch.save`` or as safetensors; ``None`` or ``"none"`` starts from a
        random initialisation.

    Returns
    -------
    torch.nn.Module
        A network mapping ``(N, C, H, W)`` images to ``(N, K, H, W)`` logits.

    Raises
    ------
    ConfigError
        Unknown architecture or encoder, or weights for the notebook U-Net.
    DownloadError
        ImageNet weights are requested but cannot be downloaded.
    """
    arch = canonical_arch(spec.arch)
    if isinstance(encoder_weights, str) and encoder_weights.lower() in {"", "none"}:
        encoder_weights = None
    if arch == NOTEBOOK_UNET:
        if encoder_weights is not None:
            raise ConfigError(
                "The notebook U-Net has no pretrained encoder; set encoder weights to 'none' "
                "or choose an smp architecture."
            )
        return NotebookUNet(spec.in_channels, spec.num_classes)
    if spec.encoder not in encoders() and not spec.encoder.startswith("tu-"):
        raise ConfigError(
            f"Unknown encoder {spec.encoder!r}; choose one of segmentation-models-pytorch's "
            "encoders, e.g. resnet18, resnet34, vgg16, efficientnet-b0, mobilenet_v2."
        )
    cls = _smp_architectures()[arch]
    kwargs = smp_kwargs(spec)
    imagenet = encoder_weights == "imagenet"
    model = _construct(cls, arch, spec.encoder, imagenet, kwargs)
    if encoder_weights is not None and not imagenet:
        load_encoder_weights(model, Path(encoder_weights))
    return model


def smp_kwargs(spec: ModelSpec) -> dict[str, object]:
    """The keyword arguments of the smp class that ``spec`` names (without the weights)."""
    kwargs: dict[str, object] = {
        "encoder_name": spec.encoder,
        "in_channels": spec.in_channels,
        "classes": spec.num_classes,
    }
    if spec.decoder_channels:
        kwargs["decoder_channels"] = list(spec.decoder_channels)
    return kwargs


def _construct(
    cls: type[nn.Module], arch: str, encoder: str, imagenet: bool, kwargs: dict[str, object]
) -> nn.Module:
    """Build an smp model, turning its refusals and download failures into one sentence."""
    try:
        return cls(encoder_weights="imagenet" if imagenet else None, **kwargs)
    except ValueError as exc:  # smp's word on an encoder this architecture cannot use
        raise ConfigError(
            f"The {arch} architecture cannot use the {encoder} encoder ({exc}); choose "
            f"another encoder, e.g. {', '.join(encoders_for(arch)[:3])}."
        ) from exc
    except KeyError as exc:
        raise ConfigError(
            f"The encoder {encoder!r} has no ImageNet weights; set encoder weights to 'none'."
        ) from exc
    except Exception as exc:  # huggingface_hub / requests raise many unrelated types
        if not imagenet:
            raise
        raise DownloadError(
            f"Could not download the ImageNet weights for the {encoder} encoder "
            f"({type(exc).__name__}); connect to the internet once so they are cached, "
            "or pass a local weights file as encoder weights."
        ) from exc


def load_encoder_weights(model: nn.Module, path: Path) -> None:
    """Load an encoder ``state_dict`` from ``path`` into ``model.encoder``.

    Raises
    ------
    ConfigError
        If the file is missing, unreadable or does not fit the encoder.
    """
    if not path.is_file():
        raise ConfigError(
            f"The encoder weights file {path} does not exist; give 'imagenet', 'none' or "
            "the path of an existing weights file."
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(
            f"Cannot read encoder weights from {path} ({type(exc).__name__}); save them "
            "with torch.save(encoder.state_dict(), path)."
        ) from exc
    encoder = model.encoder
    try:
        if not isinstance(encoder, nn.Module):
            raise TypeError("the model has no encoder")
        encoder.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise ConfigError(
            f"The weights in {path} do not fit the model's encoder; they must be a state_dict "
            "of the same encoder."
        ) from exc
