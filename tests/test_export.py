"""Model exchange: bioimage.io packages (PyTorch, TorchScript, ONNX) out, and back in."""

from __future__ import annotations

import sys
import zipfile

import numpy as np
import pytest
import yaml

from bad_inputs import untrained_model
from napari_bloodcells import cli
from napari_bloodcells.core.exchange.export import ExportSettings, export_package
from napari_bloodcells.core.inference.tiled import segment_image
from napari_bloodcells.core.jobs import load_model
from napari_bloodcells.core.model.checkpoint import save_checkpoint
from napari_bloodcells.core.model.networks import ModelSpec, build_model
from napari_bloodcells.errors import CheckpointError, ConfigError


def bioimageio_test(path):
    """``bioimageio.core.test_model`` as a user runs it, with warnings as warnings.

    The suite turns every warning into an error; bioimageio.core's own
    (deprecations in its dependencies, files it leaves open) would fail its
    checks from inside. They are not this plugin's, so they are ignored here only.
    """
    import gc
    import warnings

    from bioimageio.core import test_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = test_model(path)
        gc.collect()
    return summary


@pytest.fixture(scope="module")
def sample(bloodcells) -> np.ndarray:
    return bloodcells.images[0]


@pytest.fixture(scope="module")
def notebook_package(tmp_path_factory, sample):
    """The notebook U-Net (native size) exported with all three weight formats."""
    model = untrained_model(native=True)
    model.config = {"data_source": "bloodcells", "epochs": 1}
    out = tmp_path_factory.mktemp("pkg") / "notebook.zip"
    return model, export_package(model, out, sample)


def test_bioimageio_test_model_passes_for_every_weight_format(notebook_package):
    _, path = notebook_package
    summary = bioimageio_test(path)
    assert summary.status == "passed", summary.format()
    tested = {d.name for d in summary.details}
    for weights in ("pytorch_state_dict", "torchscript", "onnx"):
        assert any(weights in name for name in tested), tested


def test_package_holds_spec_metadata_cover_and_credit(notebook_package):
    _, path = notebook_package
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        rdf = yaml.safe_load(archive.read("rdf.yaml"))
        readme = archive.read("README.md").decode()
    assert {"weights.pt", "weights_torchscript.pt", "weights.onnx", "cover.png"} <= names
    assert rdf["type"] == "model" and rdf["format_version"].startswith("0.5.")
    assert rdf["license"] == "GPL-3.0-only"  # trained on Dataset 1's GPL images
    assert any(c.get("doi") == "10.1016/j.micron.2018.01.010" for c in rdf["cite"])
    assert "Jiangxi Tecom" in readme and "nucleus" in readme
    arch = rdf["weights"]["pytorch_state_dict"]["architecture"]
    assert arch["import_from"] == "napari_bloodcells.core.model.networks"
    prep = [step["id"] for step in rdf["inputs"][0]["preprocessing"]]
    assert "fixed_zero_mean_unit_variance" in prep
    assert rdf["outputs"][0]["postprocessing"][0]["id"] == "softmax"


def test_a_package_segments_exactly_as_its_checkpoint(notebook_package, sample):
    model, path = notebook_package
    loaded = load_model(path, "cpu")
    assert loaded.spec == model.spec and loaded.preprocessing == model.preprocessing
    expected = segment_image(model, sample)[0]
    assert np.array_equal(segment_image(loaded, sample)[0], expected)


def test_onnx_weights_under_onnx_runtime_give_the_plugin_labels(notebook_package, bloodcells):
    """ONNX Runtime computes in fp32, so the plugin's side is pinned to fp32 too.

    Under "auto" a CPU with fast bf16 infers in bf16, and an untrained network's
    near-tied logits then flip 0.65 % of the pixels: a difference of precision,
    not of the exported graph, which is what this compares.
    """
    from napari_bloodcells.core.exchange.onnx_network import load_onnx_model

    model, path = notebook_package
    onnx_model = load_onnx_model(path)
    same = total = 0
    for image in bloodcells.images[:6]:
        ours = segment_image(model, image, precision="fp32")[0]
        theirs = segment_image(onnx_model, image, precision="fp32")[0]
        same += int((ours == theirs).sum())
        total += ours.size
    assert same / total >= 0.999


def test_an_smp_model_exports_with_its_library_architecture(tmp_path, sample):
    from napari_bloodcells.core.base.classes import BLOODCELL_CLASSES
    from napari_bloodcells.core.model.trained import TrainedModel
    from napari_bloodcells.core.training.config import preset

    spec = ModelSpec("Unet", "resnet18", 3)
    model = TrainedModel(
        build_model(spec).eval(), spec, BLOODCELL_CLASSES, preset("default").preprocessing()
    )
    path = export_package(
        model,
        tmp_path / "unet.zip",
        sample,
        ExportSettings(formats=("pytorch_state_dict",), authors=("A. Haematologist",)),
    )
    with zipfile.ZipFile(path) as archive:
        rdf = yaml.safe_load(archive.read("rdf.yaml"))
    arch = rdf["weights"]["pytorch_state_dict"]["architecture"]
    assert arch["import_from"] == "segmentation_models_pytorch" and arch["callable"] == "Unet"
    assert arch["kwargs"]["encoder_weights"] is None
    assert rdf["license"] == "CC-BY-4.0" and rdf["authors"][0]["name"] == "A. Haematologist"
    assert bioimageio_test(path).status == "passed"


