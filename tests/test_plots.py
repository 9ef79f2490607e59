"""Overlays, error maps and the figure of a slice's costliest merges."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from unet_keras.datasets import load_isbi2012  # noqa: E402
from unet_keras.errors import segmentation_errors  # noqa: E402
from unet_keras.plots import (  # noqa: E402
    FALSE_NEGATIVE_COLOR,
    FALSE_POSITIVE_COLOR,
    MEMBRANE_COLOR,
    _window_around_pieces,
    error_map,
    overlay,
    show_segment_errors,
)


def test_error_map_colours_false_positives_and_negatives():
    image = np.full((4, 4), 0.5, np.float32)
    mask = np.zeros((4, 4), np.uint8)
    mask[0] = 1  # true membrane: the first row
    prob = np.zeros((4, 4), np.float32)
    prob[0, :2] = 0.9  # found half of it ...
    prob[3, 3] = 0.6  # ... and one pixel that is not membrane
    rgb = error_map(image, prob, mask)
    assert rgb.shape == (4, 4, 3) and rgb.dtype == np.uint8
    assert (rgb[0, 2:] == FALSE_NEGATIVE_COLOR).all()
    assert (rgb[3, 3] == FALSE_POSITIVE_COLOR).all()
    assert (rgb[0, :2] == 127).all() and (rgb[1:3] == 127).all()  # right: the image


def test_overlay_paints_from_the_threshold():
    image = np.zeros((2, 2), np.float32)
    prob = np.array([[0.2, 0.5], [0.7, 1.0]], np.float32)
    painted = overlay(image, prob, alpha=1.0)
    assert (painted[0, 0] == 0).all()
    assert (painted.reshape(-1, 3)[1:] == MEMBRANE_COLOR).all()


@pytest.fixture(scope="module")
def merged_slice(isbi_data):
    """Slice 0 with a 15x15 hole in a membrane in the middle of the image."""
    images, masks = load_isbi2012(isbi_data, split="train")
    mask = masks[0, ..., 0].astype(np.uint8)
    prob = np.where(mask == 1, 0.9, 0.02).astype(np.float32)
    rows, cols = np.nonzero(mask[200:312, 200:312])
    row, col = rows[len(rows) // 2] + 200, cols[len(cols) // 2] + 200
    prob[row - 7 : row + 8, col - 7 : col + 8] = 0.02
    return images[0], prob, mask


def test_the_costliest_merges_are_shown_whole(merged_slice):
    image, prob, mask = merged_slice
    errors = segmentation_errors(prob, mask, threshold=0.5)
    assert errors.merges  # the hole joins the cells around it
    figure = show_segment_errors(image, errors, count=2)
    rows = min(2, len(errors.merges))
    assert len(figure.axes) == 3 * rows
    title = figure.axes[0].get_title()
    assert f"V_rand +{errors.merges[0].gain:.4f}" in title
    plt.close(figure)

    merge = errors.merges[0]  # the window holds its two largest true cells entirely
    pieces = np.where(errors.labels == merge.label, errors.true_labels, 0)
    window = _window_around_pieces(pieces, size=64)
    labels, counts = np.unique(pieces[pieces > 0], return_counts=True)
    for label in labels[np.argsort(counts)[::-1][:2]]:
        assert (pieces[window] == label).sum() == (pieces == label).sum()
    assert window[0].stop - window[0].start == window[1].stop - window[1].start >= 64


def test_a_slice_without_errors_says_so(merged_slice):
    image, _, mask = merged_slice
    errors = segmentation_errors(np.where(mask == 1, 0.9, 0.02), mask, threshold=0.5)
    figure = show_segment_errors(image, errors, kind="splits")
    assert "No splits" in figure.axes[0].texts[0].get_text()
    plt.close(figure)


def test_bad_arguments_are_refused(merged_slice):
    image, prob, mask = merged_slice
    errors = segmentation_errors(prob, mask, threshold=0.5)
    with pytest.raises(ValueError, match="kind"):
        show_segment_errors(image, errors, kind="holes")
    with pytest.raises(ValueError, match="not the slice"):
        show_segment_errors(image[:256], errors)
