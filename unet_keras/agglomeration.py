"""Learned agglomeration: which of the watershed's regions are one cell.

The seeded watershed (`postprocess.py`) over-segments on purpose: strict
seeds leak into no neighbour, but a cell with a mitochondrion or a faint fold
gets two seeds and is cut in two. The watershed then merges neighbours whose
shared boundary has a mean membrane probability below one threshold. That
single number cannot tell a faint real membrane (keep it: else two cells
merge) from a faint false one (merge it: else one cell is split).

Here a classifier learns the difference from slices with ground truth, in the
spirit of GALA (Nunez-Iglesias et al., PLoS ONE 2013). Every pair of
touching regions is described by its shared boundary (quantiles of the
membrane probability and of the image along it, its length) and by the two
regions (sizes, mean probabilities, seed sizes), and a logistic regression
(scikit-learn) predicts whether both belong to the same true cell. The pairs
are merged by skimage's hierarchical merging, most certain first, while the
pixel-weighted mean probability of "same cell" stays above `threshold` (0.4); a
watershed from the merged seeds then draws the final one-pixel boundaries.

`train` fits it on the network's own maps of its training slices: the small
networks of the CPU presets do not overfit them (their training Dice is that
of the held-out slices), so those maps look like the held-out ones.
"""

import json

import numpy as np
from skimage import graph
from skimage.segmentation import watershed

from unet_keras.evaluate import (
    _as_slices,
    _ground_truth_segments,
    _validate,
    as_membrane_slices,
    is_single_slice,
)
from unet_keras.postprocess import _markers, _merge_seeds, draw_lines, ridge_membranes

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
FEATURE_NAMES = (
    *(f"boundary_prob_{name}" for name in ("mean", *QUANTILES, "min", "max")),
    *(f"boundary_image_{name}" for name in ("mean", *QUANTILES, "min", "max")),
    "log_boundary_length", "log_smaller_region", "log_larger_region",
    "lower_region_prob", "higher_region_prob", "log_smaller_seed",
)


def _boundary_pixels(regions, *maps):
    """Every 4-neighbour pair of pixels in two regions: the regions (low, high)
    and, per map, the pair's larger probability / smaller image value."""
    low, high, values = [], [], [[] for _ in maps]
    for cut_a, cut_b in (
        ((slice(None), slice(None, -1)), (slice(None), slice(1, None))),
        ((slice(None, -1), slice(None)), (slice(1, None), slice(None))),
    ):
        a, b = regions[cut_a], regions[cut_b]
        apart = a != b
        low.append(np.minimum(a[apart], b[apart]))
        high.append(np.maximum(a[apart], b[apart]))
        for out, (array, combine) in zip(values, maps):
            out.append(combine(array[cut_a][apart], array[cut_b][apart]))
    return np.concatenate(low), np.concatenate(high), [np.concatenate(v) for v in values]


def _grouped_statistics(groups, values, n_groups):
    """Mean, quantiles, min and max of `values` per group (every group non-empty)."""
    count = np.bincount(groups, minlength=n_groups)
    mean = np.bincount(groups, weights=values, minlength=n_groups) / count
    values = values[np.lexsort((values, groups))]  # by group, then by value
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    quantiles = [values[start + np.minimum((q * count).astype(int), count - 1)] for q in QUANTILES]
    return [mean, *quantiles, values[start], values[start + count - 1]]


