"""Overlap metrics: the Dice coefficient, and Keras's `BinaryIoU` counted in a
way that is fast on every backend. For softmax outputs use Keras's own
`keras.metrics.OneHotMeanIoU`."""

import keras
from keras import ops

from unet_keras.losses import _prepare, soft_dice

_PACKAGE = "unet_keras"


def _binarize(y_pred, threshold):
    if y_pred.shape[-1] == 1:
        return ops.cast(y_pred >= threshold, "float32")
    return ops.one_hot(ops.argmax(y_pred, axis=-1), y_pred.shape[-1], dtype="float32")


def dice_coefficient(y_true, y_pred, threshold=0.5, smooth=1e-6):
    """Dice coefficient of hard predictions, averaged over images.

    Args:
        y_true: Binary masks or one-hot maps, `(batch, H, W, channels)`.
        y_pred: Probabilities of the same shape. One channel is thresholded
            at `threshold`; several are turned into one-hot by argmax. Pass
            `threshold=None` for the soft Dice of the probabilities.
        smooth: Keeps the Dice of an empty mask and an empty prediction at 1.

    Returns:
        A scalar tensor in [0, 1].
    """
    y_true, y_pred = _prepare(y_true, y_pred)
    if threshold is not None:
        y_pred = _binarize(y_pred, threshold)
    return ops.mean(soft_dice(y_true, y_pred, smooth))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DiceCoefficient(keras.metrics.Metric):
    """Dice coefficient of hard predictions, accumulated over all batches.

    It sums the overlap and the mask sizes over every pixel seen since the
    last reset, so the result is the Dice of the whole epoch, not an average
    of per-batch values (which would over-weight small batches).

    `sample_weight` is ignored: every pixel counts once. `BinaryIoU` applies
    it, as Keras's metrics do, so when training passes weight maps as
    `sample_weight` (`WeightedCrossEntropy`, loss "weighted_ce") the logged
    `iou` is weighted by them (mostly the borders between cells) and `dice` is not.

    Args:
        threshold: Probability at and above which a one-channel prediction
            counts as foreground. Multi-channel predictions use argmax.
        class_id: For multi-channel outputs, the channel to score; None
            scores all channels together.
        name: Name of the metric.
    """

    def __init__(self, threshold=0.5, class_id=None, name="dice", **kwargs):
        super().__init__(name=name, **kwargs)
        self.threshold = float(threshold)
        self.class_id = class_id
        self.intersection = self.add_variable(shape=(), initializer="zeros", name="intersection")
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Adds a batch; `sample_weight` is accepted for Keras and ignored."""
        y_true, y_pred = _prepare(y_true, y_pred)
        y_pred = _binarize(y_pred, self.threshold)
        if self.class_id is not None:
            y_true = y_true[..., self.class_id]
            y_pred = y_pred[..., self.class_id]
        self.intersection.assign_add(ops.sum(y_true * y_pred))
        self.total.assign_add(ops.sum(y_true) + ops.sum(y_pred))

    def result(self):
        return ops.where(
            self.total > 0, 2.0 * self.intersection / ops.maximum(self.total, 1e-12), 1.0
        )

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold, "class_id": self.class_id}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BinaryIoU(keras.metrics.BinaryIoU):
    """`keras.metrics.BinaryIoU`, with its confusion matrix counted by sums.

    Keras (3.15 and earlier) counts the confusion matrix with `ops.scatter`,
    which on the PyTorch backend is a Python loop over every pixel
    (keras-team/keras#19512): 0.56 s for 16,384 pixels on a 2-core CPU, so
    most of a training step's time for 256x256 tiles. A binary mask's 2x2
    matrix is four weighted sums, as fast on every backend. Everything else,
    the arguments and the result, is Keras's, `sample_weight` included: with
    weight maps as `sample_weight` (loss "weighted_ce") the IoU is weighted
    by them, unlike `DiceCoefficient`, which ignores it.

    Args:
        target_class_ids: The classes whose IoU is averaged: `[1]` for the
            foreground, `[0, 1]` (Keras's default) for the mean of both.
        threshold: Probability at and above which a pixel is predicted 1.
        name: Name of the metric, under which Keras logs it: `"iou"`, not
            Keras's `"binary_io_u"`.
        dtype: Data type of the result.
    """

    def __init__(self, target_class_ids=(0, 1), threshold=0.5, name="iou", dtype=None):
        super().__init__(
            target_class_ids=target_class_ids, threshold=threshold, name=name, dtype=dtype
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.reshape(ops.convert_to_tensor(y_true, "float32"), [-1])
        y_pred = ops.cast(ops.convert_to_tensor(y_pred, "float32") >= self.threshold, "float32")
        y_pred = ops.reshape(y_pred, [-1])
        weight = ops.ones_like(y_true)
        if sample_weight is not None:
            weight = ops.convert_to_tensor(sample_weight, "float32")
            weight = ops.reshape(weight, [-1]) if len(weight.shape) > 1 else weight
            weight = ops.broadcast_to(weight, ops.shape(y_true))
            # In the metric's dtype first, as Keras counts them ("int" by default).
            weight = ops.cast(ops.cast(weight, self.dtype), "float32")
        # Labels other than 0 and 1 are left out, as Keras's bounds check does.
        true = [ops.cast(y_true == label, "float32") * weight for label in (0, 1)]
        current = ops.stack(
            [ops.stack([ops.sum(t * (1 - y_pred)), ops.sum(t * y_pred)]) for t in true]
        )
        return self.total_cm.assign(self.total_cm + ops.cast(current, self.total_cm.dtype))
