"""Models leave the plugin: bioimage.io model packages with PyTorch, TorchScript and ONNX weights.

A package is a zip that deepImageJ, ilastik, QuPath, Icy and napari's
bioimage.io tools can run. It is built with ``bioimageio.spec`` (model spec
0.5), never by writing YAML by hand, and holds:

- the weights three ways: ``pytorch_state_dict`` with the architecture to
  rebuild (segmentation-models-pytorch, or this package's notebook U-Net),
  ``torchscript`` and ``onnx`` (any batch, height and width in steps of the
  network's size multiple);
- the input: an RGB ``uint8`` image (batch, channel, y, x), normalised by the
  model's own mean and standard deviation as preprocessing; the output: the
  three class probabilities (softmax as postprocessing);
- a test image and the output this model gives for it, a cover picture (the
  image beside its prediction in the class colours), and a documentation
  page with the classes, the training data, the scores, the scale the model
  expects and how it was trained;
- this plugin's own record of the model under ``config["napari-bloodcells"]``,
  so that :mod:`napari_bloodcells.core.exchange.package` loads the package back as it
  loads a ``.pt`` file.

``bioimageio.spec``, ``onnx`` and ``onnxscript`` come with the ``bioimageio``
extra; without it :func:`export_package` says what to install.
"""

from __future__ import annotations

import copy
import gc
import re
import tempfile
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from napari_bloodcells.core.base.files import atomic_write
from napari_bloodcells.core.data.bloodcell_dataset import CREDIT, DOI, REFERENCE, SOURCE_NAME
from napari_bloodcells.core.events import JobStep, PackageExported, Stopped, run_to_end
from napari_bloodcells.core.exchange.package import CONFIG_KEY, TYPE_WEIGHTS
from napari_bloodcells.core.model.checkpoint import describe, model_record
from napari_bloodcells.core.model.networks import NOTEBOOK_UNET, smp_kwargs
from napari_bloodcells.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Sequence

    from napari_bloodcells.core.model.trained import TrainedModel

WEIGHT_FORMATS = ("pytorch_state_dict", "torchscript", "onnx")
ONNX_OPSET = 18
EXTRA_HINT = (
    "exporting to bioimage.io needs the bioimageio extra; install it with "
    "pip install 'napari-bloodcells[bioimageio]'."
)


@dataclass(frozen=True)
class ExportSettings:
    """What a package says about its model beyond the model itself.

    Attributes
    ----------
    name : str
        Shown in the model zoo and in other tools.
    authors : tuple of str
        Who trained the model.
    license : str or None
        SPDX identifier; ``None`` picks GPL-3.0-only for models trained on
        Dataset 1 (GPL-3.0 images) and CC-BY-4.0 otherwise.
    formats : tuple of str
        Weight formats to include, from :data:`WEIGHT_FORMATS`.
    """

    name: str = "napari-bloodcells white blood cell segmentation"
    authors: tuple[str, ...] = ("napari-bloodcells user",)
    license: str | None = None
    formats: tuple[str, ...] = WEIGHT_FORMATS


def require_extra() -> None:
    """Raise :class:`ConfigError` with the install command if the extra is missing."""
    try:
        import bioimageio.spec  # noqa: F401
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"The package {exc.name} is missing: {EXTRA_HINT}") from exc


def trained_on_dataset1(model: TrainedModel) -> bool:
    """Whether ``model`` learnt from Dataset 1 (directly, or through a fine-tune's replay)."""
    return model.config.get("data_source") == SOURCE_NAME


