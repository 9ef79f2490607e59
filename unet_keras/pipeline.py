"""Training input pipeline: random augmented tiles from in-memory arrays.

`TileDataset` is a `keras.utils.PyDataset`, so it works with `model.fit` on
every backend, with threads or processes (`workers`,
`use_multiprocessing`). Batch `i` of epoch `e` is drawn from
`np.random.default_rng([seed, e, i])`: the same seed gives the same batches
however many workers build them, and in whatever order.
"""

import math

import keras
import numpy as np

from unet_keras.augment import Augmenter
from unet_keras.tiles import crop_tile


def _check_arrays(images, masks, weights):
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4:
        raise ValueError(
            f"`images` must be (N, H, W, C), got shape {images.shape}. "
            "Add a channel axis to grayscale images with `images[..., None]`."
        )
    if len(images) == 0:
        raise ValueError("`images` is empty.")
    masks = np.asarray(masks, dtype=np.float32)
    if masks.ndim == 3:
        masks = masks[..., None]
    if masks.shape != images.shape[:3] + (1,):
        raise ValueError(
            f"`masks` must be (N, H, W, 1) with the images' N, H, W {images.shape[:3]}, "
            f"got shape {masks.shape}."
        )
    if not ((masks == 0) | (masks == 1)).all():
        raise ValueError(
            f"`masks` must be binary (0 and 1), found values like "
            f"{np.unique(masks)[:6].tolist()}. Threshold them first, e.g. `masks > 0.5`."
        )
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
    x `(B, tile, tile, C)`, y `(B, out, out, 1)`, w `(B, out, out)`, which
    `model.fit` uses as inputs, targets and per-pixel sample weights (e.g.
    with `unet_keras.losses.WeightedCrossEntropy`).

    With `augment=True` every tile is drawn afresh: a random image, a
    uniformly placed output region, and the augmentations switched on (see
    `unet_keras.augment.Augmenter`). With `augment=False` the tiles are a
    fixed grid that covers every image, the same every epoch: use that for
    validation.

    Args:
        images: `(N, H, W, C)` images in [0, 1].
        masks: `(N, H, W, 1)` binary masks.
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
