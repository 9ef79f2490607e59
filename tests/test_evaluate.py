"""ISBI 2012 scoring (plain NumPy/SciPy: not run again on other backends)."""

from collections import deque

import numpy as np
import pytest
from scipy import ndimage
from skimage.io import imread
from skimage.metrics import adapted_rand_error, variation_of_information

from unet_keras.evaluate import (
    THRESHOLDS,
    rand_and_info_scores,
    score_isbi,
    thinned_segmentation,
)


@pytest.fixture(scope="module")
def isbi_mask(isbi_mirror):
    label = imread(isbi_mirror / "train" / "label" / "0.png")
    return label == 0  # 0 = membrane on disk


def _grid_mask(size=48, cell=12):
    """Membrane lines every `cell` pixels: (size / cell)^2 square cells."""
    mask = np.zeros((size, size), bool)
    mask[::cell] = True
    mask[:, ::cell] = True
    return mask


def _entropy_bits(labels):
    counts = np.unique(labels, return_counts=True)[1] / labels.size
    return float(-(counts * np.log2(counts)).sum())


# ---------------------------------------------------------------------------
# rand_and_info_scores against scikit-image
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_v_rand_agrees_with_skimage_adapted_rand(seed):
    """Without boundary pixels in the proposal the conventions coincide, up to
    skimage counting distinct pairs n(n-1) where Fiji normalises by n^2."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, 6, (40, 50))  # 0 = not counted
    pred = rng.integers(1, 9, (40, 50))  # no singletons
    pred[:20] = true[:20] + 1  # some agreement
    are, sk_recall, sk_precision = adapted_rand_error(true, pred)
    n = np.count_nonzero(true)
    true_sizes = np.bincount(true[true > 0])
    sum_true = float(true_sizes @ true_sizes)
    # skimage: recall = (S_joint - n) / (S_true - n), precision = (S_joint - n) / (S_pred - n)
    sum_joint = n + sk_recall * (sum_true - n)
    sum_pred = n + (sum_joint - n) / sk_precision
    scores = rand_and_info_scores(pred, true)
    assert scores["v_rand"] == pytest.approx(2 * sum_joint / (sum_true + sum_pred), rel=1e-12)
    assert scores["rand_split"] == pytest.approx(sum_joint / sum_true, rel=1e-12)
    assert scores["rand_merge"] == pytest.approx(sum_joint / sum_pred, rel=1e-12)
    # and the two differ only by the self-pairs
    assert scores["v_rand"] == pytest.approx(1 - are, abs=5 / n)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_v_info_agrees_with_skimage_variation_of_information(seed):
    rng = np.random.default_rng(seed)
    true = rng.integers(0, 6, (40, 50))
    pred = rng.integers(1, 9, (40, 50))
    pred[:25] = 3 * true[:25] + 1
    h_pred_given_true, h_true_given_pred = variation_of_information(
        true, pred, ignore_labels=(0,)
    )
    counted = true > 0
    h_true, h_pred = _entropy_bits(true[counted]), _entropy_bits(pred[counted])
    mutual = h_true - h_true_given_pred
    assert mutual == pytest.approx(h_pred - h_pred_given_true, abs=1e-9)
    scores = rand_and_info_scores(pred, true)
    assert scores["v_info"] == pytest.approx(2 * mutual / (h_true + h_pred), rel=1e-9)
    assert scores["info_split"] == pytest.approx(mutual / h_pred, rel=1e-9)
    assert scores["info_merge"] == pytest.approx(mutual / h_true, rel=1e-9)


def test_label_values_do_not_matter():
    rng = np.random.default_rng(3)
    true = rng.integers(0, 5, (30, 30))
    pred = rng.integers(0, 7, (30, 30))
    relabelled_pred = np.where(pred > 0, pred * 1000 + 7, 0)
    relabelled_true = np.where(true > 0, true + 50, 0)
    assert rand_and_info_scores(relabelled_pred, relabelled_true) == pytest.approx(
        rand_and_info_scores(pred, true)
    )


def test_singletons_are_each_their_own_segment():
    """Label 0 of the proposal equals giving each of those pixels a fresh label."""
    rng = np.random.default_rng(4)
    true = rng.integers(1, 4, (20, 20))
    pred = rng.integers(0, 5, (20, 20))
    unique = pred.copy()
    zeros = np.flatnonzero(pred == 0)
    unique.flat[zeros] = 100 + np.arange(zeros.size)
    assert rand_and_info_scores(pred, true) == pytest.approx(rand_and_info_scores(unique, true))


def test_perfect_and_degenerate_label_images():
    true = ndimage.label(~_grid_mask())[0]
    assert rand_and_info_scores(true, true)["v_rand"] == pytest.approx(1.0)
    assert rand_and_info_scores(true, true)["v_info"] == pytest.approx(1.0)
    merged = rand_and_info_scores((true > 0).astype(int), true)
    assert merged["rand_split"] == pytest.approx(1.0)
    assert merged["rand_merge"] < 0.2 and merged["v_info"] == 0.0  # one segment: no information


def test_rand_and_info_scores_rejects_bad_labels():
    with pytest.raises(ValueError, match="shape"):
        rand_and_info_scores(np.ones((3, 3), int), np.ones((3, 4), int))
    with pytest.raises(ValueError, match="integer"):
        rand_and_info_scores(np.ones((3, 3)), np.ones((3, 3), int))
    with pytest.raises(ValueError, match="non-negative"):
        rand_and_info_scores(-np.ones((3, 3), int), np.ones((3, 3), int))
    with pytest.raises(ValueError, match="nothing to score"):
        rand_and_info_scores(np.ones((3, 3), int), np.zeros((3, 3), int))


# ---------------------------------------------------------------------------
# Border thinning
# ---------------------------------------------------------------------------
def test_thinning_leaves_one_pixel_lines_between_segments():
    interior = np.ones((9, 12), bool)
    interior[:, 4:7] = False  # a 3-pixel-wide membrane
    segments = thinned_segmentation(interior)
    assert set(np.unique(segments)) == {0, 1, 2}
    assert (segments == 0).sum() == 9  # one column left
    assert (segments[:, 5] == 0).all()


def test_thinning_without_interior_gives_one_segment():
    assert (thinned_segmentation(np.zeros((5, 6), bool)) == 1).all()
    full = thinned_segmentation(np.ones((5, 6), bool))
    assert (full == 1).all()


def test_thinning_connects_with_four_neighbours_only():
    interior = np.zeros((4, 4), bool)
    interior[0, 0] = interior[1, 1] = True  # diagonal: two segments
    segments = thinned_segmentation(interior)
    assert segments[0, 0] != segments[1, 1]


def _fiji_watershed(interior):
    """A line-by-line port of Fiji's WatershedTransform2D (Vincent-Soille
    flooding, 4-connected) on the binary image of the ISBI scoring: interior
    0, boundary 255; pixels sorted by value, then column by column."""
    height, width = interior.shape
    mask, wshed, inqueue = -2, 0, -3
    labels = np.full((width, height), -1)  # [x][y] as ImageJ
    levels = [[(x, y) for x in range(width) for y in range(height) if interior[y, x] == value]
              for value in (True, False)]

    def neighbours(x, y):
        for u, v in ((x - 1, y), (x, y - 1), (x + 1, y), (x, y + 1)):
            if 0 <= u < width and 0 <= v < height:
                yield u, v

    current, flag = 0, False
    for level in levels:
        fifo = deque()
        for x, y in level:
            labels[x, y] = mask
            if any(labels[u, v] >= wshed for u, v in neighbours(x, y)):
                fifo.append((x, y))
                labels[x, y] = inqueue
        while fifo:
            x, y = fifo.popleft()
            for u, v in neighbours(x, y):
                label = labels[u, v]
                if label > 0:
                    if labels[x, y] == inqueue or (labels[x, y] == wshed and flag):
                        labels[x, y] = label
                    elif labels[x, y] > 0 and labels[x, y] != label:
                        labels[x, y], flag = wshed, False
                elif label == wshed and labels[x, y] == inqueue:
                    labels[x, y], flag = wshed, True
                elif label == mask:
                    labels[u, v] = inqueue
                    fifo.append((u, v))
        for x, y in level:  # new minima
            if labels[x, y] == mask:
                current += 1
                labels[x, y] = current
                fifo.append((x, y))
                while fifo:
                    for u, v in neighbours(*fifo.popleft()):
                        if labels[u, v] == mask:
                            labels[u, v] = current
                            fifo.append((u, v))
    return labels.T


def _same_partition(a, b):
    """Equal up to the label values, with the same pixels at 0."""
    if not np.array_equal(a == 0, b == 0):
        return False
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


@pytest.mark.parametrize("noise", [0.0, 0.3, 0.6])
def test_thinning_equals_a_port_of_the_fiji_watershed(isbi_mask, noise):
    """Same queue order, same tie-breaking where two fronts meet."""
    mask = isbi_mask[:96, 200:296]
    prob = ndimage.gaussian_filter(mask.astype(float), 2)
    prob = np.clip(prob + np.random.default_rng(0).normal(0, noise, prob.shape), 0, 1)
    for threshold in (0.1, 0.5, 0.9):
        interior = (1 - prob) > threshold
        assert _same_partition(thinned_segmentation(interior), _fiji_watershed(interior))


def test_thinning_equals_the_fiji_port_on_random_maps():
    rng = np.random.default_rng(5)
    for _ in range(20):
        interior = ndimage.gaussian_filter(rng.random((23, 31)), 1.2) > 0.5
        assert _same_partition(thinned_segmentation(interior), _fiji_watershed(interior))


def test_fiji_port_without_interior_makes_one_basin():
    assert (_fiji_watershed(np.zeros((4, 5), bool)) == 1).all()


# ---------------------------------------------------------------------------
# score_isbi
# ---------------------------------------------------------------------------
def test_perfect_prediction_scores_one(isbi_mask):
    result = score_isbi(isbi_mask.astype("float32")[None, ..., None], isbi_mask[None, ..., None])
    assert result["v_rand"] == pytest.approx(1.0)
    assert result["v_info"] == pytest.approx(1.0)
    assert result["pixel_error"] == 0.0
    assert result["dice"] == pytest.approx(1.0) and result["iou"] == pytest.approx(1.0)
    assert result["thresholds"] == pytest.approx(list(np.linspace(0, 1, 11)))
    assert len(result["v_rand_curve"]) == len(result["v_info_curve"]) == 11


def test_blurred_and_noisy_predictions_score_lower(isbi_mask):
    mask = isbi_mask.astype(float)
    mild = score_isbi(ndimage.gaussian_filter(mask, 2), isbi_mask)
    strong = score_isbi(ndimage.gaussian_filter(mask, 6), isbi_mask)
    noisy = np.clip(mask + np.random.default_rng(0).normal(0, 0.5, mask.shape), 0, 1)
    noise = score_isbi(noisy, isbi_mask)
    for result in (mild, strong, noise):
        assert result["v_rand"] < 1 and result["v_info"] < 1
        assert result["pixel_error"] > 0
    assert strong["v_rand"] < mild["v_rand"] and strong["v_info"] < mild["v_info"]
    assert strong["dice"] < mild["dice"]


def test_removed_membranes_merge_cells(isbi_mask):
    """Erasing half of the membrane merges cells: a large drop, mostly in merge."""
    prob = isbi_mask.astype(float)
    prob[:, 256:] = 0
    result = score_isbi(prob, isbi_mask)
    assert result["v_rand"] < 0.8
    assert result["v_rand_merge"] < result["v_rand_split"]


def test_best_threshold_and_curves_on_a_grid():
    mask = _grid_mask()
    prob = np.where(mask, 0.65, 0.1)  # membrane only found at thresholds >= 0.4
    result = score_isbi(prob, mask)
    curve = np.array(result["v_rand_curve"])
    assert result["v_rand"] == pytest.approx(1.0)
    assert result["v_rand_threshold"] == pytest.approx(0.4)  # the first best one
    assert curve[:4] == pytest.approx(curve[0]) and curve[0] < 0.2  # all merged
    assert curve[-1] == pytest.approx(curve[0])  # at 1.0 nothing is interior: one segment


def test_scores_are_averaged_over_slices():
    mask = _grid_mask()
    good = mask.astype(float)
    bad = good.copy()
    bad[:, 20:] = 0
    both = score_isbi(np.stack([good, bad]), np.stack([mask, mask]), thresholds=[0.5])
    alone = score_isbi(bad, mask, thresholds=[0.5])
    assert both["v_rand"] == pytest.approx((1 + alone["v_rand"]) / 2)
    assert both["v_info"] == pytest.approx((1 + alone["v_info"]) / 2)
    assert both["v_rand_per_slice"] == pytest.approx([1, alone["v_rand"]])
    assert both["v_info_per_slice"] == pytest.approx([1, alone["v_info"]])


def test_per_slice_scores_are_taken_at_the_best_threshold():
    mask = _grid_mask()
    faint = np.where(mask, 0.65, 0.1)  # membrane found at thresholds >= 0.4
    result = score_isbi(np.stack([faint, mask.astype(float)]), np.stack([mask, mask]))
    assert result["v_rand_threshold"] == pytest.approx(0.4)
    assert result["v_rand_per_slice"] == pytest.approx([1.0, 1.0])
    low = score_isbi(np.stack([faint, mask.astype(float)]), np.stack([mask, mask]),
                     thresholds=[0.3])
    assert low["v_rand_per_slice"][0] < 0.2 and low["v_rand_per_slice"][1] == pytest.approx(1)


def test_threshold_is_strict_on_the_interior_probability():
    mask = _grid_mask()
    prob = np.where(mask, 0.5, 0.0)  # interior probability exactly 0.5 on the membrane
    at_half = score_isbi(prob, mask, thresholds=[0.5])  # 0.5 > 0.5 is false: membrane kept
    below = score_isbi(prob, mask, thresholds=[0.4])  # 0.5 > 0.4: all interior, one cell
    assert at_half["v_rand"] == pytest.approx(1.0)
    assert below["v_rand"] < 0.2
    assert at_half["pixel_error"] == 0.0  # membrane_prob >= 0.5 counts as membrane


def test_default_thresholds():
    assert THRESHOLDS == pytest.approx(tuple(np.linspace(0, 1, 11)))


SINGLE_SLICE_SHAPES = [
    lambda a: a, lambda a: a[..., None], lambda a: a[None], lambda a: a[None, ..., None],
]


@pytest.mark.parametrize("as_prob", SINGLE_SLICE_SHAPES)
@pytest.mark.parametrize("as_mask", SINGLE_SLICE_SHAPES)
def test_one_slice_scores_the_same_in_every_shape(gap_and_specks, as_prob, as_mask):
    """(H, W, 1), as `predict_tiled` returns one image, is one slice, not H."""
    prob, mask = gap_and_specks
    expected = score_isbi(prob, mask, thresholds=[0.3, 0.6])
    result = score_isbi(as_prob(prob), as_mask(mask), thresholds=[0.3, 0.6])
    assert result == expected and len(result["v_rand_per_slice"]) == 1


def test_slices_of_different_shapes_are_refused_with_what_to_pass():
    with pytest.raises(ValueError, match=r"\(8, 8, 1\).*\(2, 8, 8\).*masks of the predicted"):
        score_isbi(np.zeros((8, 8, 1)), np.zeros((2, 8, 8)))


@pytest.mark.parametrize(
    ("prob", "mask", "match"),
    [
        (np.zeros((2, 8, 8)), np.zeros((2, 8, 9)), "shape"),
        (np.full((8, 8), 2.0), np.zeros((8, 8)), r"\[0, 1\]"),
        (np.full((8, 8), np.nan), np.zeros((8, 8)), "NaN"),
        (np.zeros((8, 8)), np.full((8, 8), 255), "label == 0"),
        (np.zeros((8, 8)), np.full((8, 8), 0.5), "binary"),
        (np.zeros((1, 8, 8, 2)), np.zeros((1, 8, 8, 2)), r"\(N, H, W\)"),
        (np.zeros((8, 8)), np.ones((8, 8)), "no interior"),
    ],
)
def test_score_isbi_rejects_bad_inputs(prob, mask, match):
    with pytest.raises(ValueError, match=match):
        score_isbi(prob, mask)


def test_score_isbi_rejects_bad_thresholds():
    mask = _grid_mask()
    with pytest.raises(ValueError, match="thresholds"):
        score_isbi(mask.astype(float), mask, thresholds=[])
    with pytest.raises(ValueError, match="thresholds"):
        score_isbi(mask.astype(float), mask, thresholds=[0.5, 1.5])
