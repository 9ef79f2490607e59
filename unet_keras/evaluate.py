"""ISBI 2012 scoring: V_rand and V_info after border thinning.

This follows the official Fiji scoring ("Segmentation evaluation after border
thinning", `RandError.getMaximalVRandAfterThinning` and
`VariationOfInformation.getMaximalVInfoAfterThinning` of Trainable
Segmentation, Arganda-Carreras et al. 2015). For each threshold and slice:

* Ground-truth segments are the 4-connected components of the cell interior
  (`membrane_mask == 0`); only those pixels are counted, the ground-truth
  membrane is ignored.
* The proposal's interior is where the interior probability
  `1 - membrane_prob` is strictly above the threshold (Fiji binarises with
  `value > threshold`). At threshold 1.0 nothing is interior; at 0.0 every
  pixel with a membrane probability below 1 is.
* The interior's 4-connected components are grown into the boundary by Fiji's
  4-connected watershed (Vincent-Soille flooding of the binary image); the
  pixels where two fronts meet (the watershed lines, label 0) count as
  singletons, each its own segment. `thinned_segmentation` reproduces that
  flooding pixel for pixel, queue order and tie-breaking included (checked
  against a line-by-line Python port of the Java code in the tests); a plain
  `skimage.segmentation.watershed(..., watershed_line=True)` breaks ties
  elsewhere and moves V_rand and V_info by up to ~1e-3 on noisy maps.
  Without any interior pixel Fiji's watershed makes the whole slice one
  basin, and so does `thinned_segmentation`.
* V_rand and V_info are computed from the joint distribution of the counted
  pixels, per slice, and averaged over slices (macro average, as the script's
  `perSliceAverage=true`); the reported score is the best over thresholds.

Known deviations from Fiji, both in corner cases:

* Fiji accumulates its thresholds (`th += 0.1`): its 0.6 ... 1.0 lie one double
  below those of `np.linspace` here (0.6 vs 0.6000000000000001, ...,
  0.9999999999999999 vs 1.0), so a pixel whose interior probability is exactly
  one of these (or membrane probability 0, at 1.0) is interior there, not here.
* Fiji stores labels as 16-bit images; more than 65535 segments in a slice
  (never the case on ISBI data) would be clipped there, not here.

As in Fiji, V_info is 0 when either segmentation is a single segment (zero
entropy), even for a perfect single-segment prediction.
"""

import numpy as np
from scipy import ndimage

THRESHOLDS = tuple(float(t) for t in np.linspace(0.0, 1.0, 11))
_FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)
_ROUNDING = 1e-6  # probabilities this far outside [0, 1] are clipped, not rejected


# ---------------------------------------------------------------------------
# Segmentations
# ---------------------------------------------------------------------------
def thinned_segmentation(interior):
    """Segments of a binary interior map after Fiji's border thinning.

    The 4-connected components of `interior` are flooded into the boundary
    pixels exactly as Fiji's `WatershedTransform2D` (Vincent-Soille, 4
    neighbours) does on the binary image of the ISBI scoring: breadth-first
    from the components, one distance layer at a time, each layer in Fiji's
    queue order (the first layer column by column as ImageJ lists pixels,
    later ones in the order their pixels were queued). A boundary pixel takes
    the one label among its already processed neighbours, or becomes a
    watershed line (0) if they carry several labels or none.

    Args:
        interior: Boolean array `(H, W)`, True where the proposal is interior.

    Returns:
        int32 labels `(H, W)`: 1..n for the segments, 0 for the watershed
        lines. With no interior pixel at all the whole image is segment 1
        (what Fiji's watershed gives).
    """
    interior = np.asarray(interior, dtype=bool)
    if interior.ndim != 2:
        raise ValueError(f"`interior` must be a 2D boolean map, got shape {interior.shape}.")
    if not interior.any():
        return np.ones(interior.shape, np.int32)
    labels, _ = ndimage.label(interior, structure=_FOUR_CONNECTED)
    labels = labels.astype(np.int32)
    if interior.all():
        return labels
    height, width = interior.shape
    flood = _Flood(labels.ravel(), interior.ravel(), width)
    layer = np.flatnonzero(~interior & ndimage.binary_dilation(interior, _FOUR_CONNECTED))
    rows, cols = np.divmod(layer, width)
    keys = cols * height + rows  # ImageJ lists pixels column by column
    while layer.size:
        layer, keys = flood.step(layer, keys)
    return flood.labels.reshape(height, width)


