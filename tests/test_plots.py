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
    _paint,
    _window_around_pieces,
    error_map,
    overlay,
    plot_history,
    read_history,
    save_overlays,
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


def test_maps_of_another_size_are_refused_with_both_shapes():
    image = np.zeros((4, 5), np.float32)
    with pytest.raises(ValueError, match=r"`membrane_prob` has shape \(4, 4\) but `image` "
                                         r"has shape \(4, 5\)"):
        overlay(image, np.zeros((4, 4, 1), np.float32))
    with pytest.raises(ValueError, match=r"`membrane_prob` has shape \(5, 4\)"):
        error_map(image, np.zeros((5, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match=r"`membrane_mask` has shape \(4, 6\)"):
        error_map(image, np.zeros((4, 5)), np.zeros((4, 6)))


def test_save_overlays_writes_pngs_and_names_a_path_it_cannot_write(tmp_path):
    images, probs = np.zeros((2, 4, 4), np.float32), np.ones((2, 4, 4), np.float32)
    paths = save_overlays(tmp_path / "new", images, probs, probs, names=["a", "b"])
    assert [p.name for p in paths] == ["a.png", "b.png"] and all(p.is_file() for p in paths)
    with pytest.raises(OSError, match=r"Could not write .*no_such_folder.a\.png"):
        save_overlays(tmp_path, images[:1], probs[:1], names=["no_such_folder/a"])


def test_read_history_reads_na_as_nan_and_leaves_out_empty_columns(tmp_path):
    """Keras' CSVLogger writes "NA" for the val_* metrics of an epoch that did
    not validate (validation_freq > 1, or no validation data at all)."""
    path = tmp_path / "history.csv"
    path.write_text("epoch,dice,loss,val_dice,val_loss\n"
                    "0,0.5,1.0,NA,NA\n1,0.6,0.8,0.55,NA\n2,0.7,0.6,,NA\n")
    history = read_history(path)
    assert list(history) == ["epoch", "dice", "loss", "val_dice"]  # val_loss: never logged
    assert history["epoch"] == [0, 1, 2] and history["loss"] == [1.0, 0.8, 0.6]
    np.testing.assert_array_equal(history["val_dice"], [np.nan, 0.55, np.nan])
    figure = plot_history(path)
    assert [line.get_label() for line in figure.axes[1].lines] == ["training", "validation"]
    plt.close(figure)


def test_paint_gives_each_label_its_colour_over_the_gray_image():
    image = np.full((2, 3), 0.5, np.float32)
    labels = np.array([[0, 7, 7], [0, 9, 0]])
    painted = _paint(image, labels, alpha=0.55)
    assert painted.shape == (2, 3, 3) and painted.dtype == np.uint8
    assert (painted[labels == 0] == 127).all()  # the background is the image
    tab10 = np.array(plt.get_cmap("tab10").colors[:2]) * 255
    expected = 0.45 * 127 + 0.55 * tab10  # label 7: the first colour, 9: the second
    np.testing.assert_allclose(painted[0, 1:], [expected[0]] * 2, atol=1)
    np.testing.assert_allclose(painted[1, 1], expected[1], atol=1)


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
