"""Overlap-tile inference for images of any size.

The paper segments arbitrarily large images tile by tile: each output tile is
predicted from a larger input tile whose missing context at the image border
is mirrored, so every output pixel sees its full receptive field.
`predict_tiled` does this for any model built here (and most fully
convolutional Keras models):

* The geometry comes from the model: input channels, a fixed input size if it
  has one, the depth (the number of 2x downsamplings down to its coarsest pooled
  map, so that the extra pooling of UNet 3+ does not count) and whether it is
  valid-padded (its output is smaller than its input).
* Tiles start at multiples of `2**depth` of the mirrored canvas, so pooling
  sees the same grid as one whole-image pass.
* Valid-padded models (the paper's network): every output pixel has full
  context; overlapping outputs (overlap 0 by default) are averaged uniformly.
  The result equals the whole-image prediction of the mirror-padded image.
* Same-padded models: pixels near a tile edge see zero padding, so tiles
  overlap (`tile // 4` by default), the image gets `overlap // 2` pixels of
  mirrored context (rounded up to a multiple of `2**depth`), and the tiles
  are blended with a window that ignores the outer quarter of the overlap
  and ramps up linearly over its middle half, so every pixel comes mostly
  from tiles where it lies far from the edge, without seams.
"""

import math
from typing import NamedTuple

import keras
import numpy as np
from keras import layers

from unet_keras.geometry import valid_input_size, valid_output_size
from unet_keras.model import _flat_layers
from unet_keras.symmetry import SYMMETRIES, apply_symmetry, invert_symmetry

DEFAULT_TILE = 256  # input tile of same models, about the output tile of valid ones


class _Geometry(NamedTuple):
    channels: int
    fixed: tuple | None  # (height, width) of a model with a fixed input size
    depth: int
    valid: bool


class _Plan(NamedTuple):
    tile: tuple  # input tile (height, width)
    out: tuple  # output tile
    step: tuple  # distance between tiles, a multiple of 2**depth where possible
    margin: tuple  # mirrored context added around the output canvas (same models)
    context: tuple  # (tile - out) // 2
    window: np.ndarray  # blending weights (out_h, out_w)


# ---------------------------------------------------------------------------
# The model's geometry
# ---------------------------------------------------------------------------
def _depth(model, channels):
    """Number of 2x downsamplings from the input to the coarsest map.

    Counting pooling layers is not enough: UNet 3+ also pools skip features
    by 4, 8 and 16 on their way across. The coarsest pooled map of a large
    probe input, whose shape Keras infers without computing anything, tells
    the true depth.
    """
    pools = [layer for layer in _flat_layers(model) if isinstance(layer, layers.MaxPooling2D)]
    if not pools:
        return 0
    size = 2**12
    try:
        probe = keras.Model(model.inputs, [pool.output for pool in pools])
        shapes = probe.compute_output_shape((1, size, size, channels))
    except ValueError:  # pools of a nested model are not outputs of this graph
        return len(pools)
    shapes = [shapes] if isinstance(shapes, tuple) and isinstance(shapes[0], int | None) else shapes
    coarsest = min(shape[1] for shape in shapes)
    return round(math.log2(size / coarsest))


class _ShapeError(ValueError):
    """The model cannot take inputs of some size."""


def _output_hw(model, tile, channels):
    try:
        shape = model.compute_output_shape((1, tile[0], tile[1], channels))
    except Exception as error:  # the backends raise different types
        raise _ShapeError(f"The model cannot take {tile[0]}x{tile[1]} inputs: {error}") from error
    if isinstance(shape, list) or len(shape) != 4:
        raise ValueError(
            f"predict_tiled needs a model with one image output, got {shape}. For a "
            "deeply supervised U-Net++ or UNet 3+, predict with "
            "`unet_keras.family.prediction_network(model)`, its full network's output."
        )
    return (int(shape[1]), int(shape[2])), int(shape[3])


