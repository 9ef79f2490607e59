"""Two descendants of the U-Net: U-Net++ (Zhou et al. 2018) and UNet 3+
(Huang et al. 2020), built from the blocks of `unet_keras.model`.

* `build_unet_plus_plus`: nested, dense skip pathways. Node `X^{i,j}` (level
  `i`, column `j`) joins every earlier node of its level, `X^{i,0..j-1}`, with
  the upsampled node below, `X^{i+1,j-1}` (an `up_step` with a list of skips).
  With deep supervision each `X^{0,j}` has its own output, so the trained
  network can be cut down to a shallower one with `prune_unet_plus_plus`.
* `build_unet3plus`: full-scale skip connections. Every decoder node gathers
  all scales: the shallower encoder maps by max pooling, its own encoder map
  as it is, the deeper decoder maps by bilinear upsampling; each is brought to
  `cat_channels` channels by a 3x3 conv, and the concatenation is fused by a
  3x3 conv.

Both use `padding="same"` only, so the input height and width must be
divisible by `2**depth`. Every layer is a built-in Keras layer: the models
save to `.keras` and load back with `keras.models.load_model` alone.

Deep supervision and the losses: the models then have one named output per
supervised node, and Keras trains a multi-output model on the *sum* of the
outputs' losses. Give one loss for all (`loss=BCEDiceLoss()`), a list, or a
dict keyed by output name, and one target per output:

    model.compile("adam", loss=BCEDiceLoss())
    model.fit(images, {name: masks for name in model.output_names})

To train on their mean instead, give one loss per output with
`loss=[BCEDiceLoss()] * n, loss_weights=[1 / n] * n` (n outputs): Keras 3
refuses `loss_weights` next to a single loss.
"""

import re

import keras
from keras import layers

from unet_keras.geometry import _check_positive_int, is_integer
from unet_keras.model import (
    UPSAMPLINGS,
    _validate_input_size,
    _validate_network,
    conv_block,
    conv_bn_relu,
    down_step,
    head,
    up_step,
)


def _encoder(inputs, filters, block_kwargs, name):
    """The contracting path: `len(filters) - 1` down steps, then the bottom
    conv block.

    Returns:
        The list of feature maps of every level, shallowest first; level `i`
        is named `name(i)` (its layers `name(i)_conv1`, ...).
    """
    x, features = inputs, []
    for level, channels in enumerate(filters[:-1]):
        x, skip = down_step(x, channels, name=name(level), **block_kwargs)
        features.append(skip)
    features.append(conv_block(x, filters[-1], name=name(len(filters) - 1), **block_kwargs))
    return features


# ---------------------------------------------------------------------------
# U-Net++
# ---------------------------------------------------------------------------
def _node_name(level, column):
    return f"x{level}_{column}"


