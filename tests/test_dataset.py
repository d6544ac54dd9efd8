"""Pairing, conversion and splitting of image/mask data."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from napari_bloodcells._widgets.layers import training_pairs
from napari_bloodcells.core.data.bloodcell_dataset import mask_from_grey
from napari_bloodcells.core.data.dataset import (
    SegmentationData,
    load_folder,
    read_image,
    read_image_noting,
    split_indices,
)
from napari_bloodcells.errors import DataError


def _write_pair(root, key, size=(20, 30), mask_size=None, suffix=".png"):
    (root / "images" / key).parent.mkdir(parents=True, exist_ok=True)
    (root / "masks" / key).parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(0).integers(0, 255, (*size, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(root / "images" / f"{key}{suffix}")
    mask = np.zeros(mask_size or size, dtype=np.uint8)
    mask[2:5, 2:5] = 2
    Image.fromarray(mask).save(root / "masks" / f"{key}.png")
    return rgb, mask


def test_mask_conversion_maps_grey_levels_to_classes():
    grey = np.array([[0, 128], [255, 0]], dtype=np.uint8)
    np.testing.assert_array_equal(mask_from_grey(grey), [[0, 1], [2, 0]])


def test_mask_conversion_rejects_unknown_levels():
    with pytest.raises(DataError, match="grey level"):
        mask_from_grey(np.array([[0, 127]], dtype=np.uint8), "x.png")


def test_folder_pairs_match_by_relative_path_without_extension(tmp_path):
    rgb, mask = _write_pair(tmp_path, "a/001", suffix=".bmp")
    _write_pair(tmp_path, "b/001")
    data = load_folder(tmp_path)
    assert data.names == ["a/001", "b/001"]
    np.testing.assert_array_equal(data.images[0], rgb)
    np.testing.assert_array_equal(data.masks[0], mask)


def test_image_files_of_any_common_mode_read_as_rgb(tmp_path):
    grey = np.arange(200, dtype=np.uint8).reshape(10, 20)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    Image.fromarray(grey).convert("P").save(tmp_path / "palette.png")
    Image.fromarray(grey.astype(np.uint16)).save(tmp_path / "grey16.png")  # 16-bit, 8-bit values
    Image.fromarray((grey / 255.0).astype(np.float32)).save(tmp_path / "unit.tif")
    for name in ("grey.png", "palette.png", "grey16.png", "unit.tif"):
        rgb = read_image(tmp_path / name)
        assert rgb.shape == (10, 20, 3) and rgb.dtype == np.uint8, name
        np.testing.assert_array_equal(rgb[..., 1], grey, err_msg=name)


@pytest.mark.parametrize(
    ("bits", "container"), [(12, np.uint16), (14, np.uint16), (16, np.uint16), (16, np.int32)]
)
def test_deep_image_files_are_rescaled_by_the_bit_depth_they_use(tmp_path, bits, container):
    rgb = np.random.default_rng(bits).integers(0, 256, (10, 20, 3)).astype(np.uint8)
    deep = np.round(rgb.astype(np.float64) * (2**bits - 1) / 255).astype(container)
    tifffile.imwrite(tmp_path / "deep.tif", deep, photometric="rgb")
    pixels, notice = read_image_noting(tmp_path / "deep.tif")
    np.testing.assert_array_equal(pixels, rgb)
    assert notice is not None and f"{bits}-bit" in notice


def test_float_image_files_beyond_0_1_are_stretched_by_percentiles(tmp_path):
    ramp = np.linspace(-2.0, 5.0, 200, dtype=np.float32).reshape(10, 20)
    tifffile.imwrite(tmp_path / "ramp.tif", ramp)
    pixels, notice = read_image_noting(tmp_path / "ramp.tif")
    assert pixels[0, 0, 0] == 0 and pixels[-1, -1, 0] == 255
    assert np.all(np.diff(pixels[..., 0].ravel().astype(int)) >= 0), "order is kept"
    assert notice is not None and "percentile" in notice


def test_image_files_that_cannot_be_shown_as_rgb_are_refused(tmp_path):
    tifffile.imwrite(tmp_path / "nan.tif", np.full((10, 20), np.nan, np.float32))
    with pytest.raises(DataError, match="no finite values") as info:
        read_image(tmp_path / "nan.tif")
    assert "nan.tif" in str(info.value)


def test_notebook_layout_loads_all_300_native_sizes(bloodcells):
    assert len(bloodcells) == 300
    sizes = {m.shape for m in bloodcells.masks}
    assert (120, 120) in sizes
    assert len(sizes) > 1
    assert all(
        im.shape[:2] == m.shape for im, m in zip(bloodcells.images, bloodcells.masks, strict=False)
    )
    assert set(np.unique(np.concatenate([m.ravel() for m in bloodcells.masks]))) == {0, 1, 2}


def test_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        load_folder(tmp_path)


def test_missing_subfolders_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="'images' and 'masks'"):
        load_folder(tmp_path)


def test_images_without_masks_are_named(tmp_path):
    _write_pair(tmp_path, "001")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "images" / "002.png")
    with pytest.raises(DataError, match=r"have no mask.*002"):
        load_folder(tmp_path)


def test_mask_size_mismatch_is_a_clear_error(tmp_path):
    _write_pair(tmp_path, "001", size=(20, 30), mask_size=(20, 29))
    with pytest.raises(DataError, match="must match"):
        load_folder(tmp_path)


def _layers(image, labels):
    from napari.layers import Image, Labels

    return Image(image, rgb=image.shape[-1] == 3), Labels(labels)


def test_layers_give_one_pair_per_image_of_a_stack():
    image = np.zeros((10, 12, 3), np.uint8)
    assert len(training_pairs(*_layers(image, np.ones((10, 12), np.uint8)))) == 1
    stack = _layers(np.stack([image] * 3), np.ones((3, 10, 12), np.uint8))
    assert len(training_pairs(*stack)) == 3
    with pytest.raises(DataError, match="shape"):
        training_pairs(*_layers(image, np.ones((10, 11), np.uint8)))


@pytest.mark.parametrize("bad", [0.5, np.nan, -1.0, 300.0])
def test_float_masks_are_refused_unless_they_are_class_indices(bad):
    masks = np.zeros((1, 4, 4), np.float32)
    masks[0, 1, 1] = bad
    with pytest.raises(DataError, match="The mask m holds values"):
        mask_from_grey(masks[0], "m")


def test_float_and_out_of_range_label_layers_are_refused():
    from napari.layers import Image

    image = Image(np.zeros((4, 4, 3), np.uint8), rgb=True)
    with pytest.raises(DataError, match="pick a Labels layer"):
        training_pairs(image, Image(np.full((4, 4), 0.5, np.float32)))
    with pytest.raises(DataError, match=r"outside 0\.\.255"):
        training_pairs(*_layers(np.zeros((4, 4, 3), np.uint8), np.full((4, 4), 300, np.int32)))


def test_check_classes_names_values_out_of_range():
    data = SegmentationData([np.zeros((4, 4, 3), np.uint8)], [np.full((4, 4), 3, np.uint8)])
    with pytest.raises(DataError, match=r"value.* 3"):
        data.check_classes(3)


def test_split_is_the_notebooks_random_split_with_seed_909():
    train, dev = split_indices(300)
    expected = torch.utils.data.random_split(
        list(range(300)), [240, 60], generator=torch.Generator().manual_seed(909)
    )
    assert dev == list(expected[1].indices)
    assert len(train) == 240
    assert len(dev) == 60
    assert sorted(train + dev) == list(range(300))
    assert split_indices(300) == (train, dev), "the split is reproducible"
    assert split_indices(300, seed=1)[1] != dev
