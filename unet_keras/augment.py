"""Data augmentation for segmentation, with OpenCV.

The paper trains on few images and leans on augmentation: elastic
deformations, shifts and rotations, and gray-value variations. The functions
take an image plus any number of other arrays (masks, weight maps), transform
them all with the same random draw, and interpolate each by its kind:

* `"image"`: the `interpolation` argument (linear by default);
* `"mask"`: nearest neighbour, so a binary mask stays binary;
* `"weight"`: linear (a weight map is smooth, and must stay non-negative).

When `kinds` is None, arrays whose values are all 0 or 1 are treated as masks
and the rest as weight maps. Borders are mirrored (`cv2.BORDER_REFLECT_101`,
the same as `np.pad(mode="reflect")`), as in the paper's overlap-tile scheme.
Arrays may be `(H, W)` or `(H, W, C)`. Randomness always comes from a
`numpy.random.Generator` (or a seed), so the same seed gives the same output.

`Augmenter` combines them all for training tiles (cut as `unet_keras.tiles` cuts them).
"""

import functools

import cv2
import numpy as np

from unet_keras.symmetry import apply_symmetry, symmetry_choices
from unet_keras.tiles import _check, _random_origin, _result, _rng, _tile_sizes, crop_tile

INTERPOLATIONS = {
    "nearest": cv2.INTER_NEAREST, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC,
}
KINDS = ("image", "mask", "weight")
_BORDER = cv2.BORDER_REFLECT_101


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------
def _interpolation(name):
    if name not in INTERPOLATIONS:
        raise ValueError(f"`interpolation` must be one of {tuple(INTERPOLATIONS)}, got {name!r}.")
    return INTERPOLATIONS[name]


def _kinds(others, kinds):
    """The kind of each extra array: given, or guessed from its values."""
    if kinds is None:
        binary = [a.dtype == bool or bool(((a == 0) | (a == 1)).all()) for a in others]
        return tuple("mask" if b else "weight" for b in binary)
    kinds = (kinds,) * len(others) if isinstance(kinds, str) else tuple(kinds)
    if len(kinds) != len(others) or any(k not in KINDS for k in kinds):
        raise ValueError(
            f"`kinds` must name one of {KINDS} for each of the {len(others)} extra "
            f"array(s), got {kinds!r}."
        )
    return kinds


def _flags(kind, interpolation):
    return {"image": interpolation, "mask": cv2.INTER_NEAREST, "weight": cv2.INTER_LINEAR}[kind]


# What OpenCV's remap and warpAffine interpolate: every kind, or nearest only.
_ANY_INTERPOLATION = {np.dtype(t) for t in (np.uint8, np.uint16, np.int16, np.float32, np.float64)}
_NEAREST_ONLY = {np.dtype(np.int8), np.dtype(np.int32)}


def _in_opencv_dtype(warp, array, flags):
    """`warp(source)` of `array`, in a dtype OpenCV warps with `flags`, returned
    in `array`'s dtype.

    OpenCV fails on float16 (in float32 here) and on the integers it cannot
    interpolate, and turns int64 into int32; those integers go through
    float64 (exact up to 2**53), rounded and saturated back.

    Args:
        warp: The OpenCV call, from the source array to the warped one.
        array: A bool, integer or float array.
        flags: Its OpenCV interpolation flag.

    Returns:
        The warped array, in `array`'s dtype.
    """
    dtype = array.dtype
    if dtype.kind == "b":
        return warp(array.view(np.uint8)).view(bool)
    if dtype.kind not in "uif":
        raise ValueError(f"Cannot warp an array of dtype {dtype}: pass bool, integers or floats.")
    if dtype in _ANY_INTERPOLATION or (dtype in _NEAREST_ONLY and flags == cv2.INTER_NEAREST):
        return warp(array)
    if dtype.kind == "f":  # float16 (or longdouble)
        return warp(array.astype(np.float32 if dtype.itemsize < 4 else np.float64)).astype(dtype)
    out = np.rint(warp(array.astype(np.float64)))
    return np.clip(out, np.iinfo(dtype).min, np.iinfo(dtype).max).astype(dtype)


def _remap(array, map_xy, flags):
    """`cv2.remap` with mirror borders that keeps `(H, W, 1)` arrays and the dtype."""
    def warp(source):
        return cv2.remap(source, map_xy, None, flags, borderMode=_BORDER)

    return _in_opencv_dtype(warp, array, flags).reshape(map_xy.shape[:2] + array.shape[2:])


