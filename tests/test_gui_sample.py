"""The sample data open in napari as an RGB image with class labels."""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Image, Labels

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("data_env")]


def test_bloodcells_sample_opens_image_stack_and_labels(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-bloodcells", "bloodcells")
    image, labels = viewer.layers
    assert isinstance(image, Image)
    assert image.rgb
    assert image.data.shape == (300, 120, 120, 3)
    assert isinstance(labels, Labels)
    assert labels.data.shape == image.data.shape[:3]
    assert set(np.unique(labels.data)) <= {0, 1, 2}
    assert set(np.unique(labels.data)) >= {1, 2}
    colours = labels.colormap.map(np.array([0, 1, 2]))
    assert colours[0][3] == 0  # background transparent
    np.testing.assert_allclose(colours[1], (0, 1, 0, 1))
    np.testing.assert_allclose(colours[2], (0, 0, 1, 1))


def test_single_cell_sample_is_one_rgb_image(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-bloodcells", "single_cell")
    (image,) = viewer.layers
    assert isinstance(image, Image)
    assert image.rgb
    assert image.data.ndim == 3
    assert image.data.shape[-1] == 3
    assert image.data.dtype == np.uint8


def test_smear_field_sample_is_whole_fields_with_their_white_cells_boxed(make_napari_viewer):
    from napari.layers import Shapes

    viewer = make_napari_viewer()
    viewer.open_sample("napari-bloodcells", "smear_field")
    image, boxes = viewer.layers
    assert isinstance(image, Image) and image.rgb
    assert image.data.shape == (4, 480, 640, 3)
    assert "BCCD" in image.metadata["citation"] and "MIT" in image.metadata["citation"]
    assert isinstance(boxes, Shapes) and len(boxes.data) == 4
    assert sorted(int(b[0, 0]) for b in boxes.data) == [0, 1, 2, 3], "one white cell per field"


def test_the_gui_command_opens_without_the_sample_when_the_download_fails(
    monkeypatch, tmp_path, notes, qtbot
):
    from bad_inputs import OFFLINE_URL
    from gui_helpers import assert_plain_error
    from napari_bloodcells._launch import open_viewer

    monkeypatch.setenv("NAPARI_BLOODCELLS_DATA_URL", OFFLINE_URL)
    monkeypatch.setenv("NAPARI_BLOODCELLS_CACHE", str(tmp_path / "empty-cache"))
    viewer = open_viewer("bloodcells")
    try:
        assert_plain_error(notes, "Could not download the blood-cell dataset")
        assert len(viewer.layers) == 0
        assert {"Train (napari-bloodcells)", "Segment (napari-bloodcells)"} <= set(
            viewer.window.dock_widgets
        )
    finally:
        viewer.close()


def test_the_gui_command_opens_the_sample_with_both_widgets_ready(qtbot):
    from napari_bloodcells._launch import open_viewer

    viewer = open_viewer("bloodcells")
    try:
        image, labels = viewer.layers
        train = viewer.window.dock_widgets["Train (napari-bloodcells)"]
        segment = viewer.window.dock_widgets["Segment (napari-bloodcells)"]
        # The pickers follow the layers as they appear: Start and Segment work at once.
        assert train.data.image_layer.value is image
        assert train.data.labels_layer.value is labels
        assert segment.image_layer.value is image
    finally:
        viewer.close()