def test_cli_export_then_segment_the_package_equals_segment_the_checkpoint(
    tmp_path, bloodcells, capsys
):
    from PIL import Image

    checkpoint = save_checkpoint(untrained_model(native=True), tmp_path / "model.pt")
    image = tmp_path / "cell.png"
    Image.fromarray(bloodcells.images[3]).save(image)
    package = tmp_path / "model.zip"
    assert (
        cli.main(
            [
                "export",
                str(checkpoint),
                "--out",
                str(package),
                "--sample",
                str(image),
                "--formats",
                "pytorch_state_dict",
            ]
        )
        == 0
    )
    assert "bioimageio test" in capsys.readouterr().out
    for model, folder in ((checkpoint, "from_pt"), (package, "from_zip")):
        assert cli.main(["segment", str(model), str(image), "--out", str(tmp_path / folder)]) == 0
    a = np.asarray(Image.open(tmp_path / "from_pt" / "cell.png"))
    b = np.asarray(Image.open(tmp_path / "from_zip" / "cell.png"))
    assert np.array_equal(a, b)


def write_package(path, rdf: dict) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("rdf.yaml", yaml.safe_dump(rdf))


@pytest.mark.parametrize(
    ("rdf", "fragment"),
    [
        (
            {"type": "model", "format_version": "0.5.4", "name": "StarDist nuclei"},
            "'StarDist nuclei', spec 0.5.4) made by another tool",
        ),
        ({"type": "dataset", "format_version": "0.3.0", "name": "cells"}, "bioimage.io dataset"),
        (
            {
                "type": "model",
                "format_version": "0.4.10",
                "name": "old",
                "config": {"napari-bloodcells": {"format": "napari-bloodcells-model"}},
            },
            "uses model spec 0.4.10",
        ),
    ],
)
def test_packages_it_cannot_load_get_one_sentence(tmp_path, rdf, fragment, capsys):
    path = tmp_path / "other.zip"
    write_package(path, rdf)
    with pytest.raises(CheckpointError, match=r"napari-bloodcells loads its own|does not read"):
        load_model(path, "cpu")
    assert cli.main(["segment", str(path), str(path), "--out", str(tmp_path / "o")]) == 2
    message = capsys.readouterr().err.strip()
    assert fragment in message and message.count("\n") == 0 and message.endswith(".")


def test_export_without_the_extra_says_what_to_install(tmp_path, sample, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # an import of it now fails
    with pytest.raises(ConfigError, match=r"pip install 'napari-bloodcells\[bioimageio\]'"):
        export_package(untrained_model(), tmp_path / "m.zip", sample)
    assert not (tmp_path / "m.zip").exists()


def _offline(monkeypatch, tmp_path) -> None:
    """No dataset in the cache and nothing listening where it would be downloaded from."""
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("NAPARI_BLOODCELLS_DATA_URL", f"http://127.0.0.1:{port}/")
    monkeypatch.setenv("NAPARI_BLOODCELLS_CACHE", str(tmp_path / "empty-cache"))


def test_offline_export_takes_its_test_image_from_the_models_own_folder(
    tmp_path, few_cells, make_folder, monkeypatch, capsys
):
    folder = make_folder(few_cells.subset(range(2)), tmp_path / "my-cells")
    model = untrained_model(native=True)
    model.config = {"data_source": str(folder)}
    checkpoint = save_checkpoint(model, tmp_path / "model.pt")
    _offline(monkeypatch, tmp_path)
    package = tmp_path / "model.zip"
    argv = ["export", str(checkpoint), "--out", str(package), "--formats", "pytorch_state_dict"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert package.is_file()


def test_offline_export_with_no_image_to_take_says_to_pass_one(tmp_path, monkeypatch, capsys):
    checkpoint = save_checkpoint(untrained_model(native=True), tmp_path / "model.pt")
    _offline(monkeypatch, tmp_path)
    argv = ["export", str(checkpoint), "--out", str(tmp_path / "m.zip")]
    assert cli.main(argv) == cli.EXIT_USER_ERROR
    message = capsys.readouterr().err.strip()
    assert message.count("\n") == 0 and message.endswith("(export --sample IMAGE).")
    assert not (tmp_path / "m.zip").exists()


def test_a_model_with_cell_types_exports_them_as_an_attachment(tmp_path, sample):
    from napari_bloodcells.core.base.cell_types import CELL_TYPES
    from napari_bloodcells.core.exchange.package import load_package
    from napari_bloodcells.core.model.type_model import TypeModel, type_network

    model = untrained_model(native=True)
    model.type_model = TypeModel(
        type_network(4).eval(),
        CELL_TYPES[:4],
        side=32,
        metrics={"dev_accuracy": 0.95, "dev_cells": 60},
    )
    path = export_package(
        model, tmp_path / "typed.zip", sample, ExportSettings(formats=("pytorch_state_dict",))
    )
    with zipfile.ZipFile(path) as archive:
        assert "cell_types.pt" in archive.namelist()
        card = archive.read("README.md").decode()
    assert "## Cell types" in card and "eosinophil" in card and "95%" in card
    loaded = load_package(path)
    crops = np.random.default_rng(0).random((2, 5, 32, 32), dtype=np.float32)
    np.testing.assert_allclose(
        loaded.type_model.probabilities(crops), model.type_model.probabilities(crops), atol=1e-6
    )
    assert bioimageio_test(path).status == "passed"
