"""Pictures a person would rather look at than read: training curves,
prediction overlays and error maps."""

import csv
from pathlib import Path

import cv2
import matplotlib.pyplot as plt
import numpy as np
from skimage.color import label2rgb

MEMBRANE_COLOR = (255, 64, 160)  # magenta-ish, visible on gray EM
FALSE_POSITIVE_COLOR = (255, 160, 0)  # predicted membrane that is not: orange
FALSE_NEGATIVE_COLOR = (0, 170, 255)  # missed membrane: blue


def _as_2d(array, what):
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise ValueError(f"`{what}` must be (H, W) or (H, W, 1), got shape {array.shape}.")
    return array


def _gray_to_rgb(image):
    image = _as_2d(image, "image").astype("float32")
    if image.max() > 1.0:
        image = image / 255.0
    return np.repeat((np.clip(image, 0, 1) * 255).astype("uint8")[..., None], 3, axis=-1)


def _check_same_size(image, other, what):
    """Refuses a map that does not cover the image pixel for pixel, which NumPy
    would otherwise report as a broadcast or index error."""
    image_shape = _as_2d(image, "image").shape
    if np.shape(other) != image_shape:
        raise ValueError(
            f"`{what}` has shape {np.shape(other)} but `image` has shape {image_shape}: "
            "give the map of this slice at the image's size (crop or resize one first)."
        )


def overlay(image, membrane_prob, alpha=0.6, threshold=0.5):
    """The image in gray with the predicted membrane painted over it.

    Args:
        image: (H, W) or (H, W, 1) in [0, 1] or [0, 255].
        membrane_prob: Membrane probabilities of the same size.
        alpha: Opacity of the membrane colour.
        threshold: Probability from which a pixel is painted.

    Returns:
        An RGB uint8 image (H, W, 3).

    Raises:
        ValueError: If `membrane_prob` is not the size of `image`.
    """
    prob = _as_2d(membrane_prob, "membrane_prob")
    _check_same_size(image, prob, "membrane_prob")
    rgb = _gray_to_rgb(image).astype("float32")
    painted = (prob >= threshold)[..., None] * alpha
    rgb = rgb * (1 - painted) + np.array(MEMBRANE_COLOR, "float32") * painted
    return rgb.astype("uint8")


def error_map(image, membrane_prob, membrane_mask, threshold=0.5):
    """False positives and false negatives of the membrane class in two colours.

    Returns:
        An RGB uint8 image (H, W, 3): the image in gray, orange where membrane
        was predicted but is not, blue where membrane was missed.

    Raises:
        ValueError: If `membrane_prob` or `membrane_mask` is not the size of `image`.
    """
    prob = _as_2d(membrane_prob, "membrane_prob")
    mask = _as_2d(membrane_mask, "membrane_mask")
    _check_same_size(image, prob, "membrane_prob")
    _check_same_size(image, mask, "membrane_mask")
    rgb = _gray_to_rgb(image)
    predicted = prob >= threshold
    truth = mask > 0.5
    rgb[predicted & ~truth] = FALSE_POSITIVE_COLOR
    rgb[~predicted & truth] = FALSE_NEGATIVE_COLOR
    return rgb


def save_overlays(folder, images, membrane_probs, membrane_masks=None, names=None):
    """Writes one PNG per slice: the overlay, and the error map beside it when
    the ground truth is given.

    Args:
        folder: The folder of the PNGs, created if missing.
        images, membrane_probs, membrane_masks: Stacks of slices of one size.
        names: File names without ".png" (default "00", "01", ...).

    Returns:
        The list of written paths.

    Raises:
        ValueError: If a probability map or mask is not the size of its image.
        OSError: If a PNG could not be written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = names if names is not None else [f"{i:02d}" for i in range(len(images))]
    paths = []
    for i, name in enumerate(names):
        panel = overlay(images[i], membrane_probs[i])
        if membrane_masks is not None:
            panel = np.concatenate(
                [panel, error_map(images[i], membrane_probs[i], membrane_masks[i])], axis=1
            )
        path = folder / f"{name}.png"
        # OpenCV reports a failed write (a missing subfolder in `name`, no
        # permission, a full disk) only by returning False.
        if not cv2.imwrite(str(path), cv2.cvtColor(panel, cv2.COLOR_RGB2BGR)):
            raise OSError(
                f"Could not write {path}: check that its folder exists and is writable "
                "(a name in `names` must not contain a subfolder)."
            )
        paths.append(path)
    return paths


def _csv_float(text):
    """A `CSVLogger` cell as a float: Keras writes "NA" for a metric that an
    epoch did not log (the val_* columns of an epoch without validation)."""
    return float("nan") if text in ("", "NA", None) else float(text)


def read_history(path):
    """Reads a `CSVLogger` file into a dict of float lists, one per column.

    Missing values ("NA", empty) are NaN; a column with no value at all (a
    validation metric of a run that never validated) is left out.
    """
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    history = {key: [_csv_float(row[key]) for row in rows] for key in rows[0]}
    return {key: values for key, values in history.items() if not np.isnan(values).all()}


def plot_history(history, path=None, title="Training", dice_key="dice"):
    """Loss and Dice per epoch, training and validation side by side.

    Args:
        history: A dict of per-epoch lists (`keras.callbacks.History.history`)
            or the path of a `CSVLogger` file.
        path: Where to save the PNG; None only returns the figure.
        title: The figure's title.
        dice_key: The Dice column: `"dice"`, or for a model with several
            outputs the prediction's, e.g. `"x0_4_dice"` (`train.dice_key`).

    Returns:
        The matplotlib figure.
    """
    if not isinstance(history, dict):
        history = read_history(history)
    epochs = history.get("epoch")
    epochs = [e + 1 for e in epochs] if epochs else None
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key, label in zip(axes, ("loss", dice_key), ("Loss", "Dice (membrane)")):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = history.get(prefix + key)
            if values:
                x = epochs or list(range(1, len(values) + 1))
                ax.plot(x, values, style, label=("validation" if prefix else "training"))
        ax.set_xlabel("epoch")
        ax.set_title(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
        plt.close(fig)
    return fig


def show_images(panels, titles=None, cmap="gray", size=3.2):
    """A row of images with titles, for notebooks.

    Returns:
        The matplotlib figure.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(size * len(panels), size))
    axes = np.atleast_1d(axes)
    for i, (ax, panel) in enumerate(zip(axes, panels)):
        panel = np.asarray(panel)
        if panel.ndim == 3 and panel.shape[-1] == 1:
            panel = panel[..., 0]
        ax.imshow(panel, cmap=cmap if panel.ndim == 2 else None)
        if titles is not None:
            ax.set_title(titles[i])
        ax.axis("off")
    fig.tight_layout()
    return fig


