"""Where a slice's V_rand is lost: the cells a segmentation merges or splits,
and what each error costs.

V_rand is one number per slice. With a few hundred cells a slice, a single
merge of two large cells across a faint membrane can cost more than all the
small errors together, and deciding what to change (the model, the
post-processing, nothing) starts with seeing that merge. `segmentation_errors`
segments a slice exactly as `score_isbi` does and lists:

* merges: predicted segments that cover pixels of several true cells;
* splits: true cells whose pixels fall into several predicted segments;

each with its gain, the V_rand the slice would score if only that error were
repaired. In the foreground-restricted Rand F-score of the ISBI scoring,

    V_rand = 2 J / (S + T),  J = sum_ij p_ij^2,  S = sum_i s_i^2,  T = sum_j t_j^2

(pixel counts, boundary pixels as singletons): repairing the merge of segment
i cuts it along the true cells, which takes its wrongly joined pairs
s_i^2 - sum_j p_ij^2 out of S; repairing the split of cell j joins its
pieces, which adds its wrongly separated pairs to J and to S (exact when the
pieces hold no other cell). The gains of several errors do not add up
exactly, but they rank the errors.
"""

from typing import NamedTuple

import numpy as np
from scipy import ndimage

from unet_keras.evaluate import (
    _ground_truth_segments,
    _validate,
    score_isbi,
    thinned_segmentation,
)


class SegmentError(NamedTuple):
    """One merge or split of a segmentation.

    Attributes:
        kind: `"merge"` or `"split"`.
        label: The predicted segment (a merge) or true cell (a split), as
            labelled in `SegmentationErrors.labels` or `.true_labels`.
        parts: Pixel counts of the pieces, largest first: the true cells a
            merged segment covers, or the predicted segments a split cell falls
            into (boundary pixels left out).
        gain: How much the slice's V_rand would rise if only this error were
            repaired.
        centroid: (row, column) of the segment or cell.
    """

    kind: str
    label: int
    parts: tuple
    gain: float
    centroid: tuple


class SegmentationErrors(NamedTuple):
    """The errors of one slice's segmentation, costliest first."""

    v_rand: float
    threshold: float
    labels: np.ndarray  # predicted segments, 0 = boundary (as the ISBI scoring makes them)
    true_labels: np.ndarray  # 4-connected ground-truth cells, 0 = membrane
    merges: list
    splits: list

    def costliest(self, count=None):
        """Merges and splits together, largest gain first (the first `count`)."""
        return sorted(self.merges + self.splits, key=lambda error: -error.gain)[:count]


def _one_slice(array):
    """(H, W, 1) as (H, W); anything else is left to `score_isbi`'s checks."""
    array = np.asarray(array)
    return array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array


class _Table(NamedTuple):
    """The contingency table of the counted pixels, and the sums of V_rand."""

    pairs: np.ndarray  # (2, K): predicted segment and true cell of each non-empty entry
    joint: np.ndarray  # (K,): its pixel count
    segment_size: np.ndarray  # by predicted label, boundary pixels left out
    cell_size: np.ndarray  # by true label
    cell_singletons: np.ndarray  # boundary pixels (singletons) in each true cell
    j_sum: float  # sum p_ij^2, singletons included
    s_sum: float
    t_sum: float

    @property
    def v_rand(self):
        return 2.0 * self.j_sum / (self.s_sum + self.t_sum)

    def merge_gain(self, label, parts):
        """Cut segment `label` along the true cells: its wrong pairs leave S."""
        wrong_pairs = self.segment_size[label] ** 2 - float(parts @ parts)
        return 2.0 * self.j_sum / (self.s_sum - wrong_pairs + self.t_sum) - self.v_rand

    def split_gain(self, label, parts):
        """Join the pieces of cell `label`: its wrong pairs join J and S."""
        wrong_pairs = (
            self.cell_size[label] ** 2 - float(parts @ parts) - self.cell_singletons[label]
        )
        return (
            2.0 * (self.j_sum + wrong_pairs) / (self.s_sum + wrong_pairs + self.t_sum)
            - self.v_rand
        )


def _table(pred, true):
    singleton = pred == 0
    n_singletons = int(singleton.sum())
    pairs, joint = np.unique(
        np.stack([pred[~singleton], true[~singleton]]), axis=1, return_counts=True
    )
    joint = joint.astype(np.float64)
    segment_size = np.bincount(pred[~singleton]).astype(np.float64)
    cell_size = np.bincount(true).astype(np.float64)
    return _Table(
        pairs=pairs, joint=joint, segment_size=segment_size, cell_size=cell_size,
        cell_singletons=np.bincount(true[singleton], minlength=cell_size.size),
        j_sum=float(joint @ joint) + n_singletons,
        s_sum=float(segment_size @ segment_size) + n_singletons,
        t_sum=float(cell_size @ cell_size),
    )