def build_unet_plus_plus(
    input_shape,
    num_classes=1,
    depth=4,
    filters=32,
    batch_norm=True,
    deep_supervision=True,
    upsampling="transpose",
    kernel_initializer="he_normal",
    name="unet_plus_plus",
):
    """Builds a U-Net++ (Zhou et al. 2018) with nested, dense skip pathways.

    Node `X^{i,j}` is a conv block with `filters * 2**i` channels over the
    concatenation of `X^{i,0}, ..., X^{i,j-1}` and `X^{i+1,j-1}` upsampled
    (`up_step`). Column 0 is the U-Net encoder; its layers, and those of every
    node, are named `x{i}_{j}_...` (`x0_1_conv1`, `x1_2_concat`, ...).

    Args:
        input_shape: `(height, width, channels)`; None for sizes that vary.
            Height and width must be divisible by `2**depth`.
        num_classes: Output channels: 1 gives a sigmoid, more a softmax.
        depth: Number of 2x2 poolings (4 in the paper: nodes X^{0..4,*}).
        filters: Channels of level 0; each level below doubles them
            (32, 64, 128, 256, 512 in the paper).
        batch_norm: BatchNormalization between every 3x3 conv and its ReLU.
        deep_supervision: If True, the model has `depth` outputs, the heads
            of `X^{0,1}, ..., X^{0,depth}`, named `"x0_1"`, ..., in that order;
            each is trained with its own loss, and Keras adds the losses up
            (see the module docstring). If False, one output, `"x0_{depth}"`.
        upsampling: `"transpose"` (2x2 up-convolution, as in the paper) or
            `"bilinear"` (bilinear upsampling and a 1x1 conv).
        kernel_initializer: Initializer of the convolutions.
        name: Name of the model.

    Returns:
        A `keras.Model`: a list of `depth` probability maps with deep
        supervision (shallowest `X^{0,1}` first), else one map. Average the
        list for the paper's "accurate mode", or cut the model with
        `prune_unet_plus_plus` for its "fast mode".
    """
    input_shape = tuple(input_shape)
    _validate_network(input_shape, num_classes, depth)
    filters = _check_positive_int(filters, "filters")
    if upsampling not in UPSAMPLINGS:
        raise ValueError(f"`upsampling` must be one of {UPSAMPLINGS}, got {upsampling!r}.")
    _validate_input_size(input_shape, depth)
    block_kwargs = dict(batch_norm=batch_norm, kernel_initializer=kernel_initializer)

    inputs = keras.Input(shape=input_shape, name="image")
    channels = [filters * 2**level for level in range(depth + 1)]
    encoder = _encoder(inputs, channels, block_kwargs, name=lambda i: _node_name(i, 0))
    nodes = {(level, 0): x for level, x in enumerate(encoder)}
    for column in range(1, depth + 1):
        for level in range(depth + 1 - column):
            nodes[level, column] = up_step(
                nodes[level + 1, column - 1],
                [nodes[level, k] for k in range(column)],
                channels[level],
                upsampling=upsampling,
                name=_node_name(level, column),
                **block_kwargs,
            )

    supervised = range(1, depth + 1) if deep_supervision else [depth]
    outputs = [
        head(nodes[0, j], num_classes, name=f"x0_{j}_head", output_name=_node_name(0, j))
        for j in supervised
    ]
    return keras.Model(inputs, outputs if deep_supervision else outputs[0], name=name)


def _unet_plus_plus_depth(model):
    """Depth of a model from `build_unet_plus_plus` (or a pruned one), read
    from its layer names, or None if it is not one."""
    names = {layer.name for layer in model.layers}
    outputs = getattr(model, "output_names", None) or []
    if "x0_0_conv1" not in names or not all(re.fullmatch(r"x0_\d+", o) for o in outputs):
        return None
    return max(int(m[1]) for n in names if (m := re.fullmatch(r"x(\d+)_0_conv1", n)))


def prune_unet_plus_plus(model, level):
    """Cuts a trained U-Net++ down to the sub-network that outputs `X^{0,level}`.

    The U-Net++ paper's "fast mode": `X^{0,level}` depends only on the nodes
    `X^{i,j}` with `i + j <= level`, so the levels below `level` and the later
    columns are dropped. Nothing is copied or retrained: the new model is
    built over the same layers, so it shares their weights with `model`
    (training either trains both).

    Args:
        model: A model from `build_unet_plus_plus` with deep supervision
            (or loaded from its `.keras` file).
        level: Which output to keep, from 1 (fastest, `X^{0,1}`) to the
            model's depth (the full network's last output).

    Returns:
        A `keras.Model` with the single output `"x0_{level}"`, fewer
        parameters and less compute than `model` when `level < depth`.

    Raises:
        ValueError: If `model` is not a U-Net++ from `build_unet_plus_plus`,
            if `level` is not in 1..depth, or if `X^{0,level}` has no output
            (a model built without deep supervision).
    """
    depth = _unet_plus_plus_depth(model)
    if depth is None:
        raise ValueError(
            f"`model` ({model.name!r}) is not a U-Net++: build it with "
            "`build_unet_plus_plus` (whose outputs are named x0_1, x0_2, ...)."
        )
    if not is_integer(level) or not 1 <= level <= depth:
        raise ValueError(
            f"`level` must be an integer from 1 to {depth} (the depth of the "
            f"model), got {level!r}."
        )
    level = int(level)
    output_name = _node_name(0, level)
    if output_name not in {layer.name for layer in model.layers}:
        raise ValueError(
            f"The model has no output {output_name!r} to prune to, only "
            f"{model.output_names}: it was built with deep_supervision=False or "
            "is pruned already. Prune the full model from "
            "`build_unet_plus_plus(..., deep_supervision=True)`, which supervises "
            "every X^{0,j}."
        )
    return keras.Model(
        model.input, model.get_layer(output_name).output, name=f"{model.name}_l{level}"
    )