def _paint(image, labels, alpha=0.55):
    """The image in gray with each non-zero label in a colour of its own
    (tab10's, in the order of the labels), as an RGB uint8 image."""
    painted = label2rgb(
        labels, image=_gray_to_rgb(image), colors=plt.get_cmap("tab10").colors,
        alpha=alpha, bg_label=0, bg_color=None, kind="overlay",
    )
    return (painted * 255).astype("uint8")


def _window_around_pieces(pieces, size, margin=16):
    """A square window that shows the two largest pieces of an error whole:
    where a small cell was joined to a large one, or a cell cut in two."""
    labels, counts = np.unique(pieces[pieces > 0], return_counts=True)
    rows, cols = np.nonzero(np.isin(pieces, labels[np.argsort(counts)[::-1][:2]]))
    side = max(size, rows.max() - rows.min() + 2 * margin, cols.max() - cols.min() + 2 * margin)
    starts = []
    for low, high, length in ((rows.min(), rows.max(), pieces.shape[0]),
                              (cols.min(), cols.max(), pieces.shape[1])):
        start = (low + high) // 2 - side // 2
        starts.append(int(np.clip(start, 0, max(length - side, 0))))
    return slice(starts[0], starts[0] + side), slice(starts[1], starts[1] + side)


def show_segment_errors(image, errors, kind="merges", count=3, size=128):
    """The costliest merges or splits of a slice, one row each: the image, the
    true cells involved and the predicted segments, each in its own colour.

    Args:
        image: The slice, (H, W) or (H, W, 1).
        errors: `unet_keras.errors.segmentation_errors` of that slice.
        kind: `"merges"` or `"splits"`.
        count: How many errors to show, costliest first.
        size: Side of the window around each error, in pixels.

    Returns:
        The matplotlib figure.
    """
    if kind not in ("merges", "splits"):
        raise ValueError(f"`kind` must be 'merges' or 'splits', got {kind!r}.")
    image = _as_2d(image, "image")
    if image.shape != errors.labels.shape:
        raise ValueError(
            f"`image` {image.shape} is not the slice of `errors` {errors.labels.shape}."
        )
    chosen = getattr(errors, kind)[:count]
    if not chosen:
        fig, ax = plt.subplots(figsize=(4, 1))
        ax.text(0.5, 0.5, f"No {kind} at threshold {errors.threshold:.1f}.", ha="center")
        ax.axis("off")
        return fig
    fig, axes = plt.subplots(len(chosen), 3, figsize=(9.6, 3.7 * len(chosen)), squeeze=False)
    for row, error in zip(axes, chosen):
        if kind == "merges":  # one predicted segment over several true cells
            own = errors.labels == error.label
            truth, prediction = np.where(own, errors.true_labels, 0), own.astype(np.int32)
        else:  # one true cell in several predicted segments
            own = errors.true_labels == error.label
            truth, prediction = own.astype(np.int32), np.where(own, errors.labels, 0)
        window = _window_around_pieces(truth if kind == "merges" else prediction, size)
        parts = ", ".join(str(p) for p in error.parts[:4])
        centre = ", ".join(str(round(c)) for c in error.centroid)
        about = (f"{error.kind} at ({centre}): V_rand +{error.gain:.4f}\n"
                 f"pieces of {parts} px")
        panels = [_gray_to_rgb(image), _paint(image, truth), _paint(image, prediction)]
        for ax, panel, title in zip(row, panels, [about, "true cells", "predicted segments"]):
            ax.imshow(panel[window])
            ax.set_title(title, fontsize=10)
            ax.axis("off")
    fig.tight_layout()
    return fig
