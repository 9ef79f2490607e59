"""TileDataset: shapes, seeding, workers, and (x, y, w) batches through model.fit."""

import pickle
import warnings

import keras
import numpy as np
import pytest

from unet_keras.geometry import valid_output_size
from unet_keras.losses import BCEDiceLoss, WeightedCrossEntropy
from unet_keras.metrics import DiceCoefficient
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


# ---------------------------------------------------------------------------
# Images in [0, 1], masks that say how to fix them
# ---------------------------------------------------------------------------
def test_images_must_be_scaled_to_the_unit_range(data):
    """The gray augmentation clips to [0, 1]: 0-255 images came out of
    augmented batches near white and out of the fixed grid unchanged."""
    images, masks, _ = data
    bytes_ = np.round(images * 255).astype(np.uint8)
    with pytest.raises(ValueError, match=r"integer images \(uint8\).*to_unit_range"):
        TileDataset(bytes_, masks)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\].*values in \[0, 255\]"):
        TileDataset(bytes_.astype(np.float32), masks)
    with pytest.raises(ValueError, match=r"values in \[-0\.4\d*, 0\.4\d*\].*to_unit_range"):
        TileDataset(images - 0.5, masks)
    with pytest.raises(ValueError, match="NaN"):
        TileDataset(np.where(images > 0.99, np.nan, images), masks)
    TileDataset(images > 0.5, masks)  # bool images are 0 and 1


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ((0, 1 / 255), r"0/1 masks scaled as 8-bit images .*use `masks > 0`\."),
        ((0, 1 / 65535), r"0/1 masks scaled as 16-bit images"),
        ((0, 255), r"8-bit masks with 255 as foreground; use `masks > 0` or `masks / 255`"),
        ((0, 65535), r"`masks / 65535`"),
        ((0, 0.5), r"Use `masks > 0`"),
        ((0, 0.3, 0.7, 1), r"anti-aliased .*threshold them, e\.g\. `masks > 0\.5 \* masks"),
        ((0, 1, 2), r"class labels 0\.\.2, one-hot encode .*np\.eye\(3"),
    ],
)
def test_the_mask_error_fits_the_values_found(data, values, match):
    images, masks, _ = data
    values = np.asarray(values, np.float32)
    odd = values[np.arange(masks.size).reshape(masks.shape) % len(values)]
    with pytest.raises(ValueError, match=match):
        TileDataset(images, odd)


def test_the_mask_advice_keeps_the_foreground(data):
    """The old advice, `masks > 0.5`, emptied 0/1 masks read by `to_unit_range`."""
    images, masks, _ = data
    scaled = masks / np.float32(255)  # what to_unit_range makes of 0/1 PNGs
    with pytest.raises(ValueError) as error:
        TileDataset(images, scaled)
    advice = "masks > 0"
    assert f"`{advice}`" in str(error.value) and "0.5" not in str(error.value)
    np.testing.assert_array_equal(scaled > 0, masks)


def test_empty_masks_warn_and_others_do_not(data):
    images, masks, _ = data
    with pytest.warns(UserWarning, match=r"All 3 masks are empty"):
        TileDataset(images, np.zeros_like(masks))
    with pytest.warns(UserWarning, match="empty"):  # one-hot: every pixel background
        TileDataset(images, np.eye(2, dtype=np.float32)[np.zeros(masks.shape[:3], int)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TileDataset(images, masks)


# ---------------------------------------------------------------------------
# One-hot masks for softmax models
# ---------------------------------------------------------------------------
@pytest.fixture
def one_hot(rng):
    """(images, labels, one-hot masks) of 3 classes in blocks, so that
    augmented tiles hold borders between classes."""
    images = rng.random((3, 48, 40, 1)).astype(np.float32)
    labels = np.kron(rng.integers(0, 3, (3, 6, 5)), np.ones((8, 8), int))
    return images, labels, np.eye(3, dtype=np.float32)[labels]


@pytest.mark.parametrize("augment", [True, False])
def test_one_hot_masks_stay_one_hot(one_hot, augment):
    images, _, masks = one_hot
    ds = TileDataset(images, masks, tile_size=44, output_size=24, batch_size=4, steps=6,
                     augment=augment, augment_options={"zoom_range": 0.2}, seed=1)
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == (4, 44, 44, 1) and y.shape == (4, 24, 24, 3)
        assert set(np.unique(y)) <= {0.0, 1.0}
        np.testing.assert_array_equal(y.sum(-1), 1.0)


def test_augmented_one_hot_masks_follow_the_image(one_hot):
    """All K channels move with the image: an image that is its labels comes
    out of the augmentation matching the argmax of the target."""
    _, labels, masks = one_hot
    images = (labels[..., None] / 2).astype(np.float32)
    ds = TileDataset(images, masks, tile_size=32, batch_size=4, steps=3, gray=False,
                     augment_options={"interpolation": "nearest"})
    for i in range(len(ds)):
        x, y = ds[i]
        np.testing.assert_array_equal(np.argmax(y, -1), np.rint(x[..., 0] * 2))


def test_bad_one_hot_masks_are_refused(one_hot):
    images, labels, masks = one_hot
    with pytest.raises(ValueError, match=r"only 0 and 1.*np\.eye\(3"):
        TileDataset(images, masks * 0.5)
    several = masks.copy()
    several[1, 2, 3] = 1
    with pytest.raises(ValueError, match=r"exactly one 1 per pixel; 0 .* none and 1 several "
                                         r"\(the first: mask 1, row 2, column 3\)"):
        TileDataset(images, several)
    none = masks.copy()
    none[0, 0, :3] = 0
    with pytest.raises(ValueError, match=r"3 pixel\(s\) have none and 0 several"):
        TileDataset(images, none)
    gray_as_colour = np.repeat((labels[..., None] > 0).astype(np.float32), 3, -1)
    with pytest.raises(ValueError, match=r"stored as colour, pass `masks\[\.\.\., :1\]`"):
        TileDataset(images, gray_as_colour)


@pytest.mark.backends
def test_a_two_class_softmax_model_trains_on_one_hot_tiles(data):
    """The paper's network: valid padding, a 2-class softmax, one-hot targets."""
    images, masks, _ = data
    one_hot = np.concatenate([1 - masks, masks], -1)
    out = valid_output_size(60, 2)
    ds = TileDataset(images, one_hot, tile_size=60, output_size=out, batch_size=2, steps=1)
    x, y = ds[0]
    assert y.shape == (2, out, out, 2)
    np.testing.assert_array_equal(y.sum(-1), 1.0)
    model = build_unet((60, 60, 1), num_classes=2, filters=4, depth=2, padding="valid")
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=BCEDiceLoss(),
                  metrics=[DiceCoefficient(class_id=1)])
    history = model.fit(ds, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
