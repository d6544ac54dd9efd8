"""Shared fixtures: the blood-cell dataset from a local copy, fetched at most once.

Where the tests find the dataset, first match wins:

1. ``NAPARI_BLOODCELLS_DATA_URL``, if set: a folder is used as it is; a URL
   (a mirror, or a server on 127.0.0.1) is fetched once into the cache;
2. ``../shared/data/segmentation_WBC`` beside the checkout;
3. the upstream repository, fetched once into the cache.

Fetching goes through the plugin's own downloader (checksums included) into
``NAPARI_BLOODCELLS_CACHE`` or the user cache; later runs find it there and
need no network. Every test then reads its own copy in a temporary cache.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "segmentation_WBC"
SHARED_FIELDS = Path(__file__).resolve().parents[2] / "shared" / "data" / "BCCD-trainval"
"""BCCD's smear fields with white-cell boxes (its BCCD/ folder, trainval split only)."""


def _local_dataset() -> Path:
    from napari_bloodcells.core.data.download import URL_ENV, fetch_raw
    from napari_bloodcells.errors import DownloadError

    source = os.environ.get(URL_ENV, "")
    if source and Path(source.removeprefix("file://")).is_dir():
        return Path(source.removeprefix("file://"))
    if not source and SHARED_DATA.is_dir():
        return SHARED_DATA
    try:
        return fetch_raw(source or None)  # verified, and skipped when already cached
    except DownloadError as exc:
        pytest.exit(f"The tests need the blood-cell dataset: {exc}", returncode=2)


def pytest_report_header(config) -> str:
    """Which precision "auto" runs in, so that a run's log says what it tested."""
    import torch

    from napari_bloodcells.core.base.device import FAST_BF16_ENV, autocast_dtype

    cpu = "bf16" if autocast_dtype("auto", torch.device("cpu")) else "fp32"
    forced = os.environ.get(FAST_BF16_ENV)
    how = f"{FAST_BF16_ENV}={forced}" if forced else "detected"
    return f"napari-bloodcells: the CPU infers and trains in {cpu} under 'auto' ({how})"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """A local, verified copy of the upstream dataset files (see the module docstring)."""
    return _local_dataset()


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory, shared_data) -> Path:
    """A cache folder filled once per session from ../shared through the real fetch code."""
    from napari_bloodcells.core.data.bloodcell_dataset import bloodcell_folder

    cache = tmp_path_factory.mktemp("cache")
    old = {k: os.environ.get(k) for k in ("NAPARI_BLOODCELLS_DATA_URL", "NAPARI_BLOODCELLS_CACHE")}
    os.environ["NAPARI_BLOODCELLS_DATA_URL"] = str(shared_data)
    os.environ["NAPARI_BLOODCELLS_CACHE"] = str(cache)
    try:
        bloodcell_folder()
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return cache


@pytest.fixture
def data_env(monkeypatch, session_cache, shared_data) -> Path:
    """Point the plugin at ../shared and the session cache; returns the cache folder."""
    monkeypatch.setenv("NAPARI_BLOODCELLS_DATA_URL", str(shared_data))
    monkeypatch.setenv("NAPARI_BLOODCELLS_SMEAR_URL", str(SHARED_FIELDS))
    monkeypatch.setenv("NAPARI_BLOODCELLS_CACHE", str(session_cache))
    return session_cache


@pytest.fixture(scope="session")
def bloodcells(session_cache):
    """All 300 pairs as SegmentationData (read-only: do not modify in tests).

    Without their types, so that training tests do not also train a type model;
    ``typed_bloodcells`` has them.
    """
    from napari_bloodcells.core.data.bloodcell_dataset import DATASET_FOLDER
    from napari_bloodcells.core.data.dataset import load_folder

    data = load_folder(session_cache / DATASET_FOLDER)
    data.types = []
    return data


@pytest.fixture(scope="session")
def typed_bloodcells(session_cache):
    """All 300 pairs with the upstream types of their white cells (read-only)."""
    from napari_bloodcells.core.data.bloodcell_dataset import DATASET_FOLDER
    from napari_bloodcells.core.data.dataset import load_folder

    return load_folder(session_cache / DATASET_FOLDER)


@pytest.fixture
def few_cells(bloodcells):
    """Twelve pairs: enough for a split with 2 dev images and batches of 2."""
    return bloodcells.subset(range(12))


@pytest.fixture
def tiny_config():
    """A fast configuration for tests: the notebook U-Net, one epoch, small batches."""
    from napari_bloodcells.core.training.config import preset

    return preset("seed").with_changes(epochs=1, batch_size=2, size=64, device="cpu")


@pytest.fixture
def cell_stack(bloodcells):
    """The first eight blood-cell images ``(8, 120, 120, 3)`` and masks ``(8, 120, 120)``."""
    import numpy as np

    return np.stack(bloodcells.images[:8]), np.stack(bloodcells.masks[:8])


@pytest.fixture
def state(viewer):
    """The plugin's state for the test's viewer (current model, training set, runs)."""
    from napari_bloodcells._widgets.state import state_of

    return state_of(viewer)


@pytest.fixture
def viewer(make_napari_viewer):
    """A napari viewer (not shown), closed after the test."""
    return make_napari_viewer()


@pytest.fixture
def notes():
    """Every napari notification shown during the test."""
    from napari.utils.notifications import notification_manager

    shown = []
    notification_manager.notification_ready.connect(shown.append)
    yield shown
    notification_manager.notification_ready.disconnect(shown.append)


@pytest.fixture
def make_folder():
    """Write SegmentationData as ``root/images/<name>.png`` and ``root/masks/<name>.png``."""
    from PIL import Image

    def write(data, root: Path) -> Path:
        for name, image, mask in zip(data.names, data.images, data.masks, strict=True):
            for sub, array in (("images", image), ("masks", mask)):
                path = root / sub / f"{name}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(path)
        return root

    return write


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def serve():
    """Start an HTTP server on 127.0.0.1 for a folder; returns its base URL."""
    servers = []

    def start(folder: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def tampered_mirror(tmp_path, shared_data) -> Path:
    """A copy of the upstream dataset with three bytes of ``Dataset 1/150.png`` changed."""
    mirror = tmp_path / "mirror"
    shutil.copytree(shared_data, mirror)
    with open(mirror / "Dataset 1" / "150.png", "r+b") as fh:
        fh.seek(100)
        fh.write(b"\x00\x01\x02")
    return mirror


@pytest.fixture
def bad_inputs(tmp_path, bloodcells, make_folder):
    """Builds spoiled folders and checkpoints under ``tmp_path / "bad"``."""
    from bad_inputs import BadInputs

    root = tmp_path / "bad"
    root.mkdir()
    return BadInputs(root, bloodcells, make_folder)