def _pieces(keys, counts):
    """{key: the counts of its pieces}, for keys that have any."""
    if keys.size == 0:
        return {}
    order = np.argsort(keys, kind="stable")
    starts = np.flatnonzero(np.diff(keys[order])) + 1
    return dict(zip(keys[order][np.r_[0, starts]].tolist(), np.split(counts[order], starts)))


def _listed(kind, pieces, gain, label_image, min_part_pixels):
    """The errors among `pieces` (two pieces of `min_part_pixels` or more),
    costliest first, with the centroids of their labels in `label_image`."""
    found = []
    for label, parts in pieces.items():
        parts = np.sort(parts)[::-1]
        if len(parts) >= 2 and parts[1] >= min_part_pixels:
            found.append((label, tuple(int(p) for p in parts), float(gain(label, parts))))
    found.sort(key=lambda error: -error[2])
    centres = ndimage.center_of_mass(label_image > 0, label_image, [f[0] for f in found])
    return [
        SegmentError(kind, label, parts, gain, tuple(float(c) for c in centre))
        for (label, parts, gain), centre in zip(found, centres)
    ]


def segmentation_errors(membrane_prob, membrane_mask, threshold=None, min_part_pixels=20):
    """The merges and splits of one slice's segmentation, costliest first.

    The slice is segmented as the ISBI scoring does it (`score_isbi`): the
    interior is where `1 - membrane_prob > threshold`, its 4-connected
    components are grown into the boundary, and only pixels that are interior
    in the ground truth count.

    Args:
        membrane_prob: Membrane probabilities of one slice, `(H, W)` or
            `(H, W, 1)`, in [0, 1].
        membrane_mask: Its binary labels, 1 = membrane, 0 = cell interior.
        threshold: Threshold of the interior probability; pass
            `score_isbi(...)["v_rand_threshold"]` to see the errors the stack's
            score counts. None takes the threshold of the official grid with
            the best V_rand on this slice.
        min_part_pixels: An error is listed when its second-largest piece has
            at least this many pixels, so that a thinned boundary pixel or a
            speck is not listed as an error of its own (its cost still counts
            in V_rand and in the gains).

    Returns:
        A `SegmentationErrors` with the slice's `v_rand`, the `threshold`
        used, the predicted `labels` and `true_labels` images, and the
        `merges` and `splits` as lists of `SegmentError`, largest gain first.

    Raises:
        ValueError: For more than one slice, shapes that differ, probabilities
            outside [0, 1], a mask that is not binary or has no interior, or a
            threshold outside [0, 1].
    """
    prob, mask, _ = _validate(_one_slice(membrane_prob), _one_slice(membrane_mask), None)
    if len(prob) != 1:
        raise ValueError(
            f"`segmentation_errors` takes one slice, got {len(prob)}: "
            "pass `membrane_prob[i]` and `membrane_mask[i]`."
        )
    if threshold is not None and not 0 <= threshold <= 1:
        raise ValueError(f"`threshold` must lie in [0, 1], got {threshold!r}.")
    if int(min_part_pixels) < 1:
        raise ValueError(f"`min_part_pixels` must be >= 1, got {min_part_pixels!r}.")
    prob, mask = prob[0], mask[0]
    counted = ~mask
    if not counted.any():
        raise ValueError("`membrane_mask` has no interior pixel: there is nothing to score.")
    true_labels = _ground_truth_segments(mask)
    if threshold is None:  # the slice's own best, as score_isbi finds the stack's
        threshold = score_isbi(prob, mask)["v_rand_threshold"]
    labels = thinned_segmentation((1.0 - prob) > threshold)

    pred, true = labels[counted].astype(np.int64), true_labels[counted].astype(np.int64)
    table = _table(pred, true)
    return SegmentationErrors(
        v_rand=table.v_rand,
        threshold=float(threshold),
        labels=labels,
        true_labels=true_labels,
        merges=_listed(
            "merge", _pieces(table.pairs[0], table.joint), table.merge_gain, labels,
            min_part_pixels,
        ),
        splits=_listed(
            "split", _pieces(table.pairs[1], table.joint), table.split_gain, true_labels,
            min_part_pixels,
        ),
    )
