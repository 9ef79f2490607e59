"""Training input pipeline: random augmented tiles from in-memory arrays.

`TileDataset` is a `keras.utils.PyDataset`, so it works with `model.fit` on
every backend, with threads or processes (`workers`,
`use_multiprocessing`). Batch `i` of epoch `e` is drawn from
`np.random.default_rng([seed, e, i])`: the same seed gives the same batches
however many workers build them, and in whatever order.
"""

import math
import warnings

import keras
import numpy as np

from unet_keras.augment import Augmenter
from unet_keras.tiles import crop_tile


def _check_images(images):
    """The images as float32 `(N, H, W, C)` in [0, 1].

    The gray-value augmentation clips to [0, 1], so 0-255 images would come
    out of augmented batches saturated (near white) and out of the fixed
    grid unchanged: they are refused rather than silently trained on.

    Raises:
        ValueError: For a wrong rank, no image, an integer dtype, NaN or
            float values outside [0, 1].
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(
            f"`images` must be (N, H, W, C), got shape {images.shape}. "
            "Add a channel axis to grayscale images with `images[..., None]`."
        )
    if len(images) == 0:
        raise ValueError("`images` is empty.")
    if images.dtype.kind in "iu":
        raise ValueError(
            f"`images` must be floats in [0, 1], got integer images ({images.dtype}). Scale "
            "them with `unet_keras.io.to_unit_range(images)` (it divides by the dtype's "
            "maximum, 255 for uint8), or to [0, 1] in another way that suits your data."
        )
    images = images.astype(np.float32, copy=False)
    if np.isnan(images).any():
        raise ValueError(
            "`images` contain NaN. Fill them first, e.g. `np.nan_to_num(images, nan=0.0)`."
        )
    low, high = float(images.min()), float(images.max())
    if low < 0 or high > 1:
        raise ValueError(
            f"`images` must lie in [0, 1] (the gray-value augmentation clips to it), got "
            f"values in [{low:g}, {high:g}]. Scale them first: apply "
            "`unet_keras.io.to_unit_range` to the integer images as read, divide 8-bit "
            "values by 255, or rescale them to [0, 1] in another way that suits your data."
        )
    return images


def _binary_mask_advice(values):
    """How to turn masks holding `values` (sorted, not all 0/1) into 0/1 masks."""
    if len(values) == 2 and values[0] == 0:
        high = float(values[1])
        for bits, top in ((8, 255), (16, 65535)):
            if np.isclose(high, 1 / top, rtol=1e-4):
                return (
                    f"They look like 0/1 masks scaled as {bits}-bit images (e.g. by "
                    "`to_unit_range`); use `masks > 0`."
                )
            if high == top:
                return (
                    f"They look like {bits}-bit masks with {top} as foreground; use "
                    f"`masks > 0` or `masks / {top}`."
                )
        return "Use `masks > 0` for 0/1 masks."
    advice = (
        "They look smoothed or anti-aliased (e.g. resized with interpolation); threshold "
        "them, e.g. `masks > 0.5 * masks.max()`, or save them without smoothing."
    )
    if len(values) > 2 and np.array_equal(values, np.arange(len(values))):
        advice += (
            f" If they are class labels 0..{len(values) - 1}, one-hot encode them for a "
            f"softmax model: `np.eye({len(values)}, dtype='float32')[labels]`."
        )
    return advice


def _check_one_hot(masks):
    """Refuses `(N, H, W, K)` masks that are not exactly one class per pixel."""
    classes = masks.shape[-1]
    advice = (
        f"Make them from integer class labels with `np.eye({classes}, dtype='float32')[labels]`."
    )
    if classes in (3, 4) and (masks[..., :3] == masks[..., :1]).all():
        # What a gray mask read as an RGB(A) image looks like.
        advice += (
            " Their first three channels are equal: for a gray mask stored as colour, "
            "pass `masks[..., :1]`."
        )
    if not ((masks == 0) | (masks == 1)).all():
        raise ValueError(
            f"One-hot `masks` (N, H, W, {classes}) must hold only 0 and 1, found values like "
            f"{np.unique(masks)[:6].tolist()}. {advice}"
        )
    counts = masks.sum(axis=-1)
    wrong = np.argwhere(counts != 1)
    if len(wrong):
        n, row, col = wrong[0].tolist()
        raise ValueError(
            f"One-hot `masks` (N, H, W, {classes}) must have exactly one 1 per pixel; "
            f"{int((counts == 0).sum())} pixel(s) have none and {int((counts > 1).sum())} "
            f"several (the first: mask {n}, row {row}, column {col}). {advice}"
        )


def _check_masks(masks, images_shape):
    """The masks as float32 `(N, H, W, 1)` 0/1 masks or `(N, H, W, K)` one-hot maps.

    Raises:
        ValueError: For a shape that does not fit the images, values other
            than 0 and 1 (the message says what they look like and how to fix
            them) or one-hot maps without exactly one class per pixel.
    """
    masks = np.asarray(masks)
    if masks.ndim == 3:
        masks = masks[..., None]
    if masks.ndim != 4 or masks.shape[:3] != images_shape[:3]:
        raise ValueError(
            f"`masks` must be (N, H, W, 1) binary masks or (N, H, W, K) one-hot maps with "
            f"the images' N, H, W {images_shape[:3]}, got shape {masks.shape}."
        )
    masks = masks.astype(np.float32, copy=False)
    if masks.shape[-1] > 1:
        _check_one_hot(masks)
    elif not ((masks == 0) | (masks == 1)).all():
        values = np.unique(masks)
        raise ValueError(
            f"`masks` must be binary (0 and 1), found values like {values[:6].tolist()}. "
            + _binary_mask_advice(values)
        )
    # Channel 0 is the background of one-hot maps, as of a binary mask's 0.
    foreground = masks if masks.shape[-1] == 1 else masks[..., 1:]
    if not foreground.any():
        warnings.warn(
            f"All {len(masks)} masks are empty: no pixel is foreground, so the model would "
            "learn to predict background everywhere. Check how the masks were read and "
            "thresholded (0/1 masks scaled by `to_unit_range` hold 0 and 1/255: use "
            "`masks > 0`).",
            UserWarning,
            stacklevel=4,
        )
    return masks


def _check_arrays(images, masks, weights):
    """Checks and converts the arrays of a `TileDataset`.

    Args:
        images: `(N, H, W, C)` images in [0, 1].
        masks: `(N, H, W)` or `(N, H, W, 1)` binary masks, or `(N, H, W, K)`
            one-hot maps.
        weights: None or `(N, H, W)` (or `(N, H, W, 1)`) weight maps.

    Returns:
        `(images, masks, weights)` as float32, masks `(N, H, W, K)` and
        weights `(N, H, W)`.

    Raises:
        ValueError: For arrays of the wrong shape, dtype or values; the
            message says how to fix them.
    """
    images = _check_images(images)
    masks = _check_masks(masks, images.shape)
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float32)
        if weights.ndim == 4 and weights.shape[-1] == 1:
            weights = weights[..., 0]
        if weights.shape != images.shape[:3]:
            raise ValueError(
                f"`weights` must be (N, H, W) with the images' N, H, W {images.shape[:3]}, "
                f"got shape {weights.shape}. See `unet_keras.weights.border_weight_maps`."
            )
    return images, masks, weights


def _origins(length, output_size):
    """Starts of output regions that cover `length` pixels; the last one is
    moved back to end at the border rather than reaching past it."""
    if length <= output_size:
        return [-((output_size - length) // 2)]
    starts = list(range(0, length - output_size, output_size))
    return starts + [length - output_size]


class TileDataset(keras.utils.PyDataset):
    """Batches of (augmented) tiles for `model.fit`.

    Yields `(x, y)` or, with weight maps, `(x, y, w)` float32 batches:
    x `(B, tile, tile, C)`, y `(B, out, out, K)`, w `(B, out, out)`, which
    `model.fit` uses as inputs, targets and per-pixel sample weights (e.g.
    with `unet_keras.losses.WeightedCrossEntropy`). K is 1 for binary masks
    (a sigmoid model, `num_classes=1`) and the number of classes for one-hot
    masks (a softmax model, e.g. the paper's `num_classes=2`).

    With `augment=True` every tile is drawn afresh: a random image, a
    uniformly placed output region, and the augmentations switched on (see
    `unet_keras.augment.Augmenter`). Masks are warped by nearest neighbour,
    all K channels from the same source pixel, so they stay binary and
    one-hot. With `augment=False` the tiles are a fixed grid that covers
    every image, the same every epoch: use that for validation.

    Args:
        images: `(N, H, W, C)` float images in [0, 1], e.g. scaled with
            `unet_keras.io.to_unit_range`.
        masks: `(N, H, W, 1)` binary masks (0 and 1; `(N, H, W)` is read as
            one channel), or `(N, H, W, K)` one-hot maps, K >= 2, with
            exactly one 1 per pixel and channel 0 the background, e.g.
            `np.eye(K, dtype="float32")[labels]` of integer labels
            `(N, H, W)`. Warns if no mask has any foreground.
        weights: Optional `(N, H, W)` weight maps (see
            `unet_keras.weights.border_weight_maps`).
        tile_size: Side of the input tiles.
        output_size: Side of the target tiles for a valid-padding U-Net,
            `unet_keras.valid_output_size(tile_size, depth)`; None for
            same padding (targets as large as the inputs).
        batch_size: Tiles per batch.
        steps: Batches per epoch; by default enough to cover every image
            once with output regions.
        augment: Random tiles and augmentation; False for the fixed grid.
        elastic, symmetries, affine, gray: Switch each augmentation.
        seed: Seed of all the randomness.
        **pydataset_kwargs: `workers` (default 2 threads: with one, Keras on
            TensorFlow paused 7-30 s at each epoch end on 2 cores),
            `use_multiprocessing`,
            `max_queue_size` for `keras.utils.PyDataset`.
        augment_options: A dict of other `Augmenter` arguments (`sigma`,
            `max_rotation`, `brightness`, `interpolation`, ...).
    """

    def __init__(
        self, images, masks, weights=None, *, tile_size=256, output_size=None, batch_size=4,
        steps=None, augment=True, elastic=True, symmetries=True, affine=True, gray=True,
        seed=0, augment_options=None, **pydataset_kwargs,
    ):
        # Two worker threads by default, not Keras's one: with one worker Keras
        # on TensorFlow feeds the batches through an autotuned tf.data prefetch,
        # and tearing that down at every epoch end stalled training for 7-30 s
        # (measured on 2 cores; a native profile showed the wait). With more
        # workers Keras feeds them from its own enqueuer, autotuning off.
        pydataset_kwargs.setdefault("workers", 2)
        super().__init__(**pydataset_kwargs)
        self.images, self.masks, self.weights = _check_arrays(images, masks, weights)
        if tile_size is None:
            raise ValueError("`tile_size` must be an integer; TileDataset cuts tiles.")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be an integer >= 1, got {batch_size!r}.")
        self.augmenter = Augmenter(
            tile_size, output_size, elastic=elastic, symmetries=symmetries, affine=affine,
            gray=gray, **(augment_options or {}),
        )
        self.tile_size = tile_size
        self.output_size = tile_size if output_size is None else output_size
        height, width = self.images.shape[1:3]
        self.positions = [
            (n, top, left)
            for n in range(len(self.images))
            for top in _origins(height, self.output_size)
            for left in _origins(width, self.output_size)
        ]
        if steps is None:
            steps = math.ceil(len(self.positions) / batch_size)
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"`steps` must be an integer >= 1, got {steps!r}.")
        self.batch_size, self.steps = batch_size, steps
        self.augment, self.seed = augment, seed
        self.epoch = 0

    def __len__(self):
        return self.steps

    def _tile(self, rng, index):
        if self.augment:
            n = int(rng.integers(len(self.images)))
            weight = None if self.weights is None else self.weights[n]
            return self.augmenter(rng, self.images[n], self.masks[n], weight)
        n, top, left = self.positions[index % len(self.positions)]
        arrays = [self.images[n], self.masks[n]]
        if self.weights is not None:
            arrays.append(self.weights[n])
        return crop_tile(
            (top, left), *arrays, tile_size=self.tile_size, output_size=self.output_size
        )

    def __getitem__(self, index):
        if not 0 <= index < self.steps:
            raise IndexError(f"Batch {index} of a TileDataset with {self.steps} batches.")
        rng = np.random.default_rng([self.seed, self.epoch, index])
        tiles = [self._tile(rng, index * self.batch_size + b) for b in range(self.batch_size)]
        return tuple(np.stack(parts).astype(np.float32, copy=False) for parts in zip(*tiles))

    def on_epoch_end(self):
        # Keras stops its workers before this and starts new ones, with this
        # object, for the next epoch: the new epoch number reaches them.
        self.epoch += 1


class PerOutputDataset(keras.utils.PyDataset):
    """The batches of `dataset`, with the target (and weight) repeated for
    every output of a deeply supervised model.

    A Keras model with several outputs wants one target per output, as a
    dict keyed by `model.output_names`; deep supervision trains every output
    on the same mask.

    Args:
        dataset: A `PyDataset` (e.g. `TileDataset`) of `(x, y)` or
            `(x, y, w)` batches.
        output_names: The model's `output_names`.
    """

    def __init__(self, dataset, output_names):
        super().__init__(
            workers=dataset.workers, use_multiprocessing=dataset.use_multiprocessing,
            max_queue_size=dataset.max_queue_size,
        )
        if not output_names:
            raise ValueError("`output_names` must name at least one output of the model.")
        self.dataset, self.output_names = dataset, list(output_names)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        x, *rest = self.dataset[index]
        return (x, *({name: part for name in self.output_names} for part in rest))

    def on_epoch_end(self):
        self.dataset.on_epoch_end()
