"""The learned merging of watershed regions: its features, its targets, and
that it repairs what one merging threshold cannot, on real slices."""

import json

import numpy as np
import pytest

from unet_keras.agglomeration import (
    FEATURE_NAMES,
    MergeClassifier,
    NothingToLearn,
    agglomerate_cells,
    agglomerate_membranes,
    region_pairs,
    same_cell,
)
from unet_keras.evaluate import score_isbi
from unet_keras.postprocess import watershed_membranes


def _two_cells_split_in_three():
    """A true membrane at column 30 and a false line at column 60 through the
    right-hand cell: three regions, two of them one true cell."""
    mask = np.zeros((40, 90), np.uint8)
    mask[:, 30] = 1
    prob = np.where(mask == 1, 0.95, 0.01).astype(np.float32)
    prob[:, 60] = 0.6
    image = np.where(mask == 1, 0.1, 0.8).astype(np.float32)  # membranes are dark
    return prob, image, mask


def test_region_pairs_lists_each_touching_pair_once_with_its_features():
    prob, image, _ = _two_cells_split_in_three()
    found = region_pairs(prob, image)
    assert found["regions"].max() == 3 and found["regions"].min() == 1  # no lines
    np.testing.assert_array_equal(found["pairs"], [[1, 2], [2, 3]])
    assert found["features"].shape == (2, len(FEATURE_NAMES))
    assert np.isfinite(found["features"]).all()
    names = list(FEATURE_NAMES)
    boundary_prob = found["features"][:, names.index("boundary_prob_mean")]
    assert boundary_prob[0] == pytest.approx(0.95) and boundary_prob[1] == pytest.approx(0.6)
    boundary_image = found["features"][:, names.index("boundary_image_min")]
    assert boundary_image[0] == pytest.approx(0.1) and boundary_image[1] == pytest.approx(0.8)
    # Counted in 4-neighbour pairs of pixels: one per row, and one per step the
    # boundary takes sideways (the flood gives each membrane pixel to either side).
    assert (found["lengths"] >= 40).all() and (found["lengths"] < 60).all()


def test_same_cell_follows_the_ground_truth():
    prob, image, mask = _two_cells_split_in_three()
    found = region_pairs(prob, image)
    np.testing.assert_array_equal(same_cell(found["regions"], found["pairs"], mask), [0, 1])


def test_same_cell_takes_each_region_s_largest_true_cell():
    """Region 2 leaked over the membrane: 10 columns in cell A, 40 in cell B."""
    mask = np.zeros((8, 91), np.uint8)
    mask[:, 40] = 1  # cell A: columns 0-39, cell B: columns 41-90
    regions = np.ones(mask.shape, np.int32)
    regions[:, 30:81] = 2
    regions[:, 81:] = 3
    pairs = np.array([[1, 2], [2, 3]])
    np.testing.assert_array_equal(same_cell(regions, pairs, mask), [0, 1])


def test_a_slice_without_seeds_has_no_pairs_and_stays_one_cell():
    prob = np.full((32, 32), 0.5, np.float32)
    found = region_pairs(prob, prob)
    assert found["pairs"].shape == (0, 2) and found["features"].shape == (0, len(FEATURE_NAMES))


def test_learned_merging_sees_through_maps_that_fool_one_threshold(misleading_isbi):
    """Faint real membranes and bright false lines: the watershed's merging by
    mean probability merges real cells and keeps the false splits; the
    classifier, fitted on slices 0-5, repairs slices 6 and 7."""
    images, masks, maps = misleading_isbi
    classifier = MergeClassifier.fit(maps[:6], images[:6], masks[:6])
    held_out = slice(6, 8)
    watershed = score_isbi(watershed_membranes(maps[held_out]), masks[held_out])
    learned = score_isbi(
        agglomerate_membranes(maps[held_out], images[held_out], classifier), masks[held_out]
    )
    assert watershed["v_rand"] < 0.92
    assert learned["v_rand"] > watershed["v_rand"] + 0.05
    assert learned["v_info"] > watershed["v_info"] + 0.01
    # The image's darkness along a boundary is what tells real membranes apart here.
    names = list(FEATURE_NAMES)
    assert classifier.coef[names.index("boundary_image_mean")] > 0  # bright: merge


def test_agglomeration_keeps_shapes_and_draws_closed_lines(misleading_isbi):
    images, masks, maps = misleading_isbi
    classifier = MergeClassifier.fit(maps[:6], images[:6], masks[:6])
    labels = agglomerate_cells(maps[6:8, ..., None], images[6:8], classifier)
    assert labels.shape == (2, 512, 512) and labels.dtype == np.int32
    one = agglomerate_cells(maps[6], images[6, ..., 0], classifier)
    np.testing.assert_array_equal(one, labels[0])
    # One slice with a channel axis, as predict_tiled returns it, is one slice too.
    np.testing.assert_array_equal(agglomerate_cells(maps[6, ..., None], images[6], classifier), one)
    closed = agglomerate_membranes(maps[6], images[6, ..., 0], classifier)
    assert closed.shape == (512, 512) and closed.dtype == np.float32
    closed_hw1 = agglomerate_membranes(maps[6, ..., None], images[6], classifier)
    np.testing.assert_array_equal(np.squeeze(closed_hw1), closed)
    np.testing.assert_array_equal(closed == 1.0, (one == 0) | (maps[6] == 1.0))
    # A stricter threshold merges less: at least as many cells.
    assert agglomerate_cells(maps[6], images[6], classifier, 0.9).max() >= one.max()


def test_saved_classifier_predicts_the_same(misleading_isbi, tmp_path):
    images, masks, maps = misleading_isbi
    classifier = MergeClassifier.fit(maps[:3], images[:3], masks[:3], marker_threshold=0.1)
    classifier.save(tmp_path / "merge.json")
    loaded = MergeClassifier.load(tmp_path / "merge.json")
    assert loaded.marker_threshold == 0.1 and loaded.min_marker_size == 10
    np.testing.assert_array_equal(
        agglomerate_cells(maps[6], images[6], loaded),
        agglomerate_cells(maps[6], images[6], classifier),
    )
    saved = json.loads((tmp_path / "merge.json").read_text())
    saved["features"] = saved["features"][:-1]
    (tmp_path / "old.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="other features .* fit it again"):
        MergeClassifier.load(tmp_path / "old.json")


def test_bad_input_is_refused_with_a_reason(misleading_isbi):
    images, masks, maps = misleading_isbi
    with pytest.raises(ValueError, match="differ in shape: pass the slices"):
        MergeClassifier.fit(maps[:2], images[:3], masks[:2])
    with pytest.raises(ValueError, match="must be binary"):
        MergeClassifier.fit(maps[:2], images[:2], masks[:2] * 255)
    with pytest.raises(NothingToLearn, match="all different cells: there is nothing to learn"):
        MergeClassifier.fit(masks[:2], images[:2], masks[:2])  # the truth: no false splits
    flat = np.full_like(maps[:2], 0.5)
    with pytest.raises(NothingToLearn, match="No two seeded regions touch .* trained long enough"):
        MergeClassifier.fit(flat, images[:2], masks[:2])
    classifier = MergeClassifier.fit(maps[:2], images[:2], masks[:2])
    with pytest.raises(ValueError, match="`threshold` must lie in \\(0, 1\\)"):
        agglomerate_cells(maps[6], images[6], classifier, threshold=1.0)
    with pytest.raises(ValueError, match="must lie in \\[0, 1\\]"):
        agglomerate_cells(maps[6] * 2, images[6], classifier)
