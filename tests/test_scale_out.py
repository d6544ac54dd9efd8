"""Large images block by block into zarr, resuming, and dask.distributed workers."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
import zarr

from bad_inputs import untrained_model
from napari_bloodcells import cli
from napari_bloodcells.core.events import BlockWritten, run_to_end
from napari_bloodcells.core.inference.tiled import segment_image
from napari_bloodcells.core.jobs import segment_files
from napari_bloodcells.core.large.stores import open_lazy
from napari_bloodcells.core.model.checkpoint import save_checkpoint
from napari_bloodcells.errors import DataError

BLOCK = 256


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return save_checkpoint(untrained_model(native=True), tmp_path_factory.mktemp("m") / "m.pt")


@pytest.fixture(scope="module")
def slide(bloodcells) -> np.ndarray:
    """A 600 x 700 RGB 'slide' of sample cells, not a multiple of the block size."""
    cells = [image[:100, :100] for image in bloodcells.images[:42]]
    rows = [np.concatenate(cells[r * 7 : (r + 1) * 7], axis=1) for r in range(6)]
    return np.ascontiguousarray(np.concatenate(rows, axis=0))


def write_zarr(path, array, chunks=(128, 128, 3)):
    z = zarr.create_array(str(path), shape=array.shape, chunks=chunks, dtype=array.dtype)
    z[:] = array
    return path


def labels_of(store) -> np.ndarray:
    return np.asarray(zarr.open_group(str(store), mode="r")["0"][:])


def test_a_zarr_slide_is_segmented_block_by_block_as_one_image_would_be(
    tmp_path, model_file, slide, capsys
):
    source = write_zarr(tmp_path / "slide.zarr", slide)
    out = tmp_path / "out"
    args = ["segment", str(model_file), str(source), "--out", str(out), "--block", str(BLOCK)]
    assert cli.main(args) == 0
    assert "block 9/9" in capsys.readouterr().err  # 3 x 3 blocks
    group = zarr.open_group(str(out / "slide.zarr"), mode="r")
    assert group["0"].chunks == (BLOCK, BLOCK) and bool(np.all(group["blocks_done"][:]))
    # The blocks are tiled as the whole image is: the block split leaves no seams of its own.
    whole = segment_image(untrained_model(native=True), slide)[0]
    assert (labels_of(out / "slide.zarr") == whole).mean() >= 0.999
    # An output that exists is refused without --resume, in one sentence.
    assert cli.main(args) == 2
    message = capsys.readouterr().err.strip()
    assert "exists; pass --resume" in message and message.count("\n") == 0


class PixelColour(torch.nn.Module):
    """A network whose class depends on each pixel alone: any block split must agree exactly."""

    def forward(self, x):
        return torch.stack([x[:, 0], x[:, 1], x[:, 2]], dim=1) * 10


def test_blocks_are_cropped_and_placed_exactly(tmp_path, slide):
    from dataclasses import replace

    model = replace(untrained_model(native=True), network=PixelColour())
    source = write_zarr(tmp_path / "slide.zarr", slide)
    run_to_end(segment_files(model, [source], tmp_path / "out", block=BLOCK))
    whole = segment_image(model, slide)[0]
    assert np.array_equal(labels_of(tmp_path / "out" / "slide.zarr"), whole)


def test_a_stopped_run_resumes_where_it_stopped(tmp_path, model_file, slide):
    source = write_zarr(tmp_path / "slide.zarr", slide)
    out = tmp_path / "out"
    events: list[object] = []

    def stop_after_two_blocks() -> bool:
        return sum(isinstance(e, BlockWritten) for e in events) >= 2

    job = segment_files(model_file, [source], out, block=BLOCK, should_stop=stop_after_two_blocks)
    for event in job:
        events.append(event)
    done = zarr.open_group(str(out / "slide.zarr"), mode="r")["blocks_done"][:]
    assert int(done.sum()) == 2
    with pytest.raises(DataError, match="exists; pass --resume"):
        run_to_end(segment_files(model_file, [source], out, block=BLOCK))
    resumed = list(segment_files(model_file, [source], out, block=BLOCK, resume=True))
    assert sum(isinstance(e, BlockWritten) for e in resumed) == 7  # only the rest
    fresh = tmp_path / "fresh"
    run_to_end(segment_files(model_file, [source], fresh, block=BLOCK))
    assert np.array_equal(labels_of(out / "slide.zarr"), labels_of(fresh / "slide.zarr"))


def test_ome_zarr_and_pyramidal_tiff_open_at_full_resolution(tmp_path, slide):
    import tifffile

    group = zarr.open_group(str(tmp_path / "image.ome.zarr"), mode="w")
    chw = np.ascontiguousarray(slide.transpose(2, 0, 1))
    for level, factor in enumerate((1, 2)):
        array = group.create_array(
            str(level), shape=chw[:, ::factor, ::factor].shape, dtype="uint8"
        )
        array[:] = chw[:, ::factor, ::factor]
    group.attrs["multiscales"] = [{"version": "0.4", "datasets": [{"path": "0"}, {"path": "1"}]}]
    assert np.array_equal(np.asarray(open_lazy(tmp_path / "image.ome.zarr")), slide)

    path = tmp_path / "pyramid.ome.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(slide, subifds=1, tile=(128, 128), photometric="rgb")
        tif.write(slide[::2, ::2], subfiletype=1, tile=(128, 128), photometric="rgb")
    assert np.array_equal(np.asarray(open_lazy(path)), slide)


@pytest.mark.parametrize(
    ("array", "fragment"),
    [
        (np.zeros((2, 5, 64, 64), np.uint8), "not one 2D image"),
        (np.zeros((64, 64, 3), np.uint16), "8-bit images"),
    ],
)
def test_a_zarr_of_the_wrong_shape_or_dtype_is_one_sentence(
    tmp_path, model_file, array, fragment, capsys
):
    source = write_zarr(tmp_path / "bad.zarr", array, chunks=array.shape)
    assert cli.main(["segment", str(model_file), str(source), "--out", str(tmp_path / "o")]) == 2
    message = capsys.readouterr().err.strip()
    assert fragment in message and message.count("\n") == 0


def folder_of_images(root, bloodcells, count=4):
    from PIL import Image

    root.mkdir()
    for i in range(count):
        Image.fromarray(bloodcells.images[i]).save(root / f"cell{i}.png")
    return root


def test_workers_and_a_running_scheduler_give_the_single_process_labels(
    tmp_path, model_file, bloodcells, slide
):
    from distributed import LocalCluster
    from PIL import Image

    folder = folder_of_images(tmp_path / "cells", bloodcells)
    write_zarr(folder / "slide.zarr", slide)
    base = ["segment", str(model_file), str(folder), "--block", str(BLOCK)]
    assert cli.main([*base, "--out", str(tmp_path / "one")]) == 0
    assert cli.main([*base, "--out", str(tmp_path / "two"), "--workers", "2"]) == 0
    with LocalCluster(
        n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        address = cluster.scheduler_address
        assert cli.main([*base, "--out", str(tmp_path / "sched"), "--scheduler", address]) == 0
    # Workers run one thread each and oneDNN's sums may then round differently, which can
    # tip a pixel whose classes tie: the bar is 99.9 % of the pixels.
    for run in ("two", "sched"):
        for i in range(4):
            a = np.asarray(Image.open(tmp_path / "one" / f"cell{i}.png"))
            b = np.asarray(Image.open(tmp_path / run / f"cell{i}.png"))
            assert (a == b).mean() >= 0.999
        one, other = (
            labels_of(tmp_path / "one" / "slide.zarr"),
            labels_of(tmp_path / run / "slide.zarr"),
        )
        assert (one == other).mean() >= 0.999


def _plugin_that_kills_one_worker(flag):
    """A dask worker plugin: the first worker to start a block task dies shortly after.

    ``flag`` is a file; the worker that deletes it is the one that dies, so
    exactly one worker dies, mid-task, whichever it is.
    """
    from distributed import WorkerPlugin

    class KillOneWorker(WorkerPlugin):
        def transition(self, key, start, finish, **kwargs):
            if finish != "executing" or "block_task" not in str(key):
                return
            try:
                os.unlink(flag)
            except FileNotFoundError:
                return
            threading.Timer(0.2, os._exit, args=(1,)).start()

    return KillOneWorker()


def test_a_worker_dying_mid_run_has_its_blocks_retried_and_the_labels_complete(
    tmp_path, model_file, slide
):
    from distributed import Client, LocalCluster

    source = write_zarr(tmp_path / "slide.zarr", slide)
    base = ["segment", str(model_file), str(source), "--block", str(BLOCK)]
    assert cli.main([*base, "--out", str(tmp_path / "one")]) == 0
    flag = tmp_path / "kill-one-worker"
    flag.touch()
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        client.register_plugin(_plugin_that_kills_one_worker(str(flag)))
        out = tmp_path / "two"
        assert cli.main([*base, "--out", str(out), "--scheduler", cluster.scheduler_address]) == 0
    assert not flag.exists()  # a worker did die
    group = zarr.open_group(str(out / "slide.zarr"), mode="r")
    assert bool(np.all(group["blocks_done"][:]))
    # As one process would have it, up to pixels whose classes tie (see above).
    assert (
        labels_of(out / "slide.zarr") == labels_of(tmp_path / "one" / "slide.zarr")
    ).mean() >= 0.999


def test_an_unreachable_scheduler_is_one_sentence(tmp_path, model_file, bloodcells, capsys):
    folder = folder_of_images(tmp_path / "cells", bloodcells, count=1)
    args = ["segment", str(model_file), str(folder), "--out", str(tmp_path / "o")]
    assert cli.main([*args, "--scheduler", "tcp://127.0.0.1:9"]) == 2
    message = capsys.readouterr().err.strip()
    assert "Could not reach the dask scheduler at tcp://127.0.0.1:9" in message
    assert message.count("\n") == 0


def test_a_task_that_fails_on_every_retry_is_one_sentence():
    from distributed.scheduler import KilledWorker

    from napari_bloodcells.core.large.cluster import failure

    error = failure(KilledWorker("block_task-1", "tcp://127.0.0.1:1234", 3), "slide.zarr")
    assert "failed on the dask workers" in str(error) and "--resume" in str(error)


def test_globs_and_folders_expand_and_python_dash_m_runs_the_command(tmp_path, bloodcells):
    from napari_bloodcells.core.jobs import expand_inputs

    folder = folder_of_images(tmp_path / "cells", bloodcells, count=3)
    assert expand_inputs([folder]) == sorted(folder.glob("*.png"))
    assert expand_inputs([folder / "cell[01].png"]) == [folder / "cell0.png", folder / "cell1.png"]
    with pytest.raises(DataError, match="No file matches"):
        expand_inputs([folder / "*.jpg"])
    done = subprocess.run(
        [sys.executable, "-m", "napari_bloodcells", "segment", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0 and "--workers" in done.stdout and "--resume" in done.stdout


def test_large_labels_are_ome_zarr_that_readers_open_as_labels(tmp_path, model_file, slide):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Multiscales, Reader

    source = write_zarr(tmp_path / "slide.zarr", slide)
    out = tmp_path / "out.zarr"
    args = ["segment", str(model_file), str(source), "--out", str(out), "--block", str(BLOCK)]
    assert cli.main(args) == 0
    root = zarr.open_group(str(out), mode="r")  # the --out group is a zarr group itself
    assert root.attrs["ome"]["labels"] == ["slide"]
    node = next(iter(Reader(parse_url(str(out / "slide")))()))
    assert {type(spec) for spec in node.specs} >= {Label, Multiscales}
    label = root["slide"].attrs["ome"]["image-label"]
    assert [c["label-value"] for c in label["colors"]] == [0, 1, 2]
    assert [p["class"] for p in label["properties"]] == ["background", "cytoplasm", "nucleus"]
    levels = root["slide"].attrs["ome"]["multiscales"][0]["datasets"]
    assert levels[0]["coordinateTransformations"][0]["scale"] == [1.0, 1.0]
    assert (labels_of(out / "slide") == node.data[0][:]).all()


def test_into_input_writes_the_labels_beside_the_ome_zarr_image(tmp_path, model_file, slide):
    from ome_zarr.writer import write_image

    source = tmp_path / "slide.ome.zarr"
    image = zarr.open_group(str(source), mode="w")
    write_image(np.moveaxis(slide, -1, 0), image, axes="cyx", scaler=None)
    args = ["segment", str(model_file), str(source), "--out", str(tmp_path / "unused")]
    assert cli.main([*args, "--into-input", "--block", str(BLOCK)]) == 0
    labels = zarr.open_group(str(source / "labels"), mode="r")
    assert labels.attrs["ome"]["labels"] == ["bloodcells"]
    assert labels_of(source / "labels" / "bloodcells").shape == slide.shape[:2]
