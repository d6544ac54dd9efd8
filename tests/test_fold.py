"""Batch norms folded into convolutions for inference: same outputs, fewer passes, never wrong."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from napari_bloodcells.core.model.fold import folded, forget
from napari_bloodcells.core.model.networks import ModelSpec, build_model


def with_trained_statistics(network: nn.Module) -> nn.Module:
    """Batch norms with statistics and affine terms far from their initial identity."""
    generator = torch.Generator().manual_seed(0)
    for module in network.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.5, generator=generator)
            module.running_var.uniform_(0.5, 2.0, generator=generator)
            module.weight.data.uniform_(0.5, 1.5, generator=generator)
            module.bias.data.normal_(0, 0.2, generator=generator)
    return network.eval()


def norms(network: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in network.modules())


@pytest.mark.parametrize(
    "spec",
    [
        ModelSpec("Unet", "resnet18", 3),
        ModelSpec("Unet", "tu-regnetx_002", 3, decoder_channels=(64, 32, 16, 16, 8)),
        ModelSpec("FPN", "mobilenet_v2", 3),
    ],
    ids=["unet-resnet18", "unet-timm-regnet", "fpn-mobilenet"],
)
def test_a_folded_network_has_no_norms_left_and_gives_the_same_logits(spec):
    network = with_trained_statistics(build_model(spec))
    fast = folded(network)
    assert fast is not network and norms(fast) == 0 and norms(network) > 0
    x = torch.rand(2, 3, 96, 128, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected, got = network(x), fast(x)
    assert torch.allclose(got, expected, atol=1e-4 * float(expected.abs().max()))


def test_the_copy_is_kept_until_a_weight_changes():
    network = with_trained_statistics(build_model(ModelSpec("Unet", "resnet18", 3)))
    fast = folded(network)
    assert folded(network) is fast
    with torch.no_grad():  # what an optimiser step or load_state_dict does
        next(network.parameters()).mul_(0.5)
    refreshed = folded(network)
    assert refreshed is not fast
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(refreshed(x), network(x), atol=1e-4 * float(network(x).abs().max()))


def test_a_fused_optimiser_step_is_unseen_until_forget_says_so():
    network = with_trained_statistics(build_model(ModelSpec("Unet", "resnet18", 3)))
    fast = folded(network)
    optimiser = torch.optim.AdamW(network.parameters(), lr=0.1, fused=True)
    network.train()
    for module in network.modules():  # as a fine-tune holds them: no counter moves
        if isinstance(module, nn.BatchNorm2d):
            module.eval()
    network(torch.rand(2, 3, 64, 64)).square().mean().backward()
    optimiser.step()
    network.eval()
    # The weights changed in place without a version bump: the stale copy is served ...
    assert folded(network) is fast
    forget(network)
    refreshed = folded(network)
    assert refreshed is not fast
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        expected = network(x)
        assert not torch.allclose(fast(x), expected, atol=1e-4 * float(expected.abs().max()))
        assert torch.allclose(refreshed(x), expected, atol=1e-4 * float(expected.abs().max()))


class SharedOutput(nn.Module):
    """A convolution whose output feeds its norm and, unusually, the sum after it too."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.norm = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.norm(y) + y


def test_wiring_that_folding_would_change_is_left_as_it_is():
    network = with_trained_statistics(SharedOutput())
    assert folded(network) is network


def test_a_network_in_training_mode_or_without_norms_is_returned_unchanged():
    training = build_model(ModelSpec("Unet", "resnet18", 3)).train()
    before = {k: v.clone() for k, v in training.state_dict().items()}
    assert folded(training) is training
    after = training.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # no statistics updated
    plain = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.ReLU()).eval()
    assert folded(plain) is plain
