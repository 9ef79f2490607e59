import keras
import numpy as np
import pytest

from unet_keras import (
    build_unet,
    conv_block,
    count_conv_layers,
    forward_flops,
    valid_input_size,
    valid_output_size,
)

pytestmark = pytest.mark.backends


def _output_shape(model, size, channels=1):
    x = np.zeros((1, size, size, channels), "float32")
    return tuple(model.predict(x, verbose=0).shape)


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5])
def test_same_padding_keeps_the_size(depth):
    model = build_unet(num_classes=3, depth=depth, filters=4, dropout=0)
    assert _output_shape(model, 2**depth * 3) == (1, 2**depth * 3, 2**depth * 3, 3)


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5])
def test_valid_padding_matches_the_tile_geometry(depth):
    out = 2**depth + 4  # the bottleneck outputs 5 pixels
    size = valid_input_size(out, depth)
    assert valid_output_size(size, depth) == out
    model = build_unet(depth=depth, filters=2, padding="valid", dropout=0)
    assert _output_shape(model, size) == (1, out, out, 1)


def test_paper_network_572_gives_388_with_23_convolutions():
    model = build_unet((572, 572, 1), num_classes=2, padding="valid")
    assert model.output_shape == (None, 388, 388, 2)
    assert count_conv_layers(model) == 23
    inputs = keras.Input((572, 572, 1))
    assert count_conv_layers(keras.Model(inputs, model(inputs))) == 23  # nested


def test_paper_shape_trace():
    """The sizes after every block are those of REFERENCE.md's shape trace."""
    model = build_unet((572, 572, 1), num_classes=2, padding="valid")
    sizes = {layer.name: layer.output.shape[1] for layer in model.layers}
    assert [sizes[f"down{i}_relu2"] for i in (1, 2, 3, 4)] == [568, 280, 136, 64]
    assert sizes["bottleneck_relu2"] == 28
    assert [sizes[f"up{i}_upconv"] for i in (4, 3, 2, 1)] == [56, 104, 200, 392]
    assert [sizes[f"up{i}_crop"] for i in (4, 3, 2, 1)] == [56, 104, 200, 392]
    assert [sizes[f"up{i}_relu2"] for i in (4, 3, 2, 1)] == [52, 100, 196, 388]


def _conv_params(k, cin, cout, bias=True):
    return k * k * cin * cout + (cout if bias else 0)


def test_parameter_count_of_the_classic_network():
    # Derived by hand: two 3x3 convs per level, 2x2 up-convs, 1x1 head.
    expected, cin = 0, 1
    for f in (64, 128, 256, 512, 1024):  # contracting path and bottleneck
        expected += _conv_params(3, cin, f) + _conv_params(3, f, f)
        cin = f
    for f in (512, 256, 128, 64):  # expanding path
        expected += _conv_params(2, cin, f)  # up-convolution halves the channels
        expected += _conv_params(3, 2 * f, f) + _conv_params(3, f, f)  # after concat
        cin = f
    expected += _conv_params(1, 64, 2)
    model = build_unet((572, 572, 1), num_classes=2, padding="valid")
    assert model.count_params() == expected == 31_030_658


def test_batch_norm_present_only_when_asked():
    with_bn = build_unet(filters=4, depth=2, batch_norm=True)
    without = build_unet(filters=4, depth=2, batch_norm=False)
    bn = [layer for layer in with_bn.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bn) == 2 * (2 * 2 + 1)  # two per conv block, five blocks
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in without.layers)
    convs = [layer for layer in with_bn.layers if isinstance(layer, keras.layers.Conv2D)]
    assert not any(c.use_bias for c in convs if c.kernel_size == (3, 3))
    # BatchNorm sits between each 3x3 convolution and its ReLU.
    names = [layer.name for layer in with_bn.layers]
    assert names.index("down1_conv1") < names.index("down1_bn1") < names.index("down1_relu1")


def test_dropout_only_at_the_end_of_the_contracting_path():
    model = build_unet(filters=4, depth=2, dropout=0.5)
    dropouts = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert [d.name for d in dropouts] == ["bottleneck_dropout"]
    assert dropouts[0].rate == 0.5
    no_dropout = build_unet(filters=4, depth=2, dropout=0)
    assert not any(isinstance(layer, keras.layers.Dropout) for layer in no_dropout.layers)


