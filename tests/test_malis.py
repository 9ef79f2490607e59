"""Merge weights (constrained MALIS, negative pass) on real ISBI label
geometry and against a brute-force maximin search; the loss and the
resumable fine-tuning loop."""

import itertools

import cv2
import keras
import numpy as np
import pytest
from keras import ops

from unet_keras.datasets import load_isbi2012
from unet_keras.losses import BCEDiceLoss, WeightedCrossEntropy
from unet_keras.malis import (
    MergeWeightedLoss,
    fine_tune_merges,
    merge_weight_maps,
    merge_weights,
)
from unet_keras.model import build_unet
from unet_keras.pipeline import TileDataset


@pytest.fixture(scope="module")
def real_mask(isbi_data):
    """A 128x128 corner of slice 0's membrane mask (1 = membrane)."""
    _, masks = load_isbi2012(isbi_data, split="train")
    return masks[0, :128, :128, 0].astype(np.uint8)


def _cells(mask):
    count, cells = cv2.connectedComponents(1 - mask, connectivity=4)
    return cells, np.bincount(cells.ravel(), minlength=count)


def _different_cell_pairs(mask):
    _, sizes = _cells(mask)
    sizes = sizes[1:].astype(np.float64)
    return (sizes.sum() ** 2 - (sizes**2).sum()) / 2


def test_weights_lie_on_the_membrane_and_count_every_pair(real_mask, rng):
    prob = np.clip(real_mask * 0.8 + rng.normal(0, 0.15, real_mask.shape), 0, 1)
    weights = merge_weights(prob, real_mask)
    assert (weights[real_mask == 0] == 0).all()  # constrained: only true membrane pixels
    assert weights.sum() == pytest.approx(_different_cell_pairs(real_mask))


@pytest.mark.parametrize("p", [0.0, 1e-17])
def test_a_membrane_predicted_as_certain_interior_still_counts_every_pair(real_mask, rng, p):
    """1 - p rounds to 1.0, a cell's own interior: the tie must charge the
    membrane pixel, not the cell, or its pairs are lost."""
    masks = [real_mask] + [(rng.random((5, 5)) < 0.5).astype(np.uint8) for _ in range(50)]
    for mask in masks:
        weights = merge_weights(np.full(mask.shape, p), mask)
        assert weights.sum() == _different_cell_pairs(mask)
        assert (weights[mask == 0] == 0).all()


def test_an_opened_membrane_carries_the_pairs_it_merges(real_mask):
    """Erase part of the membrane between two large neighbours: the whole
    product of their sizes is charged to the gap, where the map must rise."""
    cells, sizes = _cells(real_mask)
    a, b = np.argsort(sizes[1:])[::-1][:2] + 1
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9))
    near = [cv2.dilate((cells == c).astype(np.uint8), disk) > 0 for c in (a, b)]
    gap = (real_mask == 1) & near[0] & near[1]
    if not gap.any():
        pytest.skip("the two largest cells of this corner do not face each other")
    prob = real_mask.astype(np.float64)  # every other membrane certain
    prob[gap] = 0.05
    weights = merge_weights(prob, real_mask)
    assert weights[gap].sum() >= sizes[a] * sizes[b]
    # Outside the gap, the charged pixels are certain membrane: the merge term's
    # cross-entropy, and so its gradient, lies in the gap alone.
    assert (prob[(weights > 0) & ~gap] == 1).all()


def _brute_force_weights(prob, mask):
    """For every pair of cells, the widest threshold at which they connect
    (cells counted as interior), charged to the membrane pixel of that value."""
    cells, sizes = _cells(mask)
    interior = 1 - prob
    weights = np.zeros_like(prob)
    values = np.unique(interior[mask == 1])[::-1]
    for i, j in itertools.combinations(range(1, len(sizes)), 2):
        for t in values:
            _, parts = cv2.connectedComponents(
                ((mask == 0) | (interior >= t)).astype(np.uint8), connectivity=4
            )
            if parts[cells == i][0] == parts[cells == j][0]:
                weights[(mask == 1) & (interior == t)] += sizes[i] * sizes[j]
                break
    return weights


def test_weights_match_a_brute_force_maximin_search(rng):
    mask = np.zeros((14, 14), np.uint8)
    mask[:, 6] = mask[7, :] = mask[3, 6:] = 1  # five cells
    prob = rng.random(mask.shape)  # distinct values: no ties
    np.testing.assert_allclose(merge_weights(prob, mask), _brute_force_weights(prob, mask))