def region_pairs(membrane_prob, image, marker_threshold=0.05, min_marker_size=10):
    """The watershed's regions of one slice and the features of each touching pair.

    Args:
        membrane_prob: `(H, W)` membrane probabilities in [0, 1].
        image: The `(H, W)` slice they were predicted from, in [0, 1].
        marker_threshold: Seeds: regions of probability below this.
        min_marker_size: Seeds with fewer pixels are dropped.

    Returns:
        A dict: `regions` (int32 labels 1, 2, ..., no boundary lines), `seeds`
        (the labelled seeds), `pairs` (`(P, 2)` touching region labels),
        `lengths` (`(P,)` boundary pixel pairs) and `features` (`(P, F)`, the
        columns named by `FEATURE_NAMES`). A slice without seeds has no pairs.
    """
    seeds = _markers(membrane_prob, marker_threshold, min_marker_size)
    regions = np.ones_like(seeds)
    if seeds.any():
        regions = watershed(membrane_prob, seeds, connectivity=1)
    low, high, (prob_values, image_values) = _boundary_pixels(
        regions, (membrane_prob, np.maximum), (image, np.minimum)
    )
    keys, pair_of_pixel = np.unique(low.astype(np.int64) << 32 | high, return_inverse=True)
    pairs = np.stack([keys >> 32, keys & 0xFFFFFFFF], axis=1).astype(np.int32)
    n = len(keys)
    lengths = np.bincount(pair_of_pixel, minlength=n)
    n_labels = int(regions.max()) + 1
    size = np.bincount(regions.ravel(), minlength=n_labels).astype(np.float64)
    region_prob = np.bincount(regions.ravel(), membrane_prob.ravel(), n_labels)
    region_prob /= np.maximum(size, 1)
    seed_size = np.bincount(seeds.ravel(), minlength=n_labels).astype(np.float64)
    a, b = pairs[:, 0], pairs[:, 1]
    columns = [] if n == 0 else [
        *_grouped_statistics(pair_of_pixel, prob_values, n),
        *_grouped_statistics(pair_of_pixel, image_values, n),
        np.log(lengths), np.log(np.minimum(size[a], size[b])), np.log(np.maximum(size[a], size[b])),
        np.minimum(region_prob[a], region_prob[b]), np.maximum(region_prob[a], region_prob[b]),
        np.log1p(np.minimum(seed_size[a], seed_size[b])),
    ]
    features = np.stack(columns, axis=1) if n else np.zeros((0, len(FEATURE_NAMES)))
    return {"regions": regions, "seeds": seeds, "pairs": pairs, "lengths": lengths,
            "features": features}


def same_cell(regions, pairs, membrane_mask):
    """1 for each pair whose two regions mostly cover the same true cell, else 0.

    A region's cell is the 4-connected ground-truth interior component that
    covers most of its pixels.
    """
    cells = _ground_truth_segments(membrane_mask)  # the scorer's true cells
    n_cells = int(cells.max())
    inside = cells > 0
    joint = regions[inside].astype(np.int64) * (n_cells + 1) + cells[inside]
    keys, counts = np.unique(joint, return_counts=True)
    region, cell = keys // (n_cells + 1), keys % (n_cells + 1)
    majority = np.full(int(regions.max()) + 1, -1, np.int64)
    order = np.lexsort((counts, region))  # by region, then by count
    region, cell = region[order], cell[order]
    largest = np.append(region[1:] != region[:-1], True)  # the last of each region's run
    majority[region[largest]] = cell[largest]
    a, b = majority[pairs[:, 0]], majority[pairs[:, 1]]
    return ((a == b) & (a >= 0)).astype(np.int8)


def _image_slices(images, prob):
    """`images` as float `(N, H, W)` slices matching `prob`, checked."""
    images = np.asarray(images)
    if images.shape == (*prob.shape[1:], 1):  # one slice with a channel axis
        images = images[..., 0]
    images = _as_slices(images, "images")
    if images.shape != prob.shape:
        raise ValueError(
            f"`images` {images.shape} and `membrane_prob` {prob.shape} differ in shape: pass "
            "the slices the probabilities were predicted from."
        )
    if images.dtype.kind not in "fiub" or not np.isfinite(images).all():
        raise ValueError("`images` must hold finite numbers.")
    return images / 255.0 if images.dtype == np.uint8 else images.astype(np.float64)


class NothingToLearn(ValueError):
    """The slices given to `MergeClassifier.fit` hold no pair of each kind."""


