"""The export job: a model as a bioimage.io package, with a sample image to show it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from napari_bloodcells.core.events import JobStep, PackageExported, Stopped
from napari_bloodcells.core.exchange.export import ExportSettings, export_job
from napari_bloodcells.core.jobs.loading import sample_image

if TYPE_CHECKING:
    from collections.abc import Callable, Generator
    from pathlib import Path

    from napari_bloodcells.core.data.download import Progress
    from napari_bloodcells.core.model.trained import TrainedModel


def export_model(
    model: TrainedModel,
    out: Path,
    sample: np.ndarray | Path | None = None,
    settings: ExportSettings | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    progress: Progress | None = None,
) -> Generator[JobStep | PackageExported | Stopped, None, Path | None]:
    """Export ``model`` to the package ``out``; ends with ``PackageExported`` or ``Stopped``.

    Parameters
    ----------
    model : TrainedModel
        The model to export.
    out : Path
        The ``.zip`` package to write; it appears only when complete.
    sample : ndarray or Path, optional
        The test image (an RGB array or an image file). Without it, the first image
        of the folder the model was trained on, else the blood-cell sample (downloaded
        once), as :func:`~napari_bloodcells.core.jobs.loading.sample_image` finds.
    settings : ExportSettings, optional
        Name, authors, licence and weight formats.
    should_stop : callable
        Polled between steps.
    progress : callable, optional
        ``progress(done, total)`` while the sample downloads.
    """
    if not isinstance(sample, np.ndarray):
        yield JobStep("Reading a sample image for the package…")
        sample = sample_image(sample, progress, model)
    return (yield from export_job(model, out, sample, settings or ExportSettings(), should_stop))