def test_input(model: TrainedModel, image: np.ndarray) -> np.ndarray:
    """``image`` (H, W, 3 uint8) as a ``(1, 3, H', W')`` tensor the network accepts.

    The sides are cropped down to the network's size multiple (at least one
    multiple, padding by reflection if the image is smaller).
    """
    step = model.spec.input_multiple
    height, width = (max(step, (side // step) * step) for side in image.shape[:2])
    pad = ((0, max(0, height - image.shape[0])), (0, max(0, width - image.shape[1])), (0, 0))
    image = np.pad(image, pad, mode="reflect")[:height, :width]
    return np.ascontiguousarray(image.transpose(2, 0, 1)[None]).astype(np.uint8)


def probabilities(model: TrainedModel, batch: np.ndarray) -> np.ndarray:
    """What the package's output is for ``batch``: softmax of the logits, float32."""
    network = model.network.eval().to("cpu")
    with torch.inference_mode():
        x = model.preprocessing.normalize(torch.from_numpy(batch))
        return torch.softmax(network(x), dim=1).numpy().astype(np.float32)


def cover_picture(image: np.ndarray, probs: np.ndarray, model: TrainedModel) -> np.ndarray:
    """The image beside its prediction drawn over it in the class colours (H, 2W, 3 uint8)."""
    labels = probs[0].argmax(0)
    rgb = image[0].transpose(1, 2, 0).astype(np.float32)
    overlay = rgb.copy()
    for index, color in enumerate(model.classes.colors):
        if len(color) > 3 and color[3] == 0:
            continue
        where = labels == index
        overlay[where] = 0.45 * rgb[where] + 0.55 * 255 * np.asarray(color[:3])
    gap = np.full((rgb.shape[0], 4, 3), 255.0, np.float32)
    return np.concatenate([rgb, gap, overlay], axis=1).round().astype(np.uint8)


def _types_section(model: TrainedModel) -> str:
    """The model card's part on the cell-type model, if the model has one."""
    types = model.type_model
    if types is None:
        return ""
    accuracy = types.metrics.get("dev_accuracy")
    scored = (
        f" It typed {accuracy:.0%} of its {types.metrics.get('dev_cells')} dev cells right."
        if isinstance(accuracy, float)
        else ""
    )
    caveat = " Dataset 1's types were not checked by experts." if trained_on_dataset1(model) else ""
    return f"""## Cell types

napari-bloodcells also types each white cell ({", ".join(types.types)}) with a small CNN
on a {types.side}x{types.side} crop of the cell and its cytoplasm and nucleus masks; its
weights are the attachment `{TYPE_WEIGHTS}` (a PyTorch state dict), read by
napari-bloodcells, not by other bioimage.io tools.{scored}{caveat}

"""


def documentation(model: TrainedModel, settings: ExportSettings) -> str:
    """The package's documentation page (Markdown)."""
    classes = "\n".join(f"| {index} | {name} |" for index, name in enumerate(model.classes.names))
    prep = model.preprocessing
    config = model.config
    scale = config.get("scale", 1.0)
    source = config.get("data_source") or "images and labels from napari layers"
    credit = ""
    if trained_on_dataset1(model):
        source = "Dataset 1 of the white blood cell dataset of Zheng et al. (2018)"
        credit = (
            f"\nThe training images are from **{CREDIT}** "
            f"(GPL-3.0). Please cite: {REFERENCE}. doi:{DOI}\n"
        )
    best = model.metrics.get("best_epoch")
    training = ", ".join(
        f"{key} {config[key]}"
        for key in ("preset", "epochs", "batch_size", "lr", "schedule", "dev_fraction", "seed")
        if key in config
    )
    if model.spec.arch == NOTEBOOK_UNET:
        architecture = "the reference notebook's U-Net (`napari_bloodcells.core.model.networks`)"
    else:
        architecture = (
            f"`{model.spec.arch}` with a `{model.spec.encoder}` encoder "
            "(segmentation-models-pytorch)"
        )
    return f"""# {settings.name}

Semantic segmentation of white blood cells in RGB microscopy images (e.g. Wright- or
Giemsa-stained blood smears): every pixel gets one class.

| value | class |
|---|---|
{classes}

The output holds the probability of each class (softmax); the label image is its
arg-max along the channel axis.

## Model

{describe(model)}.

Architecture: {architecture}.
Height and width must be multiples of {model.spec.input_multiple}.

## Input

RGB, 8 bits per channel, axes (batch, channel, y, x). The preprocessing divides by 255 and
normalises each channel with mean {list(prep.mean)} and standard deviation {list(prep.std)}
(written in the package as one fixed zero-mean, unit-variance step on the 0-255 values).

**Scale.** The model works best when cells are as large in pixels as in its training images.
It was trained at scale {scale} of its training images; images from another microscope or
magnification may need resizing first (napari-bloodcells estimates the factor with its
Estimate button or `segment --scale auto`).

{_types_section(model)}## Training

Trained with napari-bloodcells on {source}.
{credit}
Settings: {training or "not recorded"}.
Best epoch {best}; dev scores per class (Dice) are in the history below and in
`config.napari-bloodcells.metrics`.

## Validation

The package's test image and test output were produced by this model; `bioimageio test`
reproduces them with each weight format.

## Limitations

Trained on one kind of image. Check the predictions on your own images, correct a few,
and fine-tune in napari-bloodcells before relying on the measurements.
"""


def _plain(value: Any) -> Any:
    """``value`` with tuples as lists and numpy scalars as Python numbers (for YAML)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def plugin_record(model: TrainedModel) -> dict[str, Any]:
    """Everything :mod:`~.package` needs to rebuild ``model``, as plain types for YAML."""
    record: dict[str, Any] = _plain(model_record(model))
    return record


def _architecture(model: TrainedModel) -> tuple[str, str, dict[str, Any]]:
    if model.spec.arch == NOTEBOOK_UNET:
        return (
            "napari_bloodcells.core.model.networks",
            "NotebookUNet",
            {"in_channels": model.spec.in_channels, "num_classes": model.spec.num_classes},
        )
    return (
        "segmentation_models_pytorch",
        model.spec.arch,
        {**smp_kwargs(model.spec), "encoder_weights": None},
    )


def write_onnx(model: TrainedModel, path: Path, example: torch.Tensor) -> None:
    """Export the network to ONNX with any batch size, height and width (in size steps)."""
    step = model.spec.input_multiple
    batch = torch.export.Dim("batch", min=1, max=1024)
    height = torch.export.Dim("height", min=1, max=4096)
    width = torch.export.Dim("width", min=1, max=4096)
    network = model.network.eval().to("cpu")
    with warnings.catch_warnings():
        # torch's exporter warns about its own internals (deprecated helpers it calls).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            network,
            (example,),
            str(path),
            input_names=["input"],
            output_names=["output"],
            dynamic_shapes={"x": {0: batch, 2: step * height, 3: step * width}},
            opset_version=ONNX_OPSET,
            dynamo=True,
            external_data=False,
            verbose=False,
        )


def write_torchscript(model: TrainedModel, path: Path, example: torch.Tensor) -> None:
    """Trace the network to TorchScript (deprecated by torch, still what bioimage.io runs)."""
    network = model.network.eval().to("cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.trace's deprecation notice
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(network, example)
    traced.save(str(path))


def export_package(
    model: TrainedModel,
    out: str | Path,
    sample: np.ndarray,
    settings: ExportSettings = ExportSettings(),
) -> Path:
    """Write ``model`` as a bioimage.io model package (a zip) at ``out``.

    Parameters
    ----------
    model : TrainedModel
        The model to export.
    out : path
        The ``.zip`` to write (atomically).
    sample : ndarray
        An RGB ``uint8`` image (H, W, 3) for the test tensors and the cover.
    settings : ExportSettings
        Name, authors, licence and weight formats.

    Returns
    -------
    Path
        The package written.

    Raises
    ------
    ConfigError
        If the ``bioimageio`` extra is missing or a weight format is unknown.
    """
    written: Path = run_to_end(export_job(model, Path(out), sample, settings))
    return written


def export_job(
    model: TrainedModel,
    out: Path,
    sample: np.ndarray,
    settings: ExportSettings = ExportSettings(),
    should_stop: Callable[[], bool] = lambda: False,
) -> Generator[JobStep | PackageExported | Stopped, None, Path | None]:
    """:func:`export_package` as a job: yields a :class:`JobStep` before each step.

    It ends with :class:`PackageExported`; stopped between steps, it writes nothing
    and ends with :class:`Stopped`. The package appears at ``out`` only when complete.
    """
    require_extra()
    unknown = set(settings.formats) - set(WEIGHT_FORMATS)
    if unknown or not settings.formats:
        raise ConfigError(
            f"Unknown weight format {', '.join(sorted(unknown)) or '(none given)'}; choose "
            f"from {', '.join(WEIGHT_FORMATS)}."
        )
    with tempfile.TemporaryDirectory(prefix="bioimageio-") as folder:
        root = Path(folder)
        yield JobStep("Computing the test output and the cover…")
        batch = test_input(model, sample)
        probs = probabilities(model, batch)
        np.save(root / "test_input.npy", batch)
        np.save(root / "test_output.npy", probs)
        from PIL import Image

        Image.fromarray(cover_picture(batch, probs, model)).save(root / "cover.png")
        (root / "README.md").write_text(documentation(model, settings), encoding="utf-8")
        if model.type_model is not None:  # the type network travels as an attachment
            state = {k: v.detach().cpu() for k, v in model.type_model.network.state_dict().items()}
            torch.save(state, root / TYPE_WEIGHTS)
        example = model.preprocessing.normalize(torch.from_numpy(batch))
        files = yield from _write_weights(model, settings.formats, root, example, should_stop)
        if files is None:
            yield Stopped()
            return None
        if should_stop():
            yield Stopped()
            return None
        yield JobStep("Writing the bioimage.io package…")
        with warnings.catch_warnings():
            # bioimageio.spec leaves the files it hashes open; they are closed below.
            warnings.simplefilter("ignore", ResourceWarning)
            description = _description(model, settings, root, files)
            from bioimageio.spec import save_bioimageio_package

            def package(tmp: str) -> None:
                save_bioimageio_package(description, output_path=Path(tmp))

            atomic_write(out, package)
            description = None
            gc.collect()  # finalise those files now, while their warning is ignored
    yield PackageExported(out)
    return out


def _write_weights(
    model: TrainedModel,
    formats: Sequence[str],
    root: Path,
    example: torch.Tensor,
    should_stop: Callable[[], bool],
) -> Generator[JobStep, None, dict[str, Path] | None]:
    """Write each weight format asked for into ``root``; ``None`` if stopped before one.

    Raises
    ------
    ConfigError
        When torch cannot convert the network to a format, in one sentence.
    """
    # A private copy in the standard memory layout: inference leaves the live network
    # channels-last, which torch.export cannot give dynamic sizes to ("Invalid ranges"),
    # and a segmentation may be using the live one on another thread.
    network = copy.deepcopy(model.network).eval().to("cpu")
    network = network.to(memory_format=torch.contiguous_format)
    model = replace(model, network=network)
    writers: dict[str, tuple[str, str, Callable[[Path], None]]] = {
        "pytorch_state_dict": ("weights.pt", "Saving the PyTorch weights…", _state_writer(model)),
        "torchscript": (
            "weights_torchscript.pt",
            "Tracing TorchScript weights…",
            lambda path: write_torchscript(model, path, example),
        ),
        "onnx": (
            "weights.onnx",
            "Exporting ONNX weights (this takes a while)…",
            lambda path: write_onnx(model, path, example),
        ),
    }
    files: dict[str, Path] = {}
    for name in WEIGHT_FORMATS:
        if name not in formats:
            continue
        filename, text, write = writers[name]
        if should_stop():
            return None
        yield JobStep(text)
        files[name] = root / filename
        try:
            write(files[name])
        except Exception as exc:  # torch's exporters fail in many types, with pages of text
            others = ",".join(f for f in WEIGHT_FORMATS if f != name)
            raise ConfigError(
                f"Could not write {name} weights ({_first_line(exc)}), so no package was "
                f"written; export without them (napari-bloodcells export MODEL --formats "
                f"{others}) and report the model's architecture ({model.spec.arch}, "
                f"{model.spec.encoder or 'no encoder'})."
            ) from exc
    return files


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_CAUSE = re.compile(r"^<class '[\w.]+'>: (.+)$")
"""The line where torch's exporter names the error under its pages of advice."""


def _first_line(exc: BaseException) -> str:
    """The gist of an exporter's error, without colour codes and at most 120 characters."""
    lines = [line.strip() for line in _ANSI.sub("", str(exc)).splitlines() if line.strip()]
    causes = [m.group(1) for m in map(_CAUSE.match, lines) if m]
    text = (causes[0] if causes else lines[0] if lines else type(exc).__name__).rstrip(".")
    return text if len(text) <= 120 else text[:117] + "…"


def _state_writer(model: TrainedModel) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        state = {k: v.detach().cpu() for k, v in model.network.state_dict().items()}
        torch.save(state, path)

    return write


def _input_tensor(model: TrainedModel, root: Path) -> Any:
    import bioimageio.spec.model.v0_5 as spec
    from bioimageio.spec.common import FileDescr

    step = model.spec.input_multiple
    prep = model.preprocessing
    channels = [spec.ChannelAxis(channel_names=[spec.Identifier(c) for c in ("R", "G", "B")])]
    space_in = [
        spec.SpaceInputAxis(id=spec.AxisId(axis), size=spec.ParameterizedSize(min=step, step=step))
        for axis in ("y", "x")
    ]
    return spec.InputTensorDescr(
        id=spec.TensorId("input"),
        description="RGB image, 8 bits per channel",
        axes=[spec.BatchAxis(), *channels, *space_in],
        test_tensor=FileDescr(source=root / "test_input.npy"),
        data=spec.IntervalOrRatioDataDescr(type="uint8", range=(0, 255)),
        preprocessing=[
            spec.EnsureDtypeDescr(kwargs=spec.EnsureDtypeKwargs(dtype="float32")),
            spec.FixedZeroMeanUnitVarianceDescr(
                kwargs=spec.FixedZeroMeanUnitVarianceAlongAxisKwargs(
                    mean=[255.0 * m for m in prep.mean],
                    std=[255.0 * s for s in prep.std],
                    axis=spec.AxisId("channel"),
                )
            ),
            # Last too: without it the spec casts back to the input's uint8.
            spec.EnsureDtypeDescr(kwargs=spec.EnsureDtypeKwargs(dtype="float32")),
        ],
    )


def _output_tensor(model: TrainedModel, root: Path) -> Any:
    import bioimageio.spec.model.v0_5 as spec
    from bioimageio.spec.common import FileDescr

    space_out = [
        spec.SpaceOutputAxis(
            id=spec.AxisId(axis),
            size=spec.SizeReference(tensor_id=spec.TensorId("input"), axis_id=spec.AxisId(axis)),
        )
        for axis in ("y", "x")
    ]
    return spec.OutputTensorDescr(
        id=spec.TensorId("probabilities"),
        description="Probability of each class: " + ", ".join(model.classes.names),
        axes=[
            spec.BatchAxis(),
            spec.ChannelAxis(channel_names=[spec.Identifier(n) for n in model.classes.names]),
            *space_out,
        ],
        test_tensor=FileDescr(source=root / "test_output.npy"),
        data=spec.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
        postprocessing=[spec.SoftmaxDescr(kwargs=spec.SoftmaxKwargs(axis=spec.AxisId("channel")))],
    )


def _weights(model: TrainedModel, files: dict[str, Path]) -> Any:
    import bioimageio.spec.model.v0_5 as spec

    import_from, callable_name, kwargs = _architecture(model)
    version = torch.__version__.split("+")[0]
    parent: Literal["pytorch_state_dict"] | None = (
        "pytorch_state_dict" if "pytorch_state_dict" in files else None
    )
    weights: dict[str, Any] = {}
    if "pytorch_state_dict" in files:
        weights["pytorch_state_dict"] = spec.PytorchStateDictWeightsDescr(
            source=files["pytorch_state_dict"],
            architecture=spec.ArchitectureFromLibraryDescr(
                import_from=import_from, callable=spec.Identifier(callable_name), kwargs=kwargs
            ),
            pytorch_version=spec.Version(version),
        )
    if "torchscript" in files:
        weights["torchscript"] = spec.TorchscriptWeightsDescr(
            source=files["torchscript"], pytorch_version=spec.Version(version), parent=parent
        )
    if "onnx" in files:
        weights["onnx"] = spec.OnnxWeightsDescr(
            source=files["onnx"], opset_version=ONNX_OPSET, parent=parent
        )
    return spec.WeightsDescr(**weights)


_TAGS = (
    "semantic-segmentation",
    "white-blood-cells",
    "blood-smear",
    "nucleus",
    "cytoplasm",
    "2d",
    "pytorch",
    "unet",
    "napari-bloodcells",
)


def _description(
    model: TrainedModel, settings: ExportSettings, root: Path, files: dict[str, Path]
) -> Any:
    import bioimageio.spec.model.v0_5 as spec
    from bioimageio.spec.common import FileDescr

    dataset1 = trained_on_dataset1(model)
    cite = [
        spec.CiteEntry(
            text="napari-bloodcells: train, apply and correct U-Net segmentations in napari",
            url=spec.HttpUrl("https://github.com/zxaoyou/segmentation_WBC"),
        )
    ]
    if dataset1:
        cite.insert(0, spec.CiteEntry(text=REFERENCE, doi=spec.Doi(DOI)))
    description = (
        "U-Net segmentation of white blood cells into background, cytoplasm and nucleus"
        + (f", trained on Dataset 1 (images: {CREDIT})" if dataset1 else "")
    )
    return spec.ModelDescr(
        name=settings.name,
        description=description[:1024],
        authors=[spec.Author(name=name) for name in settings.authors],
        cite=cite,
        license=spec.LicenseId(settings.license or ("GPL-3.0-only" if dataset1 else "CC-BY-4.0")),
        tags=list(_TAGS),
        covers=[FileDescr(source=root / "cover.png")],
        documentation=FileDescr(source=root / "README.md"),
        inputs=[_input_tensor(model, root)],
        outputs=[_output_tensor(model, root)],
        weights=_weights(model, files),
        config=spec.Config.model_validate({CONFIG_KEY: plugin_record(model)}),
        attachments=(
            [FileDescr(source=root / TYPE_WEIGHTS)] if (root / TYPE_WEIGHTS).is_file() else []
        ),
    )
