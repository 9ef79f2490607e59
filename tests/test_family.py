import keras
import numpy as np
import pytest
from keras import ops

from unet_keras.family import (
    build_unet3plus,
    build_unet_plus_plus,
    prediction_network,
    prune_unet_plus_plus,
)
from unet_keras.losses import BCEDiceLoss
from unet_keras.model import build_unet, count_conv_layers

pytestmark = pytest.mark.backends

SIZE = 32


def _images(n=1, size=SIZE, channels=1, seed=0):
    return np.random.default_rng(seed).normal(size=(n, size, size, channels)).astype("float32")


def _predict(model, x):
    """Eager inference, always a list of numpy arrays (one per output)."""
    y = model(x, training=False)
    return [ops.convert_to_numpy(t) for t in (y if isinstance(y, (list, tuple)) else [y])]


def _shapes(model):
    return {layer.name: tuple(layer.output.shape) for layer in model.layers}


def _conv_params(k, cin, cout, bias=True):
    return k * k * cin * cout + (cout if bias else 0)


def _bn_params(channels):
    return 4 * channels  # gamma, beta, moving mean, moving variance


# ---------------------------------------------------------------------------
# U-Net++
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("deep_supervision", [True, False])
@pytest.mark.parametrize("depth", [2, 3, 4])
def test_unet_plus_plus_outputs(depth, deep_supervision):
    model = build_unet_plus_plus(
        (SIZE, SIZE, 1), num_classes=2, depth=depth, filters=2,
        deep_supervision=deep_supervision,
    )
    names = [f"x0_{j}" for j in range(1, depth + 1)] if deep_supervision else [f"x0_{depth}"]
    assert model.output_names == names
    outputs = _predict(model, _images())
    assert [o.shape for o in outputs] == [(1, SIZE, SIZE, 2)] * len(names)
    for o in outputs:
        np.testing.assert_allclose(o.sum(-1), 1.0, atol=1e-5)  # softmax over the classes
    # Nodes X^{i,j}, i + j <= depth: two 3x3 convs each, an up-conv each off column 0.
    nodes = (depth + 1) * (depth + 2) // 2
    assert count_conv_layers(model) == 2 * nodes + (nodes - depth - 1) + len(names)


