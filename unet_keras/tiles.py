"""Training tiles of an image and its targets, mirror-padded past the
borders: random ones (`random_tile`, and `Augmenter`'s) and the fixed grid of
`TileDataset` (`crop_tile`).

A tile is placed by its output region: for a same-padding U-Net the tile
itself, for a valid-padding one the centred region that the network predicts
from the larger input tile (`unet_keras.valid_output_size`). Arrays may be
`(H, W)` or `(H, W, C)`; randomness comes from a `numpy.random.Generator`
(or a seed).
"""

import numpy as np


def _rng(rng):
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _check(image, others):
    """Arrays as ndarrays, all (H, W) or (H, W, C) with the image's H and W."""
    image, others = np.asarray(image), [np.asarray(a) for a in others]
    for a in (image, *others):
        if a.ndim not in (2, 3) or a.shape[:2] != image.shape[:2]:
            raise ValueError(
                "Arrays must be (H, W) or (H, W, C), all with the image's height and "
                f"width; got shapes {[x.shape for x in (image, *others)]}."
            )
    return image, others


def _result(image, others):
    return (image, *others) if others else image


def _tile_sizes(tile_size, output_size):
    if not isinstance(tile_size, (int, np.integer)) or tile_size < 1:
        raise ValueError(f"`tile_size` must be an integer >= 1, got {tile_size!r}.")
    if output_size is None:
        return int(tile_size), int(tile_size), 0
    margin, odd = divmod(tile_size - output_size, 2)
    if output_size < 1 or margin < 0 or odd:
        raise ValueError(
            f"`output_size` must be at most `tile_size` ({tile_size}) with an even "
            f"difference, got {output_size!r}. For a valid-padding U-Net use "
            "`unet_keras.valid_output_size(tile_size, depth)`."
        )
    return int(tile_size), int(output_size), margin


def _random_origin(rng, shape, output_size):
    """Top-left corner of a uniformly placed output region; an image smaller
    than the region lands anywhere inside it."""
    return tuple(
        int(rng.integers(min(0, n - output_size), max(0, n - output_size) + 1))
        for n in shape[:2]
    )


def crop_tile(origin, image, *others, tile_size, output_size=None):
    """The tile whose output region has its top-left corner at `origin`
    (row, col), mirror-padded where it reaches past the image.

    The image gets the `tile_size` input tile; the others (targets) only its
    centred `output_size` region, what a valid-padding U-Net predicts for
    that tile. `output_size=None` means same padding (output = input).

    Returns:
        The image tile, or a tuple `(image_tile, *target_tiles)`.
    """
    tile_size, output_size, margin = _tile_sizes(tile_size, output_size)
    image, others = _check(image, others)

    def crop(array, start, size):
        (top, left), (height, width) = start, array.shape[:2]
        pad = [(max(-top, 0), max(top + size - height, 0)),
               (max(-left, 0), max(left + size - width, 0))]
        if any(p for pair in pad for p in pair):
            array = np.pad(array, pad + [(0, 0)] * (array.ndim - 2), mode="reflect")
            top, left = top + pad[0][0], left + pad[1][0]
        return np.ascontiguousarray(array[top:top + size, left:left + size])

    start = (origin[0] - margin, origin[1] - margin)
    return _result(crop(image, start, tile_size), [crop(a, origin, output_size) for a in others])


def random_tile(rng, image, *others, tile_size, output_size=None):
    """A random tile: the output region is placed uniformly over the image
    and the input tile extends `(tile_size - output_size) / 2` pixels past it
    on each side (see `crop_tile`)."""
    _, output_size_, _ = _tile_sizes(tile_size, output_size)
    origin = _random_origin(_rng(rng), np.shape(image), output_size_)
    return crop_tile(origin, image, *others, tile_size=tile_size, output_size=output_size)
