"""The merges and splits of a segmentation are found on real ISBI label
geometry, and each one's gain is the V_rand that repairing it gives."""

import cv2
import numpy as np
import pytest

from unet_keras.datasets import load_isbi2012
from unet_keras.errors import segmentation_errors
from unet_keras.evaluate import THRESHOLDS, rand_and_info_scores, score_isbi


@pytest.fixture(scope="module")
def real_mask(isbi_data):
    """Slice 0's membrane mask (1 = membrane), uint8."""
    _, masks = load_isbi2012(isbi_data, split="train")
    return masks[0, ..., 0].astype(np.uint8)


def _map(mask):
    """A confident membrane map that draws exactly the true membranes."""
    return np.where(mask == 1, 0.9, 0.02).astype(np.float32)


def _cells(mask):
    _, cells, stats, centres = cv2.connectedComponentsWithStats(1 - mask, connectivity=4)
    return cells, stats[:, cv2.CC_STAT_AREA], centres


def _near(cells, ids, radius):
    """Pixels within `radius` of any of the cells `ids`."""
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2)
    return cv2.dilate(np.isin(cells, ids).astype(np.uint8), disk) > 0


def _open_gap(prob, mask, cells, a, b, radius=6):
    """Erases the membrane between cells a and b (and nowhere near a third cell);
    returns whether the two cells now touch."""
    others = [c for c in np.unique(cells) if c not in (0, a, b)]
    gap = (mask == 1) & _near(cells, [a], radius) & _near(cells, [b], radius)
    gap &= ~_near(cells, others, radius)
    prob[gap] = 0.02
    return gap.any()


def _neighbour_pairs(mask, cells, sizes, count):
    """Pairs of large cells that face each other across a membrane."""
    pairs = []
    for a in np.argsort(sizes[1:])[::-1][:40] + 1:
        for b in np.unique(cells[_near(cells, [a], 6) & (cells > 0)]):
            if b != a and sizes[b] > 500 and not {a, b} & {x for p in pairs for x in p}:
                pairs.append((int(a), int(b)))
                break
        if len(pairs) == count:
            break
    return pairs


def test_the_ground_truth_has_no_errors(real_mask):
    errors = segmentation_errors(_map(real_mask), real_mask, threshold=0.5)
    assert errors.v_rand == pytest.approx(1.0)
    assert errors.merges == [] and errors.splits == []
    assert errors.labels.shape == errors.true_labels.shape == real_mask.shape


def test_one_opened_membrane_is_the_one_merge_and_its_gain_is_the_whole_loss(real_mask):
    cells, sizes, _ = _cells(real_mask)
    prob = _map(real_mask)
    (a, b), = _neighbour_pairs(real_mask, cells, sizes, 1)
    assert _open_gap(prob, real_mask, cells, a, b)

    errors = segmentation_errors(prob, real_mask, threshold=0.5)
    assert errors.v_rand < 0.99  # one merge of two large cells
    assert len(errors.merges) == 1 and errors.splits == []
    merge = errors.merges[0]
    assert merge.kind == "merge"
    assert merge.parts == tuple(sorted((int(sizes[a]), int(sizes[b])), reverse=True))
    assert merge.gain == pytest.approx(1.0 - errors.v_rand)
    row, col = merge.centroid  # the merged segment's centre, between the two cells
    centre = np.argwhere(np.isin(cells, [a, b])).mean(axis=0)
    assert abs(row - centre[0]) < 10 and abs(col - centre[1]) < 10


def test_merge_gains_are_the_scores_of_the_repaired_segmentation(real_mask):
    cells, sizes, _ = _cells(real_mask)
    prob = _map(real_mask)
    pairs = _neighbour_pairs(real_mask, cells, sizes, 6)
    assert len(pairs) == 6 and all(_open_gap(prob, real_mask, cells, a, b) for a, b in pairs)

    errors = segmentation_errors(prob, real_mask, threshold=0.5)
    assert len(errors.merges) == 6
    gains = [m.gain for m in errors.merges]
    assert gains == sorted(gains, reverse=True) and gains[-1] > 0
    for merge in errors.merges:  # cut the merged segment along the true cells
        repaired = errors.labels.copy()
        inside = errors.labels == merge.label
        repaired[inside] = errors.labels.max() + errors.true_labels[inside]
        score = rand_and_info_scores(repaired, errors.true_labels)["v_rand"]
        assert score == pytest.approx(errors.v_rand + merge.gain, abs=1e-12)


def test_split_gains_are_the_scores_of_the_repaired_segmentation(real_mask):
    """A band of membrane across each of the ten largest cells cuts it in pieces."""
    cells, sizes, centres = _cells(real_mask)
    prob = _map(real_mask)
    cut = np.argsort(sizes[1:])[::-1][:10] + 1
    for cell in cut:
        x = int(centres[cell][0])
        band = prob[:, x - 1 : x + 1]
        band[cells[:, x - 1 : x + 1] == cell] = 0.9

    errors = segmentation_errors(prob, real_mask, threshold=0.5)
    assert errors.merges == []
    assert len(errors.splits) == 10
    true_ids = {int(errors.true_labels[cells == c][0]) for c in cut}
    assert {split.label for split in errors.splits} == true_ids
    assert {split.kind for split in errors.splits} == {"split"}
    for split in errors.splits:  # join the pieces of the cell
        repaired = errors.labels.copy()
        repaired[errors.true_labels == split.label] = errors.labels.max() + 1
        score = rand_and_info_scores(repaired, errors.true_labels)["v_rand"]
        assert score == pytest.approx(errors.v_rand + split.gain, abs=1e-12)
        assert sum(split.parts) <= (errors.true_labels == split.label).sum()


def test_the_slice_is_segmented_as_score_isbi_does(real_mask, rng):
    prob = cv2.GaussianBlur(_map(real_mask), (0, 0), 1.5)
    prob = np.clip(prob + rng.normal(0, 0.15, prob.shape), 0, 1)
    scores = score_isbi(prob, real_mask)
    best = segmentation_errors(prob, real_mask)  # the slice's best threshold of the grid
    assert best.threshold in THRESHOLDS
    assert best.v_rand == pytest.approx(scores["v_rand"])
    at = segmentation_errors(prob[..., None], real_mask, threshold=0.5)
    assert at.v_rand == pytest.approx(score_isbi(prob, real_mask, thresholds=[0.5])["v_rand"])
    assert at.merges and at.splits  # here the noise both joins and cuts cells
    everything = at.costliest()
    assert len(everything) == len(at.merges) + len(at.splits)
    assert [e.gain for e in everything] == sorted((e.gain for e in everything), reverse=True)
    assert at.costliest(2) == everything[:2]
    assert {e.kind for e in everything} == {"merge", "split"}


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p, m: (np.stack([p, p]), np.stack([m, m])), "one slice"),
        (lambda p, m: (p, m * 255), "binary"),
        (lambda p, m: (p[:-1], m), "differ in shape"),
    ],
)
def test_bad_input_is_refused(real_mask, change, message):
    prob, mask = change(_map(real_mask), real_mask)
    with pytest.raises(ValueError, match=message):
        segmentation_errors(prob, mask)


@pytest.mark.parametrize("options, message", [
    (dict(threshold=1.5), "threshold"), (dict(min_part_pixels=0), "min_part_pixels"),
])
def test_bad_options_are_refused(real_mask, options, message):
    with pytest.raises(ValueError, match=message):
        segmentation_errors(_map(real_mask), real_mask, **options)