# ---------------------------------------------------------------------------
# UNet 3+
# ---------------------------------------------------------------------------
def _validate_unet3plus(input_shape, num_classes, filters, cat_channels):
    """Checks the UNet 3+ arguments.

    Returns:
        `filters` as a tuple of Python ints and `cat_channels` as an int.
    """
    filters = tuple(filters) if isinstance(filters, (list, tuple)) else filters
    if (
        not isinstance(filters, tuple)
        or len(filters) < 2
        or not all(is_integer(f) and f >= 1 for f in filters)
    ):
        raise ValueError(
            "`filters` must be a list of at least 2 integers >= 1, the channels of "
            f"every encoder level (the paper's: (64, 128, 256, 512, 1024)), got {filters!r}."
        )
    _validate_network(input_shape, num_classes, len(filters) - 1)
    cat_channels = _check_positive_int(cat_channels, "cat_channels")
    _validate_input_size(input_shape, len(filters) - 1)
    return tuple(int(f) for f in filters), cat_channels


def _full_scale_decoder_node(level, encoder, decoder, cat_channels, block_kwargs):
    """Decoder node `X_De^level` (1-indexed, as in the paper) of UNet 3+.

    Gathers the encoder maps of levels 1..level (max-pooled down to this
    scale) and the decoder maps of the deeper levels (`decoder[j]`, bilinearly
    upsampled), brings each to `cat_channels` by a 3x3 conv + BN + ReLU,
    concatenates them and fuses them by a 3x3 conv + BN + ReLU with as many
    channels as the concatenation.
    """
    name = f"de{level}"
    branches = []
    for j, x in enumerate(encoder[:level], start=1):
        source = f"{name}_from_en{j}"
        if j < level:
            x = layers.MaxPooling2D(2 ** (level - j), name=f"{source}_pool")(x)
        branches.append(conv_bn_relu(x, cat_channels, name=source, **block_kwargs))
    for j in range(level + 1, len(encoder) + 1):
        source = f"{name}_from_de{j}"
        x = layers.UpSampling2D(
            2 ** (j - level), interpolation="bilinear", name=f"{source}_upsample"
        )(decoder[j])
        branches.append(conv_bn_relu(x, cat_channels, name=source, **block_kwargs))
    x = layers.Concatenate(name=f"{name}_concat")(branches)
    return conv_bn_relu(x, cat_channels * len(branches), name=name, **block_kwargs)


