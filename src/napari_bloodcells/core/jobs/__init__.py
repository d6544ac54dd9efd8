"""The jobs that the CLI and the widgets start, and the only core module they call.

A job is a generator of :mod:`~napari_bloodcells.core.events`: it loads what it
needs (the training data, the starting model), runs an engine and passes the
engine's events on. Its last event is a
:class:`~napari_bloodcells.core.events.JobEnded` that carries its result;
:func:`~napari_bloodcells.core.events.run_to_end` runs a job and returns it. The
CLI iterates a job in the foreground; a widget runs the same job in a napari
thread worker. Nothing here imports napari or Qt.

Besides the jobs, this module offers the few helpers the front ends need around
them (where the cache is, which device "auto" means, what a checkpoint holds), so
that a front end never reaches into the engines.
"""

from napari_bloodcells.core.base.cell_types import ADAPT_MIN_CELLS, DEFAULT_THRESHOLD
from napari_bloodcells.core.base.device import resolve_device
from napari_bloodcells.core.data.bloodcell_dataset import bloodcell_folder
from napari_bloodcells.core.data.dataset import read_image
from napari_bloodcells.core.data.download import cache_dir
from napari_bloodcells.core.data.labels_io import write_labels
from napari_bloodcells.core.data.project import (
    Project,
    QueueEntry,
    Suggestion,
    next_uncorrected,
)
from napari_bloodcells.core.exchange.open_model import ModelSource, load_model
from napari_bloodcells.core.jobs.differential import differential_job
from napari_bloodcells.core.jobs.evaluation import SPLITS, evaluation_job
from napari_bloodcells.core.jobs.export import export_model
from napari_bloodcells.core.jobs.inputs import expand_inputs, output_paths
from napari_bloodcells.core.jobs.loading import (
    TrainingData,
    load_replay,
    load_training_data,
    sample_image,
)
from napari_bloodcells.core.jobs.measurement import measure_files, measure_job
from napari_bloodcells.core.jobs.queue import suggest_job, write_ranking
from napari_bloodcells.core.jobs.segmentation import (
    blocks_job,
    large_labels_store,
    scale_job,
    segment_files,
    segmentation_job,
)
from napari_bloodcells.core.jobs.training import training_job
from napari_bloodcells.core.large.cluster import close as close_cluster
from napari_bloodcells.core.large.cluster import connect as connect_cluster
from napari_bloodcells.core.measure.cell_crops import cell_pair
from napari_bloodcells.core.measure.cells import write_csv
from napari_bloodcells.core.measure.differential import (
    DifferentialRow,
    counted_cells,
    differential,
    write_differential,
)
from napari_bloodcells.core.model.checkpoint import (
    best_dev_dice,
    describe_file,
    kept_epochs,
    save_checkpoint,
)
from napari_bloodcells.core.model.networks import architectures, encoders_for
from napari_bloodcells.core.training.ddp import from_environment
from napari_bloodcells.core.training.finetune import better_current
from napari_bloodcells.core.training.report import plot_curves, write_history_json

__all__ = [
    "ADAPT_MIN_CELLS",
    "DEFAULT_THRESHOLD",
    "SPLITS",
    "DifferentialRow",
    "ModelSource",
    "Project",
    "QueueEntry",
    "Suggestion",
    "TrainingData",
    "architectures",
    "best_dev_dice",
    "better_current",
    "blocks_job",
    "bloodcell_folder",
    "cache_dir",
    "cell_pair",
    "close_cluster",
    "connect_cluster",
    "counted_cells",
    "describe_file",
    "differential",
    "differential_job",
    "encoders_for",
    "evaluation_job",
    "expand_inputs",
    "export_model",
    "from_environment",
    "kept_epochs",
    "large_labels_store",
    "load_model",
    "load_replay",
    "load_training_data",
    "measure_files",
    "measure_job",
    "next_uncorrected",
    "output_paths",
    "plot_curves",
    "read_image",
    "resolve_device",
    "sample_image",
    "save_checkpoint",
    "scale_job",
    "segment_files",
    "segmentation_job",
    "suggest_job",
    "training_job",
    "write_csv",
    "write_differential",
    "write_history_json",
    "write_labels",
    "write_ranking",
]