def test_unet_plus_plus_nodes_join_their_level_and_the_node_below():
    model = build_unet_plus_plus((SIZE, SIZE, 1), depth=3, filters=2)
    shapes = _shapes(model)
    # X^{0,3} = conv_block([X^{0,0}, X^{0,1}, X^{0,2}, up(X^{1,2})]), 2 channels each.
    inputs = model.get_layer("x0_3_concat").input
    assert [t.shape[-1] for t in inputs] == [2, 2, 2, 2]
    assert shapes["x0_3_concat"] == (None, SIZE, SIZE, 8)
    assert shapes["x1_2_concat"] == (None, SIZE // 2, SIZE // 2, 12)  # 3 x 4 channels
    assert shapes["x1_1_upconv"] == (None, SIZE // 2, SIZE // 2, 4)  # from X^{2,0}
    assert shapes["x3_0_relu2"] == (None, SIZE // 8, SIZE // 8, 16)
    assert "x1_3_conv1" not in shapes  # i + j <= depth only


def _unet_plus_plus_params(depth, f, classes=1):
    """Parameters of build_unet_plus_plus (BN, deep supervision), derived by hand."""
    c = [f * 2**i for i in range(depth + 1)]
    expected = 0
    for i in range(depth + 1):  # column 0: the encoder
        cin = 1 if i == 0 else c[i - 1]
        expected += _conv_params(3, cin, c[i], False) + _conv_params(3, c[i], c[i], False)
        expected += 2 * _bn_params(c[i])
    for j in range(1, depth + 1):
        for i in range(depth + 1 - j):
            expected += _conv_params(2, c[i + 1], c[i])  # up-convolution
            expected += _conv_params(3, (j + 1) * c[i], c[i], False)  # after the concat
            expected += _conv_params(3, c[i], c[i], False) + 2 * _bn_params(c[i])
    return expected + depth * _conv_params(1, c[0], classes)  # a head per X^{0,j}


def test_unet_plus_plus_parameter_count_derived_by_hand():
    model = build_unet_plus_plus((None, None, 1), num_classes=2, depth=3, filters=3)
    assert model.count_params() == _unet_plus_plus_params(3, 3, classes=2)
    assert _unet_plus_plus_params(4, 32) == 9_052_644  # the defaults (paper: 9.04M)


@pytest.mark.parametrize("level", [1, 2, 3])
def test_pruned_unet_plus_plus_is_the_sub_network_of_its_output(level):
    full = build_unet_plus_plus((SIZE, SIZE, 1), depth=3, filters=2)
    pruned = prune_unet_plus_plus(full, level)
    assert pruned.output_names == [f"x0_{level}"]
    x = _images(2)
    np.testing.assert_allclose(_predict(pruned, x)[0], _predict(full, x)[level - 1], atol=1e-6)
    if level < 3:
        assert pruned.count_params() < full.count_params()
        assert count_conv_layers(pruned) < count_conv_layers(full)
        assert f"x{level + 1}_0_conv1" not in {layer.name for layer in pruned.layers}
    else:
        assert pruned.count_params() == full.count_params() - _conv_params(1, 2, 1) * 2


def test_pruned_unet_plus_plus_shares_the_weights():
    full = build_unet_plus_plus((SIZE, SIZE, 1), depth=3, filters=2)
    pruned = prune_unet_plus_plus(full, 1)
    assert pruned.get_layer("x0_1_conv1") is full.get_layer("x0_1_conv1")
    x = _images(2)
    before = _predict(pruned, x)[0]
    kernel = full.get_layer("x0_0_conv1").kernel
    kernel.assign(ops.convert_to_numpy(kernel) + 0.5)
    after = _predict(pruned, x)[0]
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, _predict(full, x)[0], atol=1e-6)
    assert pruned.count_params() < full.count_params() / 10


def test_prune_errors_are_clear():
    full = build_unet_plus_plus((SIZE, SIZE, 1), depth=2, filters=2)
    for level in (0, 3, "1", 1.0, True, np.int64(3)):  # True was x0_1's missing "x0_True"
        with pytest.raises(ValueError, match=r"`level` must be an integer from 1 to 2"):
            prune_unet_plus_plus(full, level)
    pruned = prune_unet_plus_plus(full, np.int64(1))  # e.g. from np.argmax of the scores
    assert pruned.output_names == ["x0_1"] and pruned.name == f"{full.name}_l1"
    with pytest.raises(ValueError, match="not a U-Net\\+\\+.*build_unet_plus_plus"):
        prune_unet_plus_plus(build_unet(filters=2, depth=2), 1)
    single = build_unet_plus_plus((SIZE, SIZE, 1), depth=2, filters=2, deep_supervision=False)
    with pytest.raises(ValueError, match="no output .x0_1.*deep_supervision=True"):
        prune_unet_plus_plus(single, 1)
    assert prune_unet_plus_plus(single, 2).output_names == ["x0_2"]


# ---------------------------------------------------------------------------
# UNet 3+
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("deep_supervision", [True, False])
@pytest.mark.parametrize("depth", [2, 3, 4])
def test_unet3plus_outputs(depth, deep_supervision):
    filters = tuple(2 * 2**i for i in range(depth + 1))
    model = build_unet3plus(
        (SIZE, SIZE, 1), filters=filters, cat_channels=2, deep_supervision=deep_supervision,
    )
    names = [f"de{i}" for i in range(1, depth + 2)] if deep_supervision else ["de1"]
    assert model.output_names == names
    outputs = _predict(model, _images())
    assert [o.shape for o in outputs] == [(1, SIZE, SIZE, 1)] * len(names)
    assert all(0 <= o.min() and o.max() <= 1 for o in outputs)  # sigmoid
    assert model.get_layer("de1_relu").output.shape[-1] == 2 * (depth + 1)


def test_unet3plus_decoder_nodes_gather_every_scale_into_320_channels():
    model = build_unet3plus((SIZE, SIZE, 1), filters=(2, 2, 2, 2, 2))  # cat_channels=64
    shapes = _shapes(model)
    for i in (1, 2, 3, 4):
        scale = SIZE // 2 ** (i - 1)
        sources = [f"en{j}" for j in range(1, i + 1)] + [f"de{j}" for j in range(i + 1, 6)]
        branches = model.get_layer(f"de{i}_concat").input
        assert [t.shape for t in branches] == [(None, scale, scale, 64)] * 5
        for source in sources:
            assert shapes[f"de{i}_from_{source}_relu"] == (None, scale, scale, 64)
        assert shapes[f"de{i}_concat"] == (None, scale, scale, 320)
        assert shapes[f"de{i}_relu"] == (None, scale, scale, 320)
    # Shallower encoder maps are max-pooled down, deeper maps upsampled bilinearly.
    assert model.get_layer("de3_from_en1_pool").pool_size == (4, 4)
    up = model.get_layer("de1_from_de5_upsample")
    assert up.size == (16, 16) and up.interpolation == "bilinear"
    assert "de2_from_en3_relu" not in shapes and "de2_from_de2_relu" not in shapes


def _unet3plus_params(filters, cat, classes=1):
    """Parameters of build_unet3plus (BN, no deep supervision), derived by hand."""
    expected, cin, n = 0, 1, len(filters)
    for f in filters:  # encoder
        expected += _conv_params(3, cin, f, False) + _conv_params(3, f, f, False)
        expected += 2 * _bn_params(f)
        cin = f
    for i in range(n - 1, 0, -1):  # decoder, 1-indexed levels
        sources = list(filters[:i]) + [n * cat] * (n - 1 - i) + [filters[-1]]
        expected += sum(_conv_params(3, c, cat, False) + _bn_params(cat) for c in sources)
        expected += _conv_params(3, n * cat, n * cat, False) + _bn_params(n * cat)
    return expected + _conv_params(1, n * cat, classes)  # head


def test_unet3plus_parameter_count_derived_by_hand():
    model = build_unet3plus((None, None, 1), num_classes=2, filters=(3, 4, 5, 6), cat_channels=7)
    assert model.count_params() == _unet3plus_params((3, 4, 5, 6), 7, classes=2)
    assert _unet3plus_params((64, 128, 256, 512, 1024), 64) == 26_974_593  # paper: 26.97M


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(filters=(4,)), "at least 2 integers"),
        (dict(filters=4), "at least 2 integers"),
        (dict(filters=(4, 0)), "at least 2 integers"),
        (dict(filters=(2, True)), "at least 2 integers"),
        (dict(filters=(2, 2.0)), "at least 2 integers"),
        (dict(cat_channels=0), "cat_channels"),
        (dict(cat_channels=True), "cat_channels"),
        (dict(num_classes=0), "num_classes"),
        (dict(input_shape=(32, 32)), "height, width, channels"),
        (dict(input_shape=(40, 40, 1)), r"divisible by 2\*\*4 = 16, got 40.*32 or 48"),
    ],
)
def test_unet3plus_bad_arguments_raise(kwargs, message):
    kwargs = {"input_shape": (SIZE, SIZE, 1), "filters": (2, 2, 2, 2, 2), **kwargs}
    with pytest.raises(ValueError, match=message):
        build_unet3plus(**kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(depth=0), "depth"),
        (dict(filters=0), "filters"),
        (dict(upsampling="nearest"), "upsampling"),
        (dict(num_classes=0), "num_classes"),
    ],
)
def test_unet_plus_plus_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_unet_plus_plus(**{"input_shape": (SIZE, SIZE, 1), **kwargs})