class _Flood:
    """State of the layer-by-layer flooding of `thinned_segmentation`."""

    def __init__(self, labels, processed, width):
        self.labels, self.processed, self.width = labels, processed.copy(), width
        self.height = labels.size // width
        self.rank = np.full(labels.size, -1, np.int64)  # position in Fiji's queue
        self.layer_of = np.zeros(labels.size, np.int32)
        self.layer, self.next_rank = 0, 0

    def _neighbours(self, pixels):
        """Flat indices of the left, up, right and down neighbours (Fiji's order)."""
        rows, cols = np.divmod(pixels, self.width)
        inside = np.stack([cols > 0, rows > 0, cols < self.width - 1, rows < self.height - 1])
        offsets = np.array([-1, -self.width, 1, self.width])[:, None]
        return np.where(inside, pixels + offsets, 0), inside

    def step(self, pixels, keys):
        """Labels one distance layer; returns the next one and its queue keys."""
        self.layer += 1
        pixels = pixels[np.argsort(keys, kind="stable")]
        self.rank[pixels] = np.arange(self.next_rank, self.next_rank + pixels.size)
        self.next_rank += pixels.size
        self.layer_of[pixels] = self.layer
        neighbours, inside = self._neighbours(pixels)
        done = np.where(inside & self.processed[neighbours], self.labels[neighbours], 0)
        earlier = (
            inside
            & (self.layer_of[neighbours] == self.layer)
            & (self.rank[neighbours] < self.rank[pixels])
        )
        # A pixel also sees the pixels of its own layer that Fiji processed
        # before it: iterate to the fixed point (the order has no cycles).
        self.labels[pixels] = 0
        while True:
            seen = np.where(earlier, self.labels[neighbours], done)
            largest = seen.max(axis=0)
            smallest = np.where(seen > 0, seen, np.iinfo(np.int32).max).min(axis=0)
            new = np.where((largest > 0) & (smallest == largest), largest, 0)
            if np.array_equal(new, self.labels[pixels]):
                break
            self.labels[pixels] = new
        self.processed[pixels] = True
        # Fiji queues a pixel when the first of its neighbours is processed,
        # in that neighbour's left, up, right, down order.
        fresh = inside & ~self.processed[neighbours]
        queue_keys = self.rank[pixels][None, :] * 4 + np.arange(4)[:, None]
        candidates, candidate_keys = neighbours[fresh], queue_keys[fresh]
        order = np.argsort(candidate_keys, kind="stable")
        following, first = np.unique(candidates[order], return_index=True)
        return following, candidate_keys[order][first]


def _ground_truth_segments(membrane_mask):
    """4-connected components of the interior (mask == 0); membrane is 0."""
    labels, _ = ndimage.label(membrane_mask == 0, structure=_FOUR_CONNECTED)
    return labels


# ---------------------------------------------------------------------------
# Scores of two label images
# ---------------------------------------------------------------------------
def _joint_counts(pred, true):
    """Non-zero counts of the contingency table of two non-negative label arrays."""
    n_true = int(true.max()) + 1
    joint = pred.astype(np.int64) * n_true + true
    if (int(pred.max()) + 1) * n_true <= 4 * joint.size:
        counts = np.bincount(joint)
        return counts[counts > 0]
    return np.unique(joint, return_counts=True)[1]


