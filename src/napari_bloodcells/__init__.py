"""Train, apply and correct U-Net segmentations of blood-cell images in napari.

The :mod:`napari_bloodcells.core` package holds everything that runs without a
display (data, models, training, inference, checkpoints); the napari layer
(:mod:`napari_bloodcells._widgets`, :mod:`napari_bloodcells._sample_data`) is a
thin view over it.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("napari-bloodcells")
except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
    __version__ = "0.0.0"

__all__ = ["__version__"]
