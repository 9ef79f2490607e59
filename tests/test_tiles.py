"""Tiles (NumPy only: not run again on other backends)."""

import numpy as np
import pytest

from unet_keras.geometry import valid_output_size
from unet_keras.tiles import crop_tile, random_tile


@pytest.fixture
def sample(rng):
    """A smooth image in [0, 1] and a binary mask."""
    y, x = np.mgrid[0:64, 0:80]
    image = (0.5 + 0.4 * np.sin(x / 5.0) * np.cos(y / 7.0)).astype(np.float32)[..., None]
    mask = (rng.random((64, 80, 1)) < 0.3).astype(np.float32)
    return image, mask


def test_crop_tile_inside_and_past_the_border(sample):
    image, mask = sample
    tile, target = crop_tile((10, 20), image, mask, tile_size=16)
    np.testing.assert_array_equal(tile, image[10:26, 20:36])
    np.testing.assert_array_equal(target, mask[10:26, 20:36])
    # Output region rows -2..5, cols 70..77; the input tile reaches 6 further.
    tile, target = crop_tile((-2, 70), image, mask, tile_size=20, output_size=8)
    pad = ((8, 8), (8, 8), (0, 0))  # original index + 8 = padded index
    np.testing.assert_array_equal(tile, np.pad(image, pad, mode="reflect")[0:20, 72:92])
    np.testing.assert_array_equal(target, np.pad(mask, pad, mode="reflect")[6:14, 78:86])


def test_random_tile_valid_geometry(rng):
    tile_size = 60
    output_size = valid_output_size(tile_size, 2)
    margin = (tile_size - output_size) // 2
    image = rng.random((50, 70))
    for _ in range(20):
        tile, target = random_tile(rng, image, image, tile_size=tile_size,
                                   output_size=output_size)
        assert tile.shape == (60, 60) and target.shape == (output_size, output_size)
        np.testing.assert_array_equal(target, tile[margin:-margin, margin:-margin])
    small = random_tile(rng, rng.random((10, 12, 2)), tile_size=32)
    assert small.shape == (32, 32, 2)
    with pytest.raises(ValueError, match="valid_output_size"):
        random_tile(rng, image, tile_size=60, output_size=21)


def test_targets_of_another_size_are_a_clear_error(sample):
    image, mask = sample
    with pytest.raises(ValueError, match="image's height and width; got shapes"):
        crop_tile((0, 0), image, mask[:32], tile_size=16)