def test_output_activations():
    binary = build_unet(filters=4, depth=2, num_classes=1)
    multi = build_unet(filters=4, depth=2, num_classes=3)
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 1)).astype("float32")
    p = binary.predict(x, verbose=0)
    assert p.min() >= 0 and p.max() <= 1
    q = multi.predict(x, verbose=0)
    np.testing.assert_allclose(q.sum(-1), 1.0, atol=1e-5)
    assert binary.layers[-1].name == "head_sigmoid"
    assert multi.layers[-1].name == "head_softmax"


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_bilinear_upsampling(padding):
    model = build_unet(filters=4, depth=2, upsampling="bilinear", padding=padding, dropout=0)
    size = 64 if padding == "same" else valid_input_size(44, depth=2)
    expected = 64 if padding == "same" else 44
    assert _output_shape(model, size) == (1, expected, expected, 1)
    assert not any(isinstance(layer, keras.layers.Conv2DTranspose) for layer in model.layers)


def test_multichannel_input():
    model = build_unet((32, 32, 3), filters=4, depth=2)
    assert _output_shape(model, 32, channels=3) == (1, 32, 32, 1)


def test_same_padding_size_not_divisible_raises_at_build_time():
    with pytest.raises(ValueError, match=r"divisible by 2\*\*4 = 16, got 100.*96 or 112"):
        build_unet((100, 100, 1))