def build_unet3plus(
    input_shape,
    num_classes=1,
    filters=(64, 128, 256, 512, 1024),
    cat_channels=64,
    batch_norm=True,
    deep_supervision=False,
    kernel_initializer="he_normal",
    name="unet3plus",
):
    """Builds a UNet 3+ (Huang et al. 2020) with full-scale skip connections.

    The encoder is the U-Net's (`down_step`s, layers `en1_...` to `en5_...`).
    Levels are numbered from 1 as in the paper, and the bottom encoder node
    doubles as the deepest decoder node, `X_De^5 = X_En^5`. Decoder node
    `X_De^i`, from i = 4 up to 1, gathers (layers `de{i}_from_...`):

    * `X_En^1 .. X_En^(i-1)`, max-pooled by 2**(i - j) to its scale;
    * `X_En^i`, as it is;
    * `X_De^(i+1) .. X_De^5`, upsampled bilinearly by 2**(j - i);

    each through a 3x3 conv + BN + ReLU to `cat_channels`; concatenates them
    (`de{i}_concat`, 5 x 64 = 320 channels with the defaults) and fuses them
    with a 3x3 conv + BN + ReLU of as many channels (`de{i}_conv`, `de{i}_bn`,
    `de{i}_relu`).

    Args:
        input_shape: `(height, width, channels)`; None for sizes that vary.
            Height and width must be divisible by `2**(len(filters) - 1)`.
        num_classes: Output channels: 1 gives a sigmoid, more a softmax.
        filters: Channels of every encoder level; the depth (number of
            poolings) is `len(filters) - 1`.
        cat_channels: Channels of every full-scale skip; the decoder nodes
            have `len(filters) * cat_channels`.
        batch_norm: BatchNormalization between every 3x3 conv and its ReLU.
        deep_supervision: If True, every decoder node has a side output: a
            1x1 conv, bilinear upsampling to the input size, then the
            sigmoid/softmax. The outputs are named `"de1"` (the full-resolution
            output) to `"de5"` (from the bottom), in that order, and Keras adds
            up their losses (see the module docstring). If False, one output,
            `"de1"`.
        kernel_initializer: Initializer of the convolutions.
        name: Name of the model.

    Returns:
        A `keras.Model`: a list of `len(filters)` probability maps at the
        input size with deep supervision, else one map.
    """
    input_shape = tuple(input_shape)
    filters, cat_channels = _validate_unet3plus(input_shape, num_classes, filters, cat_channels)
    block_kwargs = dict(batch_norm=batch_norm, kernel_initializer=kernel_initializer)

    inputs = keras.Input(shape=input_shape, name="image")
    encoder = _encoder(inputs, filters, block_kwargs, name=lambda i: f"en{i + 1}")
    bottom = len(filters)
    decoder = {bottom: encoder[-1]}
    for level in range(bottom - 1, 0, -1):
        decoder[level] = _full_scale_decoder_node(
            level, encoder, decoder, cat_channels, block_kwargs
        )

    supervised = range(1, bottom + 1) if deep_supervision else [1]
    outputs = [
        head(decoder[i], num_classes, scale=2 ** (i - 1), name=f"de{i}_head", output_name=f"de{i}")
        for i in supervised
    ]
    return keras.Model(inputs, outputs if deep_supervision else outputs[0], name=name)


# ---------------------------------------------------------------------------
# Prediction
# ---------------------------------------------------------------------------
def prediction_network(model):
    """The single-output network that predicts with a (deeply supervised) model.

    Deep supervision gives a model one output per supervised node, but
    `predict_tiled` and the scores want one probability map. This keeps the
    full network's own output and drops the side outputs, sharing the weights:

    * a U-Net++ is pruned to its deepest output, `X^{0,depth}`;
    * a UNet 3+ keeps `"de1"`, its full-resolution decoder output;
    * a model with one output is returned as it is.

    Args:
        model: A model from `build_unet`, `build_unet_plus_plus` or
            `build_unet3plus` (or loaded from its `.keras` file).

    Returns:
        A `keras.Model` with one output.

    Raises:
        ValueError: For a model with several outputs that is neither a U-Net++
            nor a UNet 3+: say which output to keep with
            `keras.Model(model.input, model.get_layer(name).output)`.
    """
    if len(model.outputs) == 1:
        return model
    depth = _unet_plus_plus_depth(model)
    if depth is not None:
        return prune_unet_plus_plus(model, depth)
    if "de1" in model.output_names:
        return keras.Model(model.input, model.get_layer("de1").output, name=f"{model.name}_de1")
    raise ValueError(
        f"Cannot tell which of the outputs {model.output_names} of {model.name!r} is its "
        "prediction: keep one with `keras.Model(model.input, model.get_layer(name).output)`."
    )