class MergeClassifier:
    """Predicts whether two touching watershed regions are one cell.

    Build one with `MergeClassifier.fit`; `save` and `load` keep it as JSON
    (the feature scaling and the logistic regression's weights), so that a
    saved run needs neither pickle nor scikit-learn's version to reload it.

    Args:
        mean, scale: Per-feature standardisation, `(F,)`.
        coef, intercept: The logistic regression on standardised features.
        marker_threshold, min_marker_size: The seeds it was fitted with; the
            regions it merges must be seeded the same way.
    """

    def __init__(self, mean, scale, coef, intercept, marker_threshold=0.05, min_marker_size=10):
        self.mean, self.scale, self.coef = (
            np.asarray(v, np.float64) for v in (mean, scale, coef)
        )
        if not self.mean.shape == self.scale.shape == self.coef.shape == (len(FEATURE_NAMES),):
            raise ValueError(
                f"A merge classifier has {len(FEATURE_NAMES)} weights, one per feature of "
                f"`FEATURE_NAMES`; got {self.coef.shape}. Was it saved by another version?"
            )
        self.intercept = float(intercept)
        self.marker_threshold, self.min_marker_size = float(marker_threshold), int(min_marker_size)

    @classmethod
    def fit(cls, membrane_prob, images, membrane_mask, marker_threshold=0.05, min_marker_size=10,
            regularization=1.0):
        """Fits the classifier on slices with ground truth.

        Args:
            membrane_prob: Predicted membrane probabilities, `(N, H, W)` or
                `(N, H, W, 1)`, of slices the network may have trained on.
            images: The slices they were predicted from, the same shape.
            membrane_mask: Their ground truth, 1 = membrane, 0 = interior.
            marker_threshold, min_marker_size: The watershed's seeds.
            regularization: The inverse L2 strength of the logistic regression
                (scikit-learn's `C`).

        Returns:
            A fitted `MergeClassifier`.

        Raises:
            ValueError: For mismatched shapes or a mask that is not binary.
            NothingToLearn: (a ValueError) When the slices' region pairs are
                all one cell or all different cells, as in the flat maps of a
                network that has barely trained.
        """
        from sklearn.linear_model import LogisticRegression  # only to fit: not at import

        prob, mask, _ = _validate(membrane_prob, membrane_mask, None)
        images = _image_slices(images, prob)
        features, targets = [], []
        for slice_prob, image, slice_mask in zip(prob, images, mask):
            found = region_pairs(slice_prob, image, marker_threshold, min_marker_size)
            features.append(found["features"])
            targets.append(same_cell(found["regions"], found["pairs"], slice_mask))
        features, targets = np.concatenate(features), np.concatenate(targets)
        if len(targets) == 0:
            raise NothingToLearn(
                f"No two seeded regions touch in these maps (seeds: probability below "
                f"{marker_threshold} over at least {min_marker_size} pixels), so there is "
                "nothing to learn: the network may not have trained long enough."
            )
        if len(np.unique(targets)) < 2:
            raise NothingToLearn(
                f"The {len(targets)} pairs of touching regions in these slices are all "
                f"{'one cell' if targets.any() else 'different cells'}: there is nothing to "
                "learn. Fit on more slices, or on predictions rather than the ground truth."
            )
        mean, scale = features.mean(axis=0), features.std(axis=0)
        scale[scale == 0] = 1.0
        model = LogisticRegression(C=regularization, max_iter=5000)
        model.fit((features - mean) / scale, targets)
        return cls(mean, scale, model.coef_[0], model.intercept_[0], marker_threshold,
                   min_marker_size)

    def merge_probability(self, features):
        """The probability that each pair of `features` (`(P, F)`) is one cell."""
        logits = ((np.asarray(features) - self.mean) / self.scale) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-logits))

    def to_dict(self):
        """The classifier as JSON-ready values (what `save` writes)."""
        return {
            "features": list(FEATURE_NAMES), "mean": self.mean.tolist(),
            "scale": self.scale.tolist(), "coef": self.coef.tolist(), "intercept": self.intercept,
            "marker_threshold": self.marker_threshold, "min_marker_size": self.min_marker_size,
        }

    def save(self, path):
        """Writes `to_dict()` as JSON to `path`."""
        with open(path, "w") as file:
            json.dump(self.to_dict(), file, indent=2)

    @classmethod
    def load(cls, path):
        """A classifier saved by `save`; a ValueError if its features differ from
        this version's `FEATURE_NAMES`."""
        with open(path) as file:
            saved = json.load(file)
        if saved.get("features") != list(FEATURE_NAMES):
            raise ValueError(
                f"{path} was fitted on other features than this version of unet_keras "
                "computes; fit it again (MergeClassifier.fit)."
            )
        saved.pop("features")
        return cls(**saved)


