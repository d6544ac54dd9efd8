"""Large-image labels open in napari as Labels with the class colours, through the OME-Zarr
reader napari users have (napari-ome-zarr), under Xvfb."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from bad_inputs import untrained_model
from napari_bloodcells import cli
from napari_bloodcells.core.base.classes import BLOODCELL_CLASSES
from napari_bloodcells.core.model.checkpoint import save_checkpoint

pytestmark = [
    pytest.mark.gui,
    # napari-ome-zarr hands napari the file's colours without a default for other values;
    # the reader's colour table, not this plugin's (it lists every class value).
    pytest.mark.filterwarnings("ignore:color_dict did not provide a default color:UserWarning"),
]


@pytest.fixture
def slide(bloodcells, tmp_path):
    cells = [image[:100, :100] for image in bloodcells.images[:12]]
    picture = np.concatenate([np.concatenate(cells[r * 4 : (r + 1) * 4], 1) for r in range(3)])
    path = tmp_path / "slide.zarr"
    array = zarr.create_array(str(path), shape=picture.shape, chunks=(128, 128, 3), dtype="uint8")
    array[:] = picture
    return path


@pytest.mark.parametrize("out", ["folder", "out.zarr"])
def test_napari_opens_segmented_slides_as_labels_in_the_class_colours(
    make_napari_viewer, tmp_path, slide, out
):
    model = save_checkpoint(untrained_model(native=True), tmp_path / "model.pt")
    args = ["segment", str(model), str(slide), "--out", str(tmp_path / out), "--block", "256"]
    assert cli.main(args) == 0
    written = tmp_path / out / ("slide.zarr" if out == "folder" else "slide")
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(written), plugin="napari-ome-zarr")
    assert layer.__class__.__name__ == "Labels"
    expected = np.asarray(zarr.open_group(str(written), mode="r")["0"][:])
    np.testing.assert_array_equal(
        np.asarray(layer.data[0] if layer.multiscale else layer.data), expected
    )
    for value in (1, 2):
        np.testing.assert_allclose(
            layer.colormap.map(np.array([value]))[0], BLOODCELL_CLASSES.colors[value], atol=0.01
        )
