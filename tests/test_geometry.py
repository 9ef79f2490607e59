"""The valid-padding tile geometry, without building a network
(tests/test_model.py checks that built networks follow it)."""

import numpy as np
import pytest

from unet_keras.geometry import valid_input_size, valid_output_size


def test_the_papers_tile():
    assert valid_output_size(572) == 388
    assert valid_input_size(388) == 572


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5])
def test_input_and_output_sizes_are_inverse(depth):
    for bottom in range(1, 12):
        output = 2**depth * bottom - 4 * (2**depth - 1)
        if output < 1:
            continue
        assert valid_output_size(valid_input_size(output, depth), depth) == output


def test_every_size_is_either_valid_or_refused():
    """Depth 2: a bottleneck of b >= 4 pixels takes 4b + 28 and gives 4b - 12,
    so the inputs that pass are 44, 48, 52, ... and each loses 40 pixels."""
    for size in range(1, 120):
        if size >= 44 and size % 4 == 0:
            assert valid_output_size(size, 2) == size - 40
            assert valid_input_size(size - 40, 2) == size
        else:
            with pytest.raises(ValueError, match="valid-padding U-Net of depth 2"):
                valid_output_size(size, 2)


def test_errors_name_the_nearest_sizes():
    with pytest.raises(ValueError, match="nearest sizes that work are 556 and 572"):
        valid_output_size(570)
    with pytest.raises(ValueError, match="smallest size that works is 188"):
        valid_output_size(20)
    with pytest.raises(ValueError, match="nearest sizes that work are 372 and 388"):
        valid_input_size(380)
    with pytest.raises(ValueError, match="smallest size that works is 4"):
        valid_input_size(1)


@pytest.mark.parametrize("depth", [0, -1, 2.0, "4", True, np.int64(0)])
def test_a_depth_that_is_not_a_positive_integer_is_refused(depth):
    with pytest.raises(ValueError, match="`depth` must be an integer >= 1"):
        valid_output_size(100, depth)


def test_a_numpy_depth_is_a_depth():
    assert valid_output_size(572, np.int64(4)) == 388
    assert valid_input_size(388, np.int32(4)) == 572


@pytest.mark.parametrize(
    ("function", "size", "name"),
    [(valid_output_size, 572.9, "input_size"), (valid_input_size, 388.7, "output_size"),
     (valid_output_size, 572.0, "input_size"), (valid_input_size, "388", "output_size"),
     (valid_output_size, True, "input_size"), (valid_input_size, None, "output_size")],
)
def test_a_size_that_is_not_an_integer_is_refused(function, size, name):
    """572.9 used to pass as 572 (and give 388), 388.7 as 388."""
    with pytest.raises(ValueError, match=f"`{name}` must be an integer number of pixels"):
        function(size)


def test_numpy_integers_are_sizes():
    assert valid_output_size(np.int64(572)) == 388
    assert valid_input_size(np.int32(388)) == 572
