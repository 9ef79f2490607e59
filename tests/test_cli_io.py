"""What the command line reads: images as the model takes them, labels by
the value of the predicted class."""

import cv2
import numpy as np
import pytest
import tifffile

from unet_keras import build_unet
from unet_keras.cli_io import (
    input_channels,
    membrane_channel,
    polarity_warning,
    read_images,
)


def _rgb(seed, shape=(6, 8)):
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def test_read_images_gives_rgb_from_opencv_and_tifffile_files(tmp_path):
    first, second = _rgb(0), _rgb(1)
    cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(first, cv2.COLOR_RGB2BGR))
    bgra = np.concatenate([cv2.cvtColor(second, cv2.COLOR_RGB2BGR),
                           np.full((6, 8, 1), 255, np.uint8)], axis=-1)
    cv2.imwrite(str(tmp_path / "b.png"), bgra)  # with an alpha channel, dropped
    tifffile.imwrite(tmp_path / "c.tif", first)  # tifffile stores RGB as RGB
    images, names = read_images(tmp_path, 3)
    assert images.dtype == np.float32 and images.shape == (3, 6, 8, 3)
    np.testing.assert_allclose(images, np.stack([first, second, first]) / 255, atol=1e-6)
    assert names == ["a", "b", "c"]

    tifffile.imwrite(tmp_path / "stack.tif", np.stack([first, second]))
    images, names = read_images(tmp_path / "stack.tif", 3)
    np.testing.assert_allclose(images, np.stack([first, second]) / 255, atol=1e-6)
    assert names is None  # a stack's overlays are numbered
    images, names = read_images(tmp_path / "b.png", 3)
    assert images.shape == (1, 6, 8, 3) and names == ["b"]


def test_read_images_gives_gray_images_three_equal_channels(tmp_path):
    gray = np.arange(48, dtype=np.uint8).reshape(6, 8)
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    tifffile.imwrite(tmp_path / "stack.tif", np.stack([gray, gray]))
    for path, count in ((tmp_path / "g.png", 1), (tmp_path / "stack.tif", 2)):
        images, _ = read_images(path, 3)
        assert images.shape == (count, 6, 8, 3)
        for channel in range(3):
            np.testing.assert_allclose(images[..., channel], [gray / 255] * count, atol=1e-6)
    images, names = read_images(tmp_path / "g.png", 1)  # a gray model: read as before
    assert images.shape == (1, 6, 8, 1) and names == ["g"]


def test_read_images_names_files_in_full_where_two_share_a_stem(tmp_path):
    cv2.imwrite(str(tmp_path / "x.png"), np.zeros((4, 4), np.uint8))
    tifffile.imwrite(tmp_path / "x.tif", np.zeros((4, 4), np.uint8))
    assert read_images(tmp_path, 1)[1] == ["x.png", "x.tif"]


def test_read_images_refuses_what_it_cannot_stack(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), _rgb(0))
    cv2.imwrite(str(tmp_path / "b.png"), _rgb(1, (5, 8)))
    with pytest.raises(ValueError, match="different sizes"):
        read_images(tmp_path, 3)
    (tmp_path / "b.png").unlink()
    cv2.imwrite(str(tmp_path / "b.png"), _rgb(1).astype(np.uint16) * 257)
    with pytest.raises(ValueError, match="different bit depths"):
        read_images(tmp_path, 3)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_images(tmp_path / "nowhere", 3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no image"):
        read_images(tmp_path / "empty", 3)


def test_channel_counts_predict_cannot_take_are_refused():
    small = {"filters": 2, "depth": 2, "dropout": 0}
    assert input_channels(build_unet(**small), "m.keras") == 1
    assert input_channels(build_unet((None, None, 3), **small), "m.keras") == 3
    with pytest.raises(ValueError, match=r"m\.keras takes 4 input channels.*predict_tiled"):
        input_channels(build_unet((None, None, 4), **small), "m.keras")
    assert membrane_channel(build_unet(**small), "m.keras") == 0
    assert membrane_channel(build_unet(num_classes=2, **small), "m.keras") == 1
    with pytest.raises(ValueError, match=r"has 4 output channels.*\(slices, H, W, 4\)"):
        membrane_channel(build_unet(num_classes=4, **small), "m.keras")


def test_polarity_warning_from_more_than_half_of_the_pixels_at_0():
    labels = np.full((1, 10, 10), 255, np.uint8)
    labels[0, :5] = 0
    assert polarity_warning(labels) is None  # half: not more
    labels[0, 5, 0] = 0
    assert polarity_warning(labels).startswith("warning: 51% of the labels' pixels are 0")
