"""The 8 symmetries of the square (NumPy only: not run again on other backends)."""

import numpy as np
import pytest

from unet_keras.symmetry import SYMMETRIES, apply_symmetry, invert_symmetry, symmetry_choices


def test_the_eight_views_differ_and_invert(rng):
    square = rng.random((6, 6, 2))
    seen = {apply_symmetry(square, k).tobytes() for k in range(SYMMETRIES)}
    assert len(seen) == 8
    for k in range(SYMMETRIES):
        np.testing.assert_array_equal(invert_symmetry(apply_symmetry(square, k), k), square)


def test_views_follow_numpy():
    """k quarter turns counter-clockwise, then a left-right flip from k = 4."""
    a = np.arange(6).reshape(2, 3)
    np.testing.assert_array_equal(apply_symmetry(a, 1), np.rot90(a))
    np.testing.assert_array_equal(apply_symmetry(a, 4), np.fliplr(a))
    np.testing.assert_array_equal(apply_symmetry(a, 6), np.fliplr(np.rot90(a, 2)))


def test_choices_keep_the_shape(rng):
    assert symmetry_choices(5, 5) == tuple(range(SYMMETRIES))
    for k in symmetry_choices(4, 7):
        assert apply_symmetry(rng.random((4, 7)), k).shape == (4, 7)


@pytest.mark.parametrize("k", [-1, 8])
def test_a_symmetry_outside_0_to_7_is_refused(k):
    with pytest.raises(ValueError, match="0..7"):
        apply_symmetry(np.zeros((2, 2)), k)
    with pytest.raises(ValueError, match="0..7"):
        invert_symmetry(np.zeros((2, 2)), k)
