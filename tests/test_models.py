"""The notebook U-Net and the segmentation-models-pytorch builders."""

from __future__ import annotations

import pytest
import segmentation_models_pytorch as smp
import torch

from napari_bloodcells.core.model.networks import (
    NOTEBOOK_UNET,
    ModelSpec,
    NotebookUNet,
    architectures,
    build_model,
    encoders_for,
)
from napari_bloodcells.core.training.config import CPU_NETWORK
from napari_bloodcells.errors import ConfigError, DownloadError


def test_notebook_unet_matches_the_notebook_layer_for_layer():
    model = NotebookUNet()
    # 1,941,139 is the notebook's printed total for UNet(in_channels=3, num_classes=3).
    assert sum(p.numel() for p in model.parameters()) == 1_941_139
    assert [b[0].out_channels for b in model.encoder] == [16, 32, 64, 128]
    assert model.bottleneck[0].out_channels == 256
    drops = [b[2].p for b in model.encoder] + [model.bottleneck[2].p]
    assert drops == [0.1, 0.1, 0.2, 0.2, 0.3]
    assert all(isinstance(u, torch.nn.ConvTranspose2d) for u in model.up)
    assert isinstance(model.encoder[0][1], torch.nn.ELU)
    assert model.head.kernel_size == (1, 1)
    assert model(torch.zeros(2, 3, 64, 48)).shape == (2, 3, 64, 48)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_the_unet_elu_equals_torch_elu_in_value_and_gradient(dtype):
    from napari_bloodcells.core.model.networks import ELU

    x = torch.cat(
        [
            torch.randn(4, 16, 9, 7) * 4,
            torch.tensor([0.0, 90.0, -90.0]).view(1, 1, 1, 3).expand(4, 16, 9, 3),
        ],
        dim=-1,
    )
    x = x.to(dtype).contiguous(memory_format=torch.channels_last)
    grad = torch.randn_like(x)
    ours, ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    ELU()(ours).backward(grad)
    torch.nn.functional.elu(ref).backward(grad)
    tolerance = {"atol": 1e-2, "rtol": 1e-2} if dtype == torch.bfloat16 else {}
    torch.testing.assert_close(ELU()(x), torch.nn.functional.elu(x), **tolerance)
    torch.testing.assert_close(ours.grad, ref.grad, **tolerance)
    if dtype == torch.float64:
        assert torch.autograd.gradcheck(
            ELU(), (torch.randn(3, 4, dtype=dtype, requires_grad=True),)
        )


def _offered_pairs() -> list[tuple[str, str]]:
    return [(NOTEBOOK_UNET, "")] + [
        (arch, encoder)
        for arch in architectures()
        if arch != NOTEBOOK_UNET
        for encoder in encoders_for(arch)
    ]


def test_every_smp_architecture_that_trains_here_is_offered():
    offered = set(architectures())
    smp_names = {cls.__name__ for cls in smp.MODEL_ARCHITECTURES_MAPPING.values()}
    assert NOTEBOOK_UNET in offered
    assert offered - {NOTEBOOK_UNET} == smp_names - {"DPT", "PAN"}
    assert len(_offered_pairs()) > 50


def test_the_encoder_a_cpu_trains_by_default_is_offered():
    # A model continued from the CPU default shows its own encoder in the Train widget.
    encoder, _ = CPU_NETWORK
    assert encoder in encoders_for("Unet")
    assert ("Unet", encoder) in _offered_pairs()


@pytest.mark.parametrize(("arch", "encoder"), _offered_pairs())
def test_every_offered_pair_builds_and_trains_a_step(arch, encoder):
    torch.manual_seed(0)
    model = build_model(ModelSpec(arch, encoder, num_classes=3)).train()
    optimiser = torch.optim.SGD(model.parameters(), lr=1e-3)
    images, masks = torch.rand(2, 3, 64, 64), torch.randint(0, 3, (2, 64, 64))
    logits = model(images)
    assert logits.shape == (2, 3, 64, 64)
    torch.nn.functional.cross_entropy(logits, masks).backward()
    before = [p.detach().clone() for p in model.parameters()]
    optimiser.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize(("arch", "reason"), [("DPT", "vision-transformer"), ("pan", "256 px")])
def test_architectures_that_cannot_train_here_are_refused_in_one_sentence(arch, reason):
    with pytest.raises(ConfigError, match=reason) as refused:
        build_model(ModelSpec(arch, "resnet18"))
    assert str(refused.value).count(". ") == 0 and str(refused.value).endswith(".")


def test_an_encoder_the_architecture_refuses_is_one_sentence():
    with pytest.raises(ConfigError, match="cannot use the vgg16 encoder"):
        build_model(ModelSpec("DeepLabV3", "vgg16"))


def test_unknown_names_are_clear_errors():
    with pytest.raises(ConfigError, match="Unknown architecture"):
        build_model(ModelSpec("Unetish", "resnet18"))
    with pytest.raises(ConfigError, match="Unknown encoder"):
        build_model(ModelSpec("Unet", "resnet19"))


def test_encoder_weights_load_from_a_local_file(tmp_path):
    donor = build_model(ModelSpec("Unet", "resnet18"))
    path = tmp_path / "resnet18-encoder.pth"
    torch.save(donor.encoder.state_dict(), path)

    model = build_model(ModelSpec("Unet", "resnet18"), encoder_weights=path)

    for key, value in donor.encoder.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[key], value), key


def test_encoder_weights_of_the_wrong_encoder_are_refused(tmp_path):
    path = tmp_path / "vgg.pth"
    torch.save(build_model(ModelSpec("Unet", "vgg11")).encoder.state_dict(), path)
    with pytest.raises(ConfigError, match="do not fit"):
        build_model(ModelSpec("Unet", "resnet18"), encoder_weights=path)


def test_offline_imagenet_weights_are_an_error_not_a_random_init(tmp_path, monkeypatch):
    # An empty hub cache in offline mode: nothing may be downloaded and nothing is cached.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path), raising=False)
    with pytest.raises(DownloadError, match=r"ImageNet weights.*local weights file"):
        build_model(ModelSpec("Unet", "resnet18"), encoder_weights="imagenet")


def test_notebook_unet_has_no_pretrained_encoder():
    with pytest.raises(ConfigError, match="no pretrained encoder"):
        build_model(ModelSpec(NOTEBOOK_UNET, ""), encoder_weights="imagenet")