def _entropy(counts, n, singletons=0):
    """Entropy (nats) of a partition of n pixels into `counts` plus singletons."""
    q = counts[counts > 0] / n
    return float(-(q * np.log(q)).sum() + singletons / n * np.log(n))


def _scores(pred, true):
    """Scores of flat label arrays over counted pixels (true >= 1, pred 0 = singletons)."""
    n = true.size
    singletons = pred == 0
    n0 = int(singletons.sum())
    pred_seg, true_seg = pred[~singletons], true[~singletons]
    true_counts = np.bincount(true).astype(np.float64)
    pred_counts = np.bincount(pred_seg).astype(np.float64) if pred_seg.size else np.zeros(1)
    joint = _joint_counts(pred_seg, true_seg).astype(np.float64) if pred_seg.size else np.zeros(1)

    sum_joint = float(joint @ joint) + n0
    sum_true = float(true_counts @ true_counts)
    sum_pred = float(pred_counts @ pred_counts) + n0

    h_true = _entropy(true_counts, n)
    h_pred = _entropy(pred_counts, n, n0)
    mutual = h_pred + h_true - _entropy(joint, n, n0)
    if h_true > 0 and h_pred > 0:
        info_split, info_merge = mutual / h_pred, mutual / h_true
        v_info = 2.0 * mutual / (h_pred + h_true)
    else:  # Fiji's convention for a segmentation without information
        info_split, info_merge = (0.0, 1.0) if h_pred == 0 else (1.0, 0.0)
        v_info = 0.0
    return {
        "v_rand": 2.0 * sum_joint / (sum_true + sum_pred),
        "v_info": v_info,
        "rand_split": sum_joint / sum_true,
        "rand_merge": sum_joint / sum_pred,
        "info_split": info_split,
        "info_merge": info_merge,
    }


def rand_and_info_scores(pred_labels, true_labels):
    """Foreground-restricted V_rand and V_info of two label images.

    Only pixels with `true_labels != 0` are counted (0 is the ground-truth
    membrane). Pixels with `pred_labels == 0` count as singletons, each its
    own segment (the thinned boundary of the ISBI scoring). Probabilities are
    normalised by n^2 (Fiji), so self-pairs count: `skimage`'s
    `adapted_rand_error` counts distinct pairs n(n-1) instead and treats
    label 0 of the test image as one segment.

    Args:
        pred_labels: Non-negative integer labels of the proposal.
        true_labels: Non-negative integer labels of the ground truth, same
            shape.

    Returns:
        A dict with `v_rand`, `v_info` (1 is perfect) and their halves:
        `rand_split` = sum p_ij^2 / sum t_j^2 and `rand_merge` = sum p_ij^2 /
        sum s_i^2 (s: proposal, t: truth); `info_split` = I / H(S) and
        `info_merge` = I / H(T).

    Raises:
        ValueError: For shapes that differ, labels that are not non-negative
            integers, or a ground truth without any non-zero label.
    """
    pred = np.asarray(pred_labels)
    true = np.asarray(true_labels)
    if pred.shape != true.shape:
        raise ValueError(f"Label images differ in shape: {pred.shape} and {true.shape}.")
    for name, labels in (("pred_labels", pred), ("true_labels", true)):
        if labels.dtype.kind not in "iub":
            raise ValueError(f"`{name}` must hold integer labels, got dtype {labels.dtype}.")
        if labels.size and labels.min() < 0:
            raise ValueError(f"`{name}` must be non-negative (0 has a special meaning).")
    counted = true.ravel() != 0
    if not counted.any():
        raise ValueError("`true_labels` has no non-zero pixel: there is nothing to score.")
    values, pred = np.unique(pred.ravel()[counted], return_inverse=True)
    if values[0] != 0:
        pred = pred + 1  # index 0 is kept for the singletons
    _, true = np.unique(true.ravel()[counted], return_inverse=True)
    return _scores(pred.ravel(), true.ravel() + 1)


