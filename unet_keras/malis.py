"""Fine-tuning against merges: the negative pass of constrained MALIS.

V_rand is lost mostly to merges: two cells become one segment wherever their
shared membrane has a single faint pixel, however well the rest of the map is
drawn. Per-pixel losses cannot see that; they count the faint pixel once.
MALIS (Turaga et al., NIPS 2009) weights each pixel by how many pairs of
pixels its error would join. For every two pixels of different true cells it
takes the path between them whose weakest point is strongest (the maximin
path through the predicted interior) and charges the pairs to that weakest
point. Constrained MALIS (Funke et al., TPAMI 2018) computes this negative
pass with every true cell counted as certain interior, so the weakest point is
always a true membrane pixel, and the target there is simply "membrane".

    weights = merge_weights(membrane_prob, membrane_mask)  # pairs per pixel

A maximum spanning tree gives every maximin path at once (Kruskal's order),
so one pass over the edges, sorted from most to least interior, counts all
pairs. Only membrane pixels and one node per cell take part: about a quarter
of a tile's pixels.

`fine_tune_merges` trains a model for a few hundred batches on its usual loss
plus the cross-entropy of these pixels, with the weights recomputed from the
model's own predictions before every step (`MergeWeightedLoss`).
"""

from pathlib import Path

import keras
import numpy as np
from keras import ops
from scipy import ndimage

from unet_keras.losses import _PACKAGE, _crossentropy_per_pixel

# The merge term's weight in `fine_tune_merges` and `TrainConfig.malis_weight`: 2 beat
# 0.5 on the tuning folds for the 32- and the 16-filter networks (docs/results.md).
MERGE_WEIGHT = 2.0
# Adam's constant learning rate there: 2e-4 beat 1e-4 and 4e-4 on the same folds.
MERGE_LEARNING_RATE = 2e-4

_FOUR_CONNECTED = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]])


def _edges(node, shape):
    """The 4-neighbour edges between different nodes, as two index arrays."""
    index = np.arange(node.size).reshape(shape)
    a = node[np.concatenate([index[:, :-1].ravel(), index[:-1, :].ravel()])]
    b = node[np.concatenate([index[:, 1:].ravel(), index[1:, :].ravel()])]
    keep = a != b
    return a[keep], b[keep]


def merge_weights(membrane_prob, membrane_mask):
    """How many pairs of pixels of different cells each membrane pixel joins.

    Args:
        membrane_prob: `(H, W)` predicted membrane probabilities.
        membrane_mask: `(H, W)` true membrane mask, 1 = membrane (cells are
            its 4-connected 0-regions, as the ISBI scores take them).

    Returns:
        `(H, W)` float64 pair counts: nonzero only on true membrane pixels,
        the weakest points of the maximin paths between cells. Their sum is
        the number of pairs of cell pixels that lie in different cells.
    """
    membrane_prob = np.asarray(membrane_prob, dtype=np.float64)
    membrane_mask = np.asarray(membrane_mask)
    if membrane_prob.ndim != 2 or membrane_prob.shape != membrane_mask.shape:
        raise ValueError(
            f"`membrane_prob` and `membrane_mask` must be two (H, W) arrays of one shape, "
            f"got {membrane_prob.shape} and {membrane_mask.shape}."
        )
    labels, cells = ndimage.label(membrane_mask < 0.5, structure=_FOUR_CONNECTED)
    labels = labels.ravel()
    membrane = np.flatnonzero(labels == 0)
    # Nodes: cell k is node k (1..cells); membrane pixel i is node cells + 1 + i.
    node = labels.copy()
    node[membrane] = cells + 1 + np.arange(len(membrane))
    interior = np.ones(cells + 1 + len(membrane))  # a true cell is certain interior
    interior[cells + 1:] = 1.0 - membrane_prob.ravel()[membrane]
    a, b = _edges(node, membrane_prob.shape)
    strength = np.minimum(interior[a], interior[b])
    order = np.argsort(-strength, kind="stable")
    a, b = a[order], b[order]
    # Charge the weaker end, and on a tie never a cell (nodes 1..cells): a
    # membrane pixel with p below ~1e-16 also has interior 1.0, and pairs
    # charged to a cell would be dropped. Two cells are never neighbours.
    weakest = np.where((interior[a] <= interior[b]) & (a > cells), a, b)

    parent = list(range(len(interior)))
    cell_pixels = np.zeros(len(interior))
    cell_pixels[1:cells + 1] = np.bincount(labels, minlength=cells + 1)[1:]
    cell_pixels = cell_pixels.tolist()
    pairs = np.zeros(len(interior))
    # Kruskal's algorithm with union-find; a component holds whole cells only,
    # so joining two components joins pixels of different cells alone.
    for u, v, c in zip(a.tolist(), b.tolist(), weakest.tolist()):
        while parent[u] != u:
            parent[u] = parent[parent[u]]
            u = parent[u]
        while parent[v] != v:
            parent[v] = parent[parent[v]]
            v = parent[v]
        if u == v:
            continue
        pairs[c] += cell_pixels[u] * cell_pixels[v]
        parent[v] = u
        cell_pixels[u] += cell_pixels[v]
    weights = np.zeros(membrane_prob.size)
    weights[membrane] = pairs[cells + 1:]
    return weights.reshape(membrane_prob.shape)