@functools.lru_cache(maxsize=32)
def _grid(height, width, k=0):
    """Pixel coordinates `(H, W, 2)` as (x, y), after symmetry `k`; cached
    and read-only."""
    x, y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    grid = apply_symmetry(np.dstack([x, y]), k) if k else np.dstack([x, y])
    grid = np.ascontiguousarray(grid)
    grid.flags.writeable = False
    return grid


# ---------------------------------------------------------------------------
# Elastic deformation
# ---------------------------------------------------------------------------
def elastic_displacement(shape, grid=3, sigma=10.0, rng=None):
    """The paper's random displacement field.

    Displacement vectors on a coarse `grid` x `grid` lattice are drawn from a
    Gaussian with `sigma` pixels standard deviation, then upsampled to every
    pixel with bicubic interpolation (`cv2.resize`). The lattice points sit
    at the centres of a `grid` x `grid` partition of the image.

    Args:
        shape: `(height, width)` of the field (extra axes are ignored).
        grid: Lattice points per side (3 in the paper).
        sigma: Standard deviation of the displacements in pixels (10 in the
            paper).
        rng: A `numpy.random.Generator` or a seed.

    Returns:
        A float32 array `(H, W, 2)` of (dx, dy) displacements.
    """
    if not isinstance(grid, (int, np.integer)) or grid < 1:
        raise ValueError(f"`grid` must be an integer >= 1, got {grid!r}.")
    if sigma < 0:
        raise ValueError(f"`sigma` must be >= 0, got {sigma!r}.")
    height, width = shape[:2]
    coarse = _rng(rng).normal(0.0, sigma, size=(grid, grid, 2)).astype(np.float32)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)


def elastic_deform(
    image, *others, grid=3, sigma=10.0, rng=None, interpolation="linear", kinds=None
):
    """Elastic deformation of an image and the arrays that go with it.

    All arrays are warped by the same field (see `elastic_displacement`)
    with `cv2.remap` and mirror borders; masks with nearest neighbour, weight
    maps linearly (see the module docstring for `kinds`). `sigma=0` returns
    exact copies.

    Args:
        image: `(H, W)` or `(H, W, C)` array.
        *others: Masks or weight maps of the same height and width.
        grid, sigma, rng: As for `elastic_displacement`.
        interpolation: `"linear"` or `"cubic"` (or `"nearest"`) for the
            image; cubic can overshoot the image's range slightly.
        kinds: None to guess, one kind for all `others`, or one per array.

    Returns:
        The deformed image, or a tuple `(image, *others)` if others are given.
    """
    image, others = _check(image, others)
    flags = _interpolation(interpolation)
    kinds = _kinds(others, kinds)
    field = elastic_displacement(image.shape, grid, sigma, rng)
    if sigma == 0:
        return _result(image.copy(), [a.copy() for a in others])
    map_xy = _grid(*image.shape[:2]) + field
    return _result(
        _remap(image, map_xy, flags),
        [_remap(a, map_xy, _flags(k, flags)) for a, k in zip(others, kinds)],
    )


# ---------------------------------------------------------------------------
# A random symmetry, small affine transforms, gray values
# ---------------------------------------------------------------------------
def random_symmetry(rng, image, *others):
    """The same random symmetry of the square for all arrays (flips and
    half turns only for a non-square image). Returns contiguous copies."""
    image, others = _check(image, others)
    k = int(_rng(rng).choice(symmetry_choices(*image.shape[:2])))
    flip = [np.ascontiguousarray(apply_symmetry(a, k)) for a in (image, *others)]
    return _result(flip[0], flip[1:])


def zoom_bounds(zoom_range, affine=True):
    """`zoom_range` as `(lower, upper)` floats, checked.

    As in `keras.layers.RandomZoom`, a positive value zooms out (each output
    pixel covers `1 + value` source pixels per axis) and a single number `f`
    stands for `(-f, f)`. `(0, 0)` is no zoom.

    Raises:
        ValueError: For bounds outside -1 < lower <= upper, or a zoom with
            `affine=False` (the zoom is part of the affine transform).
    """
    bounds = (-zoom_range, zoom_range) if np.isscalar(zoom_range) else tuple(zoom_range)
    if len(bounds) != 2 or not -1 < float(bounds[0]) <= float(bounds[1]):
        raise ValueError(
            f"`zoom_range` must be a number f (for (-f, f)) or a pair (lower, upper) with "
            f"-1 < lower <= upper; positive values zoom out. Got {zoom_range!r}; e.g. "
            "(-0.1, 0.2)."
        )
    bounds = float(bounds[0]), float(bounds[1])
    if bounds != (0.0, 0.0) and not affine:
        raise ValueError("`zoom_range` is part of the affine transform: set `affine=True`.")
    return bounds


