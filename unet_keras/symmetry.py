"""The 8 symmetries of the square: 4 quarter turns, each with and without a flip.

They are the views the paper's augmentation draws from (a rotated or flipped
EM slice is as likely as the original) and the views test-time augmentation
averages over: `apply_symmetry(x, k)` makes view `k`, and `invert_symmetry`
turns a prediction for that view back, so the predictions can be averaged.
"""

import numpy as np

SYMMETRIES = 8


def _check_k(k):
    if not 0 <= k < SYMMETRIES:
        raise ValueError(f"`k` must be in 0..7 (the 8 symmetries of the square), got {k!r}.")


def apply_symmetry(array, k):
    """One of the 8 symmetries of the square (a view): `k % 4` quarter turns
    counter-clockwise, then a left-right flip if `k >= 4`; `k = 0` is the
    identity. `invert_symmetry` undoes it, e.g. to average predictions over
    rotated and flipped copies of an input."""
    _check_k(k)
    array = np.rot90(array, k % 4, axes=(0, 1))
    return array[:, ::-1] if k >= 4 else array


def invert_symmetry(array, k):
    """Undoes `apply_symmetry(array, k)`."""
    _check_k(k)
    return np.rot90(array[:, ::-1] if k >= 4 else array, -(k % 4), axes=(0, 1))


def symmetry_choices(height, width):
    """The symmetries `k` that keep an array's shape: all 8 for a square,
    flips and half turns (0, 2, 4, 6) otherwise."""
    return tuple(range(SYMMETRIES)) if height == width else (0, 2, 4, 6)
