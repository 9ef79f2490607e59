import keras
import numpy as np
import pytest
from scipy import ndimage

from unet_keras.geometry import valid_input_size
from unet_keras.inference import predict_tiled
from unet_keras.model import build_unet

pytestmark = pytest.mark.backends


def _image(shape, seed=0):
    """A smooth random image with unit variance, so that the outputs vary."""
    image = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=shape), 2)
    return ((image - image.mean()) / image.std()).astype("float32")


def _predict(model, image):
    batch = image[None] if image.ndim == 3 else image[None, ..., None]
    return keras.ops.convert_to_numpy(model.predict_on_batch(batch))[0]


@pytest.fixture(scope="module")
def same_model():
    keras.utils.set_random_seed(0)
    return build_unet(filters=4, depth=2, dropout=0)


@pytest.fixture(scope="module")
def valid_model():
    keras.utils.set_random_seed(1)
    return build_unet(filters=2, depth=2, padding="valid", dropout=0)


# ---------------------------------------------------------------------------
# Same padding
# ---------------------------------------------------------------------------
def test_same_model_matches_the_whole_image_away_from_the_borders(same_model):
    image = _image((256, 192))
    whole = _predict(same_model, image)
    assert whole.std() > 0.05  # a non-trivial output
    tiled = predict_tiled(same_model, image, tile=128, overlap=64)
    assert tiled.shape == whole.shape and tiled.dtype == np.float32
    inner = (slice(32, -32), slice(32, -32))  # beyond the receptive field of the border
    np.testing.assert_allclose(tiled[inner], whole[inner], atol=5e-3)
    # the blending matters: abutting tiles see zero padding at every seam
    seams = predict_tiled(same_model, image, tile=128, overlap=0)
    assert np.abs(seams[inner] - whole[inner]).max() > 10 * np.abs(tiled - whole)[inner].max()


def test_default_tiling_of_a_same_model(same_model):
    image = _image((300, 280), seed=1)
    whole = _predict(same_model, image[:296, :280])  # 296 is a multiple of 4
    tiled = predict_tiled(same_model, image)
    np.testing.assert_allclose(tiled[32:264, 32:-32], whole[32:264, 32:-32], atol=5e-3)


def test_odd_sizes_keep_their_shape():
    keras.utils.set_random_seed(2)
    tiny = build_unet(filters=2, depth=2, dropout=0, num_classes=3)
    out = predict_tiled(tiny, _image((701, 333)), batch_size=8)
    assert out.shape == (701, 333, 3)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out.sum(axis=-1), 1.0, atol=1e-5)  # softmax survives blending


@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (3, 40), (17, 16)])
def test_images_smaller_than_a_tile(same_model, valid_model, shape):
    image = _image(shape) if min(shape) > 1 else np.ones(shape, "float32")
    assert predict_tiled(same_model, image).shape == (*shape, 1)
    assert predict_tiled(valid_model, image).shape == (*shape, 1)
    assert predict_tiled(same_model, image, tile=64).shape == (*shape, 1)


def test_fixed_size_model_tiles_any_image():
    keras.utils.set_random_seed(3)
    fixed = build_unet((32, 32, 1), filters=2, depth=2, dropout=0)
    assert predict_tiled(fixed, _image((50, 21))).shape == (50, 21, 1)
    image = _image((32, 32))
    # with 4 pixels of mirrored margin a 32x32 image needs 2x2 tiles of 32x32
    whole = _predict(fixed, image)
    tiled = predict_tiled(fixed, image)
    assert tiled.shape == (32, 32, 1)
    assert np.abs(tiled - whole).mean() < 0.05
    with pytest.raises(ValueError, match="only accepts 32x32"):
        predict_tiled(fixed, image, tile=64)


# ---------------------------------------------------------------------------
# Valid padding: the paper's overlap-tile strategy
# ---------------------------------------------------------------------------
def _mirrored_whole_prediction(model, image, depth=2):
    """Whole-image prediction of the image mirrored by the network's margin."""
    margin = (valid_input_size(100, depth) - 100) // 2
    padding = []
    for size in image.shape:
        padded = valid_input_size(_smallest_output_at_least(size, depth), depth)
        padding.append((margin, padded - size - margin))
    padded = np.pad(image, padding, mode="reflect")
    return _predict(model, padded)[: image.shape[0], : image.shape[1]]


def _smallest_output_at_least(size, depth):
    out = size
    while True:
        try:
            valid_input_size(out, depth)
            return out
        except ValueError:
            out += 1


@pytest.mark.parametrize("tile", [84, None, (48, 140)])
def test_valid_model_equals_the_mirrored_whole_image(valid_model, tile):
    image = _image((100, 90), seed=4)
    expected = _mirrored_whole_prediction(valid_model, image)
    assert expected.std() > 1e-3
    tiled = predict_tiled(valid_model, image, tile=tile)
    assert tiled.shape == (100, 90, 1)
    np.testing.assert_allclose(tiled, expected, atol=1e-5)