def _merge(found, classifier, threshold):
    """Seeds relabelled so that the regions judged one cell share a label."""
    rag = graph.RAG()
    rag.add_nodes_from(range(int(found["regions"].max()) + 1))
    for node in rag.nodes:
        rag.nodes[node]["labels"] = [node]  # what merge_hierarchical relabels by
    apart = 1.0 - classifier.merge_probability(found["features"])
    for (a, b), count, weight in zip(found["pairs"], found["lengths"], apart):
        rag.add_edge(int(a), int(b), weight=float(weight), count=int(count))
    return _merge_seeds(found["regions"], rag, found["seeds"], 1.0 - threshold)


def agglomerate_cells(membrane_prob, images, classifier, threshold=0.4):
    """Cell segmentation: the watershed's regions merged where `classifier`
    finds them one cell.

    Args:
        membrane_prob: Membrane probabilities in [0, 1], `(N, H, W)`,
            `(N, H, W, 1)` or one `(H, W)` slice.
        images: The slices they were predicted from, the same shape.
        classifier: A fitted `MergeClassifier`.
        threshold: Pairs are merged, most certain first, while their
            (boundary-weighted mean) probability of being one cell is above it.
            0.4 was chosen over 0.5 and 0.6 on held-out slices 0-4 and 20-24,
            two seeds each: the only one of the three above the watershed in
            all four runs (docs/results.md).

    Returns:
        int32 labels, the shape of `membrane_prob` without a channel axis:
        1, 2, ... for cells and 0 for the one-pixel boundaries between them.

    Raises:
        ValueError: For mismatched shapes, values outside [0, 1], or a
            threshold outside (0, 1).
    """
    if not 0 < threshold < 1:
        raise ValueError(f"`threshold` must lie in (0, 1), got {threshold!r}.")
    prob = as_membrane_slices(membrane_prob)
    images = _image_slices(images, prob)
    labels = np.ones(prob.shape, np.int32)
    for i, (slice_prob, image) in enumerate(zip(prob, images)):
        found = region_pairs(slice_prob, image, classifier.marker_threshold,
                             classifier.min_marker_size)
        if len(found["pairs"]):
            seeds = _merge(found, classifier, threshold)
            labels[i] = watershed(slice_prob, seeds, connectivity=1, watershed_line=True)
    return labels[0] if is_single_slice(membrane_prob) else labels


def agglomerate_membranes(membrane_prob, images, classifier, threshold=0.4, ridges=True):
    """Membrane probabilities with the boundaries of `agglomerate_cells` set to 1.

    As `postprocess.watershed_membranes`: the lines are drawn over the map's
    own boundaries redrawn on their ridges (`ridges=False`: over the map as it
    is), threshold 0.0 of the result is the segmentation, and `1 - result` is
    a valid ISBI submission. Other arguments and errors as `agglomerate_cells`.

    Returns:
        float32 membrane probabilities of the same shape as `membrane_prob`.
    """
    labels = agglomerate_cells(membrane_prob, images, classifier, threshold)
    return draw_lines(labels, ridge_membranes(membrane_prob) if ridges else membrane_prob)