# ---------------------------------------------------------------------------
# The ISBI 2012 score of membrane probability maps
# ---------------------------------------------------------------------------
def is_single_slice(array):
    """Whether `array` is one `(H, W)` or `(H, W, 1)` slice (as `predict_tiled`
    returns it): `(N, H, W)` stacks of width 1 are not supported."""
    return np.ndim(array) == 2 or (np.ndim(array) == 3 and np.shape(array)[-1] == 1)


def _as_slices(array, name):
    array = np.asarray(array)
    array = array[..., 0] if array.ndim in (3, 4) and array.shape[-1] == 1 else array
    array = array[None] if array.ndim == 2 else array
    if array.ndim != 3:
        raise ValueError(
            f"`{name}` must be (N, H, W), (N, H, W, 1) or one (H, W) or (H, W, 1) slice, "
            f"got shape {array.shape}."
        )
    if array.size == 0:
        raise ValueError(f"`{name}` is empty.")
    return array


def as_membrane_slices(membrane_prob, dtype=np.float64):
    """Membrane probabilities as `(N, H, W)` slices, checked.

    Accepts `(N, H, W)`, `(N, H, W, 1)` or one `(H, W)` or `(H, W, 1)` slice
    (`is_single_slice`); round-off up to 1e-6 outside [0, 1] (from filtering
    or resampling) is clipped.

    Raises:
        ValueError: For another shape, a non-numeric dtype, values that are
            not finite or lie outside [0, 1].
    """
    prob = _as_slices(membrane_prob, "membrane_prob")
    if prob.dtype.kind not in "fiub":
        raise ValueError(f"`membrane_prob` must be numeric, got dtype {prob.dtype}.")
    prob = prob.astype(dtype)
    if not np.isfinite(prob).all():
        raise ValueError("`membrane_prob` contains NaN or infinite values.")
    if prob.min() < -_ROUNDING or prob.max() > 1 + _ROUNDING:
        raise ValueError(
            f"`membrane_prob` must lie in [0, 1], got [{prob.min():g}, {prob.max():g}]. "
            "Pass membrane probabilities, e.g. the model's sigmoid output."
        )
    return np.clip(prob, 0.0, 1.0)


def _validate(membrane_prob, membrane_mask, thresholds):
    prob = as_membrane_slices(membrane_prob)
    mask = _as_slices(membrane_mask, "membrane_mask")
    if prob.shape != mask.shape:
        raise ValueError(
            f"`membrane_prob` {np.shape(membrane_prob)} and `membrane_mask` "
            f"{np.shape(membrane_mask)} differ in shape as (N, H, W) slices: pass the masks of "
            "the predicted slices, at the prediction's height and width."
        )
    if mask.dtype.kind not in "fiub" or not ((mask == 0) | (mask == 1)).all():
        raise ValueError(
            "`membrane_mask` must be binary with 1 = membrane and 0 = interior. "
            "ISBI 2012 label files store 0 = membrane and 255 = interior: "
            "pass `label == 0`."
        )
    mask = mask.astype(bool)
    thresholds = np.asarray(THRESHOLDS if thresholds is None else thresholds, np.float64)
    if thresholds.ndim != 1 or thresholds.size == 0 or not np.isfinite(thresholds).all():
        raise ValueError("`thresholds` must be a non-empty 1D sequence of finite numbers.")
    if thresholds.min() < 0 or thresholds.max() > 1:
        raise ValueError("`thresholds` must lie in [0, 1].")
    return prob, mask, thresholds