def test_numpy_integers_are_counts():
    """np.int64 from a config or a sweep was refused; the layers get Python ints."""
    model = build_unet3plus(
        (16, 16, 1), filters=list(np.array([2, 2, 2])), cat_channels=np.int64(2)
    )
    assert model.get_layer("de1_conv").filters == 6  # 3 scales of cat_channels
    assert type(model.get_layer("de1_from_en1_conv").filters) is int
    model = build_unet_plus_plus((16, 16, 1), depth=2, filters=np.int32(2))
    assert type(model.get_layer("x0_0_conv1").filters) is int


def test_unet_plus_plus_size_not_divisible_raises():
    with pytest.raises(ValueError, match=r"divisible by 2\*\*4 = 16, got 40"):
        build_unet_plus_plus((40, 40, 1))


# ---------------------------------------------------------------------------
# Both: saving and training
# ---------------------------------------------------------------------------
def _tiny(variant):
    if variant == "unet++":
        return build_unet_plus_plus((SIZE, SIZE, 1), depth=2, filters=2)
    return build_unet3plus(
        (SIZE, SIZE, 1), filters=(2, 4, 8), cat_channels=2, deep_supervision=True
    )


@pytest.mark.parametrize("variant", ["unet++", "unet3+"])
def test_save_and_load_give_identical_predictions(variant, tmp_path):
    model = _tiny(variant)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # built-in layers only: no custom_objects
    assert loaded.output_names == model.output_names
    x = _images(2)
    for a, b in zip(_predict(model, x), _predict(loaded, x)):
        np.testing.assert_array_equal(a, b)
    if variant == "unet++":  # a reloaded U-Net++ can still be pruned
        pruned = prune_unet_plus_plus(loaded, 1)
        np.testing.assert_array_equal(_predict(pruned, x)[0], _predict(model, x)[0])


