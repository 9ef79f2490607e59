"""The border weight map (NumPy/OpenCV only: not run again on other backends)."""

import time

import cv2
import numpy as np
import pytest
from scipy import ndimage

from unet_keras.weights import balanced_class_weights, border_weight_map, border_weight_maps


def _two_touching_discs():
    """Two discs of radius 12 separated by a one-pixel membrane column (x = 32)."""
    y, x = np.mgrid[0:64, 0:96]
    left = ((y - 32) ** 2 + (x - 20) ** 2 <= 144) & (x <= 31)
    right = ((y - 32) ** 2 + (x - 44) ** 2 <= 144) & (x >= 33)
    return (~(left | right)).astype(np.float32)  # 1 = membrane


def _brute_force(mask, w0, sigma):
    """The paper's formula with one full distance transform per cell."""
    labels, n = ndimage.label(mask == 0)  # 4-connected by default
    distances = np.sort(
        np.stack([ndimage.distance_transform_edt(labels != i) for i in range(1, n + 1)]), axis=0
    )
    border = w0 * np.exp(-((distances[0] + distances[1]) ** 2) / (2 * sigma**2))
    return 1.0 + np.where(mask == 1, border, 0.0)


def test_one_pixel_gap_between_touching_cells():
    mask = _two_touching_discs()
    weights = border_weight_map(mask, w0=10.0, sigma=5.0, class_weights=None)
    assert weights.shape == mask.shape and weights.dtype == np.float32
    # d1 = d2 = 1 in the gap: 1 + 10 * exp(-4 / 50).
    assert weights[32, 32] == pytest.approx(1 + 10 * np.exp(-4 / 50), rel=1e-5)
    assert weights[32, 32] > 1 + 0.9 * 10
    assert weights[32, 20] == 1.0  # inside a cell: w_c only
    assert weights[2, 93] == pytest.approx(1.0, abs=1e-6)  # membrane far from both cells


def test_equals_brute_force(rng):
    # Random cells: a coarse random partition, with membranes at label changes.
    coarse = rng.integers(0, 6, (8, 8))
    labels = cv2.resize(coarse, (64, 64), interpolation=cv2.INTER_NEAREST)
    edges = (np.diff(labels, axis=0, prepend=labels[:1]) != 0) | (
        np.diff(labels, axis=1, prepend=labels[:, :1]) != 0
    )
    mask = (edges | (rng.random((64, 64)) < 0.05)).astype(np.float32)
    for sigma in (5.0, 1.5):  # 1.5: the per-cell windows are clipped well inside the image
        expected = _brute_force(mask, 10.0, sigma)
        got = border_weight_map(mask[..., None], 10.0, sigma, class_weights=None)
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_class_weights():
    mask = _two_touching_discs()
    w_interior, w_membrane = balanced_class_weights(mask)
    frac = mask.mean()
    assert w_membrane == pytest.approx(1 / (2 * frac))
    assert w_interior == pytest.approx(1 / (2 * (1 - frac)))
    plain = border_weight_map(mask, w0=0.0)
    assert plain.mean() == pytest.approx(1.0, rel=1e-5)
    fixed = border_weight_map(mask, w0=0.0, class_weights=(0.5, 2.0))
    assert set(np.unique(fixed)) == {0.5, 2.0}
    assert balanced_class_weights(np.zeros((4, 4))) == (1.0, 1.0)
    with pytest.raises(ValueError, match="class_weights"):
        border_weight_map(mask, class_weights="inverse")


def test_validation_and_batches():
    with pytest.raises(ValueError, match=r"found values \{0, 0.5, 1\}"):
        border_weight_map(np.array([[0, 0.5], [1, 1]]))
    with pytest.raises(ValueError, match="shape"):
        border_weight_map(np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="sigma"):
        border_weight_map(np.zeros((4, 4)), sigma=0)
    masks = np.stack([_two_touching_discs()] * 2)[..., None]
    maps = border_weight_maps(masks)
    assert maps.shape == (2, 64, 96) and maps.dtype == np.float32
    # cv2's exact distance transform may differ in the last float32 bit between calls.
    np.testing.assert_allclose(maps[0], border_weight_map(masks[0]), rtol=1e-5)
    assert np.all(border_weight_map(np.ones((8, 8))) == 1.0)  # no cells at all


def test_isbi_label_is_fast(isbi_mirror):
    label = cv2.imread(str(isbi_mirror / "train" / "label" / "0.png"), cv2.IMREAD_UNCHANGED)
    mask = (label == 0).astype(np.float32)
    start = time.perf_counter()
    weights = border_weight_map(mask)
    assert time.perf_counter() - start < 1.0
    assert weights.shape == (512, 512)
    assert weights.max() > 10.0  # touching cells get the border term
