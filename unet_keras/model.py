"""The U-Net of Ronneberger et al. (2015), built with the Keras functional API.

The network is assembled from four named blocks, so that it reads like the
paper's figure:

* `conv_block`: two 3x3 convolutions, each followed by (optional)
  BatchNormalization and a ReLU; with `residual=True` the block's input,
  projected by a 1x1 convolution, is added before the second ReLU, as in
  He et al.'s (2016) residual unit.
* `down_step`: a conv block whose output is kept as a skip connection,
  followed by 2x2 max pooling.
* `up_step`: a 2x2 up-convolution (or bilinear upsampling + 1x1 conv) that
  halves the channels, concatenation with the (centre-cropped) skip features,
  then a conv block.
* `head`: a 1x1 convolution to `num_classes` maps with a sigmoid or softmax.

With `padding="valid"` this is exactly the paper's network: a 572x572 tile
gives a 388x388 map. `valid_output_size` and `valid_input_size` give that
tile geometry for any depth (`unet_keras.geometry`).
"""

import keras
import numpy as np
from keras import layers

from unet_keras.geometry import (
    _check_depth,
    _check_positive_int,
    valid_output_size,
)

PADDINGS = ("same", "valid")
UPSAMPLINGS = ("transpose", "bilinear")


def _skip_crop(level, depth):
    """Pixels to crop from each side of the skip features at `level`.

    With valid convolutions the skip map is larger than the upsampled map by
    a constant that does not depend on the input size: 8 pixels at the level
    just above the bottleneck, and 16 + 2x the level below elsewhere.
    """
    lost = 8
    for _ in range(depth - 1 - level):
        lost = 16 + 2 * lost
    return lost // 2


# ---------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------
def conv_bn_relu(
    x, filters, *, batch_norm=False, padding="same",
    kernel_initializer="he_normal", name="conv", suffix="", kernel_size=3, relu=True,
):
    """One convolution (3x3 unless said), optional BatchNorm, then a ReLU.

    With BatchNorm the convolution has no bias: the normalisation's own
    offset makes it redundant.

    Args:
        x: Input features.
        filters: Output channels.
        batch_norm: Put BatchNormalization between the convolution and the ReLU.
        padding: `"same"` or `"valid"`.
        kernel_initializer: Initializer of the convolution.
        name: Prefix of the layer names.
        suffix: Appended to the layer names: `{name}_conv{suffix}`,
            `{name}_bn{suffix}`, `{name}_relu{suffix}`.
        kernel_size: Side of the convolution's kernel.
        relu: Apply the ReLU; False leaves the features linear (a residual
            unit adds its shortcut before its last ReLU).

    Returns:
        The features.
    """
    x = layers.Conv2D(
        filters, kernel_size, padding=padding, use_bias=not batch_norm,
        kernel_initializer=kernel_initializer, name=f"{name}_conv{suffix}",
    )(x)
    if batch_norm:
        x = layers.BatchNormalization(name=f"{name}_bn{suffix}")(x)
    if not relu:
        return x
    return layers.Activation("relu", name=f"{name}_relu{suffix}")(x)


