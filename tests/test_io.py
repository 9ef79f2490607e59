"""Reading image stacks (a folder of images, a TIFF stack), scaling them, and writing them."""

import warnings

import cv2
import numpy as np
import pytest
import tifffile

import unet_keras
from unet_keras.datasets import load_isbi2012
from unet_keras.io import (
    list_images,
    load_image_mask_pairs,
    membrane_mask_from_labels,
    read_image,
    read_stack,
    to_unit_range,
    write_stack,
)


def _write_pngs(folder, values, shape=(8, 8)):
    folder.mkdir(parents=True, exist_ok=True)
    for i, value in enumerate(values):
        cv2.imwrite(str(folder / f"{i}.png"), np.full(shape, value, np.uint8))
    return folder


def test_png_folder_is_read_in_slice_order(tmp_path):
    folder = _write_pngs(tmp_path / "slices", range(12))
    (folder / "notes.txt").write_text("not an image")
    assert [p.name for p in list_images(folder)][:4] == ["0.png", "1.png", "2.png", "3.png"]
    stack = read_stack(folder)
    assert stack.shape == (12, 8, 8) and stack.dtype == np.uint8
    np.testing.assert_array_equal(stack[:, 0, 0], np.arange(12))  # 2 before 10


def test_tiff_stack_and_single_page_tiff(tmp_path, rng):
    volume = rng.integers(0, 65536, (3, 8, 10), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "volume.tif", volume)
    stack = read_stack(tmp_path / "volume.tif")
    assert stack.dtype == np.uint16
    np.testing.assert_array_equal(stack, volume)
    tifffile.imwrite(tmp_path / "page.tiff", volume[0])
    np.testing.assert_array_equal(read_stack(tmp_path / "page.tiff"), volume[:1])


def test_gray_saved_as_colour_channels_is_read_and_real_colour_refused(tmp_path, rng):
    gray = rng.integers(0, 256, (8, 10), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "bgr.png"), np.stack([gray] * 3, axis=-1))
    cv2.imwrite(str(tmp_path / "bgra.png"), np.stack([gray] * 3 + [np.full_like(gray, 255)], -1))
    np.testing.assert_array_equal(read_image(tmp_path / "bgr.png"), gray)
    np.testing.assert_array_equal(read_image(tmp_path / "bgra.png"), gray)
    tifffile.imwrite(tmp_path / "rgb.tif", np.stack([np.stack([gray] * 3, -1)] * 2))
    np.testing.assert_array_equal(read_stack(tmp_path / "rgb.tif"), [gray, gray])

    colour = np.stack([gray] * 3, axis=-1)
    colour[0, 0, 2] = ~colour[0, 0, 2]  # one pixel's red differs
    (tmp_path / "colour").mkdir()
    cv2.imwrite(str(tmp_path / "colour" / "0.png"), colour)
    with pytest.raises(ValueError, match=r"0\.png is a colour \(RGB\) image"):
        read_stack(tmp_path / "colour")
    tifffile.imwrite(tmp_path / "colour.tif", np.stack([np.stack([gray] * 3, -1), colour]))
    with pytest.raises(ValueError, match=r"colour\.tif page 1 is a colour \(RGB\) image"):
        read_stack(tmp_path / "colour.tif")
    # ... which channels=3 reads, in RGB order (OpenCV's BGR turned around).
    rgb = read_stack(tmp_path / "colour", channels=3)
    assert rgb.shape == (1, 8, 10, 3)
    np.testing.assert_array_equal(rgb[0], colour[..., ::-1])
    np.testing.assert_array_equal(read_stack(tmp_path / "colour.tif", channels=3)[1], colour)
    with pytest.raises(ValueError, match="`channels` must be 1 \\(gray\\) or 3 \\(RGB\\)"):
        read_stack(tmp_path / "colour", channels=2)


def test_one_colour_page_is_one_slice_not_a_stack_of_rows(tmp_path, rng):
    gray = rng.integers(0, 256, (8, 10), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "gray_as_rgb.tif", np.stack([gray] * 3, -1))
    np.testing.assert_array_equal(read_stack(tmp_path / "gray_as_rgb.tif"), gray[None])
    colour = np.stack([gray, gray, ~gray], -1)
    tifffile.imwrite(tmp_path / "colour.tif", colour)
    with pytest.raises(ValueError, match=r"colour\.tif page 0 is a colour \(RGB\) image"):
        read_stack(tmp_path / "colour.tif")


