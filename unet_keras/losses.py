"""Segmentation losses: soft Dice, BCE + Dice (optionally + clDice), and the
paper's pixel-weighted cross-entropy.

All losses take `y_true` as a mask (binary, one channel) or a one-hot map
(several channels) of the same shape as `y_pred`; a mask without its channel
axis, `(batch, H, W)`, is accepted too. They are registered with Keras, so a
model compiled with them reloads with `keras.models.load_model` and no
`custom_objects`.
"""

import keras
from keras import ops

_PACKAGE = "unet_keras"


def _check_channels(true_channels, pred_channels):
    """Raises unless `y_true` has as many channels as `y_pred`.

    Broadcasting would otherwise score a one-channel mask against every
    channel of a softmax. Inside a traced function a size may be None: only
    known sizes are compared.

    Args:
        true_channels: Static size of `y_true`'s last axis, or None.
        pred_channels: Static size of `y_pred`'s last axis, or None.
    """
    if true_channels is None or pred_channels is None or true_channels == pred_channels:
        return
    raise ValueError(
        f"The mask has {true_channels} channel(s) and the prediction {pred_channels}. "
        f"For a {pred_channels}-class softmax, one-hot encode the mask, e.g. "
        f"`keras.ops.one_hot(mask, {pred_channels})` of integer (N, H, W) labels; for a "
        "binary mask, build the model with num_classes=1 (a sigmoid)."
    )


def _prepare(y_true, y_pred):
    """Casts both tensors to float32 and gives `y_true` the channel axis.

    Args:
        y_true: Masks or one-hot maps, with or without the channel axis.
        y_pred: Probabilities `(batch, ..., channels)`.

    Returns:
        `(y_true, y_pred)` as float32, of the same rank and channel count.
    """
    y_pred = ops.cast(y_pred, "float32")
    y_true = ops.cast(y_true, "float32")
    if len(y_true.shape) == len(y_pred.shape) - 1:
        y_true = ops.expand_dims(y_true, -1)
    _check_channels(y_true.shape[-1], y_pred.shape[-1])
    return y_true, y_pred


def soft_dice(y_true, y_pred, smooth=1.0):
    """Soft Dice coefficient of every image, averaged over its channels.

    `(2 * sum(t * p) + smooth) / (sum(t) + sum(p) + smooth)`, with the sums over
    the spatial axes of each image and channel.

    Args:
        y_true: Masks or one-hot maps, `(batch, ..., channels)`.
        y_pred: Probabilities of the same shape.
        smooth: Added to numerator and denominator: keeps the Dice of an
            empty mask and an empty prediction at 1 and the gradient finite.

    Returns:
        A tensor of shape `(batch,)`.
    """
    y_true, y_pred = _prepare(y_true, y_pred)
    spatial_axes = tuple(range(1, len(y_pred.shape) - 1))
    intersection = ops.sum(y_true * y_pred, axis=spatial_axes)
    total = ops.sum(y_true, axis=spatial_axes) + ops.sum(y_pred, axis=spatial_axes)
    dice = (2.0 * intersection + smooth) / (total + smooth)
    return ops.mean(dice, axis=-1)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DiceLoss(keras.losses.Loss):
    """Soft Dice loss, `1 - Dice`.

    The Dice is computed per image (and per channel for one-hot multi-class
    targets, then averaged over the channels) and the loss is averaged over
    the batch. Per-image Dice weighs every image equally, however much
    foreground it holds, which is what one wants when masks vary in size.

    Args:
        smooth: Smoothing term added to numerator and denominator.
        reduction: Keras loss reduction over the batch.
        name: Name of the loss.
    """

    def __init__(self, smooth=1.0, reduction="sum_over_batch_size", name="dice_loss", **kwargs):
        super().__init__(reduction=reduction, name=name, **kwargs)
        if smooth < 0:
            raise ValueError(f"`smooth` must be >= 0, got {smooth!r}.")
        self.smooth = float(smooth)

    def call(self, y_true, y_pred):
        return 1.0 - soft_dice(y_true, y_pred, self.smooth)

    def get_config(self):
        return {**super().get_config(), "smooth": self.smooth}


def _soft_erode(x):
    # A cross-shaped 3x3 minimum, as in the clDice paper: a square one would
    # erode diagonal lines twice as fast as straight ones.
    vertical = -ops.max_pool(-x, pool_size=(3, 1), strides=1, padding="same")
    horizontal = -ops.max_pool(-x, pool_size=(1, 3), strides=1, padding="same")
    return ops.minimum(vertical, horizontal)


def _soft_open(x):
    return ops.max_pool(_soft_erode(x), pool_size=3, strides=1, padding="same")


def soft_skeleton(x, iterations=10):
    """Differentiable skeleton of soft masks (Shit et al., clDice, CVPR 2021).

    Iterated min/max pooling peels a soft mask layer by layer and keeps what
    an opening would remove at each depth: the centre lines of structures up
    to about `2 * iterations + 1` pixels thick.

    Args:
        x: Soft masks in [0, 1], `(batch, H, W, channels)`.
        iterations: Erosions; at least half the thickness of the thickest
            structure whose centre line is wanted.

    Returns:
        Soft skeletons, the shape of `x`.
    """
    x = ops.cast(x, "float32")
    skeleton = ops.relu(x - _soft_open(x))
    for _ in range(iterations):
        x = _soft_erode(x)
        delta = ops.relu(x - _soft_open(x))
        skeleton = skeleton + ops.relu(delta - skeleton * delta)
    return skeleton


