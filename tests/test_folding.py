import keras
import numpy as np
import pytest
from keras import layers

from unet_keras.datasets import load_isbi2012
from unet_keras.family import build_unet3plus, build_unet_plus_plus
from unet_keras.folding import fold_batch_norm
from unet_keras.inference import predict_tiled
from unet_keras.losses import BCEDiceLoss
from unet_keras.model import build_unet

pytestmark = pytest.mark.backends


def _count(model, kind):
    return sum(isinstance(layer, kind) for layer in model.layers)


def _with_trained_statistics(model, seed=0):
    """Non-trivial BatchNormalization weights, as training leaves them."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            channels = layer.moving_mean.shape[0]
            layer.set_weights([
                rng.uniform(0.5, 2.0, channels),  # gamma
                rng.normal(0.0, 0.3, channels),  # beta
                rng.normal(0.0, 0.3, channels),  # moving mean
                rng.uniform(0.3, 3.0, channels),  # moving variance
            ])
    return model


def _outputs(model, batch):
    outputs = model.predict_on_batch(batch)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return [keras.ops.convert_to_numpy(o) for o in outputs]


def _assert_same_function(model, folded, batch):
    # float32 round-off alone reaches 2.3e-5 through the residual networks' summed paths
    # (measured over seeds and CPUs); the subtlest wrong fold tried, one that leaves out
    # BatchNorm's epsilon, is off by 2.8e-3 or more. 2e-4 sits a factor of ten from each.
    for expected, got in zip(_outputs(model, batch), _outputs(folded, batch), strict=True):
        np.testing.assert_allclose(got, expected, atol=2e-4)


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_folded_unet_computes_the_same_function(padding):
    keras.utils.set_random_seed(0)
    model = _with_trained_statistics(
        build_unet(filters=4, depth=2, batch_norm=True, padding=padding, dropout=0.2)
    )
    folded = fold_batch_norm(model)
    batch = np.random.default_rng(1).normal(size=(2, 92, 92, 1)).astype("float32")

    _assert_same_function(model, folded, batch)
    assert _count(folded, layers.BatchNormalization) == 0
    assert len(folded.layers) == len(model.layers) - _count(model, layers.BatchNormalization)
    assert all(layer.use_bias for layer in folded.layers if isinstance(layer, layers.Conv2D))
    assert folded.output_names == model.output_names
    # The original is left as it was.
    assert _count(model, layers.BatchNormalization) == 10  # 5 blocks of 2


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_folded_residual_unet_computes_the_same_function(padding):
    """The shortcuts' 1x1 convolutions fold with their BatchNorm, like the 3x3 ones."""
    keras.utils.set_random_seed(0)
    model = _with_trained_statistics(
        build_unet(filters=4, depth=2, batch_norm=True, padding=padding, residual=True)
    )
    folded = fold_batch_norm(model)
    batch = np.random.default_rng(3).normal(size=(2, 92, 92, 1)).astype("float32")

    _assert_same_function(model, folded, batch)
    assert _count(model, layers.BatchNormalization) == 15  # 5 blocks of 2, 5 shortcuts
    assert _count(folded, layers.BatchNormalization) == 0


def test_folding_the_family_models():
    keras.utils.set_random_seed(0)
    batch = np.random.default_rng(2).normal(size=(1, 64, 64, 1)).astype("float32")
    for model in (
        build_unet_plus_plus((64, 64, 1), filters=4, depth=2, deep_supervision=True),
        build_unet3plus((64, 64, 1), filters=(4, 8, 16), cat_channels=4, deep_supervision=True),
    ):
        model = _with_trained_statistics(model)
        folded = fold_batch_norm(model)
        _assert_same_function(model, folded, batch)
        assert _count(folded, layers.BatchNormalization) == 0


def test_normalisations_that_cannot_be_folded_stay():
    inputs = keras.Input((16, 16, 2))
    after_relu = layers.BatchNormalization(name="after_relu")(
        layers.Conv2D(3, 3, padding="same", activation="relu", name="relu_conv")(inputs)
    )
    shared = layers.Conv2D(3, 3, padding="same", name="shared_conv")(after_relu)
    normalised = layers.BatchNormalization(name="shared_bn")(shared)
    plain = layers.Conv2D(3, 1, name="plain_conv")(normalised)
    foldable = layers.BatchNormalization(name="foldable_bn")(plain)
    outputs = layers.Concatenate()([foldable, shared])  # `shared` is read twice
    model = _with_trained_statistics(keras.Model(inputs, outputs))

    folded = fold_batch_norm(model)
    kept = {x.name for x in folded.layers if isinstance(x, layers.BatchNormalization)}
    assert kept == {"after_relu", "shared_bn"}
    assert folded.get_layer("plain_conv").use_bias
    _assert_same_function(model, folded, np.random.default_rng(3).normal(size=(2, 16, 16, 2)))


def test_a_model_without_batch_norm_is_copied():
    keras.utils.set_random_seed(0)
    model = build_unet(filters=4, depth=2, batch_norm=False, dropout=0)
    folded = fold_batch_norm(model)
    assert folded is not model and len(folded.layers) == len(model.layers)
    _assert_same_function(model, folded, np.ones((1, 32, 32, 1), "float32"))


def test_the_folded_model_saves_and_loads(tmp_path):
    keras.utils.set_random_seed(0)
    folded = fold_batch_norm(_with_trained_statistics(build_unet(filters=4, depth=2)))
    folded.save(tmp_path / "folded.keras")
    loaded = keras.models.load_model(tmp_path / "folded.keras")  # no custom objects
    _assert_same_function(folded, loaded, np.ones((1, 32, 32, 1), "float32"))


def test_other_models_are_refused():
    sequential = keras.Sequential([keras.Input((8, 8, 1)), layers.Conv2D(2, 3)])
    with pytest.raises(ValueError, match="functional"):
        fold_batch_norm(sequential)
    with pytest.raises(ValueError, match="functional"):
        fold_batch_norm("model.keras")


def test_a_trained_model_predicts_the_same_on_real_data(isbi_data):
    """BatchNorm statistics from a real (short) training run on ISBI slices."""
    images, masks = load_isbi2012(isbi_data, split="train")
    keras.utils.set_random_seed(0)
    model = build_unet(filters=4, depth=2, batch_norm=True, dropout=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=BCEDiceLoss())
    model.fit(images[:4, :128, :128], masks[:4, :128, :128], batch_size=2,
              epochs=3, verbose=0)

    folded = fold_batch_norm(model)
    expected = predict_tiled(model, images[29], tta=False)
    got = predict_tiled(folded, images[29], tta=False)
    assert expected.std() > 0.01  # a real prediction, not a constant map
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_shared_layers_are_not_folded():
    """A convolution called twice, each call followed by the same BatchNorm."""
    conv = layers.Conv2D(1, 3, padding="same", name="shared_conv")
    norm = layers.BatchNormalization(name="shared_bn")
    inputs = keras.Input((16, 16, 1))
    outputs = norm(conv(norm(conv(inputs))))
    model = _with_trained_statistics(keras.Model(inputs, outputs))

    folded = fold_batch_norm(model)
    assert folded.get_layer("shared_bn") is not None
    _assert_same_function(model, folded, np.random.default_rng(4).normal(size=(1, 16, 16, 1)))