def _affine_matrix(rng, shape, max_rotation, max_shift, zoom=(0.0, 0.0)):
    """The 2x3 matrix mapping output to source pixel coordinates: a rotation
    by up to `max_rotation` degrees about the centre, a shift by up to
    `max_shift` pixels along each axis and a zoom drawn from the checked
    bounds `zoom` (`zoom_bounds`)."""
    angle = rng.uniform(-max_rotation, max_rotation)
    shift = rng.uniform(-max_shift, max_shift, size=2)
    lower, upper = zoom
    # No draw without a zoom, so that runs without one keep their random streams.
    scale = rng.uniform(1.0 + lower, 1.0 + upper) if (lower, upper) != (0.0, 0.0) else 1.0
    centre = ((shape[1] - 1) / 2.0, (shape[0] - 1) / 2.0)
    matrix = cv2.getRotationMatrix2D(centre, angle, scale)
    matrix[:, 2] += shift
    return matrix


def random_affine(
    rng, image, *others, max_rotation=15.0, max_shift=10.0, zoom_range=(0.0, 0.0),
    interpolation="linear", kinds=None,
):
    """A small random rotation (uniform in +-`max_rotation` degrees, about
    the centre), shift (uniform in +-`max_shift` pixels per axis) and zoom
    (see `zoom_bounds`), the same for all arrays, by `cv2.warpAffine` with
    mirror borders. `interpolation` and `kinds` work as for `elastic_deform`.

    Returns:
        The transformed image, or a tuple `(image, *others)`.
    """
    image, others = _check(image, others)
    flags = _interpolation(interpolation)
    kinds = _kinds(others, kinds)
    zoom = zoom_bounds(zoom_range)
    matrix = _affine_matrix(_rng(rng), image.shape, max_rotation, max_shift, zoom)
    size = (image.shape[1], image.shape[0])

    def warp(array, flag):
        def affine(source):
            return cv2.warpAffine(source, matrix, size, flags=flag | cv2.WARP_INVERSE_MAP,
                                  borderMode=_BORDER)

        return _in_opencv_dtype(affine, array, flag).reshape(array.shape)

    return _result(warp(image, flags), [warp(a, _flags(k, flags)) for a, k in zip(others, kinds)])


def random_gray(rng, image, brightness=0.1, contrast=0.2, gamma=0.2):
    """Random gray-value variation of an image in [0, 1].

    A gamma `exp(U(-gamma, gamma))`, then a contrast factor
    `U(1 - contrast, 1 + contrast)` about the image mean and a brightness
    offset `U(-brightness, brightness)`, all clipped to [0, 1]. Apply it to
    images only, never to masks or weight maps.

    Returns:
        A new float32 array of the image's shape.
    """
    rng = _rng(rng)
    exponent = float(np.exp(rng.uniform(-gamma, gamma)))
    factor = rng.uniform(1.0 - contrast, 1.0 + contrast)
    offset = rng.uniform(-brightness, brightness)
    out = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    out = cv2.pow(out, exponent).reshape(out.shape)
    mean = float(out.mean())
    out *= factor
    out += mean * (1.0 - factor) + offset
    return np.clip(out, 0.0, 1.0, out=out)