def test_a_trailing_channel_of_one_is_gray_not_a_width_of_one(tmp_path, rng):
    """tifffile reads (H, W, 1) with axes "YXQ": it was H slices of W x 1."""
    volume = rng.integers(0, 256, (3, 8, 10), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "page.tif", volume[0, ..., None])
    np.testing.assert_array_equal(read_stack(tmp_path / "page.tif"), volume[:1])
    np.testing.assert_array_equal(read_image(tmp_path / "page.tif"), volume[0])
    tifffile.imwrite(tmp_path / "stack.tif", volume[..., None].astype(np.float32))
    stack = read_stack(tmp_path / "stack.tif")
    assert stack.dtype == np.float32
    np.testing.assert_array_equal(stack, volume)
    tifffile.imwrite(tmp_path / "narrow.tif", volume[..., :1], metadata={"axes": "ZYX"})
    assert read_stack(tmp_path / "narrow.tif").shape == (3, 8, 1)  # a real width of 1


def test_a_folder_mixing_bit_depths_is_refused(tmp_path):
    """np.stack made it uint16, and 8-bit white became 255 / 65535."""
    folder = _write_pngs(tmp_path / "slices", [255])
    cv2.imwrite(str(folder / "1.png"), np.full((8, 8), 65535, np.uint16))
    with pytest.raises(ValueError, match=r"different bit depths: uint8 \(e\.g\. 0\.png\), "
                                         r"uint16 \(e\.g\. 1\.png\)"):
        read_stack(folder)


def test_one_image_file_is_a_stack_of_one(tmp_path, rng):
    gray = rng.integers(0, 256, (8, 10), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "slice.png"), gray)
    np.testing.assert_array_equal(read_stack(tmp_path / "slice.png"), gray[None])
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=r"notes\.txt is not an image file"):
        read_stack(tmp_path / "notes.txt")


def test_a_file_that_is_not_a_tiff_is_named(tmp_path):
    cv2.imwrite(str(tmp_path / "really.png"), np.zeros((4, 4), np.uint8))
    (tmp_path / "really.png").rename(tmp_path / "fake.tif")
    with pytest.raises(ValueError, match=r"fake\.tif is not a readable TIFF file"):
        read_stack(tmp_path / "fake.tif")
    with pytest.raises(ValueError, match=r"fake\.tif is not a readable TIFF file"):
        read_image(tmp_path / "fake.tif")


def test_slices_of_different_sizes_are_refused(tmp_path):
    folder = _write_pngs(tmp_path / "slices", [0, 0])
    cv2.imwrite(str(folder / "2.png"), np.zeros((8, 9), np.uint8))
    with pytest.raises(ValueError, match=r"different sizes: \[\(8, 8\), \(8, 9\)\]"):
        read_stack(folder)