def test_valid_size_the_network_cannot_take_names_the_nearest_sizes():
    with pytest.raises(ValueError, match="nearest sizes that work are 556 and 572"):
        build_unet((570, 570, 1), padding="valid")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(input_shape=(64, 64)), "height, width, channels"),
        (dict(depth=0), "depth"),
        (dict(num_classes=0), "num_classes"),
        (dict(filters=0), "filters"),
        (dict(dropout=1.0), "dropout"),
        (dict(padding="full"), "padding"),
        (dict(upsampling="nearest"), "upsampling"),
        (dict(residual="yes"), "residual"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_unet(**kwargs)


def test_keras3_functional_model_has_inputs_and_outputs():
    model = build_unet(filters=4, depth=2)
    assert isinstance(model, keras.Model)
    assert model.input_shape == (None, None, None, 1)
    assert model.output_shape == (None, None, None, 1)


# ---------------------------------------------------------------------------
# FLOPs
# ---------------------------------------------------------------------------
def _unet_flops(filters, depth, size, channels=1, classes=1):
    """The same-padding U-Net's convolutions counted by hand."""
    total, cin = 0, channels
    for level in range(depth + 1):  # contracting path and bottleneck
        f, area = filters * 2**level, (size // 2**level) ** 2
        total += 2 * 9 * (cin * f + f * f) * area
        cin = f
    for level in reversed(range(depth)):
        f, area = filters * 2**level, (size // 2**level) ** 2
        total += 2 * 4 * (2 * f) * f * area // 4  # 2x2 up-convolution, counted at its input
        total += 2 * 9 * (2 * f * f + f * f) * area
    return total + 2 * filters * classes * size**2


def test_forward_flops_counts_the_convolutions():
    model = build_unet(filters=4, depth=3, dropout=0, num_classes=2)
    assert forward_flops(model, 64) == _unet_flops(4, 3, 64, classes=2)
    assert forward_flops(model, (64, 32)) == _unet_flops(4, 3, 64, classes=2) // 2
    bn = build_unet((32, 32, 1), filters=4, depth=3, batch_norm=True, dropout=0)
    assert forward_flops(bn, (32, 32)) == _unet_flops(4, 3, 32)


def test_forward_flops_of_a_valid_model():
    model = build_unet(filters=2, depth=2, padding="valid", dropout=0)
    size = valid_input_size(100, 2)
    same = build_unet(filters=2, depth=2, dropout=0)
    assert 0 < forward_flops(model, size) < forward_flops(same, size)
    assert valid_output_size(size, 2) == 100


@pytest.mark.parametrize(
    ("padding", "size", "match"),
    [("valid", 75, "nearest sizes that work are 72 and 76.*valid_input_size"),
     ("same", 30, r"divisible by 2\*\*2 = 4, got 30. Use 28 or 32")],
)
def test_forward_flops_names_the_sizes_a_model_takes(padding, size, match):
    model = build_unet(filters=2, depth=2, padding=padding, dropout=0)
    with pytest.raises(ValueError, match=match):
        forward_flops(model, size)


def test_forward_flops_of_sizes_the_family_cannot_take():
    from unet_keras.family import build_unet3plus, build_unet_plus_plus

    # Its skips are pooled by 2 too, and yet its depth is 2.
    model = build_unet3plus((None, None, 1), filters=(2, 2, 2), cat_channels=2)
    with pytest.raises(ValueError, match=r"depth 2, .* divisible by 2\*\*2 = 4, got 30"):
        forward_flops(model, 30)
    # Several outputs: no geometry to read, still a message that says what to use.
    supervised = build_unet_plus_plus((None, None, 1), depth=2, filters=2)
    with pytest.raises(ValueError, match=r"30x30 inputs.*valid_input_size.*2\*\*depth"):
        forward_flops(supervised, 30)


# ---------------------------------------------------------------------------
# Residual blocks
# ---------------------------------------------------------------------------
def test_residual_parameter_count():
    """Every block gains a 1x1 shortcut convolution: no block keeps its channels."""
    plain = build_unet(filters=4, depth=2, dropout=0)
    residual = build_unet(filters=4, depth=2, dropout=0, residual=True)
    shortcuts = [(1, 4), (4, 8), (8, 16), (16, 8), (8, 4)]  # down1, down2, bottleneck, up2, up1
    extra = sum(_conv_params(1, cin, cout) for cin, cout in shortcuts)
    assert residual.count_params() == plain.count_params() + extra
    assert count_conv_layers(residual) == count_conv_layers(plain) + 5
    with_bn = build_unet(filters=4, depth=2, dropout=0, residual=True, batch_norm=True)
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in with_bn.layers) == 15


def test_residual_block_adds_the_projected_input():
    """With the second convolution zeroed, a block is relu(shortcut(x))."""
    inputs = keras.Input((16, 16, 3))
    block = keras.Model(inputs, conv_block(inputs, 5, residual=True, name="b"))
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32")
    # Both paths are summed: relu(conv path before its ReLU + shortcut).
    paths = keras.Model(
        inputs, [block.get_layer("b_conv2").output, block.get_layer("b_shortcut_conv").output]
    )
    conv_path, shortcut = paths.predict(x, verbose=0)
    np.testing.assert_allclose(
        block.predict(x, verbose=0), np.maximum(conv_path + shortcut, 0), atol=1e-5
    )
    block.get_layer("b_conv2").set_weights(
        [np.zeros_like(w) for w in block.get_layer("b_conv2").get_weights()]
    )
    kernel, bias = block.get_layer("b_shortcut_conv").get_weights()
    expected = np.maximum(x @ kernel[0, 0] + bias, 0)
    np.testing.assert_allclose(block.predict(x, verbose=0), expected, atol=1e-5)


def test_residual_block_with_as_many_channels_adds_the_input_itself():
    inputs = keras.Input((8, 8, 4))
    block = keras.Model(inputs, conv_block(inputs, 4, residual=True, name="b"))
    assert all("shortcut" not in layer.name for layer in block.layers)
    block.get_layer("b_conv2").set_weights(
        [np.zeros_like(w) for w in block.get_layer("b_conv2").get_weights()]
    )
    x = np.random.default_rng(1).normal(size=(1, 8, 8, 4)).astype("float32")
    np.testing.assert_allclose(block.predict(x, verbose=0), np.maximum(x, 0), atol=1e-6)


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_residual_network_keeps_the_geometry(padding):
    model = build_unet(filters=2, depth=2, padding=padding, residual=True, batch_norm=True)
    size = 92 if padding == "valid" else 64
    expected = valid_output_size(size, 2) if padding == "valid" else size
    assert _output_shape(model, size) == (1, expected, expected, 1)


def test_residual_network_saves_and_loads(tmp_path):
    model = build_unet(filters=2, depth=2, residual=True, batch_norm=True)
    model.save(tmp_path / "residual.keras")
    loaded = keras.models.load_model(tmp_path / "residual.keras")
    x = np.random.default_rng(2).random((1, 32, 32, 1)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
