"""The dataset download through pooch against a loopback HTTP server."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bad_inputs import OFFLINE_URL
from napari_bloodcells import cli
from napari_bloodcells.core.data import download
from napari_bloodcells.core.data.bloodcell_dataset import mask_from_grey
from napari_bloodcells.errors import DownloadError


def test_registry_lists_every_file_with_sha256():
    entries = download.registry()
    assert len(entries) == 603
    assert entries["Dataset 1/001.bmp"].startswith("sha256:")
    assert sum(name.endswith(".bmp") for name in entries) == 300


def test_fetch_over_http_gives_300_converted_pairs(
    tmp_path, monkeypatch, serve, shared_data, capsys
):
    monkeypatch.setenv("NAPARI_BLOODCELLS_DATA_URL", serve(shared_data))
    monkeypatch.setenv("NAPARI_BLOODCELLS_CACHE", str(tmp_path / "cache"))
    dest = tmp_path / "dest"

    assert cli.main(["fetch", "--dest", str(dest)]) == 0

    images = sorted((dest / "bloodcells_seg" / "images" / "all").glob("*.png"))
    masks = sorted((dest / "bloodcells_seg" / "masks" / "all").glob("*.png"))
    assert len(images) == len(masks) == 300
    for mask_path in masks:
        upstream = np.asarray(Image.open(shared_data / "Dataset 1" / mask_path.name))
        np.testing.assert_array_equal(np.asarray(Image.open(mask_path)), mask_from_grey(upstream))
    first = np.asarray(Image.open(images[0]))
    np.testing.assert_array_equal(
        first, np.asarray(Image.open(shared_data / "Dataset 1" / "001.bmp").convert("RGB"))
    )
    assert "ready" in capsys.readouterr().out


def test_tampered_file_fails_clearly_and_leaves_nothing(
    tmp_path, monkeypatch, serve, tampered_mirror, capsys
):
    monkeypatch.setenv("NAPARI_BLOODCELLS_DATA_URL", serve(tampered_mirror))
    cache = tmp_path / "cache"
    monkeypatch.setenv("NAPARI_BLOODCELLS_CACHE", str(cache))
    dest = tmp_path / "dest"

    assert cli.main(["fetch", "--dest", str(dest)]) == cli.EXIT_USER_ERROR

    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, "one sentence, no traceback"
    assert "150.png" in err
    assert "checksum" in err
    assert not (dest / "bloodcells_seg").exists()
    assert not (cache / "segmentation_WBC" / "Dataset 1" / "150.png").exists()
    assert not list(cache.rglob("*150.png*")), "no partial download is kept"


def test_offline_without_override_says_how_to_use_a_local_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_BLOODCELLS_DATA_URL", OFFLINE_URL)
    monkeypatch.setenv("NAPARI_BLOODCELLS_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DownloadError, match="NAPARI_BLOODCELLS_DATA_URL") as info:
        download.fetch_raw()
    assert "Could not download" in str(info.value)


def test_default_source_is_the_pinned_upstream_commit(monkeypatch, tmp_path):
    monkeypatch.delenv("NAPARI_BLOODCELLS_DATA_URL", raising=False)
    monkeypatch.setenv("NAPARI_BLOODCELLS_CACHE", str(tmp_path))
    assert download.data_source() == download.UPSTREAM_URL
    assert "fa9c01622f52bccb9aeb8a6f2628f564e377767d" in download.UPSTREAM_URL
    assert download.cache_dir() == tmp_path


def test_local_folder_source_is_verified(tmp_path, shared_data):
    raw = download.fetch_raw(source=str(shared_data), cache=tmp_path)
    assert len(list((raw / "Dataset 1").glob("*.bmp"))) == 300
    (raw / "Dataset 1" / "001.bmp").write_bytes(b"not the image")
    # A damaged cached file is replaced by a verified copy.
    download.fetch_raw(source=str(shared_data), cache=tmp_path)
    assert (raw / "Dataset 1" / "001.bmp").read_bytes() == (
        shared_data / "Dataset 1" / "001.bmp"
    ).read_bytes()


def test_a_source_that_fails_is_given_up_after_one_file_and_one_retry(tmp_path, capfd):
    import http.server
    import threading

    from napari_bloodcells.core.data.download import fetch_raw
    from napari_bloodcells.errors import DownloadError

    requests: list[str] = []

    class Failing(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            self.send_error(503)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(DownloadError, match="Could not download the blood-cell dataset"):
            fetch_raw(f"http://127.0.0.1:{server.server_address[1]}/", cache=tmp_path)
    finally:
        server.shutdown()
        server.server_close()
    assert len(requests) == 2  # the first file, then its one retry; no other file tried
    captured = capfd.readouterr()
    assert "Will attempt the download again" not in captured.out + captured.err