def test_missing_path_or_folder_without_images(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere does not exist"):
        read_stack(tmp_path / "nowhere")
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(FileNotFoundError, match="holds no image"):
        read_stack(tmp_path)


def test_unreadable_png_is_a_value_error(tmp_path):
    (tmp_path / "0.png").write_bytes(b"not a PNG at all")
    with pytest.raises(ValueError, match=r"OpenCV cannot read .*0\.png"):
        read_image(tmp_path / "0.png")
    with pytest.raises(ValueError, match="OpenCV cannot read"):
        read_stack(tmp_path)


def test_to_unit_range_scales_by_the_dtype():
    bytes_ = to_unit_range(np.array([0, 51, 255], np.uint8))
    assert bytes_.dtype == np.float32
    np.testing.assert_allclose(bytes_, [0.0, 0.2, 1.0], rtol=1e-6)
    np.testing.assert_allclose(to_unit_range(np.array([0, 65535], np.uint16)), [0.0, 1.0])
    floats = to_unit_range(np.array([0.0, 0.25, 1.0]))
    assert floats.dtype == np.float32
    np.testing.assert_array_equal(floats, [0.0, 0.25, 1.0])  # already in range: kept
    with pytest.raises(ValueError, match=r"must not be negative, got values down to -100"):
        to_unit_range(np.array([-100, 0, 200], np.int16))
    np.testing.assert_allclose(to_unit_range(np.array([0, 32767], np.int16)), [0.0, 1.0])
    for outside in ([0.0, 1.5], [-0.1, 0.5], [0.0, 255.0], [0.0, np.inf]):
        with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
            to_unit_range(np.array(outside, np.float32))


def test_to_unit_range_of_an_empty_stack_and_of_nan():
    for dtype in (np.float32, np.float64, np.uint8):
        empty = to_unit_range(np.zeros((0, 8, 8), dtype))
        assert empty.shape == (0, 8, 8) and empty.dtype == np.float32
    with pytest.raises(ValueError, match=r"must not hold NaN, found 2 NaN pixel\(s\)"):
        to_unit_range(np.array([0.5, np.nan, np.nan], np.float32))


def test_membrane_mask_from_labels():
    mask = membrane_mask_from_labels(np.array([[0, 255], [255, 0]], np.uint8))
    assert mask.dtype == np.float32
    np.testing.assert_array_equal(mask, [[1.0, 0.0], [0.0, 1.0]])  # 0 = membrane
    with pytest.raises(ValueError, match=r"labels\.tif must be binary .* values 0, 128, 255\."):
        membrane_mask_from_labels(np.array([0, 128, 255], np.uint8), source="labels.tif")
    with pytest.raises(ValueError, match=r"values 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 \.\.\."):
        membrane_mask_from_labels(np.arange(20, dtype=np.uint8))


def test_mask_from_labels_by_the_positive_label():
    labels = np.array([[0, 255], [255, 255]], np.uint8)
    np.testing.assert_array_equal(membrane_mask_from_labels(labels), [[1, 0], [0, 0]])
    np.testing.assert_array_equal(
        membrane_mask_from_labels(labels, positive_label=255), [[0, 1], [1, 1]]
    )
    with pytest.raises(ValueError, match="255 = the class .* values 0, 1. .*multiply them by 255"):
        membrane_mask_from_labels(labels // 255, positive_label=255)


def test_write_stack_round_trip(tmp_path, rng):
    stack = rng.random((3, 8, 10))  # float64, written as float32
    path = write_stack(tmp_path / "new" / "folder" / "prob.tif", stack)
    assert path == tmp_path / "new" / "folder" / "prob.tif" and path.is_file()
    read = read_stack(path)
    assert read.dtype == np.float32
    np.testing.assert_array_equal(read, stack.astype(np.float32))
    one = write_stack(tmp_path / "one.tif", stack[:1])
    assert read_stack(one).shape == (1, 8, 10)  # a single slice stays a stack


# ---------------------------------------------------------------------------
# A researcher's own images and masks
# ---------------------------------------------------------------------------
def test_the_reading_helpers_are_exported():
    for name in ("read_stack", "to_unit_range", "write_stack", "list_images",
                 "load_image_mask_pairs"):
        assert name in unet_keras.__all__
        assert getattr(unet_keras, name) is globals()[name]


def _write_slices(folder, stack, prefix):
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(stack):
        assert cv2.imwrite(str(folder / f"{prefix}{i + 1:02d}.png"), image)
    return folder


def test_isbi_slices_as_png_folders(isbi_data, tmp_path):
    """Real data in the layout of a researcher's own: two folders of PNGs
    named differently, paired by slice order; the masks mark the membranes."""
    images, masks = load_isbi2012(isbi_data)
    raw = np.rint(images[:4, ..., 0] * 255).astype(np.uint8)
    _write_slices(tmp_path / "images", raw, "em_")
    for name, scale in (("masks255", 255), ("masks01", 1)):
        membranes = (masks[:4, ..., 0] * scale).astype(np.uint8)
        _write_slices(tmp_path / name, membranes, "membrane_")
        got_images, got_masks = load_image_mask_pairs(tmp_path / "images", tmp_path / name)
        assert got_images.shape == got_masks.shape == (4, 512, 512, 1)
        assert got_images.dtype == got_masks.dtype == np.float32
        np.testing.assert_array_equal(got_images, images[:4])
        np.testing.assert_array_equal(got_masks, masks[:4])


@pytest.mark.parametrize("foreground", [1, 255, 65535])
@pytest.mark.parametrize("layout", ["folders", "tiff stacks"])
def test_synthetic_pairs_of_any_mask_value(tmp_path, rng, foreground, layout):
    dtype = np.uint16 if foreground == 65535 else np.uint8
    raw = rng.integers(0, np.iinfo(dtype).max, (3, 300, 420), dtype=dtype, endpoint=True)
    truth = rng.random((3, 300, 420)) < 0.3
    labels = (truth * foreground).astype(dtype)
    if layout == "folders":
        images_path = _write_slices(tmp_path / "images", raw, "")
        masks_path = _write_slices(tmp_path / "masks", labels, "")
    else:
        images_path, masks_path = tmp_path / "images.tif", tmp_path / "masks.tif"
        tifffile.imwrite(images_path, raw)
        tifffile.imwrite(masks_path, labels)
    images, masks = load_image_mask_pairs(images_path, masks_path)
    assert images.shape == masks.shape == (3, 300, 420, 1)
    np.testing.assert_allclose(images[..., 0], raw / np.iinfo(dtype).max, rtol=1e-6)
    np.testing.assert_array_equal(masks[..., 0], truth)
    with warnings.catch_warnings():  # ready for training as they are
        warnings.simplefilter("error")
        unet_keras.TileDataset(images, masks, tile_size=64)


def test_colour_pairs(tmp_path, rng):
    """RGB images with their masks, for a model of three input channels."""
    raw = rng.integers(0, 256, (2, 30, 42, 3), dtype=np.uint8)
    labels = (rng.random((2, 30, 42)) < 0.3).astype(np.uint8) * 255
    for i, (image, label) in enumerate(zip(raw, labels)):
        for name, array in (("images", cv2.cvtColor(image, cv2.COLOR_RGB2BGR)), ("masks", label)):
            (tmp_path / name).mkdir(exist_ok=True)
            cv2.imwrite(str(tmp_path / name / f"{i}.png"), array)
    images, masks = load_image_mask_pairs(tmp_path / "images", tmp_path / "masks", channels=3)
    assert images.shape == (2, 30, 42, 3) and masks.shape == (2, 30, 42, 1)
    np.testing.assert_allclose(images, raw / 255, rtol=1e-6)
    np.testing.assert_array_equal(masks[..., 0], labels == 255)


def test_pairs_that_do_not_match_are_refused(tmp_path, rng):
    raw = rng.integers(0, 256, (3, 30, 42), dtype=np.uint8)
    labels = (rng.random((3, 30, 42)) < 0.3).astype(np.uint8) * 255
    images_path = _write_slices(tmp_path / "images", raw, "img")
    short = _write_slices(tmp_path / "short", labels[:2], "mask")
    with pytest.raises(ValueError, match=r"images holds 3 image\(s\) and .*short 2 mask\(s\)"):
        load_image_mask_pairs(images_path, short)
    wide = _write_slices(tmp_path / "wide", np.pad(labels, ((0, 0), (0, 0), (0, 2))), "mask")
    with pytest.raises(ValueError, match=r"30x42 pixels, the masks in .*wide 30x44 \(first: "
                                         r"img01\.png and mask01\.png\)"):
        load_image_mask_pairs(images_path, wide)
    tifffile.imwrite(tmp_path / "wide.tif", np.pad(labels, ((0, 0), (0, 1), (0, 0))))
    with pytest.raises(ValueError, match=r"31x42 \(from slice 0 on\)"):
        load_image_mask_pairs(images_path, tmp_path / "wide.tif")


def test_anti_aliased_or_backgroundless_masks_are_refused(tmp_path, rng):
    raw = rng.integers(0, 256, (2, 30, 42), dtype=np.uint8)
    images_path = _write_slices(tmp_path / "images", raw, "")
    disc = np.zeros((2, 30, 42), np.uint8)
    cv2.circle(disc[0], (20, 15), 9, 255, -1, lineType=cv2.LINE_AA)  # smooth edges
    smooth = _write_slices(tmp_path / "smooth", disc, "")
    with pytest.raises(ValueError, match=r"smooth must hold two values, .* but hold 27 "
                                         r"\(0, 2, 4, .*anti-aliased.*Threshold them .*"
                                         r"save them without smoothing"):
        load_image_mask_pairs(images_path, smooth)
    shifted = _write_slices(tmp_path / "shifted", (rng.random((2, 30, 42)) < 0.5) + 1, "")
    with pytest.raises(ValueError, match=r"hold the values 1 and 2, no 0: the background must"):
        load_image_mask_pairs(images_path, shifted)
