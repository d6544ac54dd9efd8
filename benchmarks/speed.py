"""Seed preset vs the reference notebook's loop: seconds per epoch, measured alternately.

The reference is the notebook's recipe re-implemented as it runs there: a
``Dataset`` that opens and resizes PNG files with PIL/torchvision on every
access, ``DataLoader(num_workers=2)``, the notebook U-Net (with torch's own
ELU), Adam 1e-4, cross-entropy, batch 8, and a dev pass per epoch. Ours is
``train(preset("seed"))``, the same model, batch, data and split. Epochs of
the two alternate so that machine noise hits both alike; medians are reported.

    python benchmarks/speed.py --rounds 4
    python benchmarks/speed.py --rounds 4 --precision fp32
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, random_split
from torchvision import transforms

from _common import bloodcell_data, median
from napari_bloodcells.core.data.bloodcell_dataset import DATASET_FOLDER
from napari_bloodcells.core.data.dataset import NOTEBOOK_SEED
from napari_bloodcells.core.data.download import cache_dir
from napari_bloodcells.core.events import EpochEnded
from napari_bloodcells.core.model.networks import ConvBlock, NotebookUNet
from napari_bloodcells.core.training.config import preset
from napari_bloodcells.core.training.loop import train

if TYPE_CHECKING:
    from pathlib import Path


class _NotebookPairs(Dataset):
    """Reads and resizes files on every access, as the notebook's dataset does."""

    def __init__(self, root: Path, size: int = 128) -> None:
        self.images = sorted((root / "images" / "all").glob("*"))
        self.masks = sorted((root / "masks" / "all").glob("*"))
        self.image_tf = transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor()])
        self.mask_tf = transforms.Resize(
            (size, size), interpolation=transforms.InterpolationMode.NEAREST
        )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        image = self.image_tf(Image.open(self.images[i]).convert("RGB"))
        mask = torch.as_tensor(
            np.array(self.mask_tf(Image.open(self.masks[i]).convert("L"))), dtype=torch.long
        )
        return image, mask


def notebook_unet() -> NotebookUNet:
    """The U-Net as the notebook builds it: the same layers, with torch's own ``nn.ELU``.

    The package's U-Net computes ELU with vectorised ``exp`` (see
    ``napari_bloodcells.core.model.networks.ELU``); the reference keeps ATen's.
    """
    model = NotebookUNet()
    for block in model.modules():
        if isinstance(block, ConvBlock):
            for index, layer in enumerate(block):
                if isinstance(layer, torch.nn.ELU):
                    block[index] = torch.nn.ELU(inplace=True)
    return model


class ReferenceLoop:
    """One notebook epoch per call: train pass, then dev loss."""

    def __init__(self, root: Path) -> None:
        dataset = _NotebookPairs(root)
        n_dev = int(0.2 * len(dataset))
        train_set, dev_set = random_split(
            dataset,
            [len(dataset) - n_dev, n_dev],
            generator=torch.Generator().manual_seed(NOTEBOOK_SEED),
        )
        self.train_loader = DataLoader(train_set, batch_size=8, shuffle=True, num_workers=2)
        self.dev_loader = DataLoader(dev_set, batch_size=8, shuffle=False, num_workers=2)
        self.model = notebook_unet()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-4)
        self.criterion = torch.nn.CrossEntropyLoss()

    def epoch(self) -> None:
        self.model.train()
        for x, y in self.train_loader:
            self.optimizer.zero_grad()
            loss = self.criterion(self.model(x), y)
            loss.backward()
            self.optimizer.step()
            loss.item()
        self.model.eval()
        with torch.no_grad():
            for x, y in self.dev_loader:
                self.criterion(self.model(x), y).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--precision", default=None, help="override the seed preset's")
    args = parser.parse_args()

    data = bloodcell_data()
    reference = ReferenceLoop(cache_dir() / DATASET_FOLDER)
    config = preset("seed").with_changes(
        epochs=args.rounds + 1, precision=args.precision, num_preview=0
    )
    ours = train(config, data)
    ours_times, ref_times = [], []

    def our_epoch() -> float:
        started = time.perf_counter()
        for event in ours:
            if isinstance(event, EpochEnded):
                return time.perf_counter() - started
        raise RuntimeError("training ended early")

    # Warm-up epoch of each (allocator, oneDNN kernel selection), not counted.
    our_epoch()
    reference.epoch()
    for _ in range(args.rounds):
        started = time.perf_counter()
        reference.epoch()
        ref_times.append(time.perf_counter() - started)
        ours_times.append(our_epoch())
        print(f"reference {ref_times[-1]:6.2f} s   ours {ours_times[-1]:6.2f} s", flush=True)
    ref, our = median(ref_times), median(ours_times)
    print()
    print("| loop | precision | median s/epoch | ratio |")
    print("|---|---|---|---|")
    print(f"| reference notebook loop | fp32 | {ref:.2f} | 1.00 |")
    print(f"| seed preset | {config.precision} | {our:.2f} | {our / ref:.2f} |")


if __name__ == "__main__":
    main()