@pytest.mark.parametrize("variant", ["unet++", "unet3+"])
def test_trains_with_a_loss_per_output(variant):
    model = _tiny(variant)
    names = model.output_names
    if variant == "unet++":  # a dict keyed by output name
        loss = {name: BCEDiceLoss() for name in names}
    else:  # a list in output order
        loss = [BCEDiceLoss()] + ["binary_crossentropy"] * (len(names) - 1)
    # One variant traces the train step as TensorFlow would; tracing costs
    # seconds, so the other runs eagerly (the PyTorch backend always does).
    model.compile(optimizer="adam", loss=loss, run_eagerly=variant == "unet++")
    x = _images(4)
    y = (x > 0).astype("float32")
    history = model.fit(x, {name: y for name in names}, batch_size=2, epochs=1, verbose=0)
    assert int(ops.convert_to_numpy(model.optimizer.iterations)) == 2
    assert np.isfinite(history.history["loss"][0])
    # Keras adds up the outputs' losses.
    total = sum(history.history[f"{name}_loss"][0] for name in names)
    assert history.history["loss"][0] == pytest.approx(total, rel=1e-4)


@pytest.mark.parametrize("variant, output", [("unet++", "x0_2"), ("unet3+", "de1")])
def test_prediction_network_keeps_the_full_networks_output(variant, output):
    model = _tiny(variant)
    network = prediction_network(model)
    assert network.output_names == [output] and len(network.outputs) == 1
    x = _images(2)
    index = model.output_names.index(output)
    np.testing.assert_array_equal(_predict(network, x)[0], _predict(model, x)[index])
    assert network.get_layer(network.layers[1].name) is model.get_layer(network.layers[1].name)


def test_prediction_network_of_a_single_output_model_is_the_model():
    unet = build_unet((SIZE, SIZE, 1), depth=2, filters=2)
    assert prediction_network(unet) is unet
    plain = build_unet_plus_plus((SIZE, SIZE, 1), depth=2, filters=2, deep_supervision=False)
    assert prediction_network(plain) is plain


def test_prediction_network_refuses_an_unknown_multi_output_model():
    inputs = keras.Input((SIZE, SIZE, 1))
    a = keras.layers.Conv2D(1, 1, name="a")(inputs)
    b = keras.layers.Conv2D(1, 1, name="b")(inputs)
    with pytest.raises(ValueError, match="get_layer"):
        prediction_network(keras.Model(inputs, [a, b]))
