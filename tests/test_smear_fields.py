"""Smear fields with white-cell boxes: reading BCCD's annotations and scoring against boxes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_bloodcells.core.data.smear_fields import (
    Box,
    NucleusScore,
    keep_inside,
    load_fields,
    read_white_cells,
    score_nucleus,
)
from napari_bloodcells.errors import DataError

BCCD = Path(__file__).resolve().parents[2] / "shared" / "data" / "BCCD-trainval"


@pytest.fixture(scope="module")
def bccd() -> Path:
    if not BCCD.is_dir():  # pragma: no cover - ../shared is beside every checkout here
        pytest.fail(f"The tests need the BCCD fields in {BCCD}.")
    return BCCD


def test_the_splits_list_every_field_with_its_white_cells(bccd):
    train, val = load_fields(bccd, "train"), load_fields(bccd, "val")
    assert (len(train), len(val)) == (205, 87)
    assert not {f.name for f in train} & {f.name for f in val}
    first = val[0]
    assert first.name == "BloodImage_00000"
    # VOC's 1-based inclusive corners (260, 177)-(491, 376) as 0-based, end exclusive.
    assert first.white_cells == (Box(259, 176, 491, 376),)
    assert sum(len(f.white_cells) for f in train + val) >= 290


def test_recall_and_precision_follow_the_boxes():
    labels = np.zeros((100, 100), np.uint8)
    box = Box(10, 10, 50, 50)
    labels[20:30, 20:30] = 2  # 100 nucleus pixels, 6 % of the box
    labels[80:90, 80:90] = 2  # 100 on a "red cell" outside it
    score = score_nucleus(labels, [box])
    assert (score.recall, score.precision) == (1.0, 0.5)
    labels[20:30, 20:30] = 1
    assert score_nucleus(labels, [box]).recall == 0.0
    pooled = NucleusScore(2, 1, 10, 5) + NucleusScore(1, 1, 10, 10)
    assert (pooled.recall, pooled.precision) == (2 / 3, 0.75)


def test_the_grown_box_counts_a_nucleus_at_its_edge():
    labels = np.zeros((100, 100), np.uint8)
    labels[10:50, 50:52] = 2  # just right of the box, within 10 % of its width
    assert score_nucleus(labels, [Box(10, 10, 50, 50)]).precision == 1.0


def test_a_correction_erases_everything_outside_the_white_cells():
    labels = np.full((60, 60), 2, np.uint8)
    corrected = keep_inside(labels, [Box(10, 10, 30, 30)])
    assert corrected[20, 20] == 2 and corrected[50, 50] == 0
    assert labels[50, 50] == 2, "the prediction itself is not changed"


def test_bad_annotation_folders_are_one_sentence(tmp_path):
    with pytest.raises(DataError, match="has no Annotations folder"):
        load_fields(tmp_path)
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Annotations" / "a.xml").write_text("<annotation><object>")
    with pytest.raises(DataError, match=r"^Cannot read the boxes in a.xml .*Pascal VOC"):
        read_white_cells(tmp_path / "Annotations" / "a.xml")
    with pytest.raises(DataError, match=r"no split list val\.txt"):
        load_fields(tmp_path, "val")
    with pytest.raises(DataError, match="has boxes but no image"):
        load_fields(tmp_path, "all")


def test_the_sample_fields_come_verified_from_a_local_copy(bccd, tmp_path, monkeypatch):
    from napari_bloodcells.core.data.smear_fields import sample_fields

    monkeypatch.setenv("NAPARI_BLOODCELLS_SMEAR_URL", str(bccd))
    monkeypatch.setenv("NAPARI_BLOODCELLS_CACHE", str(tmp_path))
    fields = sample_fields()
    assert fields[0].name == "BloodImage_00000" and len(fields) == 4
    assert all(len(f.white_cells) == 1 and f.image_path.is_file() for f in fields)
    assert fields[0].image_path.is_relative_to(tmp_path)


def test_the_sample_fields_download_over_http_and_refuse_a_tampered_copy(bccd, tmp_path, serve):
    import shutil

    from napari_bloodcells.core.data.download import SMEAR_FIELDS, fetch_raw, registry
    from napari_bloodcells.errors import DownloadError

    root = fetch_raw(serve(bccd), cache=tmp_path / "a", remote=SMEAR_FIELDS)
    assert all((root / name).is_file() for name in registry(SMEAR_FIELDS))
    mirror = tmp_path / "mirror"
    shutil.copytree(bccd / "Annotations", mirror / "Annotations")
    shutil.copytree(bccd / "JPEGImages", mirror / "JPEGImages")
    with open(mirror / "JPEGImages" / "BloodImage_00002.jpg", "r+b") as fh:
        fh.seek(200)
        fh.write(b"\x00\x01\x02")
    with pytest.raises(DownloadError, match="does not match its known checksum"):
        fetch_raw(serve(mirror), cache=tmp_path / "b", remote=SMEAR_FIELDS)


def test_offline_the_sample_fields_say_how_to_point_at_a_copy(tmp_path):
    import socket

    from napari_bloodcells.core.data.download import SMEAR_FIELDS, fetch_raw
    from napari_bloodcells.errors import DownloadError

    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(DownloadError) as caught:
        fetch_raw(f"http://127.0.0.1:{port}/", cache=tmp_path, remote=SMEAR_FIELDS)
    message = str(caught.value)
    assert message.startswith("Could not download the smear-field sample (BCCD)")
    assert "NAPARI_BLOODCELLS_SMEAR_URL" in message and "\n" not in message
