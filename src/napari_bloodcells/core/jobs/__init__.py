"""The jobs that the CLI and the widgets start, and the only core module they call.

A job is a generator of :mod:`~napari_bloodcells.core.events`: it loads what it
needs (the training data, the starting model), runs an engine and passes the
engine's events on. Its last event carries its result. The CLI iterates a job in
the foreground; a widget runs the same job in a napari thread worker. Nothing
here imports napari or Qt.
"""

from napari_bloodcells.core.data.labels_io import write_labels
from napari_bloodcells.core.exchange.open_model import ModelSource, load_model
from napari_bloodcells.core.jobs.inputs import expand_inputs, output_paths
from napari_bloodcells.core.jobs.loading import (
    TrainingData,
    load_replay,
    load_training_data,
    sample_image,
)
from napari_bloodcells.core.jobs.measurement import measure_files, measure_job
from napari_bloodcells.core.jobs.segmentation import scale_job, segment_files, segmentation_job
from napari_bloodcells.core.jobs.training import training_job

__all__ = [
    "ModelSource",
    "TrainingData",
    "expand_inputs",
    "load_model",
    "load_replay",
    "load_training_data",
    "measure_files",
    "measure_job",
    "output_paths",
    "sample_image",
    "scale_job",
    "segment_files",
    "segmentation_job",
    "training_job",
    "write_labels",
]
