"""Tile geometry of the valid-padding U-Net.

Without padding, each level of the network loses 4 pixels to its two 3x3
convolutions, and every 2x2 pooling needs an even size, so only some tile
sizes pass through it, and the output is smaller than the input: the paper's
572x572 tile gives a 388x388 map. `valid_output_size` and `valid_input_size`
compute that geometry for any depth, and their errors name the nearest sizes
that work.
"""

import numbers


def is_integer(value):
    """True for Python and NumPy integers; False for bools, which Python counts
    as integers but nobody means as a size, a count or an index."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_whole_pixels(value, name):
    """Refuses a size that is not an integer (572.9 would silently become 572)."""
    if not is_integer(value):
        raise ValueError(
            f"`{name}` must be an integer number of pixels, got {value!r}: round it first."
        )


def _check_positive_int(value, name):
    """Refuses anything but an integer >= 1 (`is_integer`).

    Returns:
        The value as a Python int, for layers and names.
    """
    if not is_integer(value) or value < 1:
        raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}.")
    return int(value)


def _check_depth(depth):
    _check_positive_int(depth, "depth")


def _valid_sizes(bottom, depth):
    """Input and output sizes of the valid network whose bottleneck outputs
    `bottom` pixels, or None where some layer would get an empty map."""
    size = bottom
    for _ in range(depth):
        size = 2 * size - 4  # up-convolution, then two 3x3 convolutions
        if size < 1:
            return None
    output_size = size
    input_size = bottom + 4
    for _ in range(depth):
        input_size = 2 * input_size + 4  # undo a pooling and two convolutions
    return input_size, output_size


def _smallest_bottom(depth):
    bottom = 1
    while _valid_sizes(bottom, depth) is None:
        bottom += 1
    return bottom


def _nearest_valid(size, depth, which):
    """The valid sizes (inputs if which == 0, outputs if 1) just below and
    above `size`."""
    bottom = _smallest_bottom(depth)
    candidates = []
    while True:
        value = _valid_sizes(bottom, depth)[which]
        candidates.append(value)
        if value >= size:
            break
        bottom += 1
    below = [c for c in candidates if c < size]
    return (below[-1] if below else None), candidates[-1]


def _describe_nearest(below, above):
    if below is None:
        return f"the smallest size that works is {above}"
    return f"the nearest sizes that work are {below} and {above}"


def valid_output_size(input_size, depth=4):
    """Output size of the valid-padding U-Net for a square input tile.

    Each level loses 4 pixels to its two unpadded 3x3 convolutions, and every
    2x2 pooling needs an even size. For the paper's network (depth 4),
    `valid_output_size(572) == 388`.

    Args:
        input_size: Side length of the input tile in pixels.
        depth: Number of poolings in the network.

    Returns:
        The side length of the output map.

    Raises:
        ValueError: If `input_size` is not an integer, or cannot pass through
            the network (an odd size before a pooling, or too small); the
            message names the nearest sizes that work.
    """
    _check_depth(depth)
    _check_whole_pixels(input_size, "input_size")
    size = int(input_size)
    for _ in range(depth):
        size -= 4
        if size < 1 or size % 2:
            below, above = _nearest_valid(input_size, depth, which=0)
            raise ValueError(
                f"An input of {input_size} pixels cannot pass through a "
                f"valid-padding U-Net of depth {depth}: every 2x2 pooling "
                f"needs an even size of at least 2. "
                f"{_describe_nearest(below, above).capitalize()} "
                f"(see `valid_input_size`)."
            )
        size //= 2
    size -= 4
    for _ in range(depth):
        size = 2 * size - 4
        if size < 1:
            below, above = _nearest_valid(input_size, depth, which=0)
            raise ValueError(
                f"An input of {input_size} pixels is too small for a "
                f"valid-padding U-Net of depth {depth}: "
                f"{_describe_nearest(below, above)}."
            )
    return size


def valid_input_size(output_size, depth=4):
    """Input tile size that the valid-padding U-Net needs for a given output.

    The inverse of `valid_output_size`: `valid_input_size(388) == 572` for
    the paper's network.

    Args:
        output_size: Wanted side length of the output map.
        depth: Number of poolings in the network.

    Returns:
        The side length of the input tile.

    Raises:
        ValueError: If `output_size` is not an integer, or no input tile
            gives exactly it; the message names the nearest output sizes that
            work.
    """
    _check_depth(depth)
    _check_whole_pixels(output_size, "output_size")
    scale = 2**depth
    # Output = scale * bottom - 4 * (scale - 1), so bottom must be an integer.
    bottom, remainder = divmod(int(output_size) + 4 * (scale - 1), scale)
    if remainder or bottom < _smallest_bottom(depth):
        below, above = _nearest_valid(output_size, depth, which=1)
        raise ValueError(
            f"No input tile gives an output of {output_size} pixels with a "
            f"valid-padding U-Net of depth {depth}: "
            f"{_describe_nearest(below, above)}."
        )
    return _valid_sizes(bottom, depth)[0]