def test_valid_model_with_overlap(valid_model):
    image = _image((70, 64), seed=5)
    expected = _mirrored_whole_prediction(valid_model, image)
    np.testing.assert_allclose(
        predict_tiled(valid_model, image, tile=84, overlap=20), expected, atol=1e-5
    )


# ---------------------------------------------------------------------------
# Test-time augmentation and batches
# ---------------------------------------------------------------------------
TTA_SETTINGS = {"tile": 32, "overlap": 16, "batch_size": 32, "tta": True}


@pytest.fixture(scope="module")
def tta_case(same_model):
    image = _image((48, 36), seed=6)
    return image, predict_tiled(same_model, image, **TTA_SETTINGS)


@pytest.mark.parametrize(
    "transform",
    [np.fliplr, np.flipud, lambda x: np.rot90(x, 1, axes=(0, 1))],
    ids=["fliplr", "flipud", "rot90"],
)
def test_tta_is_invariant_to_flips_and_rotations(same_model, tta_case, transform):
    image, expected = tta_case
    moved = predict_tiled(same_model, transform(image), **TTA_SETTINGS)
    np.testing.assert_allclose(moved, transform(expected), atol=1e-5)


def test_tta_changes_the_prediction(same_model, tta_case):
    image, expected = tta_case
    plain = predict_tiled(same_model, image, tile=32, overlap=16, batch_size=32)
    assert np.abs(plain - expected).max() > 1e-3


def test_batches_equal_single_images(same_model):
    images = np.stack([_image((40, 56), seed=s) for s in range(3)])[..., None]
    batch = predict_tiled(same_model, images, batch_size=3)
    assert batch.shape == (3, 40, 56, 1)
    for image, prediction in zip(images, batch):
        np.testing.assert_allclose(prediction, predict_tiled(same_model, image), atol=1e-5)


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("image", "kwargs", "match"),
    [
        (np.zeros(10), {}, r"\(H, W\)"),
        (np.zeros((1, 2, 8, 8, 1)), {}, r"\(H, W\)"),
        (np.zeros((8, 8, 3)), {}, "1 channel"),
        (np.full((8, 8), np.nan), {}, "NaN"),
        (np.zeros((8, 8)), {"tile": 30}, "multiples of 4"),
        (np.zeros((8, 8)), {"tile": 0}, "positive"),
        (np.zeros((8, 8)), {"tile": 32, "overlap": 32}, "overlap"),
        (np.zeros((8, 8)), {"tile": 32, "overlap": -1}, "overlap"),
        (np.zeros((8, 8)), {"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_inputs(same_model, image, kwargs, match):
    with pytest.raises(ValueError, match=match):
        predict_tiled(same_model, image, **kwargs)


def test_integer_images_are_refused_floats_are_not_rescaled(same_model):
    """A model trained on [0, 1] gave confident nonsense for 0-255 pixels;
    floats pass as they are, for models normalised another way."""
    for dtype in (np.uint8, np.uint16, np.int32):
        match = rf"integer pixels \({np.dtype(dtype)}\).*to_unit_range"
        with pytest.raises(ValueError, match=match):
            predict_tiled(same_model, np.zeros((16, 16), dtype))
    image = _image((16, 16))  # zero mean, unit variance: outside [0, 1]
    assert np.isfinite(predict_tiled(same_model, image)).all()
    assert predict_tiled(same_model, image > 0).shape == (16, 16, 1)  # bool: 0 and 1


def test_valid_model_rejects_tiles_it_cannot_take(valid_model):
    with pytest.raises(ValueError, match="nearest sizes that work are 80 and 84"):
        predict_tiled(valid_model, np.zeros((8, 8)), tile=82)


def test_depth_of_unet3plus_is_its_coarsest_scale():
    """UNet 3+ pools skip features across scales; that is not extra depth."""
    from unet_keras.family import build_unet3plus
    from unet_keras.inference import _model_geometry

    model = build_unet3plus((None, None, 1), filters=(2, 4, 8, 16, 32), cat_channels=2)
    assert _model_geometry(model).depth == 4
    image = np.random.default_rng(0).random((40, 50)).astype("float32")
    assert predict_tiled(model, image, tile=32).shape == (40, 50, 1)


@pytest.mark.parametrize("variant", ["unet_plus_plus", "unet3plus"])
def test_a_deeply_supervised_model_is_pointed_to_its_prediction_network(variant):
    from unet_keras import family

    if variant == "unet_plus_plus":
        model = family.build_unet_plus_plus((None, None, 1), depth=2, filters=2)
    else:
        model = family.build_unet3plus((None, None, 1), filters=(2, 2, 2), cat_channels=2,
                                       deep_supervision=True)
    image = np.zeros((16, 16), "float32")
    with pytest.raises(ValueError, match=r"U-Net\+\+ or UNet 3\+.*family\.prediction_network"):
        predict_tiled(model, image)
    # The advice works for both.
    assert predict_tiled(family.prediction_network(model), image).shape == (16, 16, 1)