def merge_weight_maps(membrane_probs, membrane_masks):
    """`merge_weights` of a batch, each tile's weights scaled to sum to 1.

    Args:
        membrane_probs: `(B, H, W)` or `(B, H, W, 1)` probabilities.
        membrane_masks: True masks of the same shape.

    Returns:
        `(B, H, W)` float32 maps; a tile without two cells gets zeros.
    """
    probs = np.asarray(membrane_probs)
    masks = np.asarray(membrane_masks)
    if probs.ndim == 4:
        probs, masks = probs[..., 0], masks[..., 0]
    maps = np.stack([merge_weights(p, m) for p, m in zip(probs, masks)])
    totals = maps.sum(axis=(1, 2), keepdims=True)
    return np.divide(maps, totals, out=np.zeros_like(maps), where=totals > 0).astype("float32")


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MergeWeightedLoss(keras.losses.Loss):
    """A per-image loss plus `weight` times the merge-weighted cross-entropy.

    `y_true` carries two channels: the mask, and the tile's merge weights
    (`merge_weight_maps`, summing to 1 per tile). The second term is then the
    cross-entropy averaged over the weakest points of the maximin paths, each
    as important as the pairs of pixels it joins.

    Args:
        loss: The loss of the mask, e.g. `BCEDiceLoss()`. A loss of every
            pixel (`WeightedCrossEntropy`, here without its weight map) is
            averaged over each image.
        weight: Weight of the merge term.
        reduction: Keras loss reduction over the batch.
        name: Name of the loss.
    """

    def __init__(self, loss, weight=1.0, reduction="sum_over_batch_size",
                 name="merge_weighted_loss", **kwargs):
        super().__init__(reduction=reduction, name=name, **kwargs)
        if isinstance(loss, dict):
            loss = keras.saving.deserialize_keras_object(loss)
        if not isinstance(loss, keras.losses.Loss):
            raise ValueError(f"`loss` must be a keras.losses.Loss instance, got {loss!r}.")
        if weight < 0:
            raise ValueError(f"`weight` must be >= 0, got {weight!r}.")
        self.loss, self.weight = loss, float(weight)

    def call(self, y_true, y_pred):
        mask, weights = y_true[..., :1], ops.cast(y_true[..., 1], "float32")
        merge_ce = ops.sum(weights * _crossentropy_per_pixel(mask, y_pred), axis=(1, 2))
        loss = self.loss.call(mask, y_pred)
        if len(loss.shape) > 1:  # a loss of every pixel: its mean over the image
            loss = ops.mean(loss, axis=tuple(range(1, len(loss.shape))))
        return loss + self.weight * merge_ce

    def get_config(self):
        return {
            **super().get_config(),
            "loss": keras.saving.serialize_keras_object(self.loss),
            "weight": self.weight,
        }


def fine_tune_merges(model, dataset, loss, *, weight=MERGE_WEIGHT,
                     learning_rate=MERGE_LEARNING_RATE, state_path=None, callbacks=(),
                     jit_compile=False, verbose=1):
    """Fine-tunes `model` on every batch of `dataset` with `MergeWeightedLoss`.

    Before each step the model predicts the batch, and `merge_weight_maps`
    turns that prediction into the step's weights: the pixels that join
    cells now, not those of the first epoch.

    Args:
        model: A trained single-output model (for a deeply supervised one,
            `family.prediction_network(model)`).
        dataset: A `PyDataset` of `(x, y)` batches, e.g. a `TileDataset`;
            its length is the number of steps.
        loss: The loss of the mask (`BCEDiceLoss()`, ...; see
            `MergeWeightedLoss`).
        weight: Weight of the merge term (`MERGE_WEIGHT`).
        learning_rate: Adam's learning rate, constant (`MERGE_LEARNING_RATE`).
        state_path: A `.keras` file. The model and its optimiser are saved
            there every 25 steps; if it exists, fine-tuning resumes from it,
            at the step its optimiser had reached.
        callbacks: Keras callbacks; they see `on_train_batch_end`, and one
            that sets `model.stop_training` ends the fine-tuning after that
            step (e.g. `budget.FineTuningDeadline`).
        jit_compile: XLA compilation of the training step, as in `compile`.
        verbose: 1 shows Keras's progress bar.

    Returns:
        The fine-tuned model (compiled with `MergeWeightedLoss`).
    """
    done = 0
    if state_path and Path(state_path).is_file():
        model = keras.models.load_model(state_path)
        # The steps done are the optimiser's, saved with it (a float16 loss scale's
        # skipped steps are not counted, so those few are trained again).
        done = int(ops.convert_to_numpy(model.optimizer.iterations))
    else:
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate),
            loss=MergeWeightedLoss(loss, weight=weight), jit_compile=jit_compile,
        )
    for callback in callbacks:  # called in this thread, in order: no CallbackList dispatch
        callback.set_model(model)
    steps = len(dataset)
    bar = keras.utils.Progbar(steps, verbose=verbose, unit_name="step")
    model.stop_training = False
    for step in range(done, steps):
        value = merge_step(model, *dataset[step][:2])
        for callback in callbacks:
            callback.on_train_batch_end(step, {"loss": value})
        bar.update(step + 1, [("loss", value)], finalize=model.stop_training or None)
        if model.stop_training:
            break
        if state_path and ((step + 1) % 25 == 0 or step + 1 == steps):
            model.save(state_path)
    return model


def merge_step(model, x, y):
    """One training step on `MergeWeightedLoss`, with the merge weights of
    `model`'s own prediction of the batch.

    Args:
        model: A model compiled with `MergeWeightedLoss`.
        x: A batch of images.
        y: Their masks, `(B, H, W, 1)`.

    Returns:
        The step's loss.
    """
    weights = merge_weight_maps(ops.convert_to_numpy(model.predict_on_batch(x)), y)
    return model.train_on_batch(x, np.concatenate([y, weights[..., None]], axis=-1))
