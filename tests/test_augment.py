"""Augmentation (NumPy/OpenCV only: not run again on other backends)."""

import numpy as np
import pytest

from unet_keras.augment import (
    Augmenter,
    elastic_deform,
    elastic_displacement,
    random_affine,
    random_gray,
    random_symmetry,
    zoom_bounds,
)
from unet_keras.geometry import valid_output_size
from unet_keras.symmetry import apply_symmetry


@pytest.fixture
def sample(rng):
    """A smooth image in [0, 1], a binary mask and a positive weight map."""
    y, x = np.mgrid[0:64, 0:80]
    image = (0.5 + 0.4 * np.sin(x / 5.0) * np.cos(y / 7.0)).astype(np.float32)[..., None]
    mask = (rng.random((64, 80, 1)) < 0.3).astype(np.float32)
    weight = (1.0 + 9.0 * rng.random((64, 80))).astype(np.float32)
    return image, mask, weight


# ---------------------------------------------------------------------------
# Elastic deformation
# ---------------------------------------------------------------------------
def test_displacement_matches_sigma_at_the_grid_points(rng):
    # With 33 pixels and a 3x3 grid the lattice points fall on pixels 5, 16, 27.
    fields = np.stack([elastic_displacement((33, 33), 3, 10.0, rng) for _ in range(400)])
    assert fields.shape == (400, 33, 33, 2) and fields.dtype == np.float32
    at_grid = fields[:, 5::11, 5::11]
    assert at_grid.std() == pytest.approx(10.0, rel=0.05)
    assert abs(at_grid.mean()) < 0.5
    magnitude = np.linalg.norm(at_grid, axis=-1).mean()
    assert magnitude == pytest.approx(10.0 * np.sqrt(np.pi / 2), rel=0.05)
    assert elastic_displacement((40, 50), 3, 10.0, rng).shape == (40, 50, 2)


def test_sigma_zero_is_the_identity(sample):
    out = elastic_deform(*sample, sigma=0.0, rng=1)
    for a, b in zip(out, sample):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(elastic_deform(sample[0], sigma=0, rng=1), sample[0])


def test_deform_keeps_masks_binary_and_is_seeded(sample):
    image, mask, weight = elastic_deform(*sample, sigma=10.0, rng=3)
    assert image.shape == (64, 80, 1) and mask.shape == (64, 80, 1) and weight.shape == (64, 80)
    assert set(np.unique(mask)) <= {0.0, 1.0}
    assert not np.array_equal(mask, sample[1])
    assert weight.min() >= sample[2].min() - 1e-5 and weight.max() <= sample[2].max() + 1e-5
    again = elastic_deform(*sample, sigma=10.0, rng=np.random.default_rng(3))
    for a, b in zip((image, mask, weight), again):
        np.testing.assert_array_equal(a, b)
    other = elastic_deform(*sample, sigma=10.0, rng=4)
    assert not np.array_equal(other[0], image)


def test_deform_kinds_and_dtypes(sample):
    image, mask, _ = sample
    bool_mask = mask[..., 0] > 0
    out_image, out_mask = elastic_deform(image[..., 0], bool_mask, rng=0)
    assert out_image.shape == (64, 80) and out_mask.dtype == bool
    # The same field for all: a mask warped as "image" with nearest equals it as "mask".
    a = elastic_deform(mask, mask, rng=5, interpolation="nearest", kinds="mask")
    np.testing.assert_array_equal(a[0], a[1])
    rgb = np.repeat(image, 3, axis=-1)
    assert elastic_deform(rgb, rng=0, interpolation="cubic").shape == (64, 80, 3)
    with pytest.raises(ValueError, match="kinds"):
        elastic_deform(image, mask, kinds=("mask", "weight"))
    with pytest.raises(ValueError, match="height and width"):
        elastic_deform(image, mask[:10])
    with pytest.raises(ValueError, match="interpolation"):
        elastic_deform(image, interpolation="area")