def soft_cldice(y_true, y_pred, iterations=10, smooth=1.0):
    """Soft centre-line Dice of every image (Shit et al., CVPR 2021).

    The harmonic mean of topology precision (how much of the predicted
    skeleton lies inside the true mask) and topology sensitivity (how much
    of the true skeleton the prediction covers). A gap across a thin
    membrane removes a piece of its centre line, so clDice punishes the
    gaps that merge two cells much more than Dice, which counts pixels.

    Args:
        y_true: Masks, `(batch, H, W, channels)` or `(batch, H, W)`.
        y_pred: Probabilities of the same shape.
        iterations: Erosions of `soft_skeleton`.
        smooth: Added to numerators and denominators.

    Returns:
        A tensor of shape `(batch,)`.
    """
    y_true, y_pred = _prepare(y_true, y_pred)
    axes = tuple(range(1, len(y_pred.shape)))
    skeleton_pred = soft_skeleton(y_pred, iterations)
    skeleton_true = soft_skeleton(y_true, iterations)
    precision = (ops.sum(skeleton_pred * y_true, axis=axes) + smooth) / (
        ops.sum(skeleton_pred, axis=axes) + smooth
    )
    sensitivity = (ops.sum(skeleton_true * y_pred, axis=axes) + smooth) / (
        ops.sum(skeleton_true, axis=axes) + smooth
    )
    return 2.0 * precision * sensitivity / (precision + sensitivity)


def _crossentropy_per_pixel(y_true, y_pred):
    """Binary (one channel) or categorical (one-hot) cross-entropy of every
    pixel: `(batch, H, W)`."""
    y_true, y_pred = _prepare(y_true, y_pred)
    if y_pred.shape[-1] == 1:
        return keras.losses.binary_crossentropy(y_true, y_pred)
    return keras.losses.categorical_crossentropy(y_true, y_pred)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BCEDiceLoss(keras.losses.Loss):
    """`bce_weight * CE + dice_weight * (1 - Dice) + cldice_weight * (1 - clDice)`.

    Cross-entropy gives every pixel a useful gradient from the first step;
    Dice counters the imbalance between a thin membrane class and the rest;
    the optional clDice term (`soft_cldice`) rewards unbroken membranes, the
    thing the ISBI scores V_rand and V_info measure. For one-hot multi-class
    targets the cross-entropy is categorical.

    Args:
        bce_weight: Weight of the (mean per image) cross-entropy.
        dice_weight: Weight of the Dice loss.
        cldice_weight: Weight of the clDice loss; 0 (the default) skips it.
        skeleton_iterations: Erosions of the clDice skeletons.
        smooth: Smoothing term of the Dice and clDice.
        reduction: Keras loss reduction over the batch.
        name: Name of the loss.
    """

    def __init__(
        self, bce_weight=1.0, dice_weight=1.0, cldice_weight=0.0, skeleton_iterations=10,
        smooth=1.0, reduction="sum_over_batch_size", name="bce_dice_loss", **kwargs,
    ):
        super().__init__(reduction=reduction, name=name, **kwargs)
        if min(bce_weight, dice_weight, cldice_weight) < 0:
            raise ValueError(
                f"Loss weights must be >= 0, got bce_weight={bce_weight!r}, "
                f"dice_weight={dice_weight!r}, cldice_weight={cldice_weight!r}."
            )
        if int(skeleton_iterations) < 1:
            raise ValueError(
                f"`skeleton_iterations` must be >= 1, got {skeleton_iterations!r}."
            )
        self.bce_weight = float(bce_weight)
        self.dice_weight = float(dice_weight)
        self.cldice_weight = float(cldice_weight)
        self.skeleton_iterations = int(skeleton_iterations)
        self.smooth = float(smooth)

    def call(self, y_true, y_pred):
        pixel_ce = _crossentropy_per_pixel(y_true, y_pred)
        image_ce = ops.mean(pixel_ce, axis=tuple(range(1, len(pixel_ce.shape))))
        loss = self.bce_weight * image_ce
        loss += self.dice_weight * (1.0 - soft_dice(y_true, y_pred, self.smooth))
        if self.cldice_weight:
            cldice = soft_cldice(y_true, y_pred, self.skeleton_iterations, self.smooth)
            loss += self.cldice_weight * (1.0 - cldice)
        return loss

    def get_config(self):
        return {
            **super().get_config(),
            "bce_weight": self.bce_weight,
            "dice_weight": self.dice_weight,
            "cldice_weight": self.cldice_weight,
            "skeleton_iterations": self.skeleton_iterations,
            "smooth": self.smooth,
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class WeightedCrossEntropy(keras.losses.Loss):
    """Cross-entropy of every pixel, weighted by the paper's weight map.

    The loss returns one value per pixel, `(batch, H, W)`, so the weight map
    travels the idiomatic Keras way, as `sample_weight` of the same shape:

        model.fit(images, masks, sample_weight=weight_maps)  # (batch, H, W)

    or as the third element of the `(x, y, w)` batches of a `PyDataset`.
    Keras multiplies every pixel's loss by its weight and averages over all
    pixels of the batch. Without a weight map this is plain cross-entropy.
    Binary (sigmoid, one channel) and categorical (softmax, one-hot) outputs
    are both handled.

    Args:
        reduction: Keras loss reduction over the pixels of the batch.
        name: Name of the loss.
    """

    def __init__(self, reduction="sum_over_batch_size", name="weighted_cross_entropy", **kwargs):
        super().__init__(reduction=reduction, name=name, **kwargs)

    def call(self, y_true, y_pred):
        return _crossentropy_per_pixel(y_true, y_pred)