def conv_block(
    x, filters, *, batch_norm=False, padding="same", residual=False,
    kernel_initializer="he_normal", name="conv_block",
):
    """Two 3x3 convolutions, each followed by optional BatchNorm and a ReLU
    (two `conv_bn_relu`, suffixed 1 and 2).

    Args:
        x: Input features.
        filters: Output channels.
        batch_norm: BatchNormalization after every convolution.
        padding: `"same"` or `"valid"`.
        residual: Add a shortcut from the block's input before the second
            ReLU (He et al., 2016): the input itself if it has `filters`
            channels, else its 1x1 convolution (with BatchNorm if
            `batch_norm`), `{name}_shortcut_conv`. With valid padding the
            shortcut is centre-cropped by the 2 pixels a side that the two
            3x3 convolutions lose.
        kernel_initializer: Initializer of the convolutions.
        name: Prefix of the layer names.

    Returns:
        The block's features.
    """
    block_input = x
    for i in (1, 2):
        x = conv_bn_relu(
            x, filters, batch_norm=batch_norm, padding=padding,
            kernel_initializer=kernel_initializer, name=name, suffix=i,
            relu=not (residual and i == 2),
        )
    if not residual:
        return x
    shortcut = block_input
    if padding == "valid":
        shortcut = layers.Cropping2D(2, name=f"{name}_shortcut_crop")(shortcut)
    if shortcut.shape[-1] != filters:
        shortcut = conv_bn_relu(
            shortcut, filters, batch_norm=batch_norm, kernel_size=1, relu=False,
            kernel_initializer=kernel_initializer, name=f"{name}_shortcut",
        )
    x = layers.Add(name=f"{name}_add")([x, shortcut])
    return layers.Activation("relu", name=f"{name}_relu2")(x)


def down_step(x, filters, *, name="down", **block_kwargs):
    """A conv block, kept as skip connection, then 2x2 max pooling.

    Returns:
        A tuple `(pooled, skip)`.
    """
    skip = conv_block(x, filters, name=name, **block_kwargs)
    pooled = layers.MaxPooling2D(2, name=f"{name}_pool")(skip)
    return pooled, skip


def up_step(
    x, skip, filters, *, upsampling="transpose", crop=0,
    kernel_initializer="he_normal", name="up", **block_kwargs,
):
    """Upsample by 2, halving the channels, join the skip features, conv block.

    Args:
        x: Features from the level below.
        skip: Features from the contracting path at this level, or a list of
            feature maps of this level (U-Net++'s dense skips), concatenated
            in order before the upsampled features.
        filters: Channels of this level.
        upsampling: `"transpose"` for the paper's 2x2 up-convolution, or
            `"bilinear"` for bilinear upsampling followed by a 1x1 conv.
        crop: Pixels removed from each side of `skip` before the
            concatenation (non-zero for valid padding only).
    """
    if upsampling == "transpose":
        x = layers.Conv2DTranspose(
            filters, 2, strides=2, kernel_initializer=kernel_initializer,
            name=f"{name}_upconv",
        )(x)
    else:
        x = layers.UpSampling2D(2, interpolation="bilinear", name=f"{name}_upsample")(x)
        x = layers.Conv2D(
            filters, 1, kernel_initializer=kernel_initializer, name=f"{name}_upconv",
        )(x)
    skips = list(skip) if isinstance(skip, (list, tuple)) else [skip]
    if crop:
        suffixes = [""] if len(skips) == 1 else range(1, len(skips) + 1)
        skips = [
            layers.Cropping2D(crop, name=f"{name}_crop{suffix}")(s)
            for suffix, s in zip(suffixes, skips)
        ]
    x = layers.Concatenate(name=f"{name}_concat")([*skips, x])
    return conv_block(
        x, filters, kernel_initializer=kernel_initializer, name=name, **block_kwargs
    )


def head(x, num_classes, *, scale=1, name="head", output_name=None):
    """1x1 convolution to `num_classes` maps and the output activation.

    One class gives a sigmoid (a probability per pixel); more give a softmax
    over the channel axis. The activation is kept in float32 so that mixed
    precision training stays numerically safe.

    Args:
        x: Features to classify.
        num_classes: Output channels.
        scale: Bilinear upsampling factor applied to the class scores
            (before the activation), for side outputs of deep supervision
            that are computed at a coarser scale.
        name: Prefix of the layer names.
        output_name: Name of the activation layer, which names the model
            output; `{name}_sigmoid` or `{name}_softmax` if None.
    """
    x = layers.Conv2D(num_classes, 1, name=f"{name}_conv")(x)
    if scale != 1:
        x = layers.UpSampling2D(scale, interpolation="bilinear", name=f"{name}_upsample")(x)
    activation = "sigmoid" if num_classes == 1 else "softmax"
    return layers.Activation(
        activation, dtype="float32", name=output_name or f"{name}_{activation}"
    )(x)