@pytest.mark.parametrize("transform", ["elastic", "affine", "augmenter"])
def test_dtypes_opencv_cannot_warp_come_back_in_their_own(sample, transform):
    """float16 failed inside OpenCV; int64 came back int32, its labels wrapped."""
    image, mask, weight = sample
    labels = mask[..., 0].astype(np.int64) * 2**40 + 7  # beyond int32
    warp = {
        "elastic": lambda *arrays: elastic_deform(*arrays, rng=2, kinds=("mask", "weight")),
        "affine": lambda *arrays: random_affine(2, *arrays, kinds=("mask", "weight")),
        "augmenter": lambda *arrays: Augmenter(32, gray=False)(2, *arrays),
    }[transform]
    out_image, out_labels, out_weight = warp(image.astype(np.float16), labels,
                                             weight.astype(np.float16))
    expected = warp(image, labels.astype(np.float64), weight)
    assert (out_image.dtype, out_labels.dtype, out_weight.dtype) == (
        np.float16, np.int64, np.float16)
    np.testing.assert_array_equal(out_labels, expected[1])  # nearest: the same labels
    assert set(np.unique(out_labels)) <= {7, 2**40 + 7}
    np.testing.assert_allclose(out_weight, expected[2], rtol=1e-3)
    np.testing.assert_allclose(out_image, expected[0], atol=1e-3)
    ints = warp(np.round(image * 100).astype(np.int32), labels, weight)[0]  # linear on int32
    assert ints.dtype == np.int32 and ints.max() <= 100
    with pytest.raises(ValueError, match="dtype complex128"):
        warp(image, labels, weight.astype(complex))


# ---------------------------------------------------------------------------
# A random symmetry, affine, gray values
# ---------------------------------------------------------------------------
def test_random_symmetry_moves_all_arrays_alike(rng):
    square = rng.random((6, 6, 2))
    image, mask = random_symmetry(rng, square, square[..., 0])
    np.testing.assert_array_equal(image[..., 0], mask)
    assert image.flags.c_contiguous
    assert random_symmetry(rng, rng.random((4, 7))).shape == (4, 7)


def test_random_affine(sample):
    image, mask, weight = sample
    same = random_affine(0, image, mask, weight, max_rotation=0.0, max_shift=0.0)
    for a, b in zip(same, sample):
        np.testing.assert_allclose(a, b, atol=1e-6)
    out_image, out_mask, out_weight = random_affine(0, image, mask, weight)
    assert out_image.shape == image.shape and out_weight.shape == weight.shape
    assert set(np.unique(out_mask)) <= {0.0, 1.0}
    np.testing.assert_array_equal(out_mask, random_affine(0, image, mask, weight)[1])


def test_zoom_bounds_follow_keras_random_zoom():
    assert zoom_bounds(0.2) == (-0.2, 0.2)  # one number: both ways, as RandomZoom
    assert zoom_bounds([-0.1, 0.2]) == (-0.1, 0.2)
    for bad in ((0.2, -0.1), (-1.0, 0.2), (0.1, 0.2, 0.3), 1.5, float("nan")):
        with pytest.raises(ValueError, match="zoom_range.*-1 < lower <= upper"):
            zoom_bounds(bad)
    assert zoom_bounds(0.0, affine=False) == (0.0, 0.0)  # no zoom needs no affine transform
    with pytest.raises(ValueError, match="affine=True"):
        zoom_bounds(0.1, affine=False)


def _disc(size=96, radius=16):
    y, x = np.mgrid[0:size, 0:size] - (size - 1) / 2.0
    return (np.hypot(y, x) <= radius).astype(np.float32)


@pytest.mark.parametrize("zoom, area_ratio", [(0.5, 1 / 1.5**2), (-0.5, 4.0), (0.0, 1.0)])
def test_random_affine_zoom_scales_the_content(zoom, area_ratio):
    """A positive zoom zooms out: at +0.5 each output pixel covers 1.5 source
    pixels per axis, so a centred disc keeps 1 / 1.5**2 of its area (its
    mirror images stay past the border)."""
    disc = _disc()
    _, out = random_affine(0, disc, disc, max_rotation=0.0, max_shift=0.0,
                           zoom_range=(zoom, zoom), kinds="mask")
    assert out.sum() / disc.sum() == pytest.approx(area_ratio, rel=0.06)


