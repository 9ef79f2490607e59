"""What the command line reads: a model, the images as that model takes them,
and labels by the value of the class it predicts.

`cli` holds the commands; these are its readers. Each refuses bad input with
a message that names the option and says how to fix it.
"""

import zipfile
from pathlib import Path

import numpy as np

from unet_keras.io import TIFF_SUFFIXES, list_images, read_stack, to_unit_range

# Gray from RGB as OpenCV's COLOR_RGB2GRAY weighs the channels (ITU-R BT.601):
# the overlays and the learned merging of a colour model's images.
LUMINANCE = np.array([0.299, 0.587, 0.114], "float32")
POSITIVE_LABELS = (0, 255)


def load_model(path):
    """The model of `predict --model`, uncompiled (predicting only).

    Args:
        path: A `.keras` file (or Keras 2's `.h5`).

    Returns:
        The `keras.Model`.

    Raises:
        ValueError: For a missing file, a folder, or a file Keras cannot read.
    """
    import keras

    path = Path(path)
    example = "give a .keras model that train wrote, e.g. runs/default/model.keras"
    if not path.is_file():
        raise ValueError(
            f"--model {path} {'is a folder' if path.is_dir() else 'does not exist'}: {example}."
        )
    unreadable = f"--model {path} is not a .keras model (corrupt, or another format)"
    # A .keras model is a zip archive (.h5: Keras 2's format, which Keras 3 still reads).
    if path.suffix != ".h5" and not (path.suffix == ".keras" and zipfile.is_zipfile(path)):
        raise ValueError(f"{unreadable}: {example}.")
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as error:  # whatever Keras fails on, say which file and its first line
        said = str(error).strip().splitlines()
        raise ValueError(f"{unreadable}: {said[0] if said else type(error).__name__}") from error


def membrane_channel(model, path):
    """The output channel that `predict` writes as membrane probabilities.

    A one-channel (sigmoid) model's only channel; of a 2-class softmax,
    `build_unet(num_classes=2)`, class 1: the package scores channel 1 as
    the foreground (`DiceCoefficient(class_id=1)`), and one-hot encoding a
    membrane mask (1 = membrane) puts the membrane there.

    Args:
        model: The loaded prediction network (one output).
        path: Its file, for the error message.

    Returns:
        The channel's index, 0 or 1.

    Raises:
        ValueError: For more than 2 output channels, whose maps do not fit
            one probability stack.
    """
    channels = model.output_shape[-1]
    if channels in (1, 2):
        return channels - 1
    raise ValueError(
        f"--model {path} has {channels} output channels: predict writes one probability "
        "map per slice, from a one-channel (sigmoid) model or class 1 of a 2-class softmax. "
        f"Predict the {channels} class maps from Python: unet_keras.predict_tiled(model, "
        f"images) returns them as (slices, H, W, {channels})."
    )


def input_channels(model, path):
    """The number of image channels the model takes: 1 (gray) or 3 (colour).

    Args:
        model: The loaded prediction network.
        path: Its file, for the error message.

    Returns:
        1 or 3 (1 for a model that does not fix its channel count).

    Raises:
        ValueError: For another channel count.
    """
    channels = model.input_shape[-1]
    if channels in (None, 1, 3):
        return channels or 1
    raise ValueError(
        f"--model {path} takes {channels} input channels; predict reads gray images (1 "
        "channel) or colour ones (3). Predict from Python instead: "
        f"unet_keras.predict_tiled(model, images) with images (slices, H, W, {channels}) "
        "in [0, 1]."
    )


def read_images(path, channels):
    """The images of `predict --input`, scaled to [0, 1], and names for their overlays.

    Args:
        path: A folder of images, a TIFF stack or one image file.
        channels: 1 to read gray images (`io.read_stack`); 3 to read colour
            ones in RGB order (gray images as three equal channels).

    Returns:
        A tuple `(images, names)`: float32 `(N, H, W, channels)`, and the
        file names without their suffix (whole names where two share a
        stem) for a folder or one image, None for a TIFF stack.

    Raises:
        FileNotFoundError: If the path does not exist or holds no image.
        ValueError: For images of different sizes or bit depths, colour
            images for a gray model, or a file that is not a readable image.
    """
    path = Path(path)
    images = read_stack(path, channels=channels)
    if channels == 1:
        images = images[..., None]
    if path.is_dir():
        files = list_images(path)
        stems = [f.stem for f in files]
        names = stems if len(set(stems)) == len(stems) else [f.name for f in files]
    else:
        names = None if path.suffix.lower() in TIFF_SUFFIXES else [path.stem]
    return to_unit_range(images), names


def select_label_slices(labels, indices, count):
    """The slices of `labels` that a prediction of `count` slices holds.

    A run's `predictions/val.tif` holds only its held-out slices, so scoring it
    against the whole labelled stack needs their indices (`--label-slices`).

    Args:
        labels: The labelled stack, `(N, H, W)`.
        indices: The `--label-slices`, in the prediction's order, or None.
        count: The prediction's number of slices.

    Returns:
        The named slices (all of them for None).

    Raises:
        ValueError: For a count that does not match, or a slice out of range.
    """
    if indices is None:
        if len(labels) != count:
            raise ValueError(
                f"The prediction has {count} slices and the labels {len(labels)}. If the "
                "prediction holds only some of the labelled slices, name them with "
                "--label-slices in its order: for a run's predictions/val.tif, the "
                "val_slices of its metrics.json (e.g. --label-slices 25 26 27 28 29)."
            )
        return labels
    outside = [i for i in indices if not 0 <= i < len(labels)]
    if outside:
        raise ValueError(
            f"--label-slices {' '.join(map(str, outside))}: the labels have slices "
            f"0 to {len(labels) - 1} only."
        )
    if len(indices) != count:
        raise ValueError(
            f"--label-slices names {len(indices)} slices but the prediction has {count}: "
            "name one labelled slice for each predicted one, in the prediction's order."
        )
    return labels[list(indices)]


def polarity_warning(labels):
    """The warning for labels read with 0 as the predicted class, most of
    whose pixels are 0.

    ISBI 2012's labels mark about 22% of their pixels 0, the membranes; labels
    mostly 0 are likelier masks that mark their foreground 255.

    Args:
        labels: The labels, 0 and 255.

    Returns:
        One line that names the share of 0 and `--positive-label 255`, or
        None where at most half of the pixels are 0.
    """
    share = float(np.mean(np.asarray(labels) == 0))
    if share <= 0.5:
        return None
    return (
        f"warning: {share:.0%} of the labels' pixels are 0, which evaluate reads as the "
        "predicted class (membrane), as in ISBI 2012's labels, whose membranes are about 22% "
        "of the pixels. If your masks mark their foreground 255, add --positive-label 255 "
        "(--positive-label 0 keeps this reading without this warning)."
    )
