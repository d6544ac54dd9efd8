"""Spreading segmentation over dask.distributed workers: files of a folder, blocks of a slide.

The scheduler is dask's, never one of our own: a ``LocalCluster`` of N
worker processes (``segment --workers N``) or any running cluster
(``segment --scheduler tcp://host:port``; dask-jobqueue on SLURM, say). Every
file, and every block of a large image, is one task. A task runs the same
code as a single process (:func:`~napari_bloodcells.core.inference.tiled.segment`,
:func:`~napari_bloodcells.core.large.blockwise.segment_block`), so the labels are
the same. Each worker loads the model once and keeps it; with GPUs each
worker takes one. Tasks whose worker dies are retried on another; a file's
labels are written atomically and a block is marked done only once written,
so nothing half-written is kept.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from napari_bloodcells.core.data.dataset import read_image
from napari_bloodcells.core.data.labels_io import write_labels
from napari_bloodcells.core.events import run_to_end
from napari_bloodcells.core.exchange.open_model import load_model
from napari_bloodcells.core.inference.tiled import segment
from napari_bloodcells.core.large.blockwise import segment_block
from napari_bloodcells.core.large.stores import open_labels_store, open_lazy
from napari_bloodcells.errors import BloodcellsError, ConfigError, DataError

if TYPE_CHECKING:
    from distributed import Client

    from napari_bloodcells.core.inference.tiled import TileSettings
    from napari_bloodcells.core.large.stores import Block
    from napari_bloodcells.core.model.trained import TrainedModel

EXTRA_HINT = "install the distributed extra: pip install 'napari-bloodcells[distributed]'"
CONNECT_TIMEOUT_S = 10
RETRIES = 2
"""Times a task is retried on another worker after its worker died."""


def connect(workers: int | None = None, scheduler: str | None = None) -> Client:
    """A dask client: to ``scheduler`` if given, else to a new local cluster of ``workers``.

    Raises
    ------
    ConfigError
        If dask.distributed is not installed, ``workers`` is below 1, or the
        scheduler cannot be reached within :data:`CONNECT_TIMEOUT_S` seconds.
    """
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise ConfigError(
            f"--workers and --scheduler need dask.distributed; {EXTRA_HINT}."
        ) from exc
    if scheduler:
        try:
            return Client(scheduler, timeout=f"{CONNECT_TIMEOUT_S}s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise ConfigError(
                f"Could not reach the dask scheduler at {scheduler} within "
                f"{CONNECT_TIMEOUT_S} s ({type(exc).__name__}); start one with 'dask scheduler' "
                "and workers with 'dask worker ADDRESS', or check the address."
            ) from exc
    if workers is None or workers < 1:
        raise ConfigError(f"--workers must be 1 or more (got {workers}).")
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        host="127.0.0.1",
    )
    return Client(cluster)


def close(client: Client) -> None:
    """Close ``client`` and the local cluster it started, if any."""
    cluster = client.cluster
    client.close()
    if cluster is not None:
        cluster.close()


def _device(preferred: str) -> str:
    """This worker's device: one GPU per worker (by worker number) where there are GPUs."""
    if preferred not in ("auto", "cuda") or not torch.cuda.is_available():
        return preferred if preferred != "auto" else "cpu"
    from distributed import get_worker

    try:
        name = get_worker().name
        index = int(name) if str(name).isdigit() else abs(hash(name))
    except ValueError:  # not in a worker: the caller's process
        index = 0
    return f"cuda:{index % torch.cuda.device_count()}"


@functools.lru_cache(maxsize=2)
def _worker_model(source: str, device: str) -> TrainedModel:
    """The model, loaded once per worker process and kept for its later tasks."""
    return load_model(Path(source), device)


def file_task(
    model_path: str, image_path: str, target: str, scale: float, tiles: TileSettings, device: str
) -> str:
    """Segment one image file and write its labels (a worker's task); returns the target."""
    model = _worker_model(model_path, _device(device))
    result = run_to_end(segment(model, read_image(Path(image_path)), scale=scale, tiles=tiles))
    assert result.labels is not None  # no stop inside a task: dask cancels whole tasks
    write_labels(result.labels, Path(target))
    return target


def block_task(
    model_path: str,
    image_path: str,
    store_path: str,
    block: Block,
    halo: int,
    scale: float,
    tiles: TileSettings,
    device: str,
) -> tuple[int, int]:
    """Segment one block of a large image into its zarr store (a worker's task)."""
    model = _worker_model(model_path, _device(device))
    labels = segment_block(
        model, open_lazy(Path(image_path)), block, halo=halo, scale=scale, tiles=tiles
    )
    assert labels is not None
    open_labels_store(Path(store_path)).write(block, labels)
    return block.row, block.col


def failure(exc: BaseException, what: str) -> DataError:
    """One sentence for a task that failed on every try (its worker died, say)."""
    if isinstance(exc, BloodcellsError):
        return DataError(str(exc))
    try:
        detail = f"{type(exc).__name__}: {str(exc)[:80]}"
    except Exception:  # some of distributed's errors cannot print themselves once pickled
        detail = type(exc).__name__
    return DataError(
        f"Segmenting {what} failed on the dask workers, also after {RETRIES} retries "
        f"({detail}); nothing half-written was kept, so run again with --resume."
    )


def submit(client: Client, task: Any, *args: Any) -> Any:
    """Submit ``task(*args)`` with retries; never cached under a shared key."""
    return client.submit(task, *args, retries=RETRIES, pure=False)