def test_no_zoom_draws_no_random_number():
    """Runs without a zoom keep the random stream they had before it existed."""
    from unet_keras.augment import _affine_matrix

    rng, replay = np.random.default_rng(3), np.random.default_rng(3)
    _affine_matrix(rng, (32, 32), 15.0, 10.0)
    replay.uniform(size=3)  # the angle and the two shifts
    assert rng.uniform() == replay.uniform()
    scales = [np.linalg.det(_affine_matrix(rng, (32, 32), 0.0, 0.0, (-0.1, 0.2))[:, :2]) ** 0.5
              for _ in range(200)]
    assert 0.9 <= min(scales) < 0.93 and 1.17 < max(scales) <= 1.2


def test_random_gray(sample):
    image = sample[0]
    out = random_gray(0, image)
    assert out.dtype == np.float32 and out.shape == image.shape
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert not np.allclose(out, image)
    np.testing.assert_array_equal(out, random_gray(0, image))
    np.testing.assert_allclose(random_gray(0, image, 0, 0, 0), image, atol=1e-6)


# ---------------------------------------------------------------------------
# Augmenter
# ---------------------------------------------------------------------------
def test_augmenter_shapes_and_binary_masks(sample):
    image, mask, weight = sample
    for tile_size, output_size in ((32, None), (60, valid_output_size(60, 2))):
        augment = Augmenter(tile_size, output_size)
        out = output_size or tile_size
        x, y, w = augment(np.random.default_rng(0), image, mask, weight)
        assert x.shape == (tile_size, tile_size, 1) and x.dtype == np.float32
        assert y.shape == (out, out, 1) and w.shape == (out, out)
        assert set(np.unique(y)) <= {0.0, 1.0} and 0.0 <= x.min() and x.max() <= 1.0
        again = augment(np.random.default_rng(0), image, mask, weight)
        for a, b in zip((x, y, w), again):
            np.testing.assert_array_equal(a, b)
    whole = Augmenter()(0, image)
    assert whole.shape == image.shape


def test_augmenter_targets_stay_aligned_with_the_input(sample):
    """A weight map equal to the image is warped exactly like the image."""
    image = sample[0][..., 0]
    output_size = valid_output_size(60, 2)
    margin = (60 - output_size) // 2
    augment = Augmenter(60, output_size, gray=False)
    for seed in range(5):
        x, w = augment(seed, image, weight=image)
        np.testing.assert_array_equal(w, x[margin:-margin, margin:-margin])


def test_augmenter_switches(sample):
    image, mask, _ = sample
    plain = Augmenter(32, elastic=False, symmetries=False, affine=False, gray=False)
    rng = np.random.default_rng(7)
    x, y = plain(rng, image, mask)
    replay = np.random.default_rng(7)
    top = int(replay.integers(0, 64 - 32 + 1))
    left = int(replay.integers(0, 80 - 32 + 1))
    np.testing.assert_array_equal(x, image[top:top + 32, left:left + 32])
    np.testing.assert_array_equal(y, mask[top:top + 32, left:left + 32])

    symmetric = Augmenter(32, elastic=False, affine=False, gray=False)
    x_sym, y_sym = symmetric(np.random.default_rng(7), image, mask)
    matches = [k for k in range(8) if np.array_equal(x_sym, apply_symmetry(x, k))]
    assert matches and np.array_equal(y_sym, apply_symmetry(y, matches[0]))
    with pytest.raises(ValueError, match="tile_size"):
        Augmenter(None, 20)


def test_augmenter_zooms_its_tiles():
    disc = _disc()
    zoomed = Augmenter(96, elastic=False, symmetries=False, gray=False, max_rotation=0.0,
                       max_shift=0.0, zoom_range=(0.5, 0.5))
    _, mask = zoomed(0, disc, disc)
    assert mask.sum() / disc.sum() == pytest.approx(1 / 1.5**2, rel=0.06)
    with pytest.raises(ValueError, match="zoom_range"):
        Augmenter(32, zoom_range=(0.3, 0.1))
    with pytest.raises(ValueError, match="affine=True"):
        Augmenter(32, affine=False, zoom_range=0.1)