# ---------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------
def _validate_network(input_shape, num_classes, depth):
    """Checks that every builder shares: the input rank, depth and classes."""
    if len(input_shape) != 3:
        raise ValueError(
            f"`input_shape` must be (height, width, channels), got {input_shape!r}. "
            "Use None for sizes that vary, e.g. (None, None, 1)."
        )
    _check_depth(depth)
    _check_positive_int(num_classes, "num_classes")


def _validate_input_size(input_shape, depth, padding="same"):
    """Checks that the height and width pass through `depth` poolings."""
    for size in input_shape[:2]:
        if size is None:
            continue
        if padding == "valid":
            valid_output_size(size, depth)  # raises with the nearest sizes
        elif size % 2**depth:
            below = size // 2**depth * 2**depth
            raise ValueError(
                f"With padding='same' and depth {depth}, the input height and width "
                f"must be divisible by 2**{depth} = {2**depth}, got {size}. "
                f"Use {below or 2**depth} or {below + 2**depth}, or an input shape of "
                "None and `predict_tiled` for images of any size."
            )


def _validate(input_shape, num_classes, depth, filters, dropout, padding, upsampling, residual):
    _validate_network(input_shape, num_classes, depth)
    if not isinstance(residual, bool):
        raise ValueError(f"`residual` must be True or False, got {residual!r}.")
    _check_positive_int(filters, "filters")
    if not 0 <= dropout < 1:
        raise ValueError(f"`dropout` must be in [0, 1), got {dropout!r}.")
    if padding not in PADDINGS:
        raise ValueError(f"`padding` must be one of {PADDINGS}, got {padding!r}.")
    if upsampling not in UPSAMPLINGS:
        raise ValueError(f"`upsampling` must be one of {UPSAMPLINGS}, got {upsampling!r}.")
    _validate_input_size(input_shape, depth, padding)


def build_unet(
    input_shape=(None, None, 1),
    num_classes=1,
    depth=4,
    filters=64,
    batch_norm=False,
    dropout=0.5,
    padding="same",
    upsampling="transpose",
    residual=False,
    kernel_initializer="he_normal",
    name="unet",
):
    """Builds a U-Net.

    The defaults with `padding="valid"` and `num_classes=2` reproduce the
    paper's network: 23 convolutions, 64 to 1024 channels, a 388x388 output
    for a 572x572 input.

    Args:
        input_shape: `(height, width, channels)`; None for sizes that vary.
        num_classes: Output channels. 1 gives a sigmoid output (binary
            segmentation); more give a softmax over the classes.
        depth: Number of 2x2 poolings (4 in the paper).
        filters: Channels of the first level; each level below doubles them.
        batch_norm: Put BatchNormalization between every 3x3 convolution and
            its ReLU (the convolutions then have no bias).
        dropout: Dropout rate at the end of the contracting path, as in the
            paper; 0 disables it.
        padding: `"same"` keeps the spatial size (the input must be divisible
            by `2**depth`); `"valid"` is the paper's unpadded network, whose
            output is smaller than its input (see `valid_output_size`).
        upsampling: `"transpose"` (the paper's 2x2 up-convolution) or
            `"bilinear"` (bilinear upsampling followed by a 1x1 conv).
        residual: Make every conv block a residual unit (see `conv_block`):
            a 1x1 convolution per block more, about 5% of the FLOPs.
        kernel_initializer: Initializer of the convolutions; He normal is the
            paper's Gaussian with standard deviation sqrt(2 / fan_in).
        name: Name of the model.

    Returns:
        A `keras.Model` mapping images to per-pixel class probabilities.
    """
    input_shape = tuple(input_shape)
    _validate(input_shape, num_classes, depth, filters, dropout, padding, upsampling, residual)
    block_kwargs = dict(
        batch_norm=batch_norm, padding=padding, residual=residual,
        kernel_initializer=kernel_initializer,
    )

    inputs = keras.Input(shape=input_shape, name="image")
    x, skips = inputs, []
    for level in range(depth):
        x, skip = down_step(x, filters * 2**level, name=f"down{level + 1}", **block_kwargs)
        skips.append(skip)

    x = conv_block(x, filters * 2**depth, name="bottleneck", **block_kwargs)
    if dropout:
        x = layers.Dropout(dropout, name="bottleneck_dropout")(x)

    for level in reversed(range(depth)):
        crop = _skip_crop(level, depth) if padding == "valid" else 0
        x = up_step(
            x, skips[level], filters * 2**level, upsampling=upsampling, crop=crop,
            name=f"up{level + 1}", **block_kwargs,
        )

    outputs = head(x, num_classes)
    return keras.Model(inputs, outputs, name=name)


