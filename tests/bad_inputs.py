"""The bad inputs of the hardening table, built on demand for the CLI and widget tests."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np
import tifffile

if TYPE_CHECKING:
    from pathlib import Path

OFFLINE_URL = "http://127.0.0.1:9/"
"""A closed loopback port: requests fail at once, standing in for "no network"."""


def untrained_model(
    names: tuple[str, ...] = ("background", "cytoplasm", "nucleus"), *, native: bool = False
):
    """A notebook U-Net with fixed random weights and the given classes: fast to build and apply.

    Like the seed preset it resizes every image to 128 px, unless ``native``.
    """
    import torch

    from napari_bloodcells.core.base.classes import BLOODCELL_CLASSES, ClassInfo
    from napari_bloodcells.core.model.networks import NOTEBOOK_UNET, ModelSpec, build_model
    from napari_bloodcells.core.model.trained import TrainedModel
    from napari_bloodcells.core.training.config import preset

    torch.manual_seed(0)
    classes = (
        BLOODCELL_CLASSES
        if tuple(names) == BLOODCELL_CLASSES.names
        else ClassInfo(
            tuple(names), BLOODCELL_CLASSES.colors[:1] + ((1.0, 0.0, 1.0, 1.0),) * (len(names) - 1)
        )
    )
    spec = ModelSpec(NOTEBOOK_UNET, "", classes.num_classes)
    prep = preset("seed").with_changes(mode="native" if native else "resize").preprocessing()
    return TrainedModel(build_model(spec).eval(), spec, classes, prep)


class BadInputs:
    """Builds the bad inputs of the hardening table, each in a folder of its own.

    Folders hold eight blood-cell pairs in the ``images/`` + ``masks/`` layout,
    spoiled in one way; checkpoints are small notebook U-Nets.
    """

    FOLDERS: ClassVar[dict[str, str]] = {
        # case: a fragment of the error the user sees
        "empty folder": "holds no images",
        "no subfolders": "has no 'images' and 'masks' subfolders",
        "images without masks": "2 image(s) have no mask (003, 005)",
        "masks without images": "1 mask(s) have no image (004)",
        "mask of another size": "masks must match their images' size",
        "mask values outside the classes": "The mask of 002 holds the value(s) 7",
        "truncated image": "replace or remove the damaged file",
        "image with no finite values": "holds no finite values",
        "all background": "all background",
        "nothing labelled": "Every label is 'not labelled' (255)",
    }
    CHECKPOINTS: ClassVar[dict[str, str]] = {
        "foreign checkpoint": "is not a napari-bloodcells model",
        "truncated checkpoint": "damaged or not a PyTorch file",
        "newer checkpoint format": "upgrade napari-bloodcells",
    }
    TWO_CLASSES = "holds the value(s) 2, but the model has only classes 0 to 1"
    """The error for the blood-cell data with a model of two classes."""

    def __init__(self, root: Path, pairs, make_folder) -> None:
        self.root = root
        self.pairs = pairs
        self.make_folder = make_folder

    def good_folder(self, name: str = "good") -> Path:
        """Eight intact pairs, named 000 to 007."""
        data = self.pairs.subset(range(8))
        data.names = [f"{i:03d}" for i in range(8)]
        return self.make_folder(data, self.root / name)

    def folder(self, case: str) -> Path:
        """A folder spoiled as ``case`` (a key of :attr:`FOLDERS`)."""
        from PIL import Image

        if case == "empty folder":
            for sub in ("images", "masks"):
                (self.root / case / sub).mkdir(parents=True)
            return self.root / case
        if case == "no subfolders":
            (self.root / case).mkdir()
            return self.root / case
        root = self.good_folder(case)
        images, masks = root / "images", root / "masks"
        if case == "images without masks":
            (masks / "003.png").unlink()
            (masks / "005.png").unlink()
        elif case == "masks without images":
            (images / "004.png").unlink()
        elif case == "mask of another size":
            mask = np.asarray(Image.open(masks / "006.png"))
            Image.fromarray(mask[:-7]).save(masks / "006.png")
        elif case == "mask values outside the classes":
            mask = np.array(Image.open(masks / "002.png"))
            mask[:4, :4] = 7
            Image.fromarray(mask).save(masks / "002.png")
        elif case == "truncated image":
            path = images / "001.png"
            path.write_bytes(path.read_bytes()[:200])
        elif case == "image with no finite values":
            shape = np.asarray(Image.open(images / "001.png")).shape
            (images / "001.png").unlink()
            nan = np.full(shape, np.nan, np.float32)
            tifffile.imwrite(images / "001.tif", nan, photometric="rgb")
        elif case == "all background":
            for path in masks.glob("*.png"):
                Image.fromarray(np.zeros_like(np.asarray(Image.open(path)))).save(path)
        elif case == "nothing labelled":
            for path in masks.glob("*.png"):
                Image.fromarray(np.full_like(np.asarray(Image.open(path)), 255)).save(path)
        else:
            raise KeyError(case)
        return root

    def checkpoint(self, case: str) -> Path:
        """A model file spoiled as ``case`` (a key of :attr:`CHECKPOINTS`)."""
        import torch

        from napari_bloodcells.core.model import checkpoint

        path = self.root / f"{case.replace(' ', '-')}.pt"
        if case == "foreign checkpoint":
            torch.save({"state_dict": untrained_model().network.state_dict()}, path)
        elif case == "truncated checkpoint":
            checkpoint.save_checkpoint(untrained_model(), path)
            path.write_bytes(path.read_bytes()[:4000])
        elif case == "newer checkpoint format":
            checkpoint.save_checkpoint(untrained_model(), path)
            payload = torch.load(path, weights_only=True)
            payload["format_version"] = checkpoint.FORMAT_VERSION + 1
            torch.save(payload, path)
        else:
            raise KeyError(case)
        return path

    def two_class_checkpoint(self) -> Path:
        """A valid model whose classes (background, cell) do not cover the blood-cell labels."""
        from napari_bloodcells.core.model.checkpoint import save_checkpoint

        return save_checkpoint(
            untrained_model(("background", "cell")), self.root / "two-classes.pt"
        )
