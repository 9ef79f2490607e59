"""Overlap metrics. For IoU use Keras's own `keras.metrics.BinaryIoU` (one
sigmoid channel) or `keras.metrics.OneHotMeanIoU` (softmax outputs)."""

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

    Args:
        threshold: Probability above which a one-channel prediction counts as
            foreground. Multi-channel predictions use argmax.
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