def test_weight_maps_are_normalised_per_tile(real_mask):
    masks = np.stack([real_mask, np.zeros_like(real_mask)])[..., None]  # one cell: no pairs
    probs = masks * 0.7
    maps = merge_weight_maps(probs, masks)
    assert maps.shape == (2, 128, 128) and maps.dtype == np.float32
    assert maps[0].sum() == pytest.approx(1.0) and not maps[1].any()
    with pytest.raises(ValueError, match="one shape"):
        merge_weights(probs[0, ..., 0], masks[0, :64, :, 0])


def test_loss_adds_the_weighted_cross_entropy_of_the_charged_pixels(rng):
    mask = (rng.random((2, 16, 16, 1)) < 0.3).astype("float32")
    pred = rng.uniform(0.05, 0.95, mask.shape).astype("float32")
    weights = np.zeros((2, 16, 16, 1), "float32")
    weights[0, 3, 4] = weights[1, 5, 6] = 1.0
    base = float(BCEDiceLoss()(mask, pred))
    loss = MergeWeightedLoss(BCEDiceLoss(), weight=2.0)
    assert float(loss(np.concatenate([mask, 0 * weights], -1), pred)) == pytest.approx(base)

    def ce(t, p):
        return -np.log(p) if t else -np.log(1 - p)

    expected = base + 2.0 * np.mean(
        [ce(mask[0, 3, 4, 0], pred[0, 3, 4, 0]), ce(mask[1, 5, 6, 0], pred[1, 5, 6, 0])]
    )
    value = float(loss(np.concatenate([mask, weights], -1), pred))
    assert value == pytest.approx(expected, rel=1e-4)
    # A loss of every pixel (the weighted cross-entropy, without its map) is
    # averaged over each image first.
    per_pixel = MergeWeightedLoss(WeightedCrossEntropy(), weight=2.0)
    crossentropy = float(keras.losses.BinaryCrossentropy()(mask, pred))
    value = float(per_pixel(np.concatenate([mask, weights], -1), pred))
    assert value == pytest.approx(expected - base + crossentropy, rel=1e-4)
    restored = MergeWeightedLoss.from_config(loss.get_config())
    assert restored.weight == 2.0 and isinstance(restored.loss, BCEDiceLoss)
    with pytest.raises(ValueError, match="weight"):
        MergeWeightedLoss(BCEDiceLoss(), weight=-1)


class StopAt(keras.callbacks.Callback):
    def __init__(self, step):
        super().__init__()
        self.step, self.seen = step, []

    def on_train_batch_end(self, batch, logs=None):
        self.seen.append(batch)
        if batch == self.step:
            raise KeyboardInterrupt


@pytest.mark.backends
def test_fine_tuning_resumes_from_its_saved_state(real_mask, tmp_path):
    images = np.repeat(real_mask[None, ..., None].astype("float32"), 2, axis=0)
    tiles = TileDataset(images, images, tile_size=32, batch_size=2, steps=30, seed=0)
    model = build_unet((None, None, 1), depth=2, filters=2)
    state = tmp_path / "malis.keras"
    stop = StopAt(27)
    with pytest.raises(KeyboardInterrupt):
        fine_tune_merges(model, tiles, BCEDiceLoss(), state_path=state, callbacks=[stop],
                         verbose=0)
    assert state.is_file()  # saved after step 25
    again = StopAt(-1)
    tuned = fine_tune_merges(build_unet((None, None, 1), depth=2, filters=2), tiles,
                             BCEDiceLoss(), state_path=state, callbacks=[again], verbose=0)
    assert again.seen == list(range(25, 30))  # the 25 saved steps were not repeated
    assert int(ops.convert_to_numpy(tuned.optimizer.iterations)) == 30
    assert isinstance(tuned.loss, MergeWeightedLoss)


class StopTrainingAt(keras.callbacks.Callback):
    """Ends the training the Keras way, like `budget.FineTuningDeadline`."""

    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if batch == self.step:
            self.model.stop_training = True


@pytest.mark.backends
def test_a_callback_ends_the_fine_tuning_after_its_step(real_mask):
    images = np.repeat(real_mask[None, ..., None].astype("float32"), 2, axis=0)
    tiles = TileDataset(images, images, tile_size=32, batch_size=2, steps=10, seed=0)
    tuned = fine_tune_merges(build_unet((None, None, 1), depth=2, filters=2), tiles,
                             BCEDiceLoss(), callbacks=[StopTrainingAt(2)], verbose=0)
    assert int(ops.convert_to_numpy(tuned.optimizer.iterations)) == 3
    # A model that was stopped before trains its whole fine-tuning the next time.
    again = fine_tune_merges(tuned, TileDataset(images, images, tile_size=32, batch_size=2,
                                                steps=4, seed=1), BCEDiceLoss(), verbose=0)
    assert int(ops.convert_to_numpy(again.optimizer.iterations)) == 4