# ---------------------------------------------------------------------------
# Counting
# ---------------------------------------------------------------------------
def _flat_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers"):  # a nested model
            yield from _flat_layers(layer)
        else:
            yield layer


def count_conv_layers(model):
    """Number of Conv2D and Conv2DTranspose layers (23 in the paper), nested
    models included."""
    return sum(
        isinstance(layer, (layers.Conv2D, layers.Conv2DTranspose)) for layer in _flat_layers(model)
    )


def _with_input_size(model, input_hw):
    """`model` for `input_hw` inputs; a ValueError naming sizes that work if it cannot."""
    shape = (*input_hw, model.input_shape[-1])
    if tuple(model.input_shape[1:]) == shape:
        return model
    try:
        return keras.models.clone_model(model, input_tensors=keras.Input(shape=shape))
    except ValueError as error:  # Keras's message names a layer, not the size to use
        from unet_keras.inference import _model_geometry  # it imports this module
        try:  # depth and padding as predict_tiled sees them (UNet 3+'s extra pools too)
            geometry = _model_geometry(model)
        except ValueError:  # not one image in, one map out: no sizes to name
            geometry = None
        if geometry and geometry.depth:
            _validate_input_size(input_hw, geometry.depth, "valid" if geometry.valid else "same")
        raise ValueError(
            f"The model cannot take {input_hw[0]}x{input_hw[1]} inputs ({error}). Use a size "
            "from `valid_input_size` (valid padding) or a multiple of 2**depth (same padding)."
        ) from error


def forward_flops(model, input_hw):
    """Floating-point operations of one forward pass, counted from the layers.

    A multiply-add counts as 2 FLOPs. Conv2D: 2 * kh * kw * cin / groups *
    cout * H_out * W_out. Conv2DTranspose: 2 * kh * kw * cin * cout * H_in *
    W_in (each input pixel is scattered once; counting it over the output
    size instead, 2 * kh * kw * cin * cout * H_out * W_out, inflates a 2x2
    stride-2 up-convolution 4x). Biases, normalisation, activations and
    pooling are left out (well under 1% for a U-Net). The paper's 64-filter
    U-Net with same padding at 512x512 takes 384.7 GFLOP (436.3 GFLOP, the
    often quoted ~437, with the up-convolutions counted over their output).

    Args:
        model: A Keras model with one image input.
        input_hw: Input (height, width), or one int for a square.

    Returns:
        The FLOP count as an int.

    Raises:
        ValueError: For a size the model cannot take, naming sizes that work.
    """
    input_hw = (input_hw, input_hw) if np.isscalar(input_hw) else tuple(input_hw)
    shaped = _with_input_size(model, tuple(int(s) for s in input_hw))
    total = 0
    for layer in _flat_layers(shaped):
        if isinstance(layer, layers.Conv2DTranspose):
            height, width, channels = layer.input.shape[1:]
        elif isinstance(layer, layers.Conv2D):
            height, width = layer.output.shape[1:3]
            channels = layer.input.shape[-1] // getattr(layer, "groups", 1)
        else:
            continue
        kh, kw = layer.kernel_size
        total += 2 * kh * kw * channels * layer.filters * height * width
    return int(total)
