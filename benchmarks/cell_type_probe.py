"""A first measurement for the differential (#24): can a small CNN type Dataset 1's white cells?

Each cell is its image with the segmentation's cytoplasm and nucleus as two more channels,
resized to 64x64; the CNN (four conv blocks, ~0.3 M parameters) trains with flips, right-angle
turns, colour jitter and class weights, and predicts with the four turns averaged. Basophils
(one image) are left out, as in the issue. The types come from Dataset 1's CSV, which experts
did not check. This is a design measurement, not the plugin's cell-type model.

    python benchmarks/cell_type_probe.py [--epochs 30] [--json out.json]
"""

from __future__ import annotations

import argparse
import csv
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from _common import bloodcell_data, hardware, median, write_json
from napari_bloodcells.core.data.download import fetch_raw

SIDE = 64
TYPES = ("neutrophil", "lymphocyte", "monocyte", "eosinophil")
FOLDS = 5


def cells() -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 5, 64, 64) inputs and their type indices, basophils left out."""
    data = bloodcell_data()
    with open(fetch_raw() / "Class Labels of Dataset 1.csv", encoding="utf-8") as fh:
        types = {int(row["image ID"]): int(row["class label"]) for row in csv.DictReader(fh)}
    inputs, labels = [], []
    for name, image, mask in zip(data.names, data.images, data.masks, strict=True):
        kind = types[int(name.rsplit("/", 1)[-1])]
        if kind > len(TYPES):
            continue
        stacked = np.concatenate(
            [image / 255.0, (mask == 1)[..., None], (mask == 2)[..., None]], -1
        ).astype(np.float32)
        tensor = torch.from_numpy(stacked).permute(2, 0, 1)[None]
        inputs.append(F.interpolate(tensor, size=(SIDE, SIDE), mode="bilinear")[0])
        labels.append(kind - 1)
    return torch.stack(inputs), torch.tensor(labels)


def network(width: int = 32) -> nn.Module:
    def block(cin: int, cout: int, pool: bool) -> list[nn.Module]:
        layers = [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
        return [*layers, nn.MaxPool2d(2)] if pool else layers

    return nn.Sequential(
        *block(5, width, True),
        *block(width, 2 * width, True),
        *block(2 * width, 4 * width, True),
        *block(4 * width, 4 * width, False),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(4 * width, len(TYPES)),
    )


def augment(x: torch.Tensor) -> torch.Tensor:
    if torch.rand(1) < 0.5:
        x = x.flip(3)
    x = torch.rot90(x, int(torch.randint(0, 4, (1,))), (2, 3)).clone()
    gain = 1 + 0.1 * torch.randn(x.shape[0], 3, 1, 1)
    x[:, :3] = (x[:, :3] * gain + 0.05 * torch.randn(x.shape[0], 3, 1, 1)).clamp(0, 1)
    return x


def fit(x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = network()
    counts = np.bincount(y.numpy(), minlength=len(TYPES))
    weight = torch.tensor((counts.sum() / (len(TYPES) * counts)) ** 0.5, dtype=torch.float32)
    optimiser = torch.optim.AdamW(model.parameters(), 3e-3, weight_decay=1e-3)
    steps = epochs * -(-len(y) // 32)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, 3e-3, total_steps=steps)
    model.train()
    for _ in range(epochs):
        order = torch.from_numpy(rng.permutation(len(y)))
        for start in range(0, len(order), 32):
            batch = order[start : start + 32]
            loss = F.cross_entropy(
                model(augment(x[batch])), y[batch], weight=weight, label_smoothing=0.05
            )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    x, y = cells()
    labels = y.numpy()
    rng = np.random.default_rng(0)
    folds = np.zeros(len(y), int)
    for kind in range(len(TYPES)):  # stratified
        members = np.flatnonzero(labels == kind)
        rng.shuffle(members)
        folds[members] = np.arange(len(members)) % FOLDS
    predicted = np.zeros(len(y), int)
    seconds = []
    for fold in range(FOLDS):
        train, test = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
        started = time.perf_counter()
        model = fit(x[train], y[train], args.epochs, fold)
        seconds.append(time.perf_counter() - started)
        with torch.inference_mode():
            turns = sum(model(torch.rot90(x[test], k, (2, 3))).softmax(1) for k in range(4))
        predicted[test] = turns.argmax(1).numpy()
    recall = [float((predicted[labels == k] == k).mean()) for k in range(len(TYPES))]
    confusion = np.zeros((len(TYPES), len(TYPES)), int)
    np.add.at(confusion, (labels, predicted), 1)
    figures = {
        "cells": len(y),
        "epochs": args.epochs,
        "accuracy": round(float((predicted == labels).mean()), 3),
        "balanced_accuracy": round(float(np.mean(recall)), 3),
        "recall": dict(zip(TYPES, (round(r, 3) for r in recall), strict=True)),
        "confusion (rows true, columns predicted)": confusion.tolist(),
        "train_seconds_per_fold_median": round(median(seconds), 1),
    }
    print(hardware())
    for key, value in figures.items():
        print(f"{key}: {value}")
    write_json(figures, args.json)


if __name__ == "__main__":
    main()
