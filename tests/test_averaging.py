"""A new model keeps the average of its last epochs; a stopped run keeps its best epoch."""

from __future__ import annotations

import torch

from napari_bloodcells.core.events import Notice, TrainingFinished
from napari_bloodcells.core.model.checkpoint import describe, load_checkpoint
from napari_bloodcells.core.training.averaging import EpochAverage
from napari_bloodcells.core.training.calibrate import output_layer
from napari_bloodcells.core.training.keeper import cpu_state
from napari_bloodcells.core.training.loop import train


def _config(tiny_config):
    """Three short epochs of a network with batch norm, the last two averaged."""
    return tiny_config.with_changes(
        arch="Unet", encoder="resnet18", mode="native", epochs=3, average_share=2 / 3
    )


def _recording(monkeypatch) -> list[dict[str, torch.Tensor]]:
    """The network's weights after each epoch, as the average is offered them."""
    seen: list[dict[str, torch.Tensor]] = []
    offer = EpochAverage.add

    def add(self, network, epoch):
        seen.append(cpu_state(network))
        offer(self, network, epoch)

    monkeypatch.setattr(EpochAverage, "add", add)
    return seen


def test_a_new_model_keeps_the_average_of_its_last_epochs(
    few_cells, tiny_config, tmp_path, monkeypatch
):
    seen = _recording(monkeypatch)
    config = _config(tiny_config)
    events = list(train(config, few_cells, checkpoint_path=tmp_path / "m.pt"))
    result = events[-1].result
    kept = result.model.network.state_dict()
    weights = dict(result.model.network.named_parameters())
    assert len(seen) == 3 and weights
    # The class-area calibration is fitted afterwards and added to the output's bias.
    calibrated = {
        id(output_layer(result.model.network).bias): result.model.metrics["class_offsets"]
    }
    for name, weight in weights.items():
        offsets = torch.tensor(calibrated.get(id(weight), 0.0))
        torch.testing.assert_close(kept[name], (seen[1][name] + seen[2][name]) / 2 + offsets)
    # The averaged weights get batch statistics of their own, not the last epoch's.
    statistics = [name for name in kept if name.endswith("running_mean")]
    assert statistics
    assert any(not torch.equal(kept[name], seen[2][name]) for name in statistics)
    said = [e.message for e in events if isinstance(e, Notice) and "averaged" in e.message]
    assert len(said) == 1 and "epochs 2-3 averaged" in said[0] and "nucleus" in said[0]
    assert result.model.metrics["averaged"]["epochs"] == [2, 3]
    saved = load_checkpoint(tmp_path / "m.pt")
    for name, value in kept.items():
        assert torch.equal(saved.network.state_dict()[name], value), name
    assert "epochs 2-3 averaged" in describe(saved)


def test_a_stopped_run_keeps_its_best_epoch_unaveraged(
    few_cells, tiny_config, tmp_path, monkeypatch
):
    seen = _recording(monkeypatch)
    config = _config(tiny_config)
    asked = {"stop": False}
    for event in train(config, few_cells, should_stop=lambda: asked["stop"]):
        asked["stop"] = len(seen) == 2  # stop during the last epoch
        if isinstance(event, TrainingFinished):
            result = event.result
    assert result.stopped_early and result.model.metrics["averaged"] is None
    kept = result.model.network.state_dict()
    best = seen[result.best_epoch - 1]
    for name, value in kept.items():
        assert torch.equal(best[name], value), name


def test_a_share_of_one_epoch_keeps_the_best_epoch(few_cells, tiny_config, monkeypatch):
    # A third of two epochs rounds to one: that epoch "averaged" would only re-estimate
    # its statistics and replace a better first epoch.
    seen = _recording(monkeypatch)
    config = _config(tiny_config).with_changes(epochs=2, average_share=1 / 3)
    events = list(train(config, few_cells))
    result = events[-1].result
    assert not result.stopped_early and result.model.metrics["averaged"] is None
    assert not [e for e in events if isinstance(e, Notice) and "averaged" in e.message]
    kept = result.model.network.state_dict()
    best = seen[result.best_epoch - 1]
    # The class-area calibration is added to the output's bias afterwards.
    calibrated = id(output_layer(result.model.network).bias)
    names = {id(p): n for n, p in result.model.network.named_parameters()}
    for name, value in kept.items():
        if names.get(calibrated) != name:
            assert torch.equal(best[name], value), name