# ---------------------------------------------------------------------------
# Everything together
# ---------------------------------------------------------------------------
class Augmenter:
    """Random training tiles with every augmentation of the paper.

    One call draws a tile position, a symmetry of the square, an elastic
    deformation and a small rotation/shift, folds them into a single
    sampling map, and warps the image, mask and weight map once each,
    straight from the full image with mirror borders; then varies the gray
    values of the image. Each step can be switched off. Warping only the
    tile, once, keeps it fast.

    Args:
        tile_size: Side of the input tile; None for the whole image.
        output_size: Side of the target tiles for a valid-padding U-Net
            (centred in the input tile); None for same padding.
        elastic: Elastic deformation (`grid`, `sigma`, over the input tile).
        symmetries: Random flips and quarter turns.
        affine: Random rotation up to `max_rotation` degrees, shift up to
            `max_shift` pixels and zoom in `zoom_range` (see `zoom_bounds`).
        gray: Random gamma, contrast and brightness (`gamma`, `contrast`,
            `brightness`, see `random_gray`).
        interpolation: Interpolation of the image (`"linear"` or `"cubic"`).

    Call it as `augmenter(rng, image, mask=None, weight=None)`: image
    `(H, W)` or `(H, W, C)` in [0, 1], mask and weight map of the same height
    and width. It returns the image tile, or a tuple with the mask and weight
    tiles that were given.
    """

    def __init__(
        self, tile_size=None, output_size=None, *, elastic=True, grid=3, sigma=10.0,
        symmetries=True, affine=True, max_rotation=15.0, max_shift=10.0,
        zoom_range=(0.0, 0.0), gray=True, brightness=0.1, contrast=0.2, gamma=0.2,
        interpolation="linear",
    ):
        self.margin = 0
        if tile_size is not None:
            tile_size, output_size, self.margin = _tile_sizes(tile_size, output_size)
        elif output_size is not None:
            raise ValueError("`output_size` needs a `tile_size`.")
        _interpolation(interpolation)
        if sigma < 0 or max_rotation < 0 or max_shift < 0:
            raise ValueError("`sigma`, `max_rotation` and `max_shift` must be >= 0.")
        self.tile_size, self.output_size = tile_size, output_size
        self.elastic, self.grid, self.sigma = elastic, grid, sigma
        self.symmetries, self.affine = symmetries, affine
        self.max_rotation, self.max_shift = max_rotation, max_shift
        self.zoom_range = zoom_bounds(zoom_range, affine)
        self.gray, self.brightness, self.contrast, self.gamma = gray, brightness, contrast, gamma
        self.interpolation = interpolation

    def _sampling_map(self, rng, shape):
        """Map `(tile, tile, 2)` of source coordinates in the full image, and
        the origin of the output region (for the crop-only fast path)."""
        if self.tile_size is None:
            (tile_h, tile_w), origin = shape[:2], (0, 0)
        else:
            tile_h = tile_w = self.tile_size
            origin = _random_origin(rng, shape, self.output_size)
        if not (self.symmetries or self.elastic or self.affine):
            return None, origin
        k = int(rng.choice(symmetry_choices(tile_h, tile_w))) if self.symmetries else 0
        # The symmetry is folded into the base grid; the displacement and the
        # affine transform are isotropic random draws, so drawing them after
        # the symmetry gives the same distribution as applying it last.
        map_xy = _grid(tile_h, tile_w, k)
        if self.elastic:
            map_xy = map_xy + elastic_displacement((tile_h, tile_w), self.grid, self.sigma, rng)
        top, left = origin[0] - self.margin, origin[1] - self.margin
        if self.affine:
            matrix = _affine_matrix(
                rng, (tile_h, tile_w), self.max_rotation, self.max_shift, self.zoom_range
            )
        else:
            matrix = np.eye(2, 3)
        matrix[:, 2] += (left, top)
        # cv2.transform beats numpy broadcasting over a last axis of length 2.
        return cv2.transform(map_xy, matrix), origin

    def __call__(self, rng, image, mask=None, weight=None):
        rng = _rng(rng)
        given = [(a, kind) for a, kind in ((mask, "mask"), (weight, "weight")) if a is not None]
        image, others = _check(image, [a for a, _ in given])
        map_xy, origin = self._sampling_map(rng, image.shape)
        if map_xy is None and self.tile_size is None:
            tiles = [a.copy() for a in (image, *others)]
        elif map_xy is None:
            tiles = crop_tile(origin, image, *others, tile_size=self.tile_size,
                              output_size=self.output_size)
            tiles = list(tiles) if others else [tiles]
        else:
            flags = INTERPOLATIONS[self.interpolation]
            m = self.margin
            target_map = map_xy[m:map_xy.shape[0] - m, m:map_xy.shape[1] - m] if m else map_xy
            tiles = [_remap(image, map_xy, flags)] + [
                _remap(a, target_map, _flags(kind, flags)) for a, (_, kind) in zip(others, given)
            ]
        if self.gray:
            tiles[0] = random_gray(rng, tiles[0], self.brightness, self.contrast, self.gamma)
        return _result(tiles[0], tiles[1:])
