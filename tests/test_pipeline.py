"""TileDataset: shapes, seeding, workers, and (x, y, w) batches through model.fit."""

import pickle

import keras
import numpy as np
import pytest

from unet_keras.geometry import valid_output_size
from unet_keras.losses import WeightedCrossEntropy
from unet_keras.model import build_unet
from unet_keras.pipeline import PerOutputDataset, TileDataset
from unet_keras.weights import border_weight_maps


@pytest.fixture
def data(rng):
    images = rng.random((3, 48, 40, 1)).astype(np.float32)
    masks = (rng.random((3, 48, 40, 1)) < 0.3).astype(np.float32)
    return images, masks, border_weight_maps(masks)


def _same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_same_padding_shapes(data):
    images, masks, weights = data
    x, y = TileDataset(images, masks, tile_size=32, batch_size=2)[0]
    assert x.shape == (2, 32, 32, 1) and y.shape == (2, 32, 32, 1)
    assert x.dtype == y.dtype == np.float32
    x, y, w = TileDataset(images, masks, weights, tile_size=32, batch_size=2)[0]
    assert w.shape == (2, 32, 32) and w.dtype == np.float32
    assert set(np.unique(y)) <= {0.0, 1.0}


def test_valid_padding_shapes(data):
    images, masks, weights = data
    out = valid_output_size(60, 2)
    for augment in (True, False):
        ds = TileDataset(images, masks, weights, tile_size=60, output_size=out, batch_size=3,
                         augment=augment)
        x, y, w = ds[len(ds) - 1]
        assert x.shape == (3, 60, 60, 1)
        assert y.shape == (3, out, out, 1) and w.shape == (3, out, out)


def test_seeding_and_epochs(data):
    images, masks, weights = data
    ds = TileDataset(images, masks, weights, tile_size=32, batch_size=2, seed=3)
    twin = TileDataset(images, masks, weights, tile_size=32, batch_size=2, seed=3)
    assert _same(ds[1], twin[1])
    assert not _same(ds[0], ds[1])
    first = ds[0]
    ds.on_epoch_end()
    assert not _same(first, ds[0])
    assert not _same(first, TileDataset(images, masks, weights, tile_size=32, seed=4)[0])


def test_fixed_tiles_cover_the_images(data):
    images, masks, _ = data
    ds = TileDataset(images, masks, tile_size=32, batch_size=4, augment=False)
    assert len(ds) == 3  # 2 x 2 output regions per 48x40 image, 3 images, 4 per batch
    before = ds[0]
    ds.on_epoch_end()
    assert _same(before, ds[0])
    x, y = before
    np.testing.assert_array_equal(x[0], images[0, :32, :32])
    np.testing.assert_array_equal(x[3], images[0, 16:48, 8:40])
    np.testing.assert_array_equal(y[1], masks[0, :32, 8:40])
    with pytest.raises(IndexError):
        ds[3]


def test_validation(data):
    images, masks, weights = data
    with pytest.raises(ValueError, match=r"images\[..., None\]"):
        TileDataset(images[..., 0], masks)
    with pytest.raises(ValueError, match="masks"):
        TileDataset(images, masks[:2])
    with pytest.raises(ValueError, match="binary"):
        TileDataset(images, masks * 0.5)
    with pytest.raises(ValueError, match="weights"):
        TileDataset(images, masks, weights[:, :10])
    with pytest.raises(ValueError, match="steps"):
        TileDataset(images, masks, steps=0)
    with pytest.raises(ValueError, match="output_size"):
        TileDataset(images, masks, tile_size=32, output_size=31)


@pytest.mark.backends
def test_workers_give_the_same_batches(data):
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    images, masks, weights = data
    kwargs = dict(tile_size=32, batch_size=2, steps=3, seed=5)
    ds = TileDataset(images, masks, weights, workers=2, use_multiprocessing=True, **kwargs)
    pickle.loads(pickle.dumps(ds))  # what a spawned worker would receive
    adapter = PyDatasetAdapter(ds, shuffle=False)
    batches = []
    for _ in range(2):
        adapter.on_epoch_begin()
        batches.append(list(adapter.get_numpy_iterator()))
        adapter.on_epoch_end()
    reference = TileDataset(images, masks, weights, **kwargs)
    for got in batches:
        assert len(got) == 3
        for i, batch in enumerate(got):
            assert _same(batch, reference[i])
        reference.on_epoch_end()


def test_batches_come_from_keras_threads_by_default(data):
    """Keras's own enqueuer, not TensorFlow's autotuned tf.data prefetch, whose
    teardown at each epoch end paused training for seconds."""
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    images, masks, _ = data
    ds = TileDataset(images, masks, tile_size=32, batch_size=2)
    assert ds.workers == 2 and not ds.use_multiprocessing
    assert PyDatasetAdapter(ds, shuffle=False).enqueuer is not None
    assert TileDataset(images, masks, tile_size=32, workers=1).workers == 1  # still a choice


@pytest.mark.backends
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_fit_with_weight_maps(data, padding):
    images, masks, weights = data
    tile = 32 if padding == "same" else 60
    output_size = None if padding == "same" else valid_output_size(tile, 2)
    ds = TileDataset(images, masks, weights, tile_size=tile, output_size=output_size,
                     batch_size=2, steps=2)
    model = build_unet((tile, tile, 1), filters=4, depth=2, padding=padding)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=WeightedCrossEntropy())
    history = model.fit(ds, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_per_output_dataset_repeats_the_target_and_weight(data):
    images, masks, weights = data
    ds = TileDataset(images, masks, weights, tile_size=32, batch_size=2, steps=3, seed=4)
    reference = TileDataset(images, masks, weights, tile_size=32, batch_size=2, steps=3, seed=4)
    wrapped = PerOutputDataset(ds, ["x0_1", "x0_2"])
    assert len(wrapped) == 3 and wrapped.workers == ds.workers
    x, y, w = wrapped[1]
    rx, ry, rw = reference[1]
    np.testing.assert_array_equal(x, rx)
    assert list(y) == list(w) == ["x0_1", "x0_2"]
    for name in y:
        np.testing.assert_array_equal(y[name], ry)
        np.testing.assert_array_equal(w[name], rw)
    wrapped.on_epoch_end()  # reaches the tiles: epoch 1 draws other tiles
    assert ds.epoch == 1 and not np.array_equal(wrapped[1][0], rx)
    with pytest.raises(ValueError, match="output"):
        PerOutputDataset(ds, [])
