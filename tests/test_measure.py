"""Cells from class labels, and their measurements."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from PIL import Image
from skimage.draw import disk

from napari_bloodcells import cli
from napari_bloodcells.core.measure.cells import cells_from_classes, measure_cells
from napari_bloodcells.errors import DataError


def _cell(labels, centre, radius, nucleus_radius=None, nucleus_centres=None):
    rr, cc = disk(centre, radius, shape=labels.shape)
    labels[rr, cc] = 1
    for c in nucleus_centres or ([centre] if nucleus_radius else []):
        rr, cc = disk(c, nucleus_radius, shape=labels.shape)
        labels[rr, cc] = 2


def test_touching_cells_are_split_in_two():
    labels = np.zeros((100, 160), np.uint8)
    _cell(labels, (50, 50), 28, 12)
    _cell(labels, (50, 100), 28, 12)  # overlaps the first: one connected region
    cells = cells_from_classes(labels)
    assert cells.max() == 2
    assert abs(int((cells == 1).sum()) - int((cells == 2).sum())) < 60


def test_a_cell_cut_by_the_border_is_flagged():
    labels = np.zeros((100, 100), np.uint8)
    _cell(labels, (50, 50), 20, 8)
    _cell(labels, (95, 10), 20, 8)
    _, table = measure_cells(labels)
    flags = {r["cell"]: r["touches_border"] for r in table.rows()}
    assert sorted(flags.values()) == [False, True]


def test_a_two_lobed_nucleus_counts_two_and_stays_one_cell():
    labels = np.zeros((120, 120), np.uint8)
    _cell(labels, (60, 60), 40, 13, nucleus_centres=[(60, 40), (60, 80)])
    labels[58:62, 52:68] = 2  # a thin bridge between the lobes
    cells, table = measure_cells(labels)
    [row] = table.rows()
    assert cells.max() == 1
    assert row["nucleus_lobes"] == 2


def test_no_nucleus_and_no_cytoplasm_need_no_division_by_zero():
    labels = np.zeros((80, 160), np.uint8)
    _cell(labels, (40, 40), 20)  # cytoplasm only
    rr, cc = disk((40, 120), 15, shape=labels.shape)
    labels[rr, cc] = 2  # nucleus only
    image = np.full((*labels.shape, 3), 200, np.uint8)
    _, table = measure_cells(labels, image, pixel_size=0.5)
    rows = sorted(table.rows(), key=lambda r: r["centroid_col"])
    assert rows[0]["nc_ratio"] == 0.0 and rows[0]["nucleus_lobes"] == 0
    assert math.isnan(rows[0]["nucleus_mean_r"]) and rows[0]["cytoplasm_mean_r"] == 200
    assert math.isinf(rows[1]["nc_ratio"])
    assert rows[0]["area_um2"] == pytest.approx(rows[0]["area"] * 0.25)


def test_measured_ratio_is_the_pixel_count_ratio(bloodcells):
    truth = bloodcells.masks[0]
    _, table = measure_cells(truth, bloodcells.images[0])
    biggest = max(table.rows(), key=lambda r: r["area"])
    assert biggest["nc_ratio"] == pytest.approx((truth == 2).sum() / (truth == 1).sum())
    assert 0.5 < biggest["circularity"] <= 1.2


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (np.full((8, 8), 3, np.uint8), "holds the value(s) 3"),
        (np.zeros((8, 8, 3), np.uint8), "is an RGB image"),
        (np.zeros((8, 8), np.float32), "whole numbers"),
    ],
)
def test_bad_labels_are_one_sentence(labels, message):
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        measure_cells(labels)


def test_cli_measure_writes_one_row_per_cell_and_an_empty_table_with_a_notice(tmp_path, capsys):
    labels = np.zeros((100, 160), np.uint8)
    _cell(labels, (50, 50), 28, 12)
    _cell(labels, (50, 100), 28, 12)
    Image.fromarray(labels).save(tmp_path / "two.png")
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "empty.png")
    out = tmp_path / "cells.csv"
    argv = ["measure", str(tmp_path / "two.png"), "--out", str(out), "--pixel-size", "0.1"]
    assert cli.main(argv) == 0
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 and float(rows[0]["area_um2"]) > 0
    assert cli.main(["measure", str(tmp_path / "empty.png"), "--out", str(out)]) == 0
    assert "No cell was found" in capsys.readouterr().out
    with open(out, newline="") as fh:
        assert list(csv.DictReader(fh)) == []


def test_cli_measure_refuses_rgb_labels_and_bad_pixel_sizes(tmp_path, capsys):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "rgb.png")
    argv = ["measure", str(tmp_path / "rgb.png"), "--out", str(tmp_path / "c.csv")]
    assert cli.main(argv) == cli.EXIT_USER_ERROR
    assert "single-channel" in capsys.readouterr().err
    assert cli.main([*argv, "--pixel-size", "0"]) == cli.EXIT_USER_ERROR
    assert "pixel size (0.0) must be above 0" in capsys.readouterr().err
