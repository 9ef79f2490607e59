"""Faster inference by folding BatchNormalization into the convolutions.

At inference a BatchNormalization layer is a fixed per-channel affine map,

    y = gamma * (x - moving_mean) / sqrt(moving_variance + epsilon) + beta,

so when it follows a convolution directly it can be merged into that
convolution's kernel and bias: the network computes the same function with one
pass over the feature maps fewer per convolution. For the default 16-filter
U-Net on a 2-core CPU that removes about a sixth of the inference time
(`benchmarks/bench_inference.py` measures it), because the wide full-resolution
feature maps make each extra pass expensive.

    fast = fold_batch_norm(model)   # a new model; `model` is left as it was
    membrane = predict_tiled(fast, image)

The folded model is for inference only: it has no BatchNormalization left to
train, and its outputs equal the original's up to the round-off of its arithmetic: float32's
(about 1e-6), or bfloat16's for a `mixed_bfloat16` model (about 2e-3 in the probabilities).
"""

import keras
import numpy as np
from keras import layers


def _layer_refs(structure):
    """Names of the layers referenced in a serialised functional config fragment:
    call arguments (`keras_history`) and output lists (`[name, node, tensor]`).

    The config, unlike `layer.input`, lists every call of a shared layer, so
    the counts below stay right for layers called more than once."""
    if isinstance(structure, dict):
        config = structure.get("config")
        if structure.get("class_name") == "__keras_tensor__" and isinstance(config, dict):
            return [config["keras_history"][0]]
        return [name for value in structure.values() for name in _layer_refs(value)]
    if isinstance(structure, (list, tuple)):
        if (
            len(structure) == 3
            and isinstance(structure[0], str)
            and all(isinstance(i, int) for i in structure[1:])
        ):
            return [structure[0]]
        return [name for value in structure for name in _layer_refs(value)]
    return []


def _is_functional(model):
    if not isinstance(model, keras.Model) or isinstance(model, keras.Sequential):
        return False
    try:
        return "input_layers" in model.get_config()
    except NotImplementedError:  # a subclassed model
        return False


def _foldable_pairs(model):
    """`{batch_norm_name: conv_name}` for every BatchNormalization that can be folded.

    A pair qualifies when the BatchNormalization normalises the channel axis
    and reads the output of a channels-last `Conv2D` without activation, and
    nothing else reads that convolution's output (the model's outputs included).
    """
    config = model.get_config()
    sources, consumers = {}, {}
    for layer_config in config["layers"]:
        names = _layer_refs(layer_config.get("inbound_nodes", []))
        sources[layer_config["name"]] = names
        for name in names:
            consumers[name] = consumers.get(name, 0) + 1
    for name in _layer_refs(config["output_layers"]):
        consumers[name] = consumers.get(name, 0) + 1

    pairs = {}
    for layer in model.layers:
        if not isinstance(layer, layers.BatchNormalization):
            continue
        inputs = sources.get(layer.name, [])
        if len(inputs) != 1 or consumers.get(inputs[0], 0) != 1:
            continue
        conv = model.get_layer(inputs[0])
        rank = len(conv.output.shape)
        if (
            type(conv) is layers.Conv2D
            and conv.data_format == "channels_last"
            and conv.get_config()["activation"] == "linear"
            and layer.axis in (-1, rank - 1)
        ):
            pairs[layer.name] = conv.name
    return pairs


def _float64(variable):
    return keras.ops.convert_to_numpy(variable).astype(np.float64)


def _folded_weights(conv, batch_norm):
    """Kernel and bias of `conv` followed by `batch_norm` in inference mode,
    computed in float64 so that folding adds no round-off of its own."""
    kernel = _float64(conv.kernel)
    bias = _float64(conv.bias) if conv.use_bias else 0.0
    gamma = _float64(batch_norm.gamma) if batch_norm.scale else 1.0
    beta = _float64(batch_norm.beta) if batch_norm.center else 0.0
    scale = gamma / np.sqrt(_float64(batch_norm.moving_variance) + batch_norm.epsilon)
    folded_bias = beta + (bias - _float64(batch_norm.moving_mean)) * scale
    return [kernel * scale, folded_bias]  # the moving mean gives it its (channels,) shape


def fold_batch_norm(model):
    """A copy of a functional model with BatchNormalization merged into convolutions.

    Every BatchNormalization that directly follows a `Conv2D` (whose output
    nothing else reads) disappears, and the convolution gets the equivalent
    kernel and bias. Other layers, including BatchNormalization layers that
    cannot be folded, are copied with their weights.

    Args:
        model: A functional Keras model, e.g. from `build_unet` or loaded
            with `keras.models.load_model`.

    Returns:
        A new Keras model for inference with the same inputs, outputs and
        layer names (minus the folded BatchNormalization layers). `model`
        itself is not changed.

    Raises:
        ValueError: If `model` is not a functional model.
    """
    if not _is_functional(model):
        raise ValueError(
            "`fold_batch_norm` needs a functional Keras model (built from keras.Input, "
            f"as `build_unet` does), got {type(model).__name__}."
        )
    pairs = _foldable_pairs(model)
    conv_to_norm = {conv: norm for norm, conv in pairs.items()}

    def clone_layer(layer):
        config = layer.get_config()
        if layer.name in conv_to_norm:
            config["use_bias"] = True
        return layer.__class__.from_config(config)

    def call_layer(layer, *args, **kwargs):
        if layer.name in pairs:  # the folded normalisation is skipped
            return args[0]
        return layer(*args, **kwargs)

    folded = keras.models.clone_model(
        model, clone_function=clone_layer, call_function=call_layer
    )
    for layer in folded.layers:
        if not layer.weights:  # input layers among them, which clone_model renames
            continue
        source = model.get_layer(layer.name)
        if layer.name in conv_to_norm:
            layer.set_weights(_folded_weights(source, model.get_layer(conv_to_norm[layer.name])))
        else:
            layer.set_weights(source.get_weights())
    return folded