def _pixel_scores(prob, mask):
    """Pixel error, Dice and IoU of the membrane class at 0.5.

    A pixel is predicted membrane unless its interior probability is above
    0.5, i.e. where `membrane_prob >= 0.5`.
    """
    pred = ~((1.0 - prob) > 0.5)
    overlap = float(np.logical_and(pred, mask).sum())
    union = float(np.logical_or(pred, mask).sum())
    total = float(pred.sum() + mask.sum())
    return {
        "pixel_error": float((pred != mask).mean()),
        "dice": 2.0 * overlap / total if total else 1.0,
        "iou": overlap / union if union else 1.0,
    }


def score_isbi(membrane_prob, membrane_mask, thresholds=None):
    """ISBI 2012 scores of membrane probability maps against binary labels.

    V_rand and V_info are computed as by the official Fiji script (see the
    module docstring): per threshold and slice after border thinning,
    averaged over slices, best over thresholds.

    Args:
        membrane_prob: Membrane probabilities in [0, 1], in a shape that
            `as_membrane_slices` takes (round-off up to 1e-6 is clipped).
        membrane_mask: Binary labels of the same slices, in any such shape,
            1 = membrane, 0 = cell interior (ISBI label files: `label == 0`).
        thresholds: Thresholds of the interior probability `1 - prob`;
            default 0.0, 0.1, ..., 1.0 as the official scoring.

    Returns:
        A dict with `v_rand`, `v_info` (best over thresholds, 1 is perfect),
        `v_rand_threshold`, `v_info_threshold` (the first best threshold),
        the split/merge halves at those thresholds (`v_rand_split`,
        `v_rand_merge`, `v_info_split`, `v_info_merge`, slice averages), the
        scores of each slice at those thresholds (`v_rand_per_slice`,
        `v_info_per_slice`, lists whose means are `v_rand` and `v_info`), the
        curves `thresholds`, `v_rand_curve`, `v_info_curve` (lists), and at
        threshold 0.5 the `pixel_error`, `dice` and `iou` of the membrane
        class.

    Raises:
        ValueError: For shapes that differ, probabilities outside [0, 1] or
            not finite, a mask that is not binary, bad thresholds, or a slice
            without any ground-truth interior.
    """
    prob, mask, thresholds = _validate(membrane_prob, membrane_mask, thresholds)
    keys = ("v_rand", "v_info", "rand_split", "rand_merge", "info_split", "info_merge")
    table = {key: np.zeros((thresholds.size, len(prob))) for key in keys}
    for s in range(len(prob)):
        counted = ~mask[s].ravel()
        if not counted.any():
            raise ValueError(f"Slice {s} of `membrane_mask` has no interior pixel to score.")
        true = _ground_truth_segments(mask[s]).ravel()[counted]
        interior_prob = 1.0 - prob[s]
        for k, threshold in enumerate(thresholds):
            pred = thinned_segmentation(interior_prob > threshold).ravel()[counted]
            for key, value in _scores(pred, true).items():
                table[key][k, s] = value
    curves = {key: values.mean(axis=1) for key, values in table.items()}
    best_rand = int(np.argmax(curves["v_rand"]))
    best_info = int(np.argmax(curves["v_info"]))
    result = {
        "v_rand": float(curves["v_rand"][best_rand]),
        "v_info": float(curves["v_info"][best_info]),
        "v_rand_threshold": float(thresholds[best_rand]),
        "v_info_threshold": float(thresholds[best_info]),
        "v_rand_split": float(curves["rand_split"][best_rand]),
        "v_rand_merge": float(curves["rand_merge"][best_rand]),
        "v_info_split": float(curves["info_split"][best_info]),
        "v_info_merge": float(curves["info_merge"][best_info]),
        # One merge in one slice often decides a comparison of two models.
        "v_rand_per_slice": table["v_rand"][best_rand].tolist(),
        "v_info_per_slice": table["v_info"][best_info].tolist(),
        "thresholds": thresholds.tolist(),
        "v_rand_curve": curves["v_rand"].tolist(),
        "v_info_curve": curves["v_info"].tolist(),
    }
    result.update(_pixel_scores(prob, mask))
    return result