def _model_geometry(model):
    shape = model.input_shape
    if isinstance(shape, list) or len(shape) != 4 or shape[-1] is None:
        raise ValueError(
            f"predict_tiled needs a model with one (batch, H, W, channels) input, got {shape}."
        )
    height, width, channels = shape[1:]
    if (height is None) != (width is None):
        raise ValueError(f"Give the model both spatial sizes or neither, got {shape}.")
    fixed = None if height is None else (height, width)
    depth = _depth(model, channels)
    probes = [fixed] if fixed else []
    if depth:  # a size the valid U-Net takes, then one the same U-Net takes
        probes += [(valid_input_size(2**depth + 4, depth),) * 2, (2**depth * 8,) * 2]
    for probe in probes or [(64, 64)]:
        try:
            out = _output_hw(model, probe, channels)[0]
        except _ShapeError:
            continue
        return _Geometry(int(channels), fixed, depth, out != probe)
    raise ValueError(f"Cannot find the output size of this model for inputs of {probes}.")


# ---------------------------------------------------------------------------
# Tiles
# ---------------------------------------------------------------------------
def _round_up(value, multiple):
    return -(-value // multiple) * multiple


def _smallest_valid_tile(output, depth):
    """The smallest valid-padding input tile whose output has at least `output` pixels."""
    size = valid_input_size(2**depth + 4, depth)
    while valid_output_size(size, depth) < output:
        size += 2**depth
    return size


def _check_tile(tile, geometry):
    """The requested tile as (height, width), or None for the default."""
    if tile is None:
        return geometry.fixed
    pair = (tile, tile) if np.isscalar(tile) else tuple(tile)
    if len(pair) != 2 or not all(isinstance(t, int | np.integer) and t > 0 for t in pair):
        raise ValueError(f"`tile` must be a positive integer or a pair of them, got {tile!r}.")
    pair = tuple(int(t) for t in pair)
    if geometry.fixed and pair != geometry.fixed:
        raise ValueError(
            f"This model only accepts {geometry.fixed[0]}x{geometry.fixed[1]} inputs; "
            f"leave `tile=None` or use a model built with input_shape=(None, None, C)."
        )
    align = 2**geometry.depth
    for size in pair:
        if geometry.valid and geometry.depth:
            valid_output_size(size, geometry.depth)  # raises with the nearest sizes
        elif size % align:
            below = size // align * align
            raise ValueError(
                f"A tile of {size} pixels does not fit this same-padded model of depth "
                f"{geometry.depth}: tiles must be multiples of {align}. "
                f"Use {below or align} or {below + align}."
            )
    return pair


def _valid_loss(model, geometry):
    """Pixels a valid-padded model without pooling loses (input - output size)."""
    return 64 - _output_hw(model, (64, 64), geometry.channels)[0][0]


def _default_tile(model, geometry, image_hw, margin):
    """The default tile: DEFAULT_TILE, or just what a small image needs."""
    align = 2**geometry.depth
    tile = []
    for size in image_hw:
        if not geometry.valid:
            tile.append(min(_round_up(DEFAULT_TILE, align), _round_up(size + 2 * margin, align)))
        elif geometry.depth:
            tile.append(_smallest_valid_tile(min(DEFAULT_TILE, size), geometry.depth))
        else:
            tile.append(min(DEFAULT_TILE, size) + _valid_loss(model, geometry))
    return tuple(tile)


def _window(size, overlap):
    """Blending weights along one axis of a same-padded output tile.

    Pixels within overlap / 4 of the edge, whose context is most cut by the
    zero padding, get almost no weight (1e-3, never 0); the weight then rises
    linearly over the middle half of the overlap to 1.
    """
    if overlap <= 0:
        return np.ones(size, np.float32)
    distance = np.minimum(np.arange(size) + 0.5, size - np.arange(size) - 0.5)
    weight = (distance - overlap / 4) / (overlap / 2)
    return np.clip(weight, 1e-3, 1.0).astype(np.float32)


def _check_overlap(overlap, geometry, out):
    if overlap is None:
        return 0 if geometry.valid else min(out) // 4
    if not isinstance(overlap, int | np.integer) or not 0 <= overlap < min(out):
        raise ValueError(
            f"`overlap` must be an integer in [0, {min(out)}) for output tiles of "
            f"{out[0]}x{out[1]}, got {overlap!r}."
        )
    return int(overlap)


def _make_plan(model, geometry, tile, overlap, image_hw):
    """Tile, output tile, steps, margins and blending window for one image size."""
    align = 2**geometry.depth
    requested = tile or (_round_up(DEFAULT_TILE, align),) * 2
    if geometry.valid and tile is None:
        requested = _default_tile(model, geometry, (DEFAULT_TILE, DEFAULT_TILE), 0)
    overlap = _check_overlap(overlap, geometry, _output_hw(model, requested, geometry.channels)[0])
    margin = 0 if geometry.valid else _round_up(overlap // 2, align)
    if tile is None:  # shrink the default tile for small images
        tile = _default_tile(model, geometry, image_hw, margin)
    out = _output_hw(model, tile, geometry.channels)[0]
    if min(out) < 1:
        raise ValueError(f"A {tile[0]}x{tile[1]} tile gives an empty output with this model.")
    steps, overlaps = [], []
    for length in out:
        step = max(1, length - overlap)
        steps.append(step - step % align if step >= align else step)
        overlaps.append(0 if geometry.valid else min(length - steps[-1], length // 2))
    window = np.outer(_window(out[0], overlaps[0]), _window(out[1], overlaps[1]))
    context = tuple((t - o) // 2 for t, o in zip(tile, out))
    return _Plan(tuple(tile), tuple(out), tuple(steps), (margin, margin), context, window)


def _layout(plan, image_hw):
    """Tile offsets per axis, the canvas index arrays and where the image lies."""
    offsets, rows_cols, out_lengths = [], [], []
    for axis in (0, 1):
        size, out, step = image_hw[axis], plan.out[axis], plan.step[axis]
        margin, context = plan.margin[axis], plan.context[axis]
        extent = size + 2 * margin
        count = 1 if extent <= out else math.ceil((extent - out) / step) + 1
        offsets.append([k * step for k in range(count)])
        out_length = (count - 1) * step + out
        in_length = (count - 1) * step + plan.tile[axis]
        # np.pad mirrors pads longer than the image too, as often as needed.
        before = margin + context
        after = max(in_length - before - size, 0)
        rows_cols.append(np.pad(np.arange(size), (before, after), mode="reflect")[:in_length])
        out_lengths.append(out_length)
    return offsets, rows_cols, out_lengths


# ---------------------------------------------------------------------------
# Prediction
# ---------------------------------------------------------------------------
def _predict_views(model, plan, views, batch_size):
    """Overlap-tile predictions of same-sized (H, W, C) views, tiles batched across views."""
    image_hw = views[0].shape[:2]
    offsets, (rows, cols), out_lengths = _layout(plan, image_hw)
    canvases = [view[rows][:, cols] for view in views]
    jobs = [(v, y, x) for v in range(len(views)) for y in offsets[0] for x in offsets[1]]
    sums, weights = [None] * len(views), np.zeros(out_lengths, np.float32)
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        batch = np.stack(
            [canvases[v][y : y + plan.tile[0], x : x + plan.tile[1]] for v, y, x in chunk]
        )
        predictions = keras.ops.convert_to_numpy(model.predict_on_batch(batch))
        if predictions.shape[1:3] != plan.out:
            raise RuntimeError(
                f"The model returned {predictions.shape[1:3]} maps for {plan.tile} tiles; "
                f"expected {plan.out}."
            )
        for (v, y, x), prediction in zip(chunk, predictions):
            if sums[v] is None:
                sums[v] = np.zeros((*out_lengths, prediction.shape[-1]), np.float32)
            region = (slice(y, y + plan.out[0]), slice(x, x + plan.out[1]))
            sums[v][region] += prediction * plan.window[..., None]
            if v == 0:
                weights[region] += plan.window
    top, left = plan.margin
    crop = (slice(top, top + image_hw[0]), slice(left, left + image_hw[1]))
    return [total[crop] / weights[crop][..., None] for total in sums]


def _as_batch(image, channels):
    array = np.asarray(image)
    if array.dtype.kind not in "fiub":
        raise ValueError(f"`image` must be numeric, got dtype {array.dtype}.")
    if array.dtype.kind in "iu":
        # Models here train on [0, 1] floats; 0-255 integers would give
        # confident nonsense rather than an error.
        raise ValueError(
            f"`image` must be floats scaled as the model was trained on, got integer pixels "
            f"({array.dtype}). For this package's models scale them to [0, 1], e.g. with "
            "`unet_keras.io.to_unit_range(image)` (it divides by the dtype's maximum, 255 "
            "for uint8), or convert them to floats with your own normalisation."
        )
    if array.ndim not in (2, 3, 4):
        raise ValueError(
            f"`image` must be (H, W), (H, W, C) or a batch (N, H, W, C), got shape {array.shape}."
        )
    if array.ndim == 2:
        array = array[..., None]
    batch = array if array.ndim == 4 else array[None]
    if batch.shape[-1] != channels:
        raise ValueError(
            f"The model takes {channels} channel(s), the image has {batch.shape[-1]} "
            f"(shape {array.shape}). A 3D array is one (H, W, C) image: pass a batch of "
            "grayscale images as (N, H, W, 1)."
        )
    if 0 in batch.shape:
        raise ValueError(f"`image` is empty: shape {array.shape}.")
    batch = batch.astype(np.float32, copy=False)
    if not np.isfinite(batch).all():
        raise ValueError("`image` contains NaN or infinite values.")
    return batch, array.ndim == 4


def predict_tiled(model, image, tile=None, overlap=None, batch_size=4, tta=False):
    """Predicts an image of any size with the paper's overlap-tile strategy.

    Args:
        model: A Keras model from images `(batch, H, W, C)` to maps
            `(batch, h, w, K)`; same- or valid-padded, with or without a fixed
            input size.
        image: `(H, W)`, `(H, W, C)` or a batch `(N, H, W, C)`, float values
            as the model was trained on (no rescaling happens here): [0, 1]
            for this package's models, e.g. `unet_keras.io.to_unit_range`
            of the images as read. Integer images are refused.
        tile: Input tile size (int or (height, width)). Default: the model's
            fixed size, else 256 for same-padded models (smaller for small
            images) and for valid-padded ones the smallest tile whose output
            has 256 pixels (or the image size if smaller).
        overlap: Pixels by which neighbouring *output* tiles overlap. Default
            `tile // 4` for same-padded models, 0 for valid-padded ones.
        batch_size: Tiles per call of the model.
        tta: Average over the 8 flips and rotations of the image (the paper
            averaged 7 rotated inputs); the result is then equivariant to
            flips and 90-degree rotations of the input.

    Returns:
        float32 maps `(H, W, K)`, or `(N, H, W, K)` for a batch, with the
        input's exact height and width.

    Raises:
        ValueError: For images of the wrong rank or channel count, an integer
            dtype, non-finite values, a tile the model cannot take (the message names sizes
            that work), or a bad overlap or batch size.
    """
    geometry = _model_geometry(model)
    batch, is_batch = _as_batch(image, geometry.channels)
    if not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
    tile = _check_tile(tile, geometry)
    transforms = range(SYMMETRIES if tta else 1)
    views = [(i, t) for i in range(len(batch)) for t in range(len(transforms))]
    totals = [0.0] * len(batch)
    per_call = max(len(transforms), int(batch_size))  # views whose tiles share batches
    for start in range(0, len(views), per_call):
        chunk = views[start : start + per_call]
        arrays = [apply_symmetry(batch[i], t) for i, t in chunk]
        groups = {}  # rotated views of a non-square image get their own plan
        for index, array in enumerate(arrays):
            groups.setdefault(array.shape[:2], []).append(index)
        for shape, indices in groups.items():
            plan = _make_plan(model, geometry, tile, overlap, shape)
            predictions = _predict_views(model, plan, [arrays[k] for k in indices], batch_size)
            for k, prediction in zip(indices, predictions):
                i, t = chunk[k]
                totals[i] = totals[i] + invert_symmetry(prediction, t)
    results = [np.ascontiguousarray(total / len(transforms), np.float32) for total in totals]
    return np.stack(results) if is_batch else results[0]
